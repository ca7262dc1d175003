//! StudyDate ranges for C-FIND. When an archive caps its matches (returns `max_matches`,
//! refuses with 0xA700 or stops with 0xFE00) the range is split in halves and each half
//! queried again, until no half is capped or a half is a single day.

use chrono::{DateTime, NaiveDate, Utc};
use std::time::Duration;

/// An inclusive range of study dates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DateRange {
    pub from: NaiveDate,
    pub to: NaiveDate,
}

impl DateRange {
    pub fn new(from: NaiveDate, to: NaiveDate) -> DateRange {
        if from <= to { DateRange { from, to } } else { DateRange { from: to, to: from } }
    }

    /// The lookback window of an exam: from `reference - lookback` up to the later of
    /// `reference` and `today` (a study done today before a future exam is a prior too).
    pub fn lookback(reference: DateTime<Utc>, lookback: Duration, today: NaiveDate) -> DateRange {
        let back = chrono::Duration::from_std(lookback).unwrap_or(chrono::Duration::MAX);
        let from = reference.checked_sub_signed(back).map_or(NaiveDate::MIN, |t| t.date_naive());
        DateRange::new(from, reference.date_naive().max(today))
    }

    /// The C-FIND range matching value, `YYYYMMDD-YYYYMMDD`.
    pub fn to_dicom(&self) -> String {
        format!("{}-{}", self.from.format("%Y%m%d"), self.to.format("%Y%m%d"))
    }

    pub fn days(&self) -> i64 {
        (self.to - self.from).num_days() + 1
    }

    pub fn contains(&self, date: NaiveDate) -> bool {
        self.from <= date && date <= self.to
    }

    /// Two halves that cover this range exactly, or `None` for a single day.
    pub fn split(&self) -> Option<(DateRange, DateRange)> {
        if self.from >= self.to {
            return None;
        }
        let mid = self.from + chrono::Duration::days((self.days() - 1) / 2);
        let next = mid.succ_opt()?;
        Some((DateRange { from: self.from, to: mid }, DateRange { from: next, to: self.to }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    #[test]
    fn lookback_and_dicom_form() {
        let at = Utc.with_ymd_and_hms(2026, 12, 3, 9, 30, 0).unwrap();
        let r = DateRange::lookback(at, Duration::from_secs(365 * 86400), d(2026, 12, 2));
        assert_eq!(r.to_dicom(), "20251203-20261203");
        let past = DateRange::lookback(at, Duration::from_secs(86400), d(2026, 12, 10));
        assert_eq!(past.to, d(2026, 12, 10));
        assert!(DateRange::lookback(at, Duration::from_secs(u64::MAX), d(2026, 12, 2)).from <= d(1900, 1, 1));
        assert_eq!(DateRange::new(d(2020, 1, 1), d(2020, 1, 1)).split(), None);
    }

    proptest! {
        /// Halves are non-empty, adjacent, and cover the range exactly.
        #[test]
        fn split_covers_exactly(start in 0i64..40_000, len in 1i64..20_000) {
            let from = d(1950, 1, 1) + chrono::Duration::days(start);
            let r = DateRange::new(from, from + chrono::Duration::days(len));
            let (a, b) = r.split().unwrap();
            prop_assert_eq!(a.from, r.from);
            prop_assert_eq!(b.to, r.to);
            prop_assert_eq!(a.to.succ_opt().unwrap(), b.from);
            prop_assert!(a.from <= a.to && b.from <= b.to);
            prop_assert_eq!(a.days() + b.days(), r.days());
            prop_assert!(a.days() >= b.days() - 1 && a.days() <= b.days() + 1);
        }
    }
}
