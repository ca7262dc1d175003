//! StudyDate ranges for C-FIND. When an archive caps its matches (returns `max_matches`,
//! refuses with 0xA700 or stops with 0xFE00) the range is split in halves and each half
//! queried again, until no half is capped or a half is a single day.

use chrono::{DateTime, Days, NaiveDate, NaiveTime, Utc};
use std::time::Duration;

/// The earliest StudyDate ever sent in a C-FIND: no archive holds older studies.
pub const EARLIEST: NaiveDate = NaiveDate::from_ymd_opt(1900, 1, 1).expect("valid date");
/// The latest date a DA (four-digit year) can hold.
pub const LATEST: NaiveDate = NaiveDate::from_ymd_opt(9999, 12, 31).expect("valid date");

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
    /// Clamped to dates an archive can match: never before [`EARLIEST`], never after a
    /// year from `today` (a scheduled time in year 0 or 9999 is bad data, and `%Y` of such
    /// years is not a DA: `-0011` or `10000`).
    pub fn lookback(reference: DateTime<Utc>, lookback: Duration, today: NaiveDate) -> DateRange {
        let earliest = EARLIEST;
        let latest = today.checked_add_days(Days::new(366)).unwrap_or(today).clamp(earliest, LATEST);
        let at = |d: NaiveDate| d.and_time(NaiveTime::MIN).and_utc();
        let reference = reference.clamp(at(earliest), at(latest));
        let back = chrono::Duration::from_std(lookback).unwrap_or(chrono::Duration::MAX);
        let from = reference.checked_sub_signed(back).map_or(earliest, |t| t.date_naive()).max(earliest);
        let to = reference.date_naive().max(today).clamp(earliest, latest);
        DateRange::new(from, to)
    }

    /// The C-FIND range matching value, `YYYYMMDD-YYYYMMDD` (always two 8-digit dates).
    pub fn to_dicom(&self) -> String {
        let da = |d: NaiveDate| d.clamp(EARLIEST, LATEST).format("%Y%m%d").to_string();
        format!("{}-{}", da(self.from), da(self.to))
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

    /// Scheduled times in year 0 and 9999 and lookbacks of any size give a valid DA range
    /// within 19000101 ..= today + 1 year.
    #[test]
    fn absurd_dates_and_lookbacks_are_clamped() {
        let today = d(2026, 12, 5);
        let da = regex::Regex::new(r"^[0-9]{8}-[0-9]{8}$").unwrap();
        let year0 = Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0).unwrap();
        let year9999 = Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap();
        for reference in [year0, year9999, DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC] {
            for secs in [0, 86_400, 365 * 86_400, 1 << 40, u64::MAX] {
                let r = DateRange::lookback(reference, Duration::from_secs(secs), today);
                let text = r.to_dicom();
                assert!(da.is_match(&text), "{reference} - {secs}s: {text}");
                assert!(r.from >= d(1900, 1, 1) && r.from <= r.to, "{text}");
                assert!(r.to <= d(2027, 12, 6), "{reference}: {text}");
            }
        }
        // year 0: from the earliest date up to today
        let r = DateRange::lookback(year0, Duration::from_secs(u64::MAX), today);
        assert_eq!(r.to_dicom(), "19000101-20261205");
        // year 9999: a year ahead at most, the lookback counted from there
        let r = DateRange::lookback(year9999, Duration::from_secs(365 * 86_400), today);
        assert_eq!(r.to_dicom(), "20261206-20271206");
        let r = DateRange::lookback(year9999, Duration::from_secs(u64::MAX), today);
        assert_eq!(r.to_dicom(), "19000101-20271206");
        // a range built by hand is still sent as 8-digit dates
        let wild = DateRange::new(NaiveDate::MIN, NaiveDate::MAX);
        assert_eq!(wild.to_dicom(), "19000101-99991231");
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
