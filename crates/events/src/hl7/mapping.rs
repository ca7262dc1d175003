//! Where each event field sits in the message. Positions vary by site, so each is a list
//! of [`FieldPath`]s tried in order (first non-empty wins), with defaults that fit the
//! common RIS styles; `[intake.hl7]` in the config overrides them.

use super::message::Message;
use crate::error::DecodeError;
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;

/// `SEG-F[.C[.S]]`, e.g. `OBR-18`, `OBR-4.2`, `PID-3.4.1`. Parsed once, at config load.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct FieldPath {
    pub segment: String,
    pub field: usize,
    pub component: usize,
    pub subcomponent: usize,
}

impl FieldPath {
    pub fn parse(text: &str) -> Result<FieldPath, String> {
        let bad = || format!("'{text}' is not a field position like OBR-18 or OBR-4.2");
        let (segment, rest) = text.trim().split_once('-').ok_or_else(bad)?;
        if segment.len() != 3 || !segment.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()) {
            return Err(bad());
        }
        let mut numbers = rest.split('.').map(|n| n.parse::<usize>().ok().filter(|n| *n >= 1));
        let field = numbers.next().flatten().ok_or_else(bad)?;
        let component = numbers.next().map(|c| c.ok_or_else(bad)).transpose()?.unwrap_or(1);
        let subcomponent = numbers.next().map(|c| c.ok_or_else(bad)).transpose()?.unwrap_or(1);
        if numbers.next().is_some() {
            return Err(bad());
        }
        Ok(FieldPath { segment: segment.to_string(), field, component, subcomponent })
    }

    fn paths(list: &[&str]) -> Vec<FieldPath> {
        list.iter().filter_map(|p| FieldPath::parse(p).ok()).collect()
    }

    /// First non-empty repetition's value at this position.
    pub(crate) fn get(&self, message: &Message<'_>) -> Option<String> {
        let raw = message.field(&self.segment, self.field)?;
        message.repetitions(raw).into_iter().find_map(|rep| message.component(rep, self.component, self.subcomponent))
    }
}

impl Serialize for FieldPath {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl TryFrom<String> for FieldPath {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        FieldPath::parse(&value)
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.segment, self.field)?;
        if self.component > 1 || self.subcomponent > 1 {
            write!(f, ".{}", self.component)?;
        }
        if self.subcomponent > 1 {
            write!(f, ".{}", self.subcomponent)?;
        }
        Ok(())
    }
}

impl fmt::Debug for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// Site-specific HL7 positions (`[intake.hl7]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Hl7FieldMap {
    pub accession: Vec<FieldPath>,
    pub study_instance_uid: Vec<FieldPath>,
    pub scheduled_at: Vec<FieldPath>,
    pub modality: Vec<FieldPath>,
    pub body_part: Vec<FieldPath>,
    pub procedure_code: Vec<FieldPath>,
    pub procedure_text: Vec<FieldPath>,
    pub priority: Vec<FieldPath>,
    /// PID-3 repetition to use when several identifiers are sent: the one whose
    /// assigning authority (CX.4) is this; else the first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preferred_issuer: Option<String>,
    /// Offset of timestamps sent without one, e.g. "+01:00".
    pub default_utc_offset: String,
}

impl Default for Hl7FieldMap {
    fn default() -> Self {
        Hl7FieldMap {
            accession: FieldPath::paths(&["IPC-1", "OBR-18", "OBR-3", "ORC-3", "SCH-2"]),
            study_instance_uid: FieldPath::paths(&["IPC-3", "ZDS-1"]),
            scheduled_at: FieldPath::paths(&["TQ1-7", "ORC-7.4", "OBR-27.4", "OBR-36", "SCH-11.4", "AIS-4", "AIL-6"]),
            modality: FieldPath::paths(&["IPC-5", "OBR-24"]),
            body_part: Vec::new(),
            procedure_code: FieldPath::paths(&["OBR-4.1", "AIS-3.1"]),
            procedure_text: FieldPath::paths(&["OBR-4.2", "AIS-3.2"]),
            priority: FieldPath::paths(&["TQ1-9", "ORC-7.6", "OBR-27.6", "OBR-5", "SCH-11.6", "SCH-7"]),
            preferred_issuer: None,
            default_utc_offset: "+00:00".into(),
        }
    }
}

impl Hl7FieldMap {
    /// Checks what serde cannot: the offset's syntax.
    pub fn validate(&self) -> Result<(), String> {
        self.offset()
            .map(|_| ())
            .ok_or_else(|| format!("default_utc_offset: '{}' is not like +01:00", self.default_utc_offset))
    }

    pub(crate) fn offset(&self) -> Option<chrono::FixedOffset> {
        chrono::DateTime::parse_from_rfc3339(&format!("2000-01-01T00:00:00{}", self.default_utc_offset.trim()))
            .ok()
            .map(|t| *t.offset())
    }

    /// The first non-empty value of a list of positions, with the position it came from.
    pub(crate) fn first(paths: &[FieldPath], message: &Message<'_>) -> Option<(String, String)> {
        paths.iter().find_map(|p| p.get(message).map(|v| (v, p.to_string())))
    }
}

pub(crate) fn require(value: Option<String>, field: &str, what: &str) -> Result<String, DecodeError> {
    value.ok_or_else(|| DecodeError::missing(field, what))
}
