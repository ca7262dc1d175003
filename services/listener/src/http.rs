//! HTTP intake: `POST /api/events` answers 202 after the commit, 400 with the reason for
//! invalid input (also kept as a dead letter), 503 when the database is unavailable.

use crate::intake::{Intake, Verdict};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::post;

/// Payloads above this are refused (413) before decoding.
const MAX_BODY: usize = 1024 * 1024;

pub fn routes(intake: Intake) -> Router {
    Router::new()
        .route("/api/events", post(post_event))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(intake)
}

async fn post_event(State(intake): State<Intake>, body: Bytes) -> impl IntoResponse {
    match intake.process(&[body.as_ref()]).await {
        Ok(verdicts) => match verdicts.into_iter().next() {
            Some(Verdict::Invalid { code, reason }) => {
                (StatusCode::BAD_REQUEST, Json(serde_json::json!({ "error": reason, "code": code })))
            }
            Some(verdict) => {
                let exam_id = match verdict {
                    Verdict::Accepted(id) | Verdict::Duplicate(id) => Some(id),
                    _ => None,
                };
                (StatusCode::ACCEPTED, Json(serde_json::json!({ "outcome": verdict.outcome(), "exam_id": exam_id })))
            }
            None => (StatusCode::INTERNAL_SERVER_ERROR, Json(serde_json::json!({ "error": "no verdict" }))),
        },
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({ "error": e.to_string() }))),
    }
}
