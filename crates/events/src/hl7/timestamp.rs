//! HL7 DTM: `YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ]`. A time without an offset is
//! in the site's zone (`default_utc_offset`).

use chrono::{DateTime, FixedOffset, NaiveDate, TimeZone};

pub(crate) fn parse_dtm(value: &str, default_offset: FixedOffset) -> Option<DateTime<FixedOffset>> {
    let value = value.trim();
    let (body, offset) = match value.find(['+', '-']) {
        Some(i) => (&value[..i], Some(parse_offset(&value[i..])?)),
        None => (value, None),
    };
    let (digits, fraction) = match body.find('.') {
        Some(i) => (&body[..i], &body[i + 1..]),
        None => (body, ""),
    };
    if !digits.bytes().all(|b| b.is_ascii_digit()) || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !matches!(digits.len(), 8 | 10 | 12 | 14) || fraction.len() > 4 || (!fraction.is_empty() && digits.len() != 14) {
        return None;
    }
    let num = |a: usize, b: usize| digits.get(a..b).map(|s| s.parse::<u32>().ok()).unwrap_or(Some(0));
    let date = NaiveDate::from_ymd_opt(num(0, 4)? as i32, num(4, 6)?, num(6, 8)?)?;
    let nanos = if fraction.is_empty() { 0 } else { format!("{fraction:0<9}").parse::<u32>().ok()? };
    let time = date.and_hms_nano_opt(num(8, 10)?, num(10, 12)?, num(12, 14)?, nanos)?;
    offset.unwrap_or(default_offset).from_local_datetime(&time).single()
}

fn parse_offset(s: &str) -> Option<FixedOffset> {
    let sign = match s.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let digits = &s[1..];
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let hours: i32 = digits[..2].parse().ok()?;
    let minutes: i32 = digits[2..].parse().ok()?;
    if hours > 14 || minutes > 59 {
        return None;
    }
    FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precisions_and_zones() {
        let utc = FixedOffset::east_opt(0).unwrap();
        let t = parse_dtm("20261123093000+0100", utc).unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-23T09:30:00+01:00");
        assert_eq!(parse_dtm("202611230930", utc).unwrap().to_rfc3339(), "2026-11-23T09:30:00+00:00");
        assert_eq!(parse_dtm("20261123", utc).unwrap().to_rfc3339(), "2026-11-23T00:00:00+00:00");
        assert!(parse_dtm("20261123093000.25-0500", utc).is_some());
        for bad in ["2026133", "20261345", "x", "", "20261123+01", "20261123093000.123456", "20261123250000"] {
            assert!(parse_dtm(bad, utc).is_none(), "{bad}");
        }
    }
}
