//! One exam (by ID or accession number): the rule that fired, per archive the identity
//! used and the C-FIND/QIDO keys sent with their outcome, every candidate prior with the
//! reason it was chosen or skipped, and each job with its attempts, counts, last error
//! and hint, and the trace ID its spans join. The same detail as `GET /api/exams/{key}`
//! (PHI redacted for viewers there and here).

use crate::Console;
use crate::render;
use crate::session::Session;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;
use serde_json::{Value, json};

#[derive(Serialize)]
struct View {
    detail: Value,
    /// Per archive: identity used or why skipped, the queries, the gap.
    archives: Vec<Value>,
    jobs: Vec<Value>,
    trace_id: Option<String>,
    patient: String,
}

/// `GET /ui/exams/{key}`.
pub async fn page(State(console): State<Console>, session: Session, Path(key): Path<String>) -> Response {
    let phi = session.caller.sees_phi();
    let record = match priorfetch_api::exam_by_key(&console.store, &key).await {
        Ok(Some(record)) => record,
        Ok(None) => {
            let text = format!("No exam has the ID or accession number '{key}'.");
            return render::refusal(StatusCode::NOT_FOUND, &text, Some(&session));
        }
        Err(e) => return render::unavailable(e, &session),
    };
    let detail = match priorfetch_api::exam_detail(&console.store, &record, phi).await {
        Ok(detail) => detail,
        Err(e) => return render::unavailable(e, &session),
    };
    let trace_id = record.trace_parent.as_deref().and_then(trace_id);
    let jobs = detail["jobs"].as_array().map(|jobs| jobs.iter().map(|j| job_row(j, trace_id.as_deref())).collect());
    let view = View {
        archives: archives(&detail["plan"]),
        jobs: jobs.unwrap_or_default(),
        patient: patient(&detail["exam"]["patient"]),
        trace_id,
        detail,
    };
    render::page("exam.html", "schedule", &session, view)
}

/// The patient as the caller may see it: identifiers with issuers, or issuers and hashes.
fn patient(p: &Value) -> String {
    let empty = Vec::new();
    let ids = p["identifiers"].as_array().unwrap_or(&empty);
    let shown: Vec<String> = ids
        .iter()
        .map(|i| {
            let issuer = i["issuer"].as_str().map(|s| format!(" ({s})")).unwrap_or_default();
            match i["id"].as_str() {
                Some(id) => format!("{id}{issuer}"),
                None => format!("#{}{issuer}", i["id_hash"].as_str().unwrap_or("?")),
            }
        })
        .collect();
    if !shown.is_empty() {
        return shown.join(", ");
    }
    match p["id"].as_str() {
        Some(id) => format!("{id}{}", p["issuer"].as_str().map(|s| format!(" ({s})")).unwrap_or_default()),
        None => "[redacted]".into(),
    }
}

/// The plan's per-archive explanation as rows: `{archive, identity, skipped, gap,
/// queries: [{level, keys: [[keyword, value]], outcome, matches, millis}]}`.
fn archives(plan: &Value) -> Vec<Value> {
    let mut names: Vec<&String> = Vec::new();
    for part in ["archives", "cfind", "gaps"] {
        if let Some(map) = plan[part].as_object() {
            names.extend(map.keys().filter(|k| !names.contains(k)).collect::<Vec<_>>());
        }
    }
    names
        .into_iter()
        .map(|name| {
            let who = &plan["archives"][name];
            let queries: Vec<Value> =
                plan["cfind"][name].as_array().map(|qs| qs.iter().map(query_row).collect()).unwrap_or_default();
            json!({
                "archive": name,
                "identity": who["patient"].clone(),
                "skipped": who["skipped"].clone(),
                "gap": plan["gaps"][name].clone(),
                "queries": queries,
            })
        })
        .collect()
}

fn query_row(q: &Value) -> Value {
    let keys: Vec<Value> = q["keys"]
        .as_object()
        .map(|keys| {
            keys.iter().map(|(k, v)| json!([k, v.as_str().map_or_else(|| v.to_string(), str::to_string)])).collect()
        })
        .unwrap_or_default();
    json!({ "level": q["level"], "keys": keys, "outcome": q["outcome"], "matches": q["matches"], "millis": q["millis"] })
}

/// A job as the API gives it, plus its error split from the hint the mover appends
/// (`error; hint`) and the exam's trace ID.
fn job_row(job: &Value, trace_id: Option<&str>) -> Value {
    let mut job = job.clone();
    if let Some(text) = job["last_error"].as_str().map(str::to_string) {
        let (error, hint) = split_hint(&text);
        job["error_text"] = json!(error);
        job["hint"] = json!(hint);
    }
    // a job's own trace context when it carries one, else the exam's (its spans join it)
    let own = job["trace_parent"].as_str().and_then(self::trace_id);
    job["trace_id"] = json!(own.as_deref().or(trace_id));
    job
}

/// `"c-move failed: 0xA702; the archive ran out of resources: ..."` into the error and
/// the hint after the last `"; "`.
pub fn split_hint(text: &str) -> (&str, Option<&str>) {
    match text.rsplit_once("; ") {
        Some((error, hint)) if !error.is_empty() && !hint.is_empty() => (error, Some(hint)),
        _ => (text, None),
    }
}

/// The trace ID of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`).
pub fn trace_id(traceparent: &str) -> Option<String> {
    let id = traceparent.split('-').nth(1)?;
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    #[test]
    fn traces_and_hints() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(super::trace_id(tp).as_deref(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert_eq!(super::trace_id("garbage"), None);
        assert_eq!(super::split_hint("refused; check the AE table"), ("refused", Some("check the AE table")));
        assert_eq!(super::split_hint("plain error"), ("plain error", None));
    }

    #[test]
    fn plans_become_rows_per_archive() {
        let plan = serde_json::json!({
            "archives": {"lta": {"patient": {"issuer": "HOSP", "id_hash": "ab12"}}, "sta": {"skipped": "no issuer"}},
            "cfind": {"lta": [{"level": "STUDY", "keys": {"PatientID": "[redacted]", "StudyDate": ""},
                               "outcome": "ok", "matches": 3, "millis": 12}]},
            "gaps": {},
        });
        let rows = super::archives(&plan);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["archive"], "lta");
        assert_eq!(rows[0]["queries"][0]["keys"][0], serde_json::json!(["PatientID", "[redacted]"]));
        assert_eq!(rows[1]["skipped"], "no issuer");
    }
}
