//! The schedule: exams by scheduled time (today, the next 24 hours, or a date), each
//! with its readiness, priors expected and arrived, archives and late risk; or a search
//! by accession number (operators also by patient ID). Patient identifiers are shown to
//! operators only; viewers see the issuer and a short hash.

use crate::Console;
use crate::render;
use crate::session::Session;
use axum::extract::{Query, State};
use axum::response::Response;
use chrono::{DateTime, Duration, Local, NaiveDate, TimeZone, Utc};
use priorfetch_api::views;
use priorfetch_store::{ExamFilter, ExamJobs, ExamRecord, ExamStatus};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Exams one page lists at most.
const LIMIT: u64 = 500;

#[derive(Debug, Default, Deserialize)]
pub struct ScheduleParams {
    /// `today`, `24h` (default) or `date`.
    window: Option<String>,
    /// `YYYY-MM-DD` with `window=date`.
    date: Option<String>,
    /// An accession number, or (operators) a patient ID.
    q: Option<String>,
}

#[derive(Serialize)]
struct Row {
    id: i64,
    accession: Option<String>,
    scheduled_at: Option<String>,
    modality: Option<String>,
    procedure: Option<String>,
    priority: Value,
    status: Value,
    /// The patient's ID (operators) or issuer and hash (viewers).
    patient: String,
    readiness: &'static str,
    risk: &'static str,
    expected: i64,
    arrived: i64,
    failed: i64,
    archives: String,
}

#[derive(Serialize)]
struct View {
    window: String,
    date: String,
    q: String,
    heading: String,
    /// Why the search is narrower than asked, or a bad parameter.
    note: Option<String>,
    rows: Vec<Row>,
}

/// `GET /ui/schedule`.
pub async fn page(State(console): State<Console>, session: Session, Query(params): Query<ScheduleParams>) -> Response {
    let now = Utc::now();
    let phi = session.caller.sees_phi();
    let q = params.q.as_deref().map(str::trim).unwrap_or_default().to_string();
    let (window, date) = (params.window.unwrap_or_else(|| "24h".into()), params.date.unwrap_or_default());
    let (exams, heading, note) = if q.is_empty() {
        let (from, to, heading, note) = window_bounds(&window, &date, now);
        let filter = ExamFilter { scheduled_from: Some(from), scheduled_to: Some(to), ..Default::default() };
        match console.store.find_exams(&filter, LIMIT).await {
            Ok(exams) => (exams, heading, note),
            Err(e) => return render::unavailable(e, &session),
        }
    } else {
        match search(&console, &q, phi).await {
            Ok(exams) => {
                let note = (!phi).then(|| "Viewers search by accession number only.".to_string());
                (exams, "Search results".to_string(), note)
            }
            Err(e) => return render::unavailable(e, &session),
        }
    };
    let ids: Vec<i64> = exams.iter().map(|e| e.exam.id).collect();
    let jobs = match console.store.jobs_by_exam(&ids).await {
        Ok(jobs) => jobs,
        Err(e) => return render::unavailable(e, &session),
    };
    let at_risk = Duration::from_std(console.config.signals.at_risk).unwrap_or(Duration::hours(2));
    let rows = exams.iter().map(|e| row(e, jobs.get(&e.exam.id), phi, now, at_risk)).collect();
    render::page("schedule.html", "schedule", &session, View { window, date, q, heading, note, rows })
}

/// By accession number; operators also by patient ID (any of the patient's identifiers).
/// Sorted by scheduled time.
async fn search(console: &Console, q: &str, phi: bool) -> Result<Vec<ExamRecord>, priorfetch_store::StoreError> {
    let by_accession = ExamFilter { accession: Some(q.to_string()), ..Default::default() };
    let mut exams = console.store.find_exams(&by_accession, LIMIT).await?;
    if phi {
        let by_patient = ExamFilter { patient_id: Some(q.to_string()), ..Default::default() };
        for exam in console.store.find_exams(&by_patient, LIMIT).await? {
            if !exams.iter().any(|e| e.exam.id == exam.exam.id) {
                exams.push(exam);
            }
        }
    }
    exams.sort_by_key(|e| (e.exam.scheduled_at, e.exam.id));
    Ok(exams)
}

/// The window's bounds, its heading, and a note when the date was not understood.
fn window_bounds(
    window: &str,
    date: &str,
    now: DateTime<Utc>,
) -> (DateTime<Utc>, DateTime<Utc>, String, Option<String>) {
    let day = |d: NaiveDate| {
        let start = Local.from_local_datetime(&d.and_hms_opt(0, 0, 0).unwrap_or_default()).earliest();
        let start = start.map(|t| t.with_timezone(&Utc)).unwrap_or(now);
        (start, start + Duration::days(1))
    };
    match window {
        "today" => {
            let (from, to) = day(now.with_timezone(&Local).date_naive());
            (from, to, "Today".into(), None)
        }
        "date" => match NaiveDate::parse_from_str(date.trim(), "%Y-%m-%d") {
            Ok(d) => {
                let (from, to) = day(d);
                (from, to, format!("{d}"), None)
            }
            Err(_) => {
                let note = format!("'{date}' is not a date (YYYY-MM-DD): showing the next 24 hours.");
                (now, now + Duration::hours(24), "Next 24 hours".into(), Some(note))
            }
        },
        _ => (now, now + Duration::hours(24), "Next 24 hours".into(), None),
    }
}

