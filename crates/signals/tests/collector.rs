//! The collector against a real Postgres: rows become gauges with every label named,
//! configured archives are exported before their first job, gone series are removed,
//! and with no mover alive every exam not ready is at risk.

use chrono::{Duration as Days, Utc};
use priorfetch_config::{Config, Sources};
use priorfetch_signals::Collector;
use priorfetch_store::{ExamPriority, ExamStatus, HeartbeatOptions, NewExam, NewJob, PlanRecord, PriorRecord};
use priorfetch_store::{RetrieveMethod, Store};
use priorfetch_testkit::db::TestDb;
use std::time::Duration;

const CONFIG: &str = r#"
[[archives]]
name = "short-term"
ae_title = "ST"
host = "127.0.0.1"
port = 104
retrieve = "get"

[[archives]]
name = "idle"
ae_title = "IDLE"
host = "127.0.0.1"
port = 105
retrieve = "get"

# open one second a year: its jobs are never due in this test
[[archives]]
name = "night"
ae_title = "NIGHT"
host = "127.0.0.1"
port = 106
retrieve = "get"
retrieve_windows = [{ start = "0 0 3 1 1 *", duration = "1s" }]
"#;

/// An exam scheduled `minutes` from now, planned with one job on `archive` due now.
async fn exam_with_job(s: &Store, key: &str, minutes: i64, archive: &str) -> i64 {
    let exam = NewExam {
        event_key: key.into(),
        patient_id: "MRN1".into(),
        issuer: None,
        identifiers: Vec::new(),
        accession_number: Some(key.into()),
        study_instance_uid: None,
        scheduled_at: Some(Utc::now() + Days::minutes(minutes)),
        modality: Some("CT".into()),
        body_part: None,
        procedure_code: None,
        procedure_text: None,
        priority: ExamPriority::Routine,
        trace_parent: None,
    };
    let id = s.insert_exam(&exam).await.unwrap().id();
    s.set_exam_status(id, ExamStatus::Planning).await.unwrap();
    let uid = format!("1.2.{id}");
    let prior = PriorRecord {
        archive: archive.into(),
        study_instance_uid: uid.clone(),
        study_date: None,
        modalities: None,
        description: None,
        expected_instances: Some(3),
        selected: true,
        reason: "selected".into(),
    };
    let job = NewJob {
        exam_id: id,
        study_instance_uid: uid,
        archive: archive.into(),
        method: RetrieveMethod::Get,
        destination: "DEST".into(),
        priority: 5,
        not_before: Utc::now() - Days::minutes(2),
        deadline: None,
        max_attempts: 3,
        expected_instances: Some(3),
    };
    let plan = PlanRecord {
        exam_id: id,
        rule: Some("default".into()),
        queries: serde_json::json!({}),
        gaps: serde_json::json!({}),
        archives: serde_json::json!({}),
        inputs: serde_json::json!([]),
        replan_at: None,
        priors: vec![prior],
        jobs: vec![job],
        max_jobs: None,
        refusal: None,
    };
    s.record_plan(&plan).await.unwrap();
    id
}

fn line_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_become_gauges_and_no_mover_puts_exams_at_risk() {
    let db = TestDb::postgres().await;
    let s = Store::connect(&db.url, "", 4).await.unwrap();
    s.migrate().await.unwrap();
    let config = Config::load(Sources { overlay: Some(CONFIG), ..Default::default() }).unwrap();
    let mut collector = Collector::new(s.clone(), &config);
    exam_with_job(&s, "soon", 30, "short-term").await; // within the at-risk hour
    exam_with_job(&s, "later", 300, "short-term").await; // on track while a mover lives
    exam_with_job(&s, "gone", 300, "removed").await; // an archive no longer configured
    exam_with_job(&s, "waiting", 600, "night").await; // its archive's window is closed

    // nobody beats: no mover alive, so the exam on track is at risk too
    collector.collect_once().await.unwrap();
    let text = priorfetch_telemetry::metrics::render();
    let value = |series: &str| line_value(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"));
    for role in ["listener", "planner", "mover"] {
        assert_eq!(value(&format!("priorfetch_workers_alive{{role=\"{role}\"}}")), 0.0);
    }
    assert_eq!(value("priorfetch_exams_upcoming{state=\"at_risk\"}"), 4.0);
    assert_eq!(value("priorfetch_exams_upcoming{state=\"fetching\"}"), 0.0);
    assert_eq!(value("priorfetch_exams_upcoming{state=\"ready\"}"), 0.0);
    assert_eq!(value("priorfetch_jobs{archive=\"short-term\",state=\"available\"}"), 2.0);
    assert_eq!(value("priorfetch_jobs{archive=\"short-term\",state=\"due\"}"), 2.0);
    assert_eq!(value("priorfetch_jobs{archive=\"idle\",state=\"due\"}"), 0.0, "configured: exported with zeros");
    assert_eq!(value("priorfetch_jobs{archive=\"removed\",state=\"due\"}"), 1.0, "not configured, but has jobs");
    let age = value("priorfetch_oldest_due_job_age_seconds{archive=\"short-term\"}");
    assert!((110.0..200.0).contains(&age), "due for two minutes: {age}");
    assert_eq!(value("priorfetch_oldest_due_job_age_seconds{archive=\"idle\"}"), 0.0);
    // a closed retrieve window: waiting, but not due (nothing may claim it)
    assert_eq!(value("priorfetch_jobs{archive=\"night\",state=\"available\"}"), 1.0);
    assert_eq!(value("priorfetch_jobs{archive=\"night\",state=\"due\"}"), 0.0);
    assert_eq!(value("priorfetch_oldest_due_job_age_seconds{archive=\"night\"}"), 0.0);
    for outcome in ["in_time", "late", "failed"] {
        assert_eq!(value(&format!("priorfetch_exams_readiness{{outcome=\"{outcome}\"}}")), 0.0);
    }

    // a mover beats: only the exam within the hour stays at risk
    let beat =
        HeartbeatOptions { every: Duration::from_secs(2), dead_after: Duration::from_secs(60), exam_lease: None };
    s.beat("host-a/mover/42", &beat).await.unwrap();
    s.beat("north/planner", &beat).await.unwrap();
    // the removed archive's job is cancelled: its series go
    let gone = s.exam_by_key("gone").await.unwrap().unwrap().exam.id;
    s.cancel_exam(gone).await.unwrap();
    collector.collect_once().await.unwrap();
    let text = priorfetch_telemetry::metrics::render();
    let value = |series: &str| line_value(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"));
    assert_eq!(value("priorfetch_workers_alive{role=\"mover\"}"), 1.0);
    assert_eq!(value("priorfetch_workers_alive{role=\"planner\"}"), 1.0);
    assert_eq!(value("priorfetch_exams_upcoming{state=\"at_risk\"}"), 1.0);
    assert_eq!(value("priorfetch_exams_upcoming{state=\"fetching\"}"), 2.0);
    assert!(!text.contains("archive=\"removed\""), "series of a gone archive are removed:\n{text}");
}

#[test]
fn build_info_names_version_and_role() {
    priorfetch_signals::set_build_info("planner");
    let text = priorfetch_telemetry::metrics::render();
    let want = format!("priorfetch_build_info{{role=\"planner\",version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));
    assert!(text.contains(&want), "{text}");
}
