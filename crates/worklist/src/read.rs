//! Reading attributes of a worklist item: text values, sequences, and the DICOM date,
//! time and UTC offset of a Scheduled Procedure Step. Every failure names the attribute.

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveTime, TimeZone};
use dicom_core::Tag;
use dicom_object::InMemDicomObject;
use priorfetch_events::DecodeError;

/// `Keyword (gggg,eeee)`: how a dead letter names the attribute to blame.
pub(crate) fn attribute(keyword: &str, tag: Tag) -> String {
    format!("{keyword} ({:04X},{:04X})", tag.group(), tag.element())
}

/// A text value, trimmed of DICOM padding; None when absent or empty.
pub(crate) fn text(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    let value = obj.element_opt(tag).ok().flatten()?.to_str().ok()?;
    let value = value.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    (!value.is_empty()).then(|| value.to_string())
}

/// The items of a sequence (none when absent or not a sequence).
pub(crate) fn items(obj: &InMemDicomObject, tag: Tag) -> &[InMemDicomObject] {
    obj.element_opt(tag).ok().flatten().and_then(|e| e.items()).unwrap_or(&[])
}

/// A DICOM UID: dot-separated digit groups, at most 64 characters.
pub(crate) fn is_uid(value: &str) -> bool {
    value.len() <= 64 && value.split('.').all(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()))
}

/// Timezone Offset From UTC (0008,0201): `+HHMM` or `-HHMM`.
pub(crate) fn utc_offset(value: &str, field: &str) -> Result<FixedOffset, DecodeError> {
    let bad = || DecodeError::BadValue { field: field.to_string(), reason: "must be +HHMM or -HHMM".into() };
    let (sign, digits) = match value.as_bytes().first() {
        Some(b'+') => (1, &value[1..]),
        Some(b'-') => (-1, &value[1..]),
        _ => return Err(bad()),
    };
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let (hours, minutes): (i32, i32) =
        (digits[..2].parse().map_err(|_| bad())?, digits[2..].parse().map_err(|_| bad())?);
    if hours > 14 || minutes > 59 {
        return Err(bad());
    }
    FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60)).ok_or_else(bad)
}

/// DA: `YYYYMMDD`.
pub(crate) fn date(value: &str, field: &str) -> Result<NaiveDate, DecodeError> {
    let bad = || DecodeError::BadDate { field: field.to_string(), what: "date", value: value.to_string() };
    if value.len() != 8 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    NaiveDate::parse_from_str(value, "%Y%m%d").map_err(|_| bad())
}

/// TM: `HH`, `HHMM`, `HHMMSS` or `HHMMSS.FFFFFF`; the ACR-NEMA `HH:MM:SS` some RIS still
/// send is read too.
pub(crate) fn time(value: &str, field: &str) -> Result<NaiveTime, DecodeError> {
    let bad = || DecodeError::BadDate { field: field.to_string(), what: "time", value: value.to_string() };
    let plain = value.replace(':', "");
    let (digits, fraction) = plain.split_once('.').unwrap_or((&plain, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if !matches!(digits.len(), 2 | 4 | 6) || !all_digits(digits) || fraction.len() > 6 || !all_digits(fraction) {
        return Err(bad());
    }
    if !fraction.is_empty() && digits.len() != 6 {
        return Err(bad());
    }
    let part = |i: usize| digits.get(i..i + 2).map(|s| s.parse::<u32>().unwrap_or(99)).unwrap_or(0);
    let micros = if fraction.is_empty() { 0 } else { format!("{fraction:0<6}").parse::<u32>().map_err(|_| bad())? };
    // DICOM allows second 60 (a leap second); chrono takes it as 59 + 1 s of fraction.
    let (second, micros) = if part(4) == 60 { (59, 1_000_000 + micros) } else { (part(4), micros) };
    NaiveTime::from_hms_micro_opt(part(0), part(2), second, micros).ok_or_else(bad)
}

/// A local date and time in `offset`.
pub(crate) fn local(
    date: NaiveDate,
    time: NaiveTime,
    offset: FixedOffset,
    field: &str,
) -> Result<DateTime<FixedOffset>, DecodeError> {
    offset
        .from_local_datetime(&date.and_time(time))
        .single()
        .ok_or_else(|| DecodeError::BadValue { field: field.to_string(), reason: "not a valid local time".into() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_times_offsets() {
        assert_eq!(date("20261123", "f").unwrap(), NaiveDate::from_ymd_opt(2026, 11, 23).unwrap());
        for bad in ["2026112", "20261345", "2026-11-23", "", "2026112x"] {
            assert!(date(bad, "f").is_err(), "{bad}");
        }
        assert_eq!(time("0930", "f").unwrap(), NaiveTime::from_hms_opt(9, 30, 0).unwrap());
        assert_eq!(time("09", "f").unwrap(), NaiveTime::from_hms_opt(9, 0, 0).unwrap());
        assert_eq!(time("09:30:15", "f").unwrap(), NaiveTime::from_hms_opt(9, 30, 15).unwrap());
        assert_eq!(time("093015.5", "f").unwrap(), NaiveTime::from_hms_micro_opt(9, 30, 15, 500_000).unwrap());
        for bad in ["9", "2500", "0960", "093", "0930.5", "093015.1234567", "ab"] {
            assert!(time(bad, "f").is_err(), "{bad}");
        }
        assert_eq!(utc_offset("+0100", "f").unwrap().local_minus_utc(), 3600);
        assert_eq!(utc_offset("-0530", "f").unwrap().local_minus_utc(), -19800);
        for bad in ["0100", "+01", "+1500", "+01:00", ""] {
            assert!(utc_offset(bad, "f").is_err(), "{bad}");
        }
        assert!(is_uid("1.2.840.10008.5.1.4.31") && !is_uid("1..2") && !is_uid("1.2.a") && !is_uid(""));
    }
}
