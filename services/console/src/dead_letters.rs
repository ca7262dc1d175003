//! Dead letters (messages the intake could not take) and their replay through the intake
//! they came from. Payloads are messages about patients: shown to operators only.

use crate::Console;
use crate::guard::{Act, CsrfOnly};
use crate::login::notice;
use crate::render;
use crate::session::Session;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use priorfetch_api::actions;
use priorfetch_api::filters::DEFAULT_LIMIT;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Default, Deserialize)]
pub struct LetterParams {
    limit: Option<String>,
}

#[derive(Serialize)]
struct View {
    letters: Vec<Value>,
}

/// `GET /ui/dead-letters`.
pub async fn page(State(console): State<Console>, session: Session, Query(q): Query<LetterParams>) -> Response {
    let limit = q
        .limit
        .and_then(|l| l.trim().parse::<u64>().ok())
        .unwrap_or(DEFAULT_LIMIT)
        .clamp(1, priorfetch_api::filters::MAX_LIMIT);
    match console.store.list_dead_letters(limit).await {
        Ok(letters) => {
            let phi = session.caller.sees_phi();
            let letters = letters.iter().map(|d| priorfetch_api::views::dead_letter(d, phi)).collect();
            render::page("dead_letters.html", "dead_letters", &session, View { letters })
        }
        Err(e) => render::unavailable(e, &session),
    }
}

/// `POST /ui/dead-letters/{id}/replay`.
pub async fn replay(State(console): State<Console>, Path(id): Path<i64>, act: Act<CsrfOnly>) -> Response {
    let session = act.session;
    let (ok, text) = match actions::replay(&console.store, &console.config, &session.caller.name, id).await {
        Ok(r) => {
            let what = match (r.exam_id, &r.reason) {
                (Some(exam), _) => format!("{} (exam {exam})", r.outcome),
                (None, Some(reason)) => format!("{}: {reason}", r.outcome),
                (None, None) => r.outcome.to_string(),
            };
            (r.outcome != "invalid", format!("Dead letter {id} replayed: {what}."))
        }
        Err(e) => (false, format!("Dead letter {id} was not replayed: {e}")),
    };
    notice(&console, &session.id, ok, text);
    Redirect::to("/ui/dead-letters").into_response()
}
