//! Wrong-patient defences of the planner (whatever the intake let through, and rows
//! stored before intake checked): an exam whose patient keys would match other patients
//! (wildcards, list separators, empty) is never queried, and every C-FIND match must
//! carry exactly the PatientID (and IssuerOfPatientID, when sent) that was queried.

use crate::metrics;
use priorfetch_domain::Exam;
use priorfetch_events::short_hash;
use priorfetch_store::PlanRecord;

/// The patient keys a STUDY-level C-FIND sends to one archive.
#[derive(Debug, Clone, Copy)]
pub struct Identity<'a> {
    pub patient_id: &'a str,
    /// `Some` only when sent (`query_issuer` and a non-empty issuer).
    pub issuer: Option<&'a str>,
}

/// LO values compare without their insignificant leading/trailing spaces (and NUL padding).
fn lo(value: &str) -> &str {
    value.trim_matches(|c: char| c == '\0' || c.is_whitespace())
}

impl Identity<'_> {
    /// The match belongs to the queried patient: the same PatientID exactly (a missing
    /// one cannot be verified), and the same issuer when it was sent and returned.
    pub fn admits(&self, patient_id: Option<&str>, issuer: Option<&str>) -> bool {
        let same_id = patient_id.is_some_and(|p| lo(p) == lo(self.patient_id));
        let same_issuer = match (self.issuer, issuer.map(lo).filter(|i| !i.is_empty())) {
            (Some(sent), Some(got)) => got == lo(sent),
            _ => true,
        };
        same_id && same_issuer
    }
}

/// Counts and logs (without PHI) a match of another patient that was discarded.
pub fn discarded(archive: &str, study_uid: Option<&str>, so_far: usize) {
    metrics::FOREIGN_MATCHES.with_label_values(&[archive]).inc();
    tracing::warn!(
        archive = %archive,
        study = %study_uid.map(short_hash).unwrap_or_else(|| "-".into()),
        discarded = so_far,
        "c-find match of another patient discarded (PatientID/IssuerOfPatientID differs from the query)"
    );
}

/// The plan recorded for an exam whose patient keys are unsafe to query with: no C-FIND,
/// no job, the exam fails with the reason. `None` when the keys are safe.
pub fn refusal(exam: &Exam, rule: Option<&str>) -> Option<PlanRecord> {
    let why = exam.check_patient_keys().err()?.to_string();
    tracing::warn!(exam_id = exam.id, reason = %why, "exam refused: unsafe patient identifier");
    Some(PlanRecord {
        exam_id: exam.id,
        rule: rule.map(str::to_string),
        queries: serde_json::json!({}),
        gaps: serde_json::json!({ "exam": { "error": why, "retry": false } }),
        archives: serde_json::json!({}),
        inputs: serde_json::json!([]),
        replan_at: None,
        priors: Vec::new(),
        jobs: Vec::new(),
        max_jobs: Some(0),
        refusal: Some(why),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_queried_patient_is_admitted() {
        let plain = Identity { patient_id: "SIM-P0001", issuer: None };
        assert!(plain.admits(Some("SIM-P0001"), None));
        assert!(plain.admits(Some("SIM-P0001 "), Some("OTHER")), "issuer not sent: not compared");
        assert!(!plain.admits(Some("SIM-P0002"), None));
        assert!(!plain.admits(Some("sim-p0001"), None), "exact, case included");
        assert!(!plain.admits(None, None), "a match without PatientID cannot be verified");
        let with_issuer = Identity { patient_id: "SIM-P0001", issuer: Some("HOSP") };
        assert!(with_issuer.admits(Some("SIM-P0001"), Some("HOSP")));
        assert!(with_issuer.admits(Some("SIM-P0001"), None), "archive returns no issuer");
        assert!(!with_issuer.admits(Some("SIM-P0001"), Some("SIM")));
    }
}