fn row(record: &ExamRecord, jobs: Option<&ExamJobs>, phi: bool, now: DateTime<Utc>, at_risk: Duration) -> Row {
    let exam = views::exam(record, phi);
    let e = &record.exam;
    let patient = if phi {
        match &e.issuer {
            Some(issuer) => format!("{} ({issuer})", e.patient_id),
            None => e.patient_id.clone(),
        }
    } else {
        let first = &exam["patient"]["identifiers"][0];
        let hash = first["id_hash"].as_str().unwrap_or("");
        match first["issuer"].as_str().or(e.issuer.as_deref()) {
            Some(issuer) => format!("{issuer} #{hash}"),
            None => format!("#{hash}"),
        }
    };
    let (readiness, risk) = readiness(record.status, e.scheduled_at, jobs, now, at_risk);
    let empty = ExamJobs::default();
    let jobs = jobs.unwrap_or(&empty);
    Row {
        id: e.id,
        accession: e.accession_number.clone(),
        scheduled_at: e.scheduled_at.map(render::local),
        modality: e.modality.clone(),
        procedure: e.procedure_text.clone().or_else(|| e.procedure_code.clone()),
        priority: exam["priority"].clone(),
        status: exam["status"].clone(),
        patient,
        readiness,
        risk,
        expected: jobs.expected,
        arrived: jobs.arrived,
        failed: jobs.failed,
        archives: jobs.archives.iter().cloned().collect::<Vec<_>>().join(", "),
    }
}

/// (readiness, late risk) of an exam: ready when every selected prior arrived (or none
/// was to fetch); otherwise `late` once its time has passed, `at risk` when it is due
/// within `signals.at_risk` or a job failed an attempt, else `on track`. The same rules as
/// `priorfetch_exams_upcoming`.
fn readiness(
    status: ExamStatus,
    scheduled_at: Option<DateTime<Utc>>,
    jobs: Option<&ExamJobs>,
    now: DateTime<Utc>,
    at_risk: Duration,
) -> (&'static str, &'static str) {
    let expected = jobs.map_or(0, |j| j.expected);
    let troubled = jobs.is_some_and(|j| j.retrying > 0 || j.failed > 0);
    let state = match status {
        ExamStatus::Cancelled => return ("cancelled", ""),
        ExamStatus::Complete => return ("ready", ""),
        ExamStatus::Planned | ExamStatus::Fetching if expected == 0 => return ("ready", ""),
        ExamStatus::Partial | ExamStatus::Failed => "failed",
        ExamStatus::Received | ExamStatus::Planning => "planning",
        ExamStatus::Planned | ExamStatus::Fetching => "fetching",
    };
    let risk = match scheduled_at {
        Some(t) if t <= now => "late",
        Some(t) if t <= now + at_risk => "at risk",
        _ if troubled || state == "failed" => "at risk",
        _ => "on track",
    };
    (state, risk)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_and_risk() {
        let now = Utc::now();
        let h = Duration::hours(2);
        let jobs = |expected, arrived, retrying| ExamJobs { expected, arrived, retrying, ..Default::default() };
        let soon = Some(now + Duration::minutes(30));
        let later = Some(now + Duration::hours(10));
        assert_eq!(readiness(ExamStatus::Complete, soon, None, now, h), ("ready", ""));
        assert_eq!(readiness(ExamStatus::Planned, later, None, now, h), ("ready", ""), "nothing to fetch");
        assert_eq!(readiness(ExamStatus::Fetching, later, Some(&jobs(2, 1, 0)), now, h), ("fetching", "on track"));
        assert_eq!(readiness(ExamStatus::Fetching, soon, Some(&jobs(2, 1, 0)), now, h), ("fetching", "at risk"));
        assert_eq!(readiness(ExamStatus::Fetching, later, Some(&jobs(2, 0, 1)), now, h), ("fetching", "at risk"));
        let past = Some(now - Duration::minutes(5));
        assert_eq!(readiness(ExamStatus::Fetching, past, Some(&jobs(2, 1, 0)), now, h), ("fetching", "late"));
        assert_eq!(readiness(ExamStatus::Failed, later, Some(&jobs(2, 1, 0)), now, h), ("failed", "at risk"));
        assert_eq!(readiness(ExamStatus::Received, later, None, now, h), ("planning", "on track"));
        assert_eq!(readiness(ExamStatus::Cancelled, past, None, now, h), ("cancelled", ""));
    }

    #[test]
    fn windows() {
        let now = Utc::now();
        let (from, to, _, note) = window_bounds("24h", "", now);
        assert_eq!((from, to, note), (now, now + Duration::hours(24), None));
        let (from, to, heading, _) = window_bounds("date", "2026-12-24", now);
        assert_eq!((to - from, heading.as_str()), (Duration::days(1), "2026-12-24"));
        assert!(window_bounds("date", "christmas", now).3.is_some());
        let (from, _, _, _) = window_bounds("today", "", now);
        assert!(from <= now && now - from < Duration::hours(25));
    }
}
