//! The templates (embedded at compile time; every `.html` template escapes what it
//! prints) and the helpers that turn a view's data into a page. Times are shown in the
//! server's local time zone, with its offset in the page header.

use crate::session::Session;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Local, Utc};
use minijinja::value::Serde;
use minijinja::{Environment, Value};
use serde::Serialize;
use std::sync::LazyLock;

const TEMPLATES: [(&str, &str); 9] = [
    ("base.html", include_str!("templates/base.html")),
    ("login.html", include_str!("templates/login.html")),
    ("schedule.html", include_str!("templates/schedule.html")),
    ("exam.html", include_str!("templates/exam.html")),
    ("jobs.html", include_str!("templates/jobs.html")),
    ("dead_letters.html", include_str!("templates/dead_letters.html")),
    ("archives.html", include_str!("templates/archives.html")),
    ("refusal.html", include_str!("templates/refusal.html")),
    ("macros.html", include_str!("templates/macros.html")),
];

static ENV: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    for (name, source) in TEMPLATES {
        // a template that does not parse is a build defect, caught by every test
        env.add_template(name, source).unwrap_or_else(|e| panic!("console template {name}: {e}"));
    }
    env.add_filter("when", when);
    env
});

/// `{{ t | when }}`: an RFC 3339 time (or a `chrono` one serialised) as local
/// `YYYY-MM-DD HH:MM:SS`; anything else as given, nothing for none.
fn when(value: Value) -> String {
    match value.as_str() {
        Some(text) => match DateTime::parse_from_rfc3339(text) {
            Ok(t) => local(t.with_timezone(&Utc)),
            Err(_) => text.to_string(),
        },
        None if value.is_none() || value.is_undefined() => String::new(),
        None => value.to_string(),
    }
}

/// A time as the console shows it.
pub fn local(t: DateTime<Utc>) -> String {
    t.with_timezone(&Local).format("%Y-%m-%d %H:%M:%S").to_string()
}

/// The server's UTC offset, e.g. `UTC+01:00`.
fn zone() -> String {
    format!("UTC{}", Local::now().format("%:z"))
}

/// What every page's layout needs: who is logged in, their CSRF token, the notice.
#[derive(Serialize)]
struct Frame<'a> {
    caller: &'a str,
    role: &'a str,
    may_act: bool,
    csrf: &'a str,
    notice_kind: Option<&'a str>,
    notice: Option<&'a str>,
    zone: String,
    /// The nav entry to highlight.
    nav: &'a str,
}

fn frame<'a>(session: &'a Session, nav: &'a str) -> Frame<'a> {
    Frame {
        caller: &session.caller.name,
        role: match session.caller.role {
            priorfetch_config::Role::Operator => "operator",
            priorfetch_config::Role::Viewer => "viewer",
            priorfetch_config::Role::Sender => "sender",
        },
        may_act: session.caller.may_act(),
        csrf: &session.csrf,
        notice_kind: session.notice.as_ref().map(|n| n.kind),
        notice: session.notice.as_ref().map(|n| n.text.as_str()),
        zone: zone(),
        nav,
    }
}

/// Renders page `template` for `session` with the view's `data` (under `view`).
pub fn page(template: &str, nav: &str, session: &Session, data: impl Serialize) -> Response {
    let ctx = minijinja::context! {
        frame => Value::from(Serde(frame(session, nav))),
        view => Value::from(Serde(&data)),
    };
    render(StatusCode::OK, template, ctx)
}

/// Renders `template` with `ctx` as an HTML answer of `status`.
pub fn render(status: StatusCode, template: &str, ctx: Value) -> Response {
    let rendered = ENV.get_template(template).and_then(|t| t.render(ctx));
    match rendered {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(template, error = %e, "console: template failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "the console could not render this page\n").into_response()
        }
    }
}

/// A page that says why a request was turned away (or failed), with a way back.
pub fn refusal(status: StatusCode, text: &str, session: Option<&Session>) -> Response {
    let ctx = minijinja::context! {
        status => status.as_u16(),
        reason => status.canonical_reason().unwrap_or(""),
        text => text,
        frame => session.map_or_else(|| Value::from(()), |s| Value::from(Serde(frame(s, "")))),
    };
    render(status, "refusal.html", ctx)
}

/// The database is away or refused a read: 503 with the error (no PHI in store errors).
pub fn unavailable(e: impl std::fmt::Display, session: &Session) -> Response {
    tracing::warn!(error = %e, "console: database error");
    refusal(StatusCode::SERVICE_UNAVAILABLE, &format!("The database did not answer: {e}"), Some(session))
}

/// `GET /ui/static/console.js`: confirm dialogs before actions (a few hundred bytes).
pub async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")],
        include_str!("templates/console.js"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_template_parses_and_escapes() {
        for (name, _) in super::TEMPLATES {
            assert!(super::ENV.get_template(name).is_ok(), "{name}");
        }
        let t = super::ENV.get_template("refusal.html").unwrap();
        let page = t.render(minijinja::context! { text => "<script>x</script>", status => 400 }).unwrap();
        assert!(page.contains("&lt;script&gt;") && !page.contains("<script>x"), "{page}");
    }
}
