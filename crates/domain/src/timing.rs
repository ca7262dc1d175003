//! When a prior's retrieve may start, when it is due, and its queue priority.

use crate::exam::ExamPriority;
use chrono::{DateTime, Utc};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobTiming {
    pub not_before: DateTime<Utc>,
    pub deadline: Option<DateTime<Utc>>,
    pub priority: i32,
}

/// `not_before = scheduled_at - lead_time` (now when that is past, and always now for
/// STAT), `deadline = scheduled_at`; STAT 0, urgent 1, routine 5. An exam without a
/// schedule is fetched now with no deadline.
pub fn job_timing(
    scheduled_at: Option<DateTime<Utc>>,
    priority: ExamPriority,
    lead_time: Duration,
    now: DateTime<Utc>,
) -> JobTiming {
    let lead = chrono::Duration::from_std(lead_time).unwrap_or(chrono::Duration::MAX);
    let not_before = match scheduled_at {
        Some(_) if priority == ExamPriority::Stat => now,
        Some(at) => at.checked_sub_signed(lead).map_or(now, |t| t.max(now)),
        None => now,
    };
    JobTiming { not_before, deadline: scheduled_at, priority: priority.job_priority() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn lead_time_stat_and_past_schedules() {
        let now = Utc.with_ymd_and_hms(2026, 12, 2, 8, 0, 0).unwrap();
        let at = Utc.with_ymd_and_hms(2026, 12, 3, 9, 30, 0).unwrap();
        let lead = Duration::from_secs(12 * 3600);
        let t = job_timing(Some(at), ExamPriority::Routine, lead, now);
        assert_eq!(t.not_before, Utc.with_ymd_and_hms(2026, 12, 2, 21, 30, 0).unwrap());
        assert_eq!((t.deadline, t.priority), (Some(at), 5));
        let stat = job_timing(Some(at), ExamPriority::Stat, lead, now);
        assert_eq!((stat.not_before, stat.priority), (now, 0));
        assert_eq!(job_timing(Some(at), ExamPriority::Urgent, lead, now).priority, 1);
        let soon = now + chrono::Duration::hours(1);
        assert_eq!(job_timing(Some(soon), ExamPriority::Routine, lead, now).not_before, now);
        let none = job_timing(None, ExamPriority::Routine, lead, now);
        assert_eq!((none.not_before, none.deadline), (now, None));
        // an absurd lead time cannot overflow
        assert_eq!(job_timing(Some(at), ExamPriority::Routine, Duration::from_secs(u64::MAX), now).not_before, now);
    }
}
