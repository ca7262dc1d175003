//! Rows to domain types and back: the only place the stored text of a state, a method or
//! a priority is read, so services never see it.

use crate::StoreError;
use crate::entity::{exam, retrieve_job};
use priorfetch_domain::{
    AttemptError, Counts, Exam, ExamPriority, ExamRecord, ExamStatus, Job, JobState, PatientIdentifier, RetrieveMethod,
};

pub(crate) fn job_of(row: retrieve_job::Model) -> Result<Job, StoreError> {
    let unreadable = |what: String| StoreError::Unreadable { table: "retrieve_jobs", id: row.id, what };
    let state = JobState::parse(&row.state).ok_or_else(|| unreadable(format!("state '{}' is unknown", row.state)))?;
    let method = RetrieveMethod::parse(&row.method)
        .ok_or_else(|| unreadable(format!("method '{}' is not move, get or wado", row.method)))?;
    // The history is ours; an entry that does not parse is kept as text rather than lost.
    let errors = match row.errors {
        serde_json::Value::Array(items) => items
            .into_iter()
            .map(|item| {
                serde_json::from_value(item.clone()).unwrap_or(AttemptError {
                    at: String::new(),
                    attempt: 0,
                    error: item.to_string(),
                })
            })
            .collect(),
        _ => Vec::new(),
    };
    let pending_instances = match row.pending_instances {
        None | Some(serde_json::Value::Null) => None,
        Some(value) => Some(
            serde_json::from_value::<Vec<String>>(value)
                .map_err(|e| unreadable(format!("pending_instances is not a list of UIDs: {e}")))?,
        ),
    };
    Ok(Job {
        id: row.id,
        exam_id: row.exam_id,
        study_instance_uid: row.study_instance_uid,
        archive: row.archive,
        method,
        destination: row.destination,
        state,
        priority: row.priority,
        not_before: row.not_before,
        deadline: row.deadline,
        attempt: row.attempt,
        max_attempts: row.max_attempts,
        counts: Counts { remaining: row.remaining, completed: row.completed, failed: row.failed, warning: row.warning },
        expected_instances: row.expected_instances,
        last_status: row.last_status,
        last_error: row.last_error,
        errors,
        leased_until: row.leased_until,
        worker: row.worker,
        created_at: row.created_at,
        updated_at: row.updated_at,
        finished_at: row.finished_at,
        pending_instances,
        received: row.received,
        trace_parent: row.trace_parent,
    })
}

pub(crate) fn jobs_of(rows: Vec<retrieve_job::Model>) -> Result<Vec<Job>, StoreError> {
    rows.into_iter().map(job_of).collect()
}

pub(crate) fn exam_of(row: exam::Model) -> Result<ExamRecord, StoreError> {
    let status = ExamStatus::parse(&row.status).ok_or_else(|| StoreError::Unreadable {
        table: "exams",
        id: row.id,
        what: format!("status '{}' is unknown", row.status),
    })?;
    let primary = PatientIdentifier::new(row.patient_id.clone(), row.issuer.clone());
    // Ours, written from a Vec; a row from before the column (NULL) has the primary only.
    let stored: Vec<PatientIdentifier> = match row.patient_ids {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(value) => serde_json::from_value(value).map_err(|e| StoreError::Unreadable {
            table: "exams",
            id: row.id,
            what: format!("patient_ids is not a list of {{id, issuer}}: {e}"),
        })?,
    };
    Ok(ExamRecord {
        exam: Exam {
            id: row.id,
            patient_id: row.patient_id,
            issuer: row.issuer,
            identifiers: PatientIdentifier::all(primary, &stored),
            accession_number: row.accession_number,
            study_instance_uid: row.study_instance_uid,
            scheduled_at: row.scheduled_at,
            modality: row.modality,
            body_part: row.body_part,
            procedure_code: row.procedure_code,
            procedure_text: row.procedure_text,
            priority: ExamPriority::parse(&row.priority),
        },
        event_key: row.event_key,
        status,
        trace_parent: row.trace_parent,
        leased_until: row.leased_until,
        worker: row.worker,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

pub(crate) fn exams_of(rows: Vec<exam::Model>) -> Result<Vec<ExamRecord>, StoreError> {
    rows.into_iter().map(exam_of).collect()
}

/// Counts grouped by a stored state, as types; a state this version does not know is
/// logged and left out rather than failing the whole count.
pub(crate) fn counts_of<T>(rows: Vec<(String, i64)>, parse: fn(&str) -> Option<T>, table: &str) -> Vec<(T, i64)> {
    let mut counts = Vec::with_capacity(rows.len());
    for (text, n) in rows {
        match parse(&text) {
            Some(state) => counts.push((state, n)),
            None => tracing::warn!(
                table,
                state = text,
                rows = n,
                "rows in a state this version does not know are not counted"
            ),
        }
    }
    counts
}
