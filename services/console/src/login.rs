//! The login form (a token from `[[admin.tokens]]`, checked as the API checks a bearer
//! token, never kept), the session cookie it sets, and logout. Failed logins are logged
//! with the peer address (never what was typed) and throttled per address.

use crate::Console;
use crate::guard::{CsrfOnly, Peer, Posted, UrlForm};
use crate::render;
use crate::session::{self, Notice};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
pub struct NextPage {
    next: Option<String>,
}

/// `GET /ui/login`.
pub async fn form(State(console): State<Console>, Query(q): Query<NextPage>) -> Response {
    login_page(&console, StatusCode::OK, q.next.as_deref().unwrap_or("/ui/schedule"), None)
}

/// The login form, to return to `next` afterwards, with an error when a login failed.
pub fn login_page(console: &Console, status: StatusCode, next: &str, error: Option<&str>) -> Response {
    let ctx = minijinja::context! {
        next => safe_next(next),
        error => error,
        open_loopback => console.open_loopback,
    };
    render::render(status, "login.html", ctx)
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    next: String,
}

/// `POST /ui/login`: a valid viewer or operator token (or, without configured tokens, a
/// loopback caller) opens a session and goes on to `next`.
pub async fn login(State(console): State<Console>, Peer(peer): Peer, UrlForm(form): UrlForm<LoginForm>) -> Response {
    let ip = peer.map(|p| p.ip());
    let next = safe_next(&form.next);
    if !console.throttle.allows(ip) {
        tracing::warn!(peer = ?peer, "console: login refused, too many failures from this address");
        let text = "Too many failed logins from this address: wait five minutes.";
        return login_page(&console, StatusCode::TOO_MANY_REQUESTS, next, Some(text));
    }
    let admitted = if console.open_loopback {
        console.access.admit(peer, &HeaderMap::new())
    } else {
        console.access.caller_of_token(&form.token)
    };
    let caller = match admitted {
        Ok(caller) => caller,
        Err(refusal) => {
            let failures = console.throttle.failed(ip);
            tracing::warn!(peer = ?peer, status = refusal.status.as_u16(), failures, "console: login failed");
            let text = match refusal.status {
                StatusCode::FORBIDDEN if console.open_loopback => {
                    "Without configured tokens the console serves loopback callers only."
                }
                StatusCode::FORBIDDEN => {
                    "This token may only send events: the console needs a viewer or operator token."
                }
                _ => "Unknown token.",
            };
            return login_page(&console, StatusCode::UNAUTHORIZED, next, Some(text));
        }
    };
    console.throttle.succeeded(ip);
    let id = console.sessions.open(caller.clone());
    tracing::info!(caller = %caller.name, role = ?caller.role, peer = ?peer, "console: logged in");
    with_cookie(Redirect::to(next).into_response(), &session::set_cookie(&id, console.secure_cookie))
}

/// `POST /ui/logout`: the session ends here and in the browser.
pub async fn logout(State(console): State<Console>, posted: Posted<CsrfOnly>) -> Response {
    console.sessions.close(&posted.session.id);
    tracing::info!(caller = %posted.session.caller.name, "console: logged out");
    let page = login_page(&console, StatusCode::OK, "/ui/schedule", None);
    with_cookie(page, &session::clear_cookie(console.secure_cookie))
}

fn with_cookie(mut response: Response, cookie: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// Where a login may send the browser on: a console page, never another site (`//host`)
/// or the login itself.
pub(crate) fn safe_next(next: &str) -> &str {
    let inside = next == "/ui" || next.starts_with("/ui/");
    let odd = next.starts_with("//") || next.contains('\\') || next.starts_with("/ui/login") || next.contains("..");
    if inside && !odd && !next.chars().any(char::is_control) { next } else { "/ui/schedule" }
}

/// Leaves `text` as the notice of session `id`'s next page.
pub fn notice(console: &Console, id: &str, ok: bool, text: String) {
    console.sessions.notify(id, Notice { kind: if ok { "ok" } else { "error" }, text });
}

#[cfg(test)]
mod tests {
    #[test]
    fn next_stays_inside_the_console() {
        assert_eq!(super::safe_next("/ui/jobs?state=failed"), "/ui/jobs?state=failed");
        for bad in ["//evil.example/ui/", "https://evil.example", "/ui/login", "/api/jobs", "/ui/../api", "/ui/\\x"] {
            assert_eq!(super::safe_next(bad), "/ui/schedule", "{bad}");
        }
    }
}
