//! Retrieve windows as the collector needs them: a job is only due (claimable) while its
//! archive's window is open, and it has waited only since the later of its `not_before`
//! and the window's opening. The mover's `window.rs` decides claims the same way.

use chrono::{DateTime, TimeDelta, Utc};
use priorfetch_config::RetrieveWindow;
use std::str::FromStr;

/// Where an archive's retrieve windows stand at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Window {
    /// No window configured: retrieves run at any time.
    Always,
    Closed,
    /// Open since this instant (the earliest start among the windows open now).
    OpenSince(DateTime<Utc>),
}

/// One archive's windows, parsed once.
#[derive(Debug, Clone)]
pub(crate) struct Windows(Vec<Option<(cron::Schedule, TimeDelta)>>);

impl Windows {
    /// A bad cron expression (config validation rejects them) keeps its window closed,
    /// as in the mover.
    pub(crate) fn parse(windows: &[RetrieveWindow]) -> Windows {
        Windows(
            windows
                .iter()
                .map(|w| Some((cron::Schedule::from_str(&w.start).ok()?, TimeDelta::from_std(w.duration).ok()?)))
                .collect(),
        )
    }

    pub(crate) fn at(&self, now: DateTime<Utc>) -> Window {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::time::Duration;

    #[test]
    fn a_night_window_is_open_since_seven_pm() {
        let w = Windows::parse(&[RetrieveWindow {
            start: "0 0 19 * * *".into(),
            duration: Duration::from_secs(12 * 3600),
        }]);
        let at = |d, h| Utc.with_ymd_and_hms(2026, 12, d, h, 0, 0).unwrap();
        assert_eq!(w.at(at(2, 12)), Window::Closed);
        assert_eq!(w.at(at(2, 23)), Window::OpenSince(at(2, 19)));
        assert_eq!(w.at(at(3, 6)), Window::OpenSince(at(2, 19)));
        assert_eq!(Windows::parse(&[]).at(at(2, 12)), Window::Always);
        let bad = Windows::parse(&[RetrieveWindow { start: "nightly".into(), duration: Duration::from_secs(60) }]);
        assert_eq!(bad.at(at(2, 12)), Window::Closed);
    }
}
