//! HL7 v2 acknowledgements (original mode): MSH with the sending and receiving
//! application/facility swapped, the incoming encoding characters, processing id and
//! version; MSA with the acknowledgement code and the incoming control id (MSA-2); an ERR
//! segment naming the field for AE and AR. Built from the raw MSH, so even a message the
//! decoder refuses gets an ACK its sender can match.

use std::sync::atomic::{AtomicU64, Ordering};

/// MSA-1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckCode {
    /// Accepted (also a duplicate: it was accepted before).
    Accept,
    /// Error: the message cannot be processed; resending it will not help.
    Error,
    /// Reject: the service cannot take it now; the sender should resend.
    Reject,
}

impl AckCode {
    pub fn as_str(self) -> &'static str {
        match self {
            AckCode::Accept => "AA",
            AckCode::Error => "AE",
            AckCode::Reject => "AR",
        }
    }
}

/// What went wrong, for the ERR segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckError {
    /// HL7 position such as `PID-3` or `PID-3.1` (from the decoder), if one is to blame.
    pub field: Option<String>,
    /// HL7 table 0357 code: 100 segment sequence, 101 required field missing, 102 data
    /// type error, 200 unsupported message type, 207 application internal error.
    pub code: u16,
    pub text: String,
}

impl AckError {
    /// The 0357 code for a decoder reason code (`priorfetch_events::DecodeError::reason_code`).
    pub fn code_for(reason_code: &str) -> u16 {
        match reason_code {
            "missing_field" => 101,
            "bad_value" | "bad_date" | "bad_encoding" => 102,
            "truncated_hl7" | "unknown_format" | "empty" => 100,
            "unsupported_message" => 200,
            _ => 207,
        }
    }
}

fn code_text(code: u16) -> &'static str {
    match code {
        100 => "Segment sequence error",
        101 => "Required field missing",
        102 => "Data type error",
        200 => "Unsupported message type",
        _ => "Application internal error",
    }
}

/// The parts of an incoming MSH an acknowledgement needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub field_separator: char,
    /// MSH-2 as received (`^~\&`, or five characters from v2.7).
    pub encoding: String,
    fields: Vec<String>,
}

impl Header {
    /// The MSH of `message`, if it starts with one; otherwise standard delimiters and
    /// nothing to echo.
    pub fn parse(message: &[u8]) -> Header {
        // Only the first segment is decoded: a message may be a megabyte.
        let mut rest = message;
        while let [b'\r' | b'\n' | b' ', tail @ ..] | [0xef, 0xbb, 0xbf, tail @ ..] = rest {
            rest = tail;
        }
        let end = rest.iter().position(|b| matches!(b, b'\r' | b'\n')).unwrap_or(rest.len());
        let first = String::from_utf8_lossy(&rest[..end]);
        let mut chars = first.chars();
        let separator = match (chars.next(), chars.next(), chars.next(), chars.next()) {
            (Some('M'), Some('S'), Some('H'), Some(sep)) if !sep.is_alphanumeric() && sep != '\r' => sep,
            _ => return Header::default(),
        };
        let fields: Vec<String> = first.split(separator).map(str::to_string).collect();
        let encoding = fields.get(1).cloned().filter(|e| (2..=5).contains(&e.chars().count()));
        Header { field_separator: separator, encoding: encoding.unwrap_or_else(|| "^~\\&".into()), fields }
    }

    /// MSH-n (n ≥ 3), as received.
    pub fn field(&self, n: usize) -> &str {
        self.fields.get(n - 1).map(String::as_str).unwrap_or_default()
    }

    /// The first component of MSH-n.
    pub fn component(&self, n: usize, c: usize) -> &str {
        self.field(n).split(self.component_separator()).nth(c - 1).unwrap_or_default()
    }

    pub fn control_id(&self) -> &str {
        self.component(10, 1)
    }

    fn component_separator(&self) -> char {
        self.encoding.chars().next().unwrap_or('^')
    }

    fn subcomponent_separator(&self) -> char {
        self.encoding.chars().nth(3).unwrap_or('&')
    }

