//! Jobs with filters (state, archive, exam, a window on their last change) and the
//! operator's actions: retry, cancel or reschedule one job, and retry every job the
//! filter selects. Each action goes through `priorfetch_api::actions` (audited, logged
//! without PHI), then back to the page it came from with a notice of what it did.

use crate::Console;
use crate::guard::{Act, CsrfForm};
use crate::login::{notice, safe_next};
use crate::render;
use crate::session::Session;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use priorfetch_api::filters::JobParams;
use priorfetch_api::{actions, filters};
use priorfetch_store::JobState;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The filter as the page's form and the bulk retry's hidden fields carry it.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct JobQuery {
    #[serde(default)]
    state: String,
    #[serde(default)]
    archive: String,
    #[serde(default)]
    exam: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    limit: String,
}

impl JobQuery {
    fn params(&self) -> JobParams {
        let some = |s: &String| Some(s.trim().to_string()).filter(|s| !s.is_empty());
        JobParams {
            state: some(&self.state),
            archive: some(&self.archive),
            exam: some(&self.exam),
            since: some(&self.since),
            until: some(&self.until),
            limit: some(&self.limit),
        }
    }
}

#[derive(Serialize)]
struct View {
    filter: JobQuery,
    /// A bad filter value: which parameter, and why.
    error: Option<String>,
    jobs: Vec<Value>,
    states: Vec<&'static str>,
    archives: Vec<String>,
    /// The newest audit rows (operators only).
    audit: Vec<Value>,
    /// Where the actions of this page come back to.
    back: String,
}

/// `GET /ui/jobs`.
pub async fn page(State(console): State<Console>, session: Session, Query(filter): Query<JobQuery>) -> Response {
    let mut view = View {
        error: None,
        jobs: Vec::new(),
        states: JobState::ALL.iter().map(|s| s.as_str()).collect(),
        archives: console.config.archives.iter().map(|a| a.name.clone()).collect(),
        audit: Vec::new(),
        back: format!("/ui/jobs?{}", query_string(&filter)),
        filter,
    };
    match view.filter.params().parse(Utc::now()) {
        Ok((f, limit)) => match console.store.find_jobs(&f, limit).await {
            Ok(jobs) => view.jobs = jobs.iter().map(|j| with_hint(priorfetch_api::views::job(j))).collect(),
            Err(e) => return render::unavailable(e, &session),
        },
        Err(e) => view.error = Some(e.to_string()),
    }
    if session.caller.may_act() {
        match console.store.audit_log(10).await {
            Ok(rows) => view.audit = rows.iter().map(priorfetch_api::views::audit).collect(),
            Err(e) => return render::unavailable(e, &session),
        }
    }
    render::page("jobs.html", "jobs", &session, view)
}

fn with_hint(mut job: Value) -> Value {
    if let Some(text) = job["last_error"].as_str().map(str::to_string) {
        let (error, hint) = crate::exam::split_hint(&text);
        job["error_text"] = json!(error);
        job["hint"] = json!(hint);
    }
    job
}

/// The bulk retry's form: the page's filter and the CSRF token.
#[derive(Debug, Deserialize)]
pub struct BulkForm {
    #[serde(default)]
    csrf: String,
    #[serde(flatten)]
    filter: JobQuery,
}

