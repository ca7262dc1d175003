//! The operator API on the admin server (issue 19): what the console and scripts read and
//! do. Schemas: docs/operations.md, "Operator API".
//!
//! - `access.rs`: bearer tokens and roles (viewer reads without PHI, operator reads and
//!   acts), loopback-only without tokens.
//! - `filters.rs`: query parameters, the bulk retry body and CLI filters, parsed once.
//! - `views.rs`: the JSON of exams (PHI redacted for viewers), jobs (statuses spelled
//!   `0xA702 (...)`), dead letters and audit rows.
//! - `actions.rs`: retry, bulk retry, cancel, dead-letter replay; each audited and logged
//!   (the CLI calls the same functions).
//!
//! Routes (all behind [`access::guard`]): `GET /api/exams`, `GET /api/exams/{id or
//! accession}`, `GET /api/jobs`, `GET /api/jobs/{id}`, `POST /api/jobs/retry`,
//! `POST /api/jobs/{id}/retry`, `POST /api/jobs/{id}/cancel`,
//! `POST /api/jobs/{id}/reschedule`, `GET /api/dead-letters`,
//! `POST /api/dead-letters/{id}/replay`, `GET /api/audit`.

pub mod access;
pub mod actions;
pub mod filters;
pub mod views;

use access::{Access, Caller};
use actions::ActionError;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use filters::{FilterError, JobParams};
use priorfetch_config::Config;
use priorfetch_store::{ExamRecord, Store, StoreError};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

#[derive(Clone)]
struct Api {
    store: Store,
    config: Arc<Config>,
}

/// The operator routes behind their guard; empty when `admin.api` is off.
pub fn routes(store: Store, config: Arc<Config>) -> Router {
    if !config.admin.api {
        return Router::new();
    }
    let access = Access::new(&config);
    Router::new()
        .route("/api/exams", get(list_exams))
        .route("/api/exams/{key}", get(show_exam))
        .route("/api/jobs", get(list_jobs))
        .route("/api/jobs/retry", post(bulk_retry))
        .route("/api/jobs/{id}", get(show_job))
        .route("/api/jobs/{id}/retry", post(retry_job))
        .route("/api/jobs/{id}/cancel", post(cancel_job))
        .route("/api/jobs/{id}/reschedule", post(reschedule_job))
        .route("/api/dead-letters", get(list_dead_letters))
        .route("/api/dead-letters/{id}/replay", post(replay_dead_letter))
        .route("/api/audit", get(list_audit))
        .layer(axum::middleware::from_fn_with_state(access, access::guard))
        .with_state(Api { store, config })
}

fn error(status: StatusCode, code: &str, message: impl std::fmt::Display) -> Response {
    (status, Json(json!({ "error": message.to_string(), "code": code }))).into_response()
}

fn bad_filter(e: FilterError) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": e.message, "code": "bad_request", "param": e.param })))
        .into_response()
}

fn unavailable(e: StoreError) -> Response {
    tracing::warn!(error = %e, "api: database error");
    error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e)
}

fn action_error(e: ActionError) -> Response {
    match e {
        ActionError::Filter(f) => bad_filter(f),
        ActionError::Store(s) => unavailable(s),
        ActionError::NoDeadLetter(_) => error(StatusCode::NOT_FOUND, "not_found", e),
        ActionError::UnknownSource { .. } => error(StatusCode::CONFLICT, "not_replayable", e),
    }
}

fn query_error(e: QueryRejection) -> Response {
    error(StatusCode::BAD_REQUEST, "bad_request", e.body_text())
}

