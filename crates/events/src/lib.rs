//! Decoding of scheduled-exam events: the JSON event of docs/architecture.md and raw HL7 v2
//! (ORM^O01, OMI^O23, SIU^S12..S15), detected by a leading `MSH|`. Pure code, no I/O.
//!
//! Layout:
//! - `event.rs`: [`ExamEvent`] and its parts; `Debug` redacts PHI.
//! - `error.rs`: [`DecodeError`], each naming the field and the reason.
//! - `json.rs`: the JSON event.
//! - `hl7/`: `message.rs` (delimiters, segments, escapes), `timestamp.rs` (DTM with zones),
//!   `mapping.rs` (message types to events; [`Hl7FieldMap`] holds the site-specific positions).
//! - `validate.rs`: the bounds every decoded event must keep (lengths, characters, wildcards,
//!   date ranges), whatever its format.
//!
//! Nothing here panics on input: every byte sequence yields an event or an error.

mod error;
mod event;
mod hl7;
mod json;
mod validate;

pub use error::{DecodeError, clip_to};
pub use event::{EventKind, ExamEvent, Format, Patient, PatientIdentifier, Procedure, short_hash};
pub use hl7::mapping::{FieldPath, Hl7FieldMap};
pub use priorfetch_domain::ExamPriority;
pub use validate::{MATCH_KEY_FORBIDDEN, validate};

/// How to decode: the source name goes into HL7 event keys (MSH-10 is unique only per
/// sending system and channel), the field map into HL7 mapping.
#[derive(Debug, Clone, Default)]
pub struct DecodeOptions {
    pub source: String,
    pub hl7: Hl7FieldMap,
    /// HL7 keys also carry the sending application and facility (MSH-3, MSH-4):
    /// `hl7:<source>:<MSH-3>^<MSH-4>:<MSH-10>`. For listeners that many senders share.
    pub sender_in_key: bool,
}

/// Decodes one message payload.
pub fn decode(payload: &[u8], options: &DecodeOptions) -> Result<ExamEvent, DecodeError> {
    let text = std::str::from_utf8(payload).map_err(|e| DecodeError::Encoding(e.valid_up_to()))?;
    let body = strip_framing(text);
    let event = if body.starts_with("MSH") {
        hl7::decode(body, options)?
    } else if body.starts_with('{') {
        json::decode(body)?
    } else if body.is_empty() {
        return Err(DecodeError::Empty);
    } else {
        return Err(DecodeError::UnknownFormat);
    };
    validate(&event)?;
    Ok(event)
}

/// Strips a UTF-8 BOM, MLLP framing (0x0B ... 0x1C 0x0D) and surrounding white space.
fn strip_framing(text: &str) -> &str {
    let t = text.trim_start_matches('\u{feff}').trim_start_matches(['\u{0b}', ' ', '\t', '\r', '\n']);
    t.trim_end_matches(['\u{1c}', '\r', '\n', ' ', '\t'])
}