impl CsrfForm for BulkForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /ui/jobs/retry`: every job the filter selects (state defaults to `failed`;
/// running jobs never) is re-queued now; back to the filter's archive and exam.
pub async fn bulk_retry(State(console): State<Console>, act: Act<BulkForm>) -> Response {
    let Act { session, form } = act;
    let mut params = form.filter.params();
    params.limit = None;
    let described = describe(&params);
    match actions::bulk_retry(&console.store, &session.caller.name, &params).await {
        Ok(n) => notice(&console, &session.id, true, format!("Re-queued {n} job(s) matching {described}.")),
        Err(e) => notice(&console, &session.id, false, format!("Bulk retry not done: {e}")),
    }
    let after = JobQuery { archive: form.filter.archive, exam: form.filter.exam, ..Default::default() };
    Redirect::to(&format!("/ui/jobs?{}", query_string(&after))).into_response()
}

fn describe(p: &JobParams) -> String {
    let mut parts = vec![format!("state={}", p.state.as_deref().unwrap_or("failed"))];
    for (key, value) in [("archive", &p.archive), ("exam", &p.exam), ("since", &p.since), ("until", &p.until)] {
        if let Some(v) = value {
            parts.push(format!("{key}={v}"));
        }
    }
    parts.join(", ")
}

/// One job's action form: CSRF token, the page to return to, and (reschedule) when.
#[derive(Debug, Deserialize)]
pub struct JobForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    back: String,
    #[serde(default)]
    at: String,
}

impl CsrfForm for JobForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /ui/jobs/{id}/retry`.
pub async fn retry(State(console): State<Console>, Path(id): Path<i64>, act: Act<JobForm>) -> Response {
    let Act { session, form } = act;
    let (ok, text) = match actions::retry(&console.store, &session.caller.name, id).await {
        Ok(true) => (true, format!("Job {id} re-queued.")),
        Ok(false) => (false, format!("Job {id} was not retried: it does not exist or is running.")),
        Err(e) => (false, format!("Job {id} was not retried: {e}")),
    };
    back(&console, &session, &form.back, ok, text)
}

/// `POST /ui/jobs/{id}/cancel`.
pub async fn cancel(State(console): State<Console>, Path(id): Path<i64>, act: Act<JobForm>) -> Response {
    let Act { session, form } = act;
    let (ok, text) = match actions::cancel(&console.store, &session.caller.name, id).await {
        Ok(true) => (true, format!("Job {id} cancelled.")),
        Ok(false) => (false, format!("Job {id} was not cancelled: it does not exist or has finished.")),
        Err(e) => (false, format!("Job {id} was not cancelled: {e}")),
    };
    back(&console, &session, &form.back, ok, text)
}

/// `POST /ui/jobs/{id}/reschedule` with `at`: `in 2h`, `2026-12-07T14:30` (server
/// time) or RFC 3339.
pub async fn reschedule(State(console): State<Console>, Path(id): Path<i64>, act: Act<JobForm>) -> Response {
    let Act { session, form } = act;
    let Some(at) = filters::parse_when(&form.at, Utc::now()) else {
        let text = format!("'{}' is not a time: write 'in 2h', '2026-12-07T14:30' or an RFC 3339 time.", form.at);
        return back(&console, &session, &form.back, false, text);
    };
    let (ok, text) = match actions::reschedule(&console.store, &session.caller.name, id, at).await {
        Ok(true) => (true, format!("Job {id} rescheduled for {}.", render::local(at))),
        Ok(false) => (false, format!("Job {id} was not rescheduled: only waiting, failed or partial jobs can be.")),
        Err(e) => (false, format!("Job {id} was not rescheduled: {e}")),
    };
    back(&console, &session, &form.back, ok, text)
}

fn back(console: &Console, session: &Session, to: &str, ok: bool, text: String) -> Response {
    notice(console, &session.id, ok, text);
    let to = if to.is_empty() { "/ui/jobs" } else { safe_next(to) };
    Redirect::to(to).into_response()
}

/// The filter's non-empty fields as a query string.
fn query_string(q: &JobQuery) -> String {
    let pairs = [
        ("state", &q.state),
        ("archive", &q.archive),
        ("exam", &q.exam),
        ("since", &q.since),
        ("until", &q.until),
        ("limit", &q.limit),
    ];
    pairs
        .iter()
        .filter(|(_, v)| !v.trim().is_empty())
        .map(|(k, v)| format!("{k}={}", encode(v.trim())))
        .collect::<Vec<_>>()
        .join("&")
}

/// Percent-encodes all but RFC 3986's unreserved characters.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_round_trip_as_query_strings() {
        let q = JobQuery {
            state: "failed".into(),
            archive: "long term".into(),
            since: "2026-12-06T10:00:00+01:00".into(),
            ..Default::default()
        };
        assert_eq!(query_string(&q), "state=failed&archive=long%20term&since=2026-12-06T10%3A00%3A00%2B01%3A00");
        assert_eq!(describe(&JobQuery::default().params()), "state=failed");
    }
}
