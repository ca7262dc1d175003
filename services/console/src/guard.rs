//! Who may see and do what: every page needs a live session (else the login page is
//! answered in its place, 401); every POST form carries the session's CSRF token; an
//! action needs the operator role (a viewer's is answered 403, and the page never shows
//! a viewer the buttons). Every answer gets headers that keep pages with PHI out of
//! caches, frames and other origins.

use crate::Console;
use crate::render;
use crate::session::{self, Session};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use std::net::SocketAddr;

/// In front of every page but the login: admits the session of the cookie (a
/// [`Session`] extension for the handlers), or answers the login form.
pub async fn require_session(State(console): State<Console>, mut request: Request, next: Next) -> Response {
    let admitted = request
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(session::cookie_value)
        .and_then(|id| console.sessions.admit(id));
    match admitted {
        Some(session) => {
            request.extensions_mut().insert(session);
            next.run(request).await
        }
        None => {
            let wanted = request.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/ui/schedule");
            let next_page = if request.method() == axum::http::Method::GET { wanted } else { "/ui/schedule" };
            crate::login::login_page(&console, StatusCode::UNAUTHORIZED, next_page, None)
        }
    }
}

/// The session the guard admitted.
impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Session>().cloned().ok_or_else(|| StatusCode::UNAUTHORIZED.into_response())
    }
}

/// The caller's address, as the admin server recorded it.
pub struct Peer(pub Option<SocketAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Peer(parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0)))
    }
}

/// A POST form that names its CSRF field.
pub trait CsrfForm {
    fn csrf(&self) -> &str;
}

/// A POST form of a live session with the session's CSRF token (any role: logout).
pub struct Posted<T> {
    pub session: Session,
    pub form: T,
}

impl<S, T> FromRequest<S> for Posted<T>
where
    S: Send + Sync,
    T: DeserializeOwned + CsrfForm + Send,
{
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let session =
            request.extensions().get::<Session>().cloned().ok_or_else(|| {
                render::refusal(StatusCode::UNAUTHORIZED, "Your session has ended: log in again.", None)
            })?;
        let UrlForm(form) = UrlForm::<T>::from_request(request, state).await?;
        if !session.csrf_matches(form.csrf()) {
            tracing::warn!(caller = %session.caller.name, "console: form without this session's csrf token refused");
            let text = "This form is stale or did not come from this console: reload the page and try again.";
            return Err(render::refusal(StatusCode::FORBIDDEN, text, Some(&session)));
        }
        Ok(Posted { session, form })
    }
}

/// A [`Posted`] action: only an operator may act.
pub struct Act<T> {
    pub session: Session,
    pub form: T,
}

impl<S, T> FromRequest<S> for Act<T>
where
    S: Send + Sync,
    T: DeserializeOwned + CsrfForm + Send,
{
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let path = request.uri().path().to_string();
        let Posted { session, form } = Posted::<T>::from_request(request, state).await?;
        if !session.caller.may_act() {
            tracing::info!(caller = %session.caller.name, %path, "console: viewer may not act");
            let text = "Your role (viewer) may only read: retry, cancel, reschedule and replay need an operator.";
            return Err(render::refusal(StatusCode::FORBIDDEN, text, Some(&session)));
        }
        Ok(Act { session, form })
    }
}

/// Form bodies (`application/x-www-form-urlencoded`) are small: a few fields.
const MAX_FORM: usize = 64 * 1024;

/// A URL-encoded form body of at most [`MAX_FORM`] bytes.
pub struct UrlForm<T>(pub T);

impl<S, T> FromRequest<S> for UrlForm<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = Response;

    async fn from_request(request: Request, _: &S) -> Result<Self, Self::Rejection> {
        let bad = |text: String| render::refusal(StatusCode::BAD_REQUEST, &text, None);
        let bytes = axum::body::to_bytes(request.into_body(), MAX_FORM)
            .await
            .map_err(|_| bad(format!("The form is not readable or longer than {MAX_FORM} bytes.")))?;
        serde_urlencoded::from_bytes(&bytes).map(UrlForm).map_err(|e| bad(format!("The form was not understood: {e}")))
    }
}

/// A form with nothing but its CSRF token (logout, one job's retry or cancel).
#[derive(Debug, serde::Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    pub csrf: String,
}

impl CsrfForm for CsrfOnly {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// Pages carry PHI: not cached, not framed, no referrer; scripts and forms only from here.
pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let set = [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; img-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ];
    for (name, value) in set {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}
