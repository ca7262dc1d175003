//! The day's messages, as the hospital's systems send them: each order (`exam.scheduled`),
//! its reschedule (`exam.updated`) or cancellation (`exam.cancelled`), on the simulated
//! clock, as JSON events of the contract.

use crate::clock::Clock;
use crate::scenario::DayExam;
use pacs_sim::{StudySummary, SyntheticSpec};
use serde_json::json;
use std::collections::HashMap;

/// A modality no synthetic study has: an exam with nothing to fetch.
const NO_PRIORS_MODALITY: &str = "XA";

/// The patient's studies, by patient ID.
pub fn by_patient(population: &[StudySummary]) -> HashMap<&str, Vec<&StudySummary>> {
    let mut map: HashMap<&str, Vec<&StudySummary>> = HashMap::new();
    for s in population {
        map.entry(s.patient_id.as_str()).or_default().push(s);
    }
    for studies in map.values_mut() {
        studies.sort_by(|a, b| a.study_instance_uid.cmp(&b.study_instance_uid));
    }
    map
}

/// The exam's modality: that of one of the patient's studies, or one without priors.
pub fn modality(exam: &DayExam, studies: &HashMap<&str, Vec<&StudySummary>>) -> String {
    let patient = SyntheticSpec::patient_id(exam.patient);
    let mine = studies.get(patient.as_str()).map(Vec::as_slice).unwrap_or_default();
    match exam.like_study {
        Some(pick) if !mine.is_empty() => mine[(pick % mine.len() as u64) as usize]
            .modalities
            .first()
            .cloned()
            .unwrap_or_else(|| NO_PRIORS_MODALITY.into()),
        _ => NO_PRIORS_MODALITY.into(),
    }
}

pub fn accession(exam: &DayExam) -> String {
    format!("DAY{:06}", exam.patient + 1)
}

/// (simulated time, JSON body) of every message, in time order.
pub fn of_day(exams: &[DayExam], population: &[StudySummary], clock: &Clock) -> Vec<(f64, String)> {
    let studies = by_patient(population);
    let mut out = Vec::new();
    for exam in exams {
        let patient = json!({ "id": SyntheticSpec::patient_id(exam.patient), "issuer": "SIM" });
        let base = |kind: &str, key: &str, scheduled: Option<f64>| {
            let mut body = json!({
                "event_id": format!("day-{}-{key}", exam.patient),
                "type": kind,
                "patient": patient,
                "accession_number": accession(exam),
                "priority": exam.urgency.as_str(),
                "modality": modality(exam, &studies),
            });
            if let Some(at) = scheduled {
                body["scheduled_at"] = json!(clock.utc(at).to_rfc3339());
            }
            body.to_string()
        };
        out.push((exam.ordered_at, base("exam.scheduled", "order", Some(exam.scheduled_at))));
        if let Some((at, to)) = exam.rescheduled {
            out.push((at, base("exam.updated", "moved", Some(to))));
        }
        if let Some(at) = exam.cancelled_at {
            out.push((at, base("exam.cancelled", "cancel", None)));
        }
    }
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}
