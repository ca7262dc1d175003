//! C-FIND attribute matching (PS3.4 C.2.2.2): universal, single value, UID lists, value
//! lists with `\`, `*`/`?` wildcards, DA/TM/DT ranges. Case sensitivity is configurable,
//! as archives differ.

use crate::config::CaseMatching;
use dicom_core::VR;

/// Does the record value (`None`: the archive has no such attribute; multi-valued values
/// separated by `\`) match the query value for an attribute of this VR?
pub fn matches(vr: VR, query: &str, value: Option<&str>, case: CaseMatching) -> bool {
    let query = query.trim_matches(|c: char| c == ' ' || c == '\0');
    // universal matching: an empty key (or a lone `*`) matches everything
    if query.is_empty() || query == "*" {
        return true;
    }
    let value = value.unwrap_or("").trim_matches(|c: char| c == ' ' || c == '\0');
    let values: Vec<&str> = value.split('\\').map(|v| v.trim_matches(|c: char| c == ' ' || c == '\0')).collect();
    match vr {
        VR::DA | VR::TM | VR::DT => query.split('\\').any(|q| values.iter().any(|v| range_matches(vr, q, v))),
        VR::UI => query.split('\\').any(|q| values.contains(&q.trim())),
        _ => {
            let insensitive = match case {
                CaseMatching::Sensitive => false,
                CaseMatching::PersonNamesInsensitive => vr == VR::PN,
                CaseMatching::Insensitive => true,
            };
            let fold = |s: &str| if insensitive { s.to_lowercase() } else { s.to_string() };
            query.split('\\').any(|q| {
                let q = fold(q.trim_matches(|c: char| c == ' ' || c == '\0'));
                values.iter().any(|v| {
                    let v = fold(v);
                    if wildcard_vr(vr) && (q.contains('*') || q.contains('?')) {
                        wildcard(&q, &v)
                    } else if numeric_vr(vr) {
                        numeric_equal(&q, &v)
                    } else {
                        q == v
                    }
                })
            })
        }
    }
}

fn wildcard_vr(vr: VR) -> bool {
    matches!(vr, VR::AE | VR::CS | VR::LO | VR::LT | VR::PN | VR::SH | VR::ST | VR::UC | VR::UT | VR::UR)
}

fn numeric_vr(vr: VR) -> bool {
    matches!(vr, VR::IS | VR::DS | VR::US | VR::UL | VR::SS | VR::SL)
}

fn numeric_equal(a: &str, b: &str) -> bool {
    match (a.trim().parse::<f64>(), b.trim().parse::<f64>()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a.trim() == b.trim(),
    }
}