    /// MSH-12 as (major, minor, patch); v2.5 when absent or unreadable.
    fn version(&self) -> (u32, u32, u32) {
        let mut parts = self.component(12, 1).split('.').map(|p| p.parse::<u32>().ok());
        match (parts.next().flatten(), parts.next().flatten()) {
            (Some(major), Some(minor)) => (major, minor, parts.next().flatten().unwrap_or(0)),
            _ => (2, 5, 0),
        }
    }

    /// Escapes text for a field of this message (HL7 escape sequences for delimiters).
    fn escape(&self, text: &str) -> String {
        let escape_char = self.encoding.chars().nth(2).unwrap_or('\\');
        let mut out = String::with_capacity(text.len());
        for ch in text.chars() {
            let code = if ch == self.field_separator {
                Some('F')
            } else if ch == self.component_separator() {
                Some('S')
            } else if Some(ch) == self.encoding.chars().nth(1) {
                Some('R')
            } else if ch == escape_char {
                Some('E')
            } else if ch == self.subcomponent_separator() {
                Some('T')
            } else {
                None
            };
            match code {
                Some(code) => out.extend([escape_char, code, escape_char]),
                None if ch.is_control() => out.push(' '),
                None => out.push(ch),
            }
        }
        out
    }
}

impl Default for Header {
    fn default() -> Self {
        Header { field_separator: '|', encoding: "^~\\&".into(), fields: Vec::new() }
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// A control id for our ACK: unique per process run (start time + counter), ≤ 20 chars.
fn control_id() -> String {
    static START: std::sync::LazyLock<u64> =
        std::sync::LazyLock::new(|| chrono::Utc::now().timestamp_millis().unsigned_abs() % 1_000_000_000_000);
    format!("PF{}{:06}", *START, NEXT_ID.fetch_add(1, Ordering::Relaxed) % 1_000_000)
}

/// The acknowledgement of a message with header `h`.
pub fn build(h: &Header, code: AckCode, error: Option<&AckError>) -> String {
    let f = h.field_separator;
    let c = h.component_separator();
    let version = h.version();
    let trigger = h.component(9, 2);
    // MSH-9.3 (message structure) exists from v2.3.1 on.
    let message_type = if version >= (2, 3, 1) { format!("ACK{c}{trigger}{c}ACK") } else { format!("ACK{c}{trigger}") };
    let now = chrono::Local::now().format("%Y%m%d%H%M%S%z");
    let processing_id = match h.field(11) {
        "" => "P",
        given => given,
    };
    let version_field = match h.field(12) {
        "" => "2.5",
        given => given,
    };
    let msh = [
        "MSH",
        &h.encoding,
        h.field(5),
        h.field(6),
        h.field(3),
        h.field(4),
        &now.to_string(),
        "",
        &message_type,
        &control_id(),
        processing_id,
        version_field,
    ]
    .join(&f.to_string());
    let text = error.map(|e| h.escape(&e.text)).unwrap_or_default();
    let mut msa = format!("MSA{f}{}{f}{}", code.as_str(), h.control_id());
    if !text.is_empty() {
        // MSA-3 (text message) is withdrawn in v2.5 but still read by many engines.
        msa.push_str(&format!("{f}{text}"));
    }
    let mut segments = vec![msh, msa];
    if let Some(e) = error {
        segments.push(err_segment(h, e, version));
    }
    let mut out = segments.join("\r");
    out.push('\r');
    out
}

/// ERR: ERR-2/3/4 (error location, HL7 error code, severity) and ERR-8 (user message)
/// from v2.5; ERR-1 (error code and location) before it.
fn err_segment(h: &Header, e: &AckError, version: (u32, u32, u32)) -> String {
    let (f, c, s) = (h.field_separator, h.component_separator(), h.subcomponent_separator());
    let location = e.field.as_deref().and_then(location);
    let text = h.escape(&e.text);
    if version >= (2, 5, 0) {
        let erl = location
            .map(|(segment, field, component)| match component {
                Some(component) => format!("{segment}{c}1{c}{field}{c}1{c}{component}"),
                None => format!("{segment}{c}1{c}{field}"),
            })
            .unwrap_or_default();
        format!("ERR{f}{f}{erl}{f}{}{c}{}{c}HL70357{f}E{f}{f}{f}{f}{text}", e.code, code_text(e.code))
    } else {
        let (segment, field) = location.map(|(s, f, _)| (s, f.to_string())).unwrap_or_default();
        format!("ERR{f}{segment}{c}1{c}{field}{c}{}{s}{}{s}HL70357", e.code, code_text(e.code))
    }
}

/// `PID-3.1` as (`PID`, 3, Some(1)); the first of a list like `OBR-3, ORC-3`.
fn location(field: &str) -> Option<(String, u32, Option<u32>)> {
    let first = field.split([',', ' ']).next()?;
    let (segment, position) = first.split_once('-')?;
    if segment.len() != 3 || !segment.chars().all(|ch| ch.is_ascii_uppercase() || ch.is_ascii_digit()) {
        return None;
    }
    let mut numbers = position.split('.');
    let field_number = numbers.next()?.parse().ok()?;
    let component = numbers.next().and_then(|n| n.parse().ok());
    Some((segment.to_string(), field_number, component))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORM: &str = "MSH|^~\\&|RIS|HOSP|PACS|RAD|20261205083000||ORM^O01^ORM_O01|CTL-42|P|2.5.1\rPID|||123^^^HOSP\r";

    fn segments(ack: &str) -> Vec<Vec<String>> {
        ack.trim_end_matches('\r').split('\r').map(|s| s.split('|').map(str::to_string).collect()).collect()
    }

    #[test]
    fn accept_swaps_the_parties_and_echoes_the_control_id() {
        let ack = build(&Header::parse(ORM.as_bytes()), AckCode::Accept, None);
        let s = segments(&ack);
        assert_eq!(&s[0][2..6], ["PACS", "RAD", "RIS", "HOSP"]);
        assert_eq!(s[0][8], "ACK^O01^ACK");
        assert_eq!((s[0][10].as_str(), s[0][11].as_str()), ("P", "2.5.1"));
        assert_eq!(s[1], ["MSA", "AA", "CTL-42"]);
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn error_names_the_field_in_err_and_escapes_delimiters() {
        let error = AckError { field: Some("PID-3".into()), code: 101, text: "PID-3: patient id | missing".into() };
        let ack = build(&Header::parse(ORM.as_bytes()), AckCode::Error, Some(&error));
        let s = segments(&ack);
        assert_eq!(s[1][1], "AE");
        assert_eq!(s[2][2], "PID^1^3");
        assert_eq!(s[2][3], "101^Required field missing^HL70357");
        assert_eq!(s[2][4], "E");
        assert_eq!(s[2][8], "PID-3: patient id \\F\\ missing");
    }

    #[test]
    fn old_versions_and_other_delimiters_are_followed() {
        let msg = "MSH#*~\\&#RIS#H#PACS#R#2026##ORM*O01#7#T#2.3\r";
        let error = AckError { field: Some("ORC-1".into()), code: 102, text: "bad".into() };
        let ack = build(&Header::parse(msg.as_bytes()), AckCode::Error, Some(&error));
        let s: Vec<Vec<&str>> = ack.trim_end().split('\r').map(|seg| seg.split('#').collect()).collect();
        assert_eq!(s[0][1], "*~\\&");
        assert_eq!(s[0][8], "ACK*O01");
        assert_eq!(s[0][11], "2.3");
        assert_eq!(s[1][..3], ["MSA", "AE", "7"]);
        assert_eq!(s[2][1], "ORC*1*1*102&Data type error&HL70357");
    }

    #[test]
    fn a_bom_and_blank_lines_before_msh_are_skipped() {
        let header = Header::parse(format!("\u{feff}\r\n{ORM}").as_bytes());
        assert_eq!((header.control_id(), header.field(3)), ("CTL-42", "RIS"));
    }

    #[test]
    fn no_msh_still_gets_an_ack() {
        let error = AckError { field: None, code: 100, text: "not HL7".into() };
        let ack = build(&Header::parse(b"hello"), AckCode::Error, Some(&error));
        assert!(ack.starts_with("MSH|^~\\&|"), "{ack}");
        assert!(ack.contains("\rMSA|AE||not HL7\r"), "{ack}");
    }
}
