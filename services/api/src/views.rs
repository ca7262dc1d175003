//! The JSON the API answers (and the CLI's `--json` prints): one function per object, so
//! the schemas documented in docs/operations.md ("Operator API") have one source.

use priorfetch_store::{AuditRecord, DeadLetter, ExamRecord, Job};
use serde_json::{Value, json};

/// Keys of recorded C-FIND/QIDO queries and payloads that name the patient: redacted for
/// viewers wherever they appear in an exam's plan.
const PHI_KEYS: [&str; 6] =
    ["PatientID", "PatientName", "PatientBirthDate", "OtherPatientIDs", "IssuerOfPatientID", "patient_id"];

/// `0xA702 (out of resources: unable to perform sub-operations)`.
pub fn status_text(status: i32) -> String {
    let code = status as u16;
    format!("0x{code:04X} ({})", priorfetch_dimse::error::status_meaning(code))
}

/// An exam. With `phi` the patient's identifiers are given; without, each is replaced
/// by its issuer and a short hash (enough to tell two patients apart, not to name one).
/// Names and birth dates are never stored, so never shown.
pub fn exam(record: &ExamRecord, phi: bool) -> Value {
    let e = &record.exam;
    let identifiers: Vec<Value> = e
        .identifiers
        .iter()
        .map(|i| {
            if phi {
                json!({ "id": i.id, "issuer": i.issuer })
            } else {
                json!({ "id": null, "issuer": i.issuer, "id_hash": priorfetch_events::short_hash(&i.id) })
            }
        })
        .collect();
    json!({
        "id": e.id,
        "event_key": record.event_key,
        "accession_number": e.accession_number,
        "study_instance_uid": e.study_instance_uid,
        "scheduled_at": e.scheduled_at,
        "modality": e.modality,
        "body_part": e.body_part,
        "procedure_code": e.procedure_code,
        "procedure_text": e.procedure_text,
        "priority": e.priority,
        "status": record.status,
        "patient": {
            "id": if phi { json!(e.patient_id) } else { Value::Null },
            "issuer": e.issuer,
            "identifiers": identifiers,
            "redacted": !phi,
        },
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    })
}

/// A retrieve job; `last_status` stays the number, `last_status_text` spells it.
pub fn job(j: &Job) -> Value {
    json!({
        "id": j.id, "exam_id": j.exam_id, "study_instance_uid": j.study_instance_uid,
        "archive": j.archive, "method": j.method, "destination": j.destination, "state": j.state,
        "priority": j.priority, "not_before": j.not_before, "deadline": j.deadline,
        "attempt": j.attempt, "max_attempts": j.max_attempts, "remaining": j.counts.remaining,
        "completed": j.counts.completed, "failed": j.counts.failed, "warning": j.counts.warning,
        "expected_instances": j.expected_instances, "last_status": j.last_status,
        "last_status_text": j.last_status.map(status_text),
        "last_error": j.last_error, "errors": j.errors, "worker": j.worker,
        "leased_until": j.leased_until, "created_at": j.created_at, "updated_at": j.updated_at,
        "finished_at": j.finished_at, "trace_parent": j.trace_parent,
    })
}

/// A dead letter. Its payload is the message itself (PHI): given as text to operators
/// only; viewers get its size.
pub fn dead_letter(d: &DeadLetter, phi: bool) -> Value {
    json!({
        "id": d.id,
        "source": d.source,
        "reason": d.reason,
        "received_at": d.received_at,
        "payload_bytes": d.payload.len(),
        "payload": if phi { json!(String::from_utf8_lossy(&d.payload)) } else { Value::Null },
        "replayed_at": d.replayed_at,
        "replay_outcome": d.replay_outcome,
    })
}

pub fn audit(a: &AuditRecord) -> Value {
    json!({ "id": a.id, "at": a.at, "actor": a.actor, "action": a.action, "target": a.target, "outcome": a.outcome })
}

/// Every value under a [`PHI_KEYS`] key, at any depth, becomes `"[redacted]"`.
pub fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if PHI_KEYS.contains(&key.as_str()) && !v.is_null() {
                    *v = json!("[redacted]");
                } else {
                    redact(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn statuses_read_as_hex_with_their_meaning() {
        assert_eq!(super::status_text(0xA702), "0xA702 (out of resources: unable to perform sub-operations)");
        assert_eq!(super::status_text(0xA801), "0xA801 (move destination unknown)");
    }

    #[test]
    fn redaction_reaches_nested_query_keys() {
        let mut v = serde_json::json!({"cfind": {"lta": [{"keys": {"PatientID": "MRN1", "StudyDate": "2020"}}]}});
        super::redact(&mut v);
        assert_eq!(v["cfind"]["lta"][0]["keys"]["PatientID"], "[redacted]");
        assert_eq!(v["cfind"]["lta"][0]["keys"]["StudyDate"], "2020");
    }
}