/// `*` any run (also empty), `?` exactly one character. Iterative with one backtrack
/// point: linear in practice, no recursion a hostile pattern could blow up.
pub fn wildcard(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// A DA/TM/DT value or range (`a-b`, `-b`, `a-`, inclusive) against one record value.
fn range_matches(vr: VR, query: &str, value: &str) -> bool {
    let query = query.trim();
    if value.is_empty() {
        return false;
    }
    let Some(v) = normalize(vr, value, false) else { return false };
    match split_range(vr, query) {
        Some((lo, hi)) => {
            let lo_ok = lo.is_empty() || normalize(vr, lo, false).is_some_and(|lo| v >= lo);
            let hi_ok = hi.is_empty() || normalize(vr, hi, true).is_some_and(|hi| v <= hi);
            lo_ok && hi_ok && !(lo.is_empty() && hi.is_empty())
        }
        None => {
            // a single DA/DT value matches that day (or time) exactly; a partial TM/DT
            // value covers its whole span
            match (normalize(vr, query, false), normalize(vr, query, true)) {
                (Some(lo), Some(hi)) => v >= lo && v <= hi,
                _ => false,
            }
        }
    }
}

/// Splits `a-b`; a DT's `-` inside a UTC offset (`...-0500`) is not a range separator,
/// and a DT range's halves are at least 4 digits long.
fn split_range(vr: VR, query: &str) -> Option<(&str, &str)> {
    if vr != VR::DT {
        return query.split_once('-');
    }
    let bytes = query.as_bytes();
    (0..bytes.len()).filter(|&i| bytes[i] == b'-').find_map(|i| {
        let (lo, hi) = (&query[..i], &query[i + 1..]);
        let lo_ok = lo.is_empty() || lo.len() >= 4;
        let hi_ok = hi.is_empty() || hi.len() >= 4;
        // an offset is exactly 4 digits after the sign at the end of a longer value
        let is_offset = lo.len() > 8 && hi.len() == 4;
        (lo_ok && hi_ok && !is_offset).then_some((lo, hi))
    })
}

/// A comparable fixed-width form: DA `YYYYMMDD`, TM `HHMMSS.ffffff`, DT
/// `YYYYMMDDHHMMSS.ffffff`; missing trailing components are the lowest value or, for an
/// upper bound, the highest.
fn normalize(vr: VR, text: &str, upper: bool) -> Option<String> {
    let text = text.trim();
    let (main, fraction) = match text.split_once('.') {
        Some((m, f)) if vr != VR::DA => (m, f),
        _ => (text, ""),
    };
    // legacy `YYYY.MM.DD` dates and `HH:MM:SS` times
    let main: String = main.chars().filter(|c| *c != ':' && *c != '.').collect();
    // a DT's UTC offset is ignored
    let main = if vr == VR::DT { main.split(['+', '-']).next().unwrap_or("").to_string() } else { main };
    let fraction: String = fraction.chars().take_while(|c| c.is_ascii_digit()).collect();
    if main.is_empty() || !main.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let width = match vr {
        VR::DA => 8,
        VR::TM => 6,
        _ => 14,
    };
    if main.len() > width {
        return None;
    }
    let fill = |template: &str| -> String {
        let mut s = main.clone();
        s.push_str(&template[main.len()..]);
        s
    };
    let padded = match (vr, upper) {
        (VR::DA, false) => fill("00000101"),
        (VR::DA, true) => fill("99991231"),
        (VR::TM, false) => fill("000000"),
        (VR::TM, true) => fill("235959"),
        (_, false) => fill("00000101000000"),
        (_, true) => fill("99991231235959"),
    };
    if vr == VR::DA {
        return Some(padded);
    }
    let frac = if fraction.is_empty() && upper && main.len() == width {
        "999999".to_string()
    } else if fraction.is_empty() {
        if upper { "999999".into() } else { "000000".into() }
    } else {
        let mut f = fraction.chars().take(6).collect::<String>();
        while f.len() < 6 {
            f.push(if upper { '9' } else { '0' });
        }
        f
    };
    Some(format!("{padded}.{frac}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    const S: CaseMatching = CaseMatching::Sensitive;

    #[test]
    fn universal_single_and_lists() {
        assert!(matches(VR::LO, "", Some("X"), S));
        assert!(matches(VR::LO, "", None, S));
        assert!(matches(VR::LO, "X", Some("X "), S));
        assert!(!matches(VR::LO, "X", Some("Y"), S));
        assert!(matches(VR::UI, "1.2\\1.3", Some("1.3"), S));
        assert!(!matches(VR::UI, "1.2\\1.3", Some("1.4"), S));
        assert!(matches(VR::CS, "CT\\MR", Some("MR"), S));
        assert!(matches(VR::CS, "MR", Some("CT\\MR"), S));
        assert!(!matches(VR::CS, "US", Some("CT\\MR"), S));
    }

    #[test]
    fn wildcards_and_case() {
        assert!(matches(VR::PN, "DOE*", Some("DOE^JANE"), S));
        assert!(!matches(VR::PN, "doe*", Some("DOE^JANE"), S));
        assert!(matches(VR::PN, "doe*", Some("DOE^JANE"), CaseMatching::PersonNamesInsensitive));
        assert!(!matches(VR::LO, "abc", Some("ABC"), CaseMatching::PersonNamesInsensitive));
        assert!(matches(VR::LO, "abc", Some("ABC"), CaseMatching::Insensitive));
        assert!(matches(VR::LO, "A?C", Some("ABC"), S));
        assert!(!matches(VR::LO, "A?C", Some("ABBC"), S));
        assert!(matches(VR::LO, "*B*", Some("ABC"), S));
        assert!(wildcard("*a*a*a*a*a*b", &"a".repeat(200)) == false);
    }

    #[test]
    fn date_time_ranges() {
        assert!(matches(VR::DA, "20200101-20201231", Some("20200615"), S));
        assert!(!matches(VR::DA, "20200101-20201231", Some("20210101"), S));
        assert!(matches(VR::DA, "-20200101", Some("20200101"), S));
        assert!(matches(VR::DA, "20200101-", Some("20250101"), S));
        assert!(matches(VR::DA, "20200101", Some("20200101"), S));
        assert!(!matches(VR::DA, "20200101", Some("20200102"), S));
        assert!(matches(VR::TM, "100000-110000", Some("101500"), S));
        assert!(!matches(VR::TM, "100000-101000", Some("101500"), S));
        assert!(matches(VR::TM, "10-", Some("101500.25"), S));
        assert!(matches(VR::DT, "20200101-20200102", Some("20200101120000"), S));
        assert!(matches(VR::DT, "20200101120000-0500", Some("20200101120000-0500"), S));
        assert!(!matches(VR::DA, "garbage", Some("20200101"), S));
    }
}