async fn list_exams(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    params: Result<Query<filters::ExamParams>, QueryRejection>,
) -> Response {
    let Query(params) = match params {
        Ok(p) => p,
        Err(e) => return query_error(e),
    };
    let (filter, limit) = match params.parse(chrono::Utc::now()) {
        Ok(parsed) => parsed,
        Err(e) => return bad_filter(e),
    };
    if filter.patient_id.is_some() && !caller.sees_phi() {
        return error(StatusCode::FORBIDDEN, "forbidden", "searching by patient ID needs an operator token");
    }
    match api.store.find_exams(&filter, limit).await {
        Ok(exams) => {
            let exams: Vec<Value> = exams.iter().map(|e| views::exam(e, caller.sees_phi())).collect();
            Json(json!({ "exams": exams })).into_response()
        }
        Err(e) => unavailable(e),
    }
}

/// The exam `key` names: a numeric exam ID, else (or when no exam has that ID) an
/// accession number (the newest exam with it).
pub async fn exam_by_key(store: &Store, key: &str) -> Result<Option<ExamRecord>, StoreError> {
    if let Ok(id) = key.parse::<i64>()
        && let Some(exam) = store.exam(id).await?
    {
        return Ok(Some(exam));
    }
    Ok(store.exams_by_accession(key).await?.pop())
}

/// An exam with its plan (rule, inputs, queries, gaps), priors with reasons and jobs:
/// what `GET /api/exams/{key}` answers and `priorfetch exams show` prints.
pub async fn exam_detail(store: &Store, record: &ExamRecord, phi: bool) -> Result<Value, StoreError> {
    let id = record.exam.id;
    let mut detail = priorfetch_planner::api::explain(store, id).await?.unwrap_or_else(|| json!({}));
    detail["exam"] = views::exam(record, phi);
    let jobs = store.jobs_of_exam(id).await?;
    detail["jobs"] = Value::Array(jobs.iter().map(views::job).collect());
    if !phi {
        views::redact(&mut detail);
    }
    Ok(detail)
}

async fn show_exam(State(api): State<Api>, Extension(caller): Extension<Caller>, Path(key): Path<String>) -> Response {
    let record = match exam_by_key(&api.store, &key).await {
        Ok(Some(record)) => record,
        Ok(None) => return error(StatusCode::NOT_FOUND, "not_found", format!("no exam with ID or accession '{key}'")),
        Err(e) => return unavailable(e),
    };
    match exam_detail(&api.store, &record, caller.sees_phi()).await {
        Ok(detail) => Json(detail).into_response(),
        Err(e) => unavailable(e),
    }
}

async fn list_jobs(State(api): State<Api>, params: Result<Query<JobParams>, QueryRejection>) -> Response {
    let Query(params) = match params {
        Ok(p) => p,
        Err(e) => return query_error(e),
    };
    let (filter, limit) = match params.parse(chrono::Utc::now()) {
        Ok(parsed) => parsed,
        Err(e) => return bad_filter(e),
    };
    match api.store.find_jobs(&filter, limit).await {
        Ok(jobs) => Json(json!({ "jobs": jobs.iter().map(views::job).collect::<Vec<_>>() })).into_response(),
        Err(e) => unavailable(e),
    }
}

async fn show_job(State(api): State<Api>, Path(id): Path<i64>) -> Response {
    match api.store.job(id).await {
        Ok(Some(job)) => Json(views::job(&job)).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "not_found", format!("no job {id}")),
        Err(e) => unavailable(e),
    }
}

/// The bulk retry's body: `{"state": "failed", "archive": "lta", "exam": 12, "since":
/// "2026-12-05T18:00:00Z", "until": "12h"}`; every key optional, state defaults to failed.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetryBody {
    state: Option<String>,
    archive: Option<String>,
    exam: Option<i64>,
    since: Option<String>,
    until: Option<String>,
}

async fn bulk_retry(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<RetryBody>, JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", e.body_text()),
    };
    let params = JobParams {
        state: body.state,
        archive: body.archive,
        exam: body.exam.map(|e| e.to_string()),
        since: body.since,
        until: body.until,
        limit: None,
    };
    match actions::bulk_retry(&api.store, &caller.name, &params).await {
        Ok(requeued) => Json(json!({ "requeued": requeued })).into_response(),
        Err(e) => action_error(e),
    }
}

