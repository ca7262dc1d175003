//! The database-read signals as real processes export them on `/metrics`:
//! - with every mover stopped, a planner and a listener alone report that no mover is
//!   alive and that an exam on track became at risk;
//! - `priorfetch run` shows every signal with its labels, the build info and the process
//!   metrics.

use chrono::{Duration as Days, Utc};
use priorfetch_store::{ExamPriority, ExamStatus, NewExam, NewJob, PlanRecord, PriorRecord, RetrieveMethod, Store};
use priorfetch_testkit::chaos::{Proc, get_text, post_json};
use priorfetch_testkit::db::TestDb;
use priorfetch_testkit::ports::free_port;
use std::path::Path;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_priorfetch");

/// Fast heartbeats and signals, so the test waits seconds, not minutes.
fn write_config(dir: &Path, archives: &str) -> String {
    let path = dir.join("priorfetch.toml");
    let text = format!(
        r#"
[service]
shutdown_grace = "2s"
[intake]
source = "http"
[mover]
spool_dir = "{spool}"
[queue]
heartbeat = "1s"
dead_after = "3s"
[signals]
every = "1s"
{archives}
"#,
        spool = dir.join("spool").display(),
    );
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn start(role: &str, config: &str, db: &TestDb, port: u16, dir: &Path) -> Proc {
    let listen = format!("127.0.0.1:{port}");
    let env = [("PRIORFETCH__DATABASE__URL", db.url.as_str()), ("PRIORFETCH__SERVICE__ADMIN_LISTEN", listen.as_str())];
    Proc::start(role, BIN, &["--config", config, role], &env, dir)
}

/// The value of one series (`name{labels}` as rendered) in a scrape.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
}

