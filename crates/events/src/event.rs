use chrono::{DateTime, FixedOffset, NaiveDate};
use priorfetch_domain::ExamPriority;
pub use priorfetch_domain::PatientIdentifier;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Scheduled,
    Updated,
    Cancelled,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Scheduled => "exam.scheduled",
            EventKind::Updated => "exam.updated",
            EventKind::Cancelled => "exam.cancelled",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Hl7,
}

/// PHI: never in logs. `Debug` shows only whether each part is present (and issuers).
#[derive(Clone, PartialEq, Eq)]
pub struct Patient {
    /// The primary identifier: HL7 the preferred issuer's PID-3 repetition (else the
    /// first); JSON `patient.id` (else the first of `patient.identifiers`).
    pub id: String,
    pub issuer: Option<String>,
    /// Every identifier sent, the primary included, in message order without repeats:
    /// each PID-3 repetition with its assigning authority (PID-3.4.1), JSON
    /// `patient.identifiers`, worklist PatientID with IssuerOfPatientID and Other Patient
    /// IDs. Archives with `patient_id_issuer` are queried with the one of their issuer.
    pub identifiers: Vec<PatientIdentifier>,
    pub name: Option<String>,
    pub birth_date: Option<NaiveDate>,
}

impl fmt::Debug for Patient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Patient")
            .field("id", &"[redacted]")
            .field("issuer", &self.issuer)
            .field("identifiers", &self.identifiers)
            .field("name", &self.name.as_ref().map(|_| "[redacted]"))
            .field("birth_date", &self.birth_date.map(|_| "[redacted]"))
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Procedure {
    pub code: Option<String>,
    pub text: Option<String>,
}

/// A decoded scheduled-exam event.
#[derive(Clone, PartialEq, Eq)]
pub struct ExamEvent {
    /// Idempotency key: `json:<event_id>` or `hl7:<source>:<MSH-10>`.
    pub event_key: String,
    pub kind: EventKind,
    pub patient: Patient,
    pub accession_number: Option<String>,
    pub study_instance_uid: Option<String>,
    /// Required except on cancel events.
    pub scheduled_at: Option<DateTime<FixedOffset>>,
    pub priority: ExamPriority,
    pub modality: Option<String>,
    pub body_part: Option<String>,
    pub procedure: Option<Procedure>,
    pub format: Format,
    /// `exam.scheduled`, or the HL7 type such as `ORM^O01`.
    pub message_type: String,
}

impl fmt::Debug for ExamEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExamEvent")
            .field("event_key", &self.event_key)
            .field("kind", &self.kind)
            .field("patient", &self.patient)
            .field("accession", &self.accession_number.as_deref().map(short_hash))
            .field("study_instance_uid", &self.study_instance_uid.as_deref().map(short_hash))
            .field("scheduled_at", &self.scheduled_at)
            .field("priority", &self.priority)
            .field("modality", &self.modality)
            .field("message_type", &self.message_type)
            .finish()
    }
}

impl ExamEvent {
    /// A one-line summary safe for info-level logs: no patient data, the accession hashed
    /// (it identifies a patient's exam). The event key is kept: it is the producer's event
    /// id or MSH-10 control id, and operators need it to find the message upstream.
    pub fn redacted_summary(&self) -> String {
        format!(
            "{} {} {} accession#{} modality={} priority={}",
            self.event_key,
            self.message_type,
            self.kind.as_str(),
            self.accession_number.as_deref().map(short_hash).unwrap_or_else(|| "-".into()),
            self.modality.as_deref().unwrap_or("-"),
            self.priority.as_str()
        )
    }
}

/// FNV-1a, 32 bits in hex: a stable short token to correlate identifiers in logs
/// without printing them.
pub fn short_hash(value: &str) -> String {
    let mut h: u32 = 0x811c9dc5;
    for b in value.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x01000193);
    }
    format!("{h:08x}")
}
