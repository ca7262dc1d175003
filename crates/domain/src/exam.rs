//! The scheduled exam, reduced to what planning needs.

use crate::job::JobState;
use chrono::{DateTime, Utc};

/// routine | urgent | stat: the one priority from intake to queue; anything else counts
/// as routine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExamPriority {
    Stat,
    Urgent,
    Routine,
}

impl ExamPriority {
    /// The stored and logged form.
    pub fn as_str(self) -> &'static str {
        match self {
            ExamPriority::Routine => "routine",
            ExamPriority::Urgent => "urgent",
            ExamPriority::Stat => "stat",
        }
    }

    /// The stored form back (`as_str`), or an event's word (`asap` is urgent).
    pub fn parse(text: &str) -> ExamPriority {
        match text.trim().to_ascii_lowercase().as_str() {
            "stat" => ExamPriority::Stat,
            "urgent" | "asap" => ExamPriority::Urgent,
            _ => ExamPriority::Routine,
        }
    }

    /// Queue priority of the exam's retrieve jobs: lower is claimed first.
    pub fn job_priority(self) -> i32 {
        match self {
            ExamPriority::Stat => 0,
            ExamPriority::Urgent => 1,
            ExamPriority::Routine => 5,
        }
    }
}

/// One identifier of the patient and the authority that assigned it: HL7 PID-3 (CX.1 and
/// CX.4.1), DICOM PatientID and IssuerOfPatientID. A patient known to several archives may
/// be filed under a different one in each. PHI: `Debug` shows only the issuer.
#[derive(Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct PatientIdentifier {
    pub id: String,
    /// The assigning authority (namespace id); `None` when the sender gave none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
}

impl std::fmt::Debug for PatientIdentifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PatientIdentifier").field("id", &"[redacted]").field("issuer", &self.issuer).finish()
    }
}

impl PatientIdentifier {
    pub fn new(id: impl Into<String>, issuer: Option<String>) -> PatientIdentifier {
        PatientIdentifier { id: id.into(), issuer }
    }

    /// Safe to send as single-value matching keys (see [`Exam::check_patient_keys`]).
    pub fn check(&self) -> Result<(), UnsafeIdentifier> {
        check_key("PatientID", &self.id)?;
        match self.issuer.as_deref() {
            Some(issuer) if !issuer.trim().is_empty() => check_key("IssuerOfPatientID", issuer),
            _ => Ok(()),
        }
    }

    /// `primary` and `others` as one list without repeats: `others` in their order, with
    /// `primary` in front when it is not among them. Every stored exam's list holds its
    /// primary identifier.
    pub fn all(primary: PatientIdentifier, others: &[PatientIdentifier]) -> Vec<PatientIdentifier> {
        let mut all: Vec<PatientIdentifier> = Vec::with_capacity(others.len() + 1);
        if !others.contains(&primary) {
            all.push(primary);
        }
        for o in others {
            if !all.contains(o) {
                all.push(o.clone());
            }
        }
        all
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Exam {
    pub id: i64,
    /// The primary identifier: the HL7 preferred issuer's (`intake.hl7.preferred_issuer`)
    /// or the first one sent. Archives without `patient_id_issuer` are queried with it.
    pub patient_id: String,
    pub issuer: Option<String>,
    /// Every identifier of the patient, the primary included (`patient_id_issuer` picks
    /// one per archive).
    pub identifiers: Vec<PatientIdentifier>,
    pub accession_number: Option<String>,
    /// The exam's own study, never a prior of itself.
    pub study_instance_uid: Option<String>,
    pub scheduled_at: Option<DateTime<Utc>>,
    pub modality: Option<String>,
    pub body_part: Option<String>,
    pub procedure_code: Option<String>,
    pub procedure_text: Option<String>,
    pub priority: ExamPriority,
}

/// Where an exam stands, from intake to the roll-up of its jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExamStatus {
    Received,
    Planning,
    Planned,
    Fetching,
    Complete,
    Partial,
    Failed,
    Cancelled,
}

impl ExamStatus {
    pub const ALL: [ExamStatus; 8] = [
        ExamStatus::Received,
        ExamStatus::Planning,
        ExamStatus::Planned,
        ExamStatus::Fetching,
        ExamStatus::Complete,
        ExamStatus::Partial,
        ExamStatus::Failed,
        ExamStatus::Cancelled,
    ];
    pub const TERMINAL: [ExamStatus; 4] =
        [ExamStatus::Complete, ExamStatus::Partial, ExamStatus::Failed, ExamStatus::Cancelled];

