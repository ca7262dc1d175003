//! Retrieve windows: an archive may only be retrieved from while one of its windows
//! (a cron start plus a duration) is open, e.g. nights only for a busy PACS.

use chrono::{DateTime, Utc};
use priorfetch_config::RetrieveWindow;
use std::str::FromStr;

/// An archive's windows, parsed once when the mover starts (not on every claim).
#[derive(Debug, Clone)]
pub struct Windows(Vec<Option<(cron::Schedule, chrono::Duration)>>);

impl Windows {
    /// Bad cron expressions were rejected by config validation; one that slips through
    /// keeps its window closed.
    pub fn parse(windows: &[RetrieveWindow]) -> Windows {
        Windows(
            windows
                .iter()
                .map(|w| Some((cron::Schedule::from_str(&w.start).ok()?, chrono::Duration::from_std(w.duration).ok()?)))
                .collect(),
        )
    }

    /// True when no window is configured, or `now` lies in [start, start + duration) of
    /// some window.
    pub fn is_open(&self, now: DateTime<Utc>) -> bool {
        self.0.is_empty()
            || self.0.iter().flatten().any(|(schedule, duration)| {
                // The first start after (now - duration) is the only one whose window can cover now.
                schedule
                    .after(&(now - *duration - chrono::Duration::seconds(1)))
                    .next()
                    .is_some_and(|start| start <= now && now < start + *duration)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::time::Duration;

    fn window(start: &str, hours: u64) -> RetrieveWindow {
        RetrieveWindow { start: start.into(), duration: Duration::from_secs(hours * 3600) }
    }

    fn is_open(windows: &[RetrieveWindow], now: DateTime<Utc>) -> bool {
        Windows::parse(windows).is_open(now)
    }

    #[test]
    fn a_night_window_opens_at_seven_and_closes_twelve_hours_later() {
        let w = [window("0 0 19 * * *", 12)];
        let at = |h, m| Utc.with_ymd_and_hms(2026, 12, 2, h, m, 0).unwrap();
        assert!(!is_open(&w, at(18, 59)));
        assert!(is_open(&w, at(19, 0)));
        assert!(is_open(&w, at(23, 30)));
        assert!(is_open(&w, at(6, 59)));
        assert!(!is_open(&w, at(7, 0)));
        assert!(!is_open(&w, at(12, 0)));
    }

    #[test]
    fn no_window_means_always_and_any_window_suffices() {
        assert!(is_open(&[], Utc::now()));
        let w = [window("0 0 1 * * *", 1), window("0 0 13 * * *", 1)];
        assert!(is_open(&w, Utc.with_ymd_and_hms(2026, 12, 2, 13, 30, 0).unwrap()));
        assert!(!is_open(&w, Utc.with_ymd_and_hms(2026, 12, 2, 15, 0, 0).unwrap()));
    }

    #[test]
    fn a_bad_expression_keeps_its_window_closed() {
        assert!(!is_open(&[window("every night", 1)], Utc::now()));
    }
}
