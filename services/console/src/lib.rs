//! The web console on the admin server (`/ui`, issue 19): server-rendered HTML for
//! operators and viewers, with one small script (confirm dialogs) and no build step.
//! It reads and acts through the operator API's functions (`priorfetch_api`), so what it
//! shows and does is what the API shows and does, PHI rules and audit trail included.
//! How to use it: docs/operations.md, "Web console".
//!
//! Layout:
//! - `session.rs`: in-memory sessions (random 256-bit IDs, idle expiry), the cookie, the
//!   CSRF token, the failed-login throttle.
//! - `guard.rs`: the middleware that admits a session (else the login page), the
//!   extractors of POST forms (CSRF checked; actions need the operator role), security
//!   headers.
//! - `render.rs`: the template environment (templates embedded, HTML escaped) and the
//!   page helpers.
//! - `login.rs`: login form, login, logout.
//! - `schedule.rs`, `exam.rs`, `jobs.rs`, `dead_letters.rs`, `archives.rs`: one view
//!   each, with its actions.
//! - `templates/`: the pages (`base.html` holds the layout and the inline CSS) and
//!   `console.js`.
//!
//! Sessions live in this process only: behind several replicas use sticky sessions.

mod archives;
mod dead_letters;
mod exam;
mod guard;
mod jobs;
mod login;
mod render;
mod schedule;
pub mod session;

use axum::Router;
use axum::response::Redirect;
use axum::routing::{get, post};
use priorfetch_api::access::Access;
use priorfetch_config::Config;
use priorfetch_store::Store;
use session::{Sessions, Throttle};
use std::sync::Arc;

/// What every console handler shares; cheap to clone.
#[derive(Clone)]
pub(crate) struct Console {
    store: Store,
    config: Arc<Config>,
    /// The operator API's token table: a login is a token the API would accept.
    access: Access,
    sessions: Sessions,
    throttle: Throttle,
    /// Cookies get `Secure` when the admin listener speaks TLS.
    secure_cookie: bool,
    /// No `[[admin.tokens]]`: loopback callers log in as operator `loopback`, as the API
    /// admits them.
    open_loopback: bool,
}

/// The console's routes; empty when `admin.api` is off (the console is the API's face).
pub fn routes(store: Store, config: Arc<Config>) -> Router {
    if !config.admin.api {
        return Router::new();
    }
    let console = Console {
        store,
        access: Access::new(&config),
        sessions: Sessions::default(),
        throttle: Throttle::default(),
        secure_cookie: config.service.admin_tls.is_some(),
        open_loopback: config.admin.tokens.is_empty(),
        config,
    };
    let pages = Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/schedule") }))
        .route("/ui/", get(|| async { Redirect::to("/ui/schedule") }))
        .route("/ui/schedule", get(schedule::page))
        .route("/ui/exams/{key}", get(exam::page))
        .route("/ui/jobs", get(jobs::page))
        .route("/ui/jobs/retry", post(jobs::bulk_retry))
        .route("/ui/jobs/{id}/retry", post(jobs::retry))
        .route("/ui/jobs/{id}/cancel", post(jobs::cancel))
        .route("/ui/jobs/{id}/reschedule", post(jobs::reschedule))
        .route("/ui/dead-letters", get(dead_letters::page))
        .route("/ui/dead-letters/{id}/replay", post(dead_letters::replay))
        .route("/ui/archives", get(archives::page))
        .route("/ui/logout", post(login::logout))
        .layer(axum::middleware::from_fn_with_state(console.clone(), guard::require_session));
    Router::new()
        .route("/ui/login", get(login::form).post(login::login))
        .route("/ui/static/console.js", get(render::script))
        .merge(pages)
        .layer(axum::middleware::from_fn(guard::security_headers))
        .with_state(console)
}