/// Scrapes `/metrics` until `ready` holds for it; panics with the last scrape and the log.
fn scrape_until(port: u16, proc: &Proc, what: &str, ready: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < Duration::from_secs(60) {
        if let Ok((200, text)) = get_text(port, "/metrics") {
            if ready(&text) {
                return text;
            }
            last = text;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{what}: not seen on {}'s /metrics in 60 s\n{last}\n--- log ---\n{}", proc.name, proc.log());
}

/// An exam scheduled `in_hours` ahead, planned with one job on `archive` (which no mover
/// of this test retrieves from), as a planner would have left it.
async fn planned_exam(store: &Store, key: &str, in_hours: i64, archive: &str) {
    let exam = NewExam {
        event_key: key.into(),
        patient_id: "MRN-SIGNALS".into(),
        issuer: None,
        identifiers: Vec::new(),
        accession_number: Some(key.into()),
        study_instance_uid: None,
        scheduled_at: Some(Utc::now() + Days::hours(in_hours)),
        modality: Some("CT".into()),
        body_part: None,
        procedure_code: None,
        procedure_text: None,
        priority: ExamPriority::Routine,
        trace_parent: None,
    };
    let id = store.insert_exam(&exam).await.unwrap().id();
    store.set_exam_status(id, ExamStatus::Planning).await.unwrap();
    let uid = format!("1.2.840.99.{id}");
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
        not_before: Utc::now() + Days::hours(1),
        deadline: exam.scheduled_at,
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
    store.record_plan(&plan).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_movers_stopped_planner_and_listener_report_no_mover_and_exams_at_risk() {
    let db = TestDb::postgres().await;
    let store = Store::connect(&db.url, "", 2).await.unwrap();
    store.migrate().await.unwrap();
    // five hours ahead, its job waiting for its lead time: on track while a mover lives
    planned_exam(&store, "signals-1", 5, "vna").await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let (mover_port, planner_port, listener_port) = (free_port(), free_port(), free_port());
    let mut mover = start("mover", &config, &db, mover_port, dir.path());
    let planner = start("planner", &config, &db, planner_port, dir.path());
    let listener = start("listener", &config, &db, listener_port, dir.path());

    let alive = |role: &str, n: f64| {
        let series = format!("priorfetch_workers_alive{{role=\"{role}\"}}");
        move |t: &str| value(t, &series) == Some(n)
    };
    scrape_until(planner_port, &planner, "a live mover, the exam on track", |t| {
        alive("mover", 1.0)(t)
            && value(t, "priorfetch_exams_upcoming{state=\"fetching\"}") == Some(1.0)
            && value(t, "priorfetch_exams_upcoming{state=\"at_risk\"}") == Some(0.0)
    });

    // every mover stops: the planner and the listener alone see it within dead_after
    mover.terminate(Duration::from_secs(10));
    for (port, proc) in [(planner_port, &planner), (listener_port, &listener)] {
        let text = scrape_until(port, proc, "no mover alive, the exam at risk", |t| {
            alive("mover", 0.0)(t) && value(t, "priorfetch_exams_upcoming{state=\"at_risk\"}").unwrap_or(0.0) >= 1.0
        });
        // both roles beat, whichever process reads them
        assert_eq!(value(&text, "priorfetch_workers_alive{role=\"planner\"}"), Some(1.0), "{text}");
        assert_eq!(value(&text, "priorfetch_workers_alive{role=\"listener\"}"), Some(1.0), "{text}");
        assert_eq!(value(&text, "priorfetch_exams_upcoming{state=\"fetching\"}"), Some(0.0), "{text}");
        assert_eq!(value(&text, "priorfetch_jobs{archive=\"vna\",state=\"scheduled\"}"), Some(1.0), "{text}");
    }
    for proc in [&planner, &listener] {
        assert!(!proc.log().contains("MRN-SIGNALS"), "no PHI in logs:\n{}", proc.log());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_exports_every_signal_with_its_labels() {
    let db = TestDb::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    // an archive nothing listens for: its C-FIND fails, so archive_up says 0
    let archive = format!(
        "[[archives]]\nname = \"north\"\nae_title = \"NORTH\"\nhost = \"127.0.0.1\"\nport = {}\nretrieve = \"get\"\n",
        free_port()
    );
    let config = write_config(dir.path(), &archive);
    let port = free_port();
    let run = start("run", &config, &db, port, dir.path());
    scrape_until(port, &run, "the admin server", |_| true);
    let at = (Utc::now() + Days::hours(2)).to_rfc3339();
    let event = format!(
        r#"{{"event_id":"signals-run-1","type":"exam.scheduled","patient":{{"id":"MRN-RUN"}},
            "accession_number":"ACC-RUN-1","scheduled_at":"{at}","modality":"CT"}}"#
    );
    assert_eq!(post_json(port, "/api/events", &event).unwrap(), 202);

    let wanted = [
        "priorfetch_exams_upcoming{state=\"ready\"}",
        "priorfetch_exams_upcoming{state=\"fetching\"}",
        "priorfetch_exams_upcoming{state=\"at_risk\"}",
        "priorfetch_exams_upcoming{state=\"failed\"}",
        "priorfetch_jobs{archive=\"north\",state=\"scheduled\"}",
        "priorfetch_jobs{archive=\"north\",state=\"available\"}",
        "priorfetch_jobs{archive=\"north\",state=\"running\"}",
        "priorfetch_jobs{archive=\"north\",state=\"retryable\"}",
        "priorfetch_jobs{archive=\"north\",state=\"due\"}",
        "priorfetch_oldest_due_job_age_seconds{archive=\"north\"}",
        "priorfetch_workers_alive{role=\"listener\"} 1",
        "priorfetch_workers_alive{role=\"planner\"} 1",
        "priorfetch_workers_alive{role=\"mover\"} 1",
        "priorfetch_exams_readiness{outcome=\"in_time\"}",
        "priorfetch_exams_readiness{outcome=\"late\"}",
        "priorfetch_exams_readiness{outcome=\"failed\"}",
        "priorfetch_archive_up{archive=\"north\"} 0",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    ];
    let text = scrape_until(port, &run, "every signal", |t| wanted.iter().all(|w| t.contains(w)));
    let info = format!("priorfetch_build_info{{role=\"all\",version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));
    assert!(text.contains(&info), "{text}");
    // the exam was planned (its only archive unreachable: nothing to fetch yet)
    let upcoming: f64 = ["ready", "fetching", "at_risk"]
        .iter()
        .filter_map(|s| value(&text, &format!("priorfetch_exams_upcoming{{state=\"{s}\"}}")))
        .sum();
    assert_eq!(upcoming, 1.0, "{text}");
    assert!(!run.log().contains("MRN-RUN"), "no PHI in logs:\n{}", run.log());
}
