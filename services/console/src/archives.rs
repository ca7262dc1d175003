//! Archive health: per archive whether it answered (`priorfetch_archive_up` as this
//! process saw it), its last C-FIND (from the newest plans) and last retrieve (from the
//! finished jobs, both from the database, so every replica shows the same), its queue
//! depth and the retrieve slots in use across replicas.

use crate::Console;
use crate::render;
use crate::session::Session;
use axum::extract::State;
use axum::response::Response;
use chrono::Utc;
use priorfetch_store::{ExamPlan, Job, JobState, OpenJobs, SlotUse, StoreError};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// Plans read for the last C-FIND per archive.
const RECENT_PLANS: u64 = 200;

#[derive(Serialize, Default)]
struct Row {
    name: String,
    configured: bool,
    /// `AE@host:port` or the DICOMweb base URL.
    address: String,
    protocol: Value,
    retrieve: String,
    /// `up`, `down`, or `unknown` (nothing of this process talked to it lately).
    health: &'static str,
    cfind_at: Option<String>,
    cfind_outcome: Option<String>,
    retrieve_at: Option<String>,
    retrieve_state: Option<String>,
    retrieve_error: Option<String>,
    success_at: Option<String>,
    scheduled: i64,
    available: i64,
    retryable: i64,
    running: i64,
    due: i64,
    oldest_due: Option<String>,
    slots_in_use: i64,
    slots: i64,
}

#[derive(Serialize)]
struct View {
    archives: Vec<Row>,
    recent_plans: u64,
}

/// `GET /ui/archives`.
pub async fn page(State(console): State<Console>, session: Session) -> Response {
    match rows(&console).await {
        Ok(archives) => {
            render::page("archives.html", "archives", &session, View { archives, recent_plans: RECENT_PLANS })
        }
        Err(e) => render::unavailable(e, &session),
    }
}

async fn rows(console: &Console) -> Result<Vec<Row>, StoreError> {
    let store = &console.store;
    let health: BTreeMap<String, bool> = priorfetch_telemetry::archive_health::snapshot().into_iter().collect();
    let queues: BTreeMap<String, OpenJobs> =
        store.open_jobs(Utc::now()).await?.into_iter().map(|q| (q.archive.clone(), q)).collect();
    let slots: BTreeMap<String, SlotUse> =
        store.slot_use().await?.into_iter().map(|s| (s.archive.clone(), s)).collect();
    let plans = store.recent_plans(RECENT_PLANS).await?;
    let mut rows: Vec<Row> = console
        .config
        .archives
        .iter()
        .map(|a| Row {
            name: a.name.clone(),
            configured: true,
            address: match &a.base_url {
                Some(url) => url.clone(),
                None => format!("{}@{}:{}", a.ae_title, a.host, a.port),
            },
            protocol: serde_json::to_value(a.protocol).unwrap_or_default(),
            retrieve: a.retrieve.to_string(),
            ..Default::default()
        })
        .collect();
    for name in queues.keys().chain(slots.keys()) {
        if !rows.iter().any(|r| &r.name == name) {
            rows.push(Row { name: name.clone(), address: "not configured".into(), ..Default::default() });
        }
    }
    for row in &mut rows {
        row.health = match health.get(&row.name) {
            Some(true) => "up",
            Some(false) => "down",
            None => "unknown",
        };
        if let Some((at, outcome)) = last_cfind(&plans, &row.name) {
            (row.cfind_at, row.cfind_outcome) = (Some(at), Some(outcome));
        }
        fill_retrieves(row, store.last_finished_job(&row.name, None).await?);
        let success = store.last_finished_job(&row.name, Some(JobState::Completed)).await?;
        row.success_at = success.and_then(|j| j.finished_at).map(render::local);
        if let Some(q) = queues.get(&row.name) {
            (row.scheduled, row.available, row.retryable, row.running, row.due) =
                (q.scheduled, q.available, q.retryable, q.running, q.due);
            row.oldest_due = q.oldest_due.map(render::local);
        }
        if let Some(s) = slots.get(&row.name) {
            (row.slots_in_use, row.slots) = (s.in_use, s.total);
        }
    }
    Ok(rows)
}

fn fill_retrieves(row: &mut Row, last: Option<Job>) {
    if let Some(job) = last {
        row.retrieve_at = job.finished_at.map(render::local);
        row.retrieve_state = Some(job.state.to_string());
        row.retrieve_error = job.last_error.map(|e| crate::exam::split_hint(&e).0.to_string());
    }
}

/// When the newest plan that queried `archive` was made, and how its last query ended
/// (or the gap it left).
fn last_cfind(plans: &[ExamPlan], archive: &str) -> Option<(String, String)> {
    plans.iter().find_map(|p| {
        let queries = p.queries.get(archive).and_then(Value::as_array).filter(|q| !q.is_empty());
        let gap = p.gaps.get(archive).filter(|g| !g.is_null());
        let outcome = match (queries, gap) {
            (_, Some(gap)) => format!("gap: {}", gap.get("error").and_then(Value::as_str).unwrap_or("incomplete")),
            (Some(q), None) => {
                let matches: u64 = q.iter().filter_map(|q| q["matches"].as_u64()).sum();
                let last = q.last().and_then(|q| q["outcome"].as_str()).unwrap_or("?");
                format!("{last}, {matches} match(es) in {} quer{}", q.len(), if q.len() == 1 { "y" } else { "ies" })
            }
            (None, None) => return None,
        };
        Some((render::local(p.planned_at), outcome))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(queries: Value, gaps: Value) -> ExamPlan {
        ExamPlan {
            exam_id: 1,
            rule: None,
            queries,
            gaps,
            archives: None,
            inputs: None,
            attempts: 1,
            replan_at: None,
            planned_at: Utc::now(),
        }
    }

    #[test]
    fn the_newest_plan_that_queried_an_archive_tells_its_last_cfind() {
        let plans = vec![
            plan(serde_json::json!({"sta": [{"outcome": "ok", "matches": 1}]}), serde_json::json!({})),
            plan(
                serde_json::json!({"lta": [{"outcome": "ok", "matches": 2}, {"outcome": "ok", "matches": 3}]}),
                serde_json::json!({}),
            ),
            plan(serde_json::json!({}), serde_json::json!({"lta": {"error": "connection refused"}})),
        ];
        assert_eq!(last_cfind(&plans, "lta").unwrap().1, "ok, 5 match(es) in 2 queries");
        assert_eq!(last_cfind(&plans[2..], "lta").unwrap().1, "gap: connection refused");
        assert!(last_cfind(&plans, "nowhere").is_none());
    }
}
