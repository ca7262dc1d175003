//! Retrieve windows evaluated: an archive may only be retrieved from while one of its
//! windows (a cron start plus a duration, `[[archives.retrieve_windows]]`) is open, e.g.
//! nights only for a busy PACS. The mover decides claims with it; the signals collector
//! counts a job as due, and its wait as starting, only while the window is open.

use crate::RetrieveWindow;
use chrono::{DateTime, TimeDelta, Utc};
use std::str::FromStr;

/// Where an archive's retrieve windows stand at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// No window configured: retrieves run at any time.
    Always,
    Closed,
    /// Open since this instant (the earliest start among the windows open now).
    OpenSince(DateTime<Utc>),
}

/// One archive's windows, parsed once (not on every claim).
#[derive(Debug, Clone)]
pub struct Windows(Vec<Option<(cron::Schedule, TimeDelta)>>);

impl Windows {
    /// Bad cron expressions are rejected by config validation; one that slips through
    /// keeps its window closed.
    pub fn parse(windows: &[RetrieveWindow]) -> Windows {
        Windows(
            windows
                .iter()
                .map(|w| Some((cron::Schedule::from_str(&w.start).ok()?, TimeDelta::from_std(w.duration).ok()?)))
                .collect(),
        )
    }

    pub fn at(&self, now: DateTime<Utc>) -> Window {
        if self.0.is_empty() {
            return Window::Always;
        }
        let open = self.0.iter().flatten().filter_map(|(schedule, duration)| {
            // The first start after (now - duration) is the only one whose window can cover now.
            let start = schedule.after(&(now - *duration - TimeDelta::seconds(1))).next()?;
            (start <= now && now < start + *duration).then_some(start)
        });
        open.min().map_or(Window::Closed, Window::OpenSince)
    }

    /// True when no window is configured, or `now` lies in [start, start + duration) of
    /// some window.
    pub fn is_open(&self, now: DateTime<Utc>) -> bool {
        self.at(now) != Window::Closed
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
    fn a_night_window_is_open_since_seven_pm() {
        let w = Windows::parse(&[window("0 0 19 * * *", 12)]);
        let at = |d, h| Utc.with_ymd_and_hms(2026, 12, d, h, 0, 0).unwrap();
        assert_eq!(w.at(at(2, 12)), Window::Closed);
        assert_eq!(w.at(at(2, 23)), Window::OpenSince(at(2, 19)));
        assert_eq!(w.at(at(3, 6)), Window::OpenSince(at(2, 19)));
    }

    #[test]
    fn no_window_means_always_and_any_window_suffices() {
        assert!(is_open(&[], Utc::now()));
        assert_eq!(Windows::parse(&[]).at(Utc::now()), Window::Always);
        let w = [window("0 0 1 * * *", 1), window("0 0 13 * * *", 1)];
        assert!(is_open(&w, Utc.with_ymd_and_hms(2026, 12, 2, 13, 30, 0).unwrap()));
        assert!(!is_open(&w, Utc.with_ymd_and_hms(2026, 12, 2, 15, 0, 0).unwrap()));
    }

    #[test]
    fn a_bad_expression_keeps_its_window_closed() {
        assert!(!is_open(&[window("every night", 1)], Utc::now()));
        assert_eq!(Windows::parse(&[window("nightly", 1)]).at(Utc::now()), Window::Closed);
    }
}
