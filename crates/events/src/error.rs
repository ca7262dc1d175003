/// Why a payload was rejected. Each names the field (a JSON path like `patient.id`, or an
/// HL7 position like `PID-3.1`) and the reason; [`DecodeError::reason_code`] is a short
/// stable slug for metrics and dead-letter headers.
///
/// Every variant is permanent: redelivering the same bytes gives the same error, so the
/// listener dead-letters instead of retrying.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not UTF-8 (byte offset of the first bad byte).
    #[error("payload is not UTF-8 (bad byte at offset {0})")]
    Encoding(usize),
    #[error("empty payload")]
    Empty,
    /// Neither `{` (JSON) nor `MSH` (HL7).
    #[error("payload is neither a JSON event nor HL7 v2 (no leading '{{' or 'MSH|')")]
    UnknownFormat,
    /// Not parseable as JSON at all (serde_json's message carries line and column).
    #[error("bad JSON: {}", clip_to(.0, 300))]
    BadJson(String),
    /// `what` says in words what was expected there (`patient id`, `message control id`).
    #[error("{field}: {what} missing")]
    MissingField { field: String, what: String },
    /// The reason may quote the input: it is clipped like the values below.
    #[error("{field}: {}", clip_to(.reason, 300))]
    BadValue { field: String, reason: String },
    /// `what` is `date` or `timestamp`; the value is clipped so it cannot flood a header.
    #[error("{field}: bad {what} '{}'", clip(.value))]
    BadDate { field: String, what: &'static str, value: String },
    /// A segment the message type needs is absent (or the message ends too early).
    #[error("truncated HL7: {}", clip_to(.0, 300))]
    TruncatedHl7(String),
    /// MSH-9 names a message this decoder does not map.
    #[error("MSH-9: unsupported message type {} (ORM^O01, OMI^O23, SIU^S12-S15 are)", clip(.0))]
    UnsupportedMessage(String),
}

impl DecodeError {
    pub fn reason_code(&self) -> &'static str {
        match self {
            DecodeError::Encoding(_) => "bad_encoding",
            DecodeError::Empty => "empty",
            DecodeError::UnknownFormat => "unknown_format",
            DecodeError::BadJson(_) => "bad_json",
            DecodeError::MissingField { .. } => "missing_field",
            DecodeError::BadValue { .. } => "bad_value",
            DecodeError::BadDate { .. } => "bad_date",
            DecodeError::TruncatedHl7(_) => "truncated_hl7",
            DecodeError::UnsupportedMessage(_) => "unsupported_message",
        }
    }

    pub fn field(&self) -> Option<&str> {
        match self {
            DecodeError::MissingField { field, .. } => Some(field),
            DecodeError::BadValue { field, .. } | DecodeError::BadDate { field, .. } => Some(field),
            DecodeError::UnsupportedMessage(_) => Some("MSH-9"),
            _ => None,
        }
    }

    pub(crate) fn missing(field: impl Into<String>, what: impl Into<String>) -> Self {
        DecodeError::MissingField { field: field.into(), what: what.into() }
    }

    pub(crate) fn bad_date(field: impl Into<String>, value: impl Into<String>) -> Self {
        DecodeError::BadDate { field: field.into(), what: "date", value: value.into() }
    }

    pub(crate) fn bad_timestamp(field: impl Into<String>, value: impl Into<String>) -> Self {
        DecodeError::BadDate { field: field.into(), what: "timestamp", value: value.into() }
    }

    pub(crate) fn bad(field: impl Into<String>, reason: impl Into<String>) -> Self {
        DecodeError::BadValue { field: field.into(), reason: reason.into() }
    }
}

/// Values are cut so a huge payload cannot make a huge log line or header.
fn clip(s: &str) -> String {
    clip_to(s, 64)
}

/// At most `max` characters, control characters shown as `?`: a reason goes into log
/// lines, AMQP headers and a text column, none of which may carry NUL or a 200 KB value.
pub fn clip_to(s: &str, max: usize) -> String {
    let mut out: String = s.chars().take(max).map(|c| if c.is_control() { '?' } else { c }).collect();
    if s.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}
