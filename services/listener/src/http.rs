//! HTTP intake: `POST /api/events` (who may send: `access.rs`) answers 202 after the commit, 400 naming the field for
//! invalid input (also kept as a dead letter), 503 when the database is unavailable: also
//! when it does not answer within [`INTAKE_TIMEOUT`], so a sender never hangs on a cut.
//! A W3C `traceparent` request header is continued by the exam's trace.

use crate::access::Access;
use crate::intake::{Intake, Verdict};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::post;
use serde_json::json;
use std::time::Duration;

/// Longest a sender waits for the commit before it is told to retry (503).
pub const INTAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// `POST /api/events` for loopback senders (tests, the demo): see [`routes_with`].
pub fn routes(intake: Intake) -> Router {
    routes_with(intake, Access::loopback())
}

/// `POST /api/events` behind `access` (tokens or loopback, rate limit); bodies above
/// `access.max_body` are refused (413) before decoding.
pub fn routes_with(intake: Intake, access: Access) -> Router {
    let max_body = access.max_body;
    Router::new()
        .route("/api/events", post(post_event))
        .layer(axum::middleware::from_fn_with_state(access, crate::access::guard))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(intake)
}

async fn post_event(State(intake): State<Intake>, headers: HeaderMap, body: Bytes) -> Response {
    let unavailable = |detail: String| {
        tracing::warn!(error = %detail, "http intake: database unavailable; answering 503");
        let body = json!({ "error": "database unavailable; retry later", "code": "unavailable" });
        (StatusCode::SERVICE_UNAVAILABLE, [("retry-after", "5")], Json(body)).into_response()
    };
    let traceparent = headers.get(priorfetch_telemetry::traces::TRACEPARENT).and_then(|v| v.to_str().ok());
    let (payloads, traceparents) = ([body.as_ref()], [traceparent]);
    let verdict = match tokio::time::timeout(INTAKE_TIMEOUT, intake.process_traced(&payloads, &traceparents)).await {
        Ok(Ok(verdicts)) => verdicts.into_iter().next(),
        Ok(Err(e)) => return unavailable(e.to_string()),
        Err(_) => return unavailable(format!("no answer within {INTAKE_TIMEOUT:?}")),
    };
    let (status, body) = match verdict {
        Some(Verdict::Invalid { code, field, reason }) => {
            (StatusCode::BAD_REQUEST, json!({ "error": reason, "code": code, "field": field }))
        }
        Some(verdict @ (Verdict::Accepted(id) | Verdict::Duplicate(id))) => {
            (StatusCode::ACCEPTED, json!({ "outcome": verdict.outcome(), "exam_id": id }))
        }
        Some(verdict) => (StatusCode::ACCEPTED, json!({ "outcome": verdict.outcome(), "exam_id": null })),
        None => (StatusCode::INTERNAL_SERVER_ERROR, json!({ "error": "no verdict" })),
    };
    (status, Json(body)).into_response()
}
