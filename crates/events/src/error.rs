use std::fmt;

/// Why a payload was rejected. Each names the field (a JSON path like `patient.id`, or an
/// HL7 position like `PID-3.1`) and the reason; [`DecodeError::reason_code`] is a short
/// stable slug for metrics and dead-letter headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Not UTF-8 (byte offset of the first bad byte).
    Encoding(usize),
    Empty,
    /// Neither `{` (JSON) nor `MSH` (HL7).
    UnknownFormat,
    BadJson(String),
    MissingField(String),
    BadValue { field: String, reason: String },
    BadDate { field: String, value: String },
    TruncatedHl7(String),
    UnsupportedMessage(String),
}

impl DecodeError {
    pub fn reason_code(&self) -> &'static str {
        match self {
            DecodeError::Encoding(_) => "bad_encoding",
            DecodeError::Empty => "empty",
            DecodeError::UnknownFormat => "unknown_format",
            DecodeError::BadJson(_) => "bad_json",
            DecodeError::MissingField(_) => "missing_field",
            DecodeError::BadValue { .. } => "bad_value",
            DecodeError::BadDate { .. } => "bad_date",
            DecodeError::TruncatedHl7(_) => "truncated_hl7",
            DecodeError::UnsupportedMessage(_) => "unsupported_message",
        }
    }

    pub fn field(&self) -> Option<&str> {
        match self {
            DecodeError::MissingField(f) => Some(f),
            DecodeError::BadValue { field, .. } | DecodeError::BadDate { field, .. } => Some(field),
            DecodeError::UnsupportedMessage(_) => Some("MSH-9"),
            _ => None,
        }
    }

    pub(crate) fn missing(field: impl Into<String>) -> Self {
        DecodeError::MissingField(field.into())
    }

    pub(crate) fn bad(field: impl Into<String>, reason: impl Into<String>) -> Self {
        DecodeError::BadValue { field: field.into(), reason: reason.into() }
    }
}

/// Values are cut so a huge payload cannot make a huge log line or header.
fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(64).collect();
    if s.chars().count() > 64 {
        out.push('…');
    }
    out
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Encoding(at) => write!(f, "payload is not UTF-8 (bad byte at offset {at})"),
            DecodeError::Empty => write!(f, "empty payload"),
            DecodeError::UnknownFormat => write!(f, "payload is neither a JSON event nor HL7 v2 (no leading '{{' or 'MSH|')"),
            DecodeError::BadJson(why) => write!(f, "bad JSON: {why}"),
            DecodeError::MissingField(field) => write!(f, "{field}: required field missing or empty"),
            DecodeError::BadValue { field, reason } => write!(f, "{field}: {reason}"),
            DecodeError::BadDate { field, value } => write!(f, "{field}: bad date/time '{}'", clip(value)),
            DecodeError::TruncatedHl7(why) => write!(f, "truncated HL7: {why}"),
            DecodeError::UnsupportedMessage(kind) => {
                write!(f, "MSH-9: unsupported message type {} (ORM^O01, OMI^O23, SIU^S12-S15 are)", clip(kind))
            }
        }
    }
}

impl std::error::Error for DecodeError {}