    /// The stored and printed form.
    pub fn as_str(self) -> &'static str {
        match self {
            ExamStatus::Received => "received",
            ExamStatus::Planning => "planning",
            ExamStatus::Planned => "planned",
            ExamStatus::Fetching => "fetching",
            ExamStatus::Complete => "complete",
            ExamStatus::Partial => "partial",
            ExamStatus::Failed => "failed",
            ExamStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<ExamStatus> {
        ExamStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        ExamStatus::TERMINAL.contains(&self)
    }

    /// The status a set of finished job states adds up to: complete when every job that
    /// was not cancelled completed (or was skipped: already at the destination), partial
    /// when some priors arrived, cancelled when all were cancelled, else failed.
    pub fn roll_up(states: &[JobState]) -> ExamStatus {
        let done = |s: &JobState| matches!(s, JobState::Completed | JobState::Skipped);
        if states.iter().all(|s| *s == JobState::Cancelled) && !states.is_empty() {
            ExamStatus::Cancelled
        } else if states.iter().filter(|s| **s != JobState::Cancelled).all(done) {
            ExamStatus::Complete
        } else if states.iter().any(|s| done(s) || *s == JobState::Partial) {
            ExamStatus::Partial
        } else {
            ExamStatus::Failed
        }
    }
}

impl std::fmt::Display for ExamStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// An exam as the database holds it: the planning view plus its intake key, where it
/// stands, and the planner's lease.
#[derive(Debug, Clone, PartialEq)]
pub struct ExamRecord {
    pub exam: Exam,
    /// The intake's idempotency key.
    pub event_key: String,
    pub status: ExamStatus,
    /// W3C traceparent of the intake span, so planner and mover traces join it.
    pub trace_parent: Option<String>,
    /// Planner lease (status = planning).
    pub leased_until: Option<DateTime<Utc>>,
    pub worker: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Why an exam's patient identifier cannot be sent as a C-FIND matching key. A C-FIND
/// treats `*` and `?` as wildcards and `\` as a list separator, so such an ID (or an empty
/// one: universal matching) matches other patients' studies. The messages never contain
/// the identifier itself (PHI).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnsafeIdentifier {
    #[error("{field} is empty: a C-FIND would match every patient; refusing to query archives")]
    Empty { field: &'static str },
    #[error(
        "{field} contains '{found}' (a C-FIND wildcard or list separator): it would match other patients' \
         studies; refusing to query archives"
    )]
    Wildcard { field: &'static str, found: char },
}

/// Characters with a matching meaning in C-FIND keys (PS3.4 C.2.2.2.4, C.2.2.2.2).
const MATCHING_CHARS: [char; 3] = ['*', '?', '\\'];

fn check_key(field: &'static str, value: &str) -> Result<(), UnsafeIdentifier> {
    if let Some(found) = value.chars().find(|c| MATCHING_CHARS.contains(c)) {
        return Err(UnsafeIdentifier::Wildcard { field, found });
    }
    if value.trim_matches(|c: char| c.is_whitespace() || c == '\0').is_empty() {
        return Err(UnsafeIdentifier::Empty { field });
    }
    Ok(())
}

impl Exam {
    /// The primary identifier (`patient_id`, `issuer`).
    pub fn primary_identifier(&self) -> PatientIdentifier {
        PatientIdentifier { id: self.patient_id.clone(), issuer: self.issuer.clone() }
    }

    /// The exam as an archive that files the patient under `identifier` knows it: the
    /// same exam with `identifier` as its patient keys.
    pub fn known_as(&self, identifier: &PatientIdentifier) -> Exam {
        Exam { patient_id: identifier.id.clone(), issuer: identifier.issuer.clone(), ..self.clone() }
    }

    /// The patient keys are safe to send as single-value matching keys: a non-empty
    /// PatientID without wildcards, and an IssuerOfPatientID (when present) without them.
    pub fn check_patient_keys(&self) -> Result<(), UnsafeIdentifier> {
        check_key("PatientID", &self.patient_id)?;
        match self.issuer.as_deref() {
            // an empty issuer is not sent at all
            Some(issuer) if !issuer.trim().is_empty() => check_key("IssuerOfPatientID", issuer),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exam(patient_id: &str, issuer: Option<&str>) -> Exam {
        Exam {
            id: 1,
            patient_id: patient_id.into(),
            issuer: issuer.map(str::to_string),
            identifiers: Vec::new(),
            accession_number: None,
            study_instance_uid: None,
            scheduled_at: None,
            modality: None,
            body_part: None,
            procedure_code: None,
            procedure_text: None,
            priority: ExamPriority::Routine,
        }
    }

    #[test]
    fn wildcards_lists_and_empty_ids_are_refused() {
        for bad in ["*", "SIM-P*", "SIM-P000?", "A\\B", "", "   ", "\0"] {
            let err = exam(bad, None).check_patient_keys().expect_err(bad);
            let text = err.to_string();
            assert!(text.contains("PatientID") && text.contains("refusing"), "{text}");
            // the message names the character, never the identifier (PHI)
            if bad.len() > 1 && !bad.trim().is_empty() && bad != "\0" {
                assert!(!text.contains(bad), "{text}");
            }
        }
        assert_eq!(
            exam("MRN1", Some("HO*SP")).check_patient_keys(),
            Err(UnsafeIdentifier::Wildcard { field: "IssuerOfPatientID", found: '*' })
        );
        assert_eq!(exam("MRN-1.2_3", Some("HOSP")).check_patient_keys(), Ok(()));
        assert_eq!(exam("MRN1", Some("  ")).check_patient_keys(), Ok(()), "an empty issuer is not sent");
        assert!(PatientIdentifier::new("A*", None).check().is_err());
        assert!(PatientIdentifier::new("A1", Some("H?".into())).check().is_err());
    }

    #[test]
    fn identifier_lists_hold_the_primary_once_and_debug_hides_ids() {
        let a = PatientIdentifier::new("A1", Some("HA".into()));
        let b = PatientIdentifier::new("B2", Some("HB".into()));
        assert_eq!(PatientIdentifier::all(a.clone(), &[b.clone(), a.clone(), b.clone()]), vec![b.clone(), a.clone()]);
        assert_eq!(PatientIdentifier::all(a.clone(), std::slice::from_ref(&b)), vec![a.clone(), b.clone()]);
        assert_eq!(PatientIdentifier::all(a.clone(), &[]), vec![a.clone()]);
        let shown = format!("{:?}", vec![a, b]);
        assert!(!shown.contains("A1") && !shown.contains("B2") && shown.contains("HB"), "{shown}");
    }
}