async fn retry_job(State(api): State<Api>, Extension(caller): Extension<Caller>, Path(id): Path<i64>) -> Response {
    match actions::retry(&api.store, &caller.name, id).await {
        Ok(true) => Json(json!({ "job": id, "outcome": "requeued" })).into_response(),
        Ok(false) => error(StatusCode::CONFLICT, "not_retried", format!("job {id} does not exist or is running")),
        Err(e) => action_error(e),
    }
}

async fn cancel_job(State(api): State<Api>, Extension(caller): Extension<Caller>, Path(id): Path<i64>) -> Response {
    match actions::cancel(&api.store, &caller.name, id).await {
        Ok(true) => Json(json!({ "job": id, "outcome": "cancelled" })).into_response(),
        Ok(false) => {
            error(StatusCode::CONFLICT, "not_cancelled", format!("job {id} does not exist or is already finished"))
        }
        Err(e) => action_error(e),
    }
}

/// The reschedule's body: `{"at": "in 2h"}`, `{"at": "2026-12-07T14:30:00+01:00"}` or a
/// `YYYY-MM-DDTHH:MM` in the server's time zone.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RescheduleBody {
    at: String,
}

async fn reschedule_job(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<i64>,
    body: Result<Json<RescheduleBody>, JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", e.body_text()),
    };
    let Some(at) = filters::parse_when(&body.at, chrono::Utc::now()) else {
        return bad_filter(FilterError {
            param: "at",
            message: format!("'{}' is not a time: 'in 2h', 'YYYY-MM-DDTHH:MM' or RFC 3339", body.at),
        });
    };
    match actions::reschedule(&api.store, &caller.name, id, at).await {
        Ok(true) => Json(json!({ "job": id, "outcome": "rescheduled", "not_before": at })).into_response(),
        Ok(false) => error(
            StatusCode::CONFLICT,
            "not_rescheduled",
            format!("job {id} does not exist, or is not waiting, failed or partial"),
        ),
        Err(e) => action_error(e),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitParams {
    limit: Option<String>,
}

/// The `limit` parameter of the plain lists, or the answer to a bad one.
fn limit_of(params: Result<Query<LimitParams>, QueryRejection>) -> Result<u64, Box<Response>> {
    let Query(params) = params.map_err(|e| Box::new(query_error(e)))?;
    let (_, limit) = JobParams { limit: params.limit, ..Default::default() }
        .parse(chrono::Utc::now())
        .map_err(|e| Box::new(bad_filter(e)))?;
    Ok(limit)
}

async fn list_dead_letters(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    params: Result<Query<LimitParams>, QueryRejection>,
) -> Response {
    let limit = match limit_of(params) {
        Ok(l) => l,
        Err(r) => return *r,
    };
    match api.store.list_dead_letters(limit).await {
        Ok(letters) => {
            let letters: Vec<Value> = letters.iter().map(|d| views::dead_letter(d, caller.sees_phi())).collect();
            Json(json!({ "dead_letters": letters })).into_response()
        }
        Err(e) => unavailable(e),
    }
}

async fn replay_dead_letter(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<i64>,
) -> Response {
    match actions::replay(&api.store, &api.config, &caller.name, id).await {
        Ok(r) => Json(json!({ "dead_letter": id, "outcome": r.outcome, "exam_id": r.exam_id, "reason": r.reason }))
            .into_response(),
        Err(e) => action_error(e),
    }
}

async fn list_audit(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    params: Result<Query<LimitParams>, QueryRejection>,
) -> Response {
    if !caller.may_act() {
        return error(StatusCode::FORBIDDEN, "forbidden", "the audit trail needs an operator token");
    }
    let limit = match limit_of(params) {
        Ok(l) => l,
        Err(r) => return *r,
    };
    match api.store.audit_log(limit).await {
        Ok(rows) => Json(json!({ "audit": rows.iter().map(views::audit).collect::<Vec<_>>() })).into_response(),
        Err(e) => unavailable(e),
    }
}
