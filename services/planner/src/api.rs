//! An exam's explanation: the exam, the rule that fired, the exam inputs filled from the
//! procedure map or missing, per archive the patient identifier used (hashed) or why it
//! was skipped, the C-FIND keys sent per archive, gaps, every candidate prior with its
//! reason, and the exam's jobs. [`explain`] is what the operator API's
//! `GET /api/exams/{id or accession}` (`services/api`, which every role mounts) builds on;
//! [`routes`] is the bare route it replaced (no access control), kept for tests and tools.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use priorfetch_store::Store;

pub fn routes(store: Store) -> Router {
    Router::new().route("/api/exams/{id}", get(exam)).with_state(store)
}

/// The explanation as JSON; `jobs show` prints the same.
pub async fn explain(store: &Store, id: i64) -> Result<Option<serde_json::Value>, priorfetch_store::StoreError> {
    let Some(record) = store.exam(id).await? else { return Ok(None) };
    let e = &record.exam;
    let plan = store.exam_plan(id).await?;
    let priors = store.priors_of_exam(id).await?;
    let jobs = store.jobs_of_exam(id).await?;
    Ok(Some(serde_json::json!({
        "exam": {
            "id": e.id, "event_key": record.event_key, "accession_number": e.accession_number,
            "study_instance_uid": e.study_instance_uid, "scheduled_at": e.scheduled_at,
            "modality": e.modality, "body_part": e.body_part, "procedure_code": e.procedure_code,
            "procedure_text": e.procedure_text, "priority": e.priority, "status": record.status,
            // issuers and hashed IDs only: the identifiers are PHI
            "patient_identifiers": e.identifiers.iter().map(|i| serde_json::json!({
                "issuer": i.issuer, "id_hash": priorfetch_events::short_hash(&i.id),
            })).collect::<Vec<_>>(),
        },
        "plan": plan.map(|p| serde_json::json!({
            "rule": p.rule, "inputs": p.inputs, "archives": p.archives, "cfind": p.queries, "gaps": p.gaps,
            "attempts": p.attempts,
            "replan_at": p.replan_at, "planned_at": p.planned_at,
        })),
        "priors": priors.iter().map(|p| serde_json::json!({
            "archive": p.archive, "study_instance_uid": p.study_instance_uid, "study_date": p.study_date,
            "modalities": p.modalities, "description": p.description,
            "expected_instances": p.expected_instances, "selected": p.selected, "reason": p.reason,
        })).collect::<Vec<_>>(),
        "jobs": jobs.iter().map(|j| serde_json::json!({
            "id": j.id, "study_instance_uid": j.study_instance_uid, "archive": j.archive,
            "method": j.method, "destination": j.destination, "state": j.state, "priority": j.priority,
            "not_before": j.not_before, "deadline": j.deadline, "expected_instances": j.expected_instances,
        })).collect::<Vec<_>>(),
    })))
}

async fn exam(State(store): State<Store>, Path(id): Path<i64>) -> Response {
    match explain(&store, id).await {
        Ok(Some(v)) => Json(v).into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, format!("no exam {id}\n")).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    }
}
