//! Shared by the mover's tests: a migrated store, a config overlay, jobs to run, the
//! mover in-process, bounded waits.

#![allow(dead_code)]

use chrono::{Duration as ChronoDuration, Utc};
use priorfetch_config::{Config, Sources};
use priorfetch_mover::{Mover, MoverOptions};
use priorfetch_store::ExamPriority;
use priorfetch_store::{NewExam, NewJob, Store};
use priorfetch_testkit::db::TestDb;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

pub async fn postgres() -> (TestDb, Store) {
    priorfetch_testkit::db::init_test_log();
    let db = TestDb::postgres().await;
    let store = Store::connect(&db.url, "", 10).await.expect("connect");
    store.migrate().await.expect("migrate");
    (db, store)
}

pub async fn sqlite() -> (TestDb, Store) {
    let db = TestDb::sqlite();
    let store = Store::connect(&db.url, "", 1).await.expect("connect");
    store.migrate().await.expect("migrate");
    (db, store)
}

/// The embedded defaults plus `overlay`, with fast retries and a spool in `spool`.
pub fn config(db: &TestDb, spool: &std::path::Path, overlay: &str) -> Arc<Config> {
    config_with_mover(db, spool, "", overlay)
}

/// [`config`] with more `[mover]` keys (`mover` holds lines such as `split_threshold = 10`).
pub fn config_with_mover(db: &TestDb, spool: &std::path::Path, mover: &str, overlay: &str) -> Arc<Config> {
    let base = format!(
        "[database]\nurl = \"{}\"\n[retry]\nmax_attempts = 3\nbackoff = {{ initial = \"200ms\", factor = 2.0, max = \"1s\", jitter = 0.0 }}\n\
         [mover]\nworkers = 4\nspool_dir = \"{}\"\nspool_limit_mb = 64\nprogress_interval = \"200ms\"\ndimse_timeout = \"20s\"\n{mover}\n\
         [service]\nae_title = \"PRIORFETCH\"\nadmin_listen = \"127.0.0.1:0\"\nshutdown_grace = \"2s\"\n",
        db.url,
        spool.display()
    );
    let text = format!("{base}{overlay}");
    Arc::new(
        Config::load(Sources { file: None, overlay: Some(&text), env: false })
            .unwrap_or_else(|e| panic!("{e}\n{text}")),
    )
}

pub async fn exam(store: &Store, key: &str) -> i64 {
    let exam = NewExam {
        event_key: key.into(),
        patient_id: "P1".into(),
        issuer: None,
        identifiers: Vec::new(),
        accession_number: Some(format!("ACC-{key}")),
        study_instance_uid: None,
        scheduled_at: Some(Utc::now() + ChronoDuration::hours(1)),
        modality: Some("CT".into()),
        body_part: Some("CHEST".into()),
        procedure_code: None,
        procedure_text: None,
        priority: ExamPriority::Routine,
        trace_parent: None,
    };
    let id = store.insert_exam(&exam).await.expect("insert exam").id();
    store.set_exam_status(id, priorfetch_store::ExamStatus::Planned).await.expect("status");
    id
}

/// Enqueues one job and returns its id.
pub async fn job(store: &Store, exam_id: i64, archive: &str, method: &str, study: &str, expected: Option<i32>) -> i64 {
    store
        .enqueue_jobs(&[NewJob {
            exam_id,
            study_instance_uid: study.into(),
            archive: archive.into(),
            method: priorfetch_store::RetrieveMethod::parse(method).expect("move, get or wado"),
            destination: "DEST".into(),
            priority: 5,
            not_before: Utc::now() - ChronoDuration::seconds(1),
            deadline: Some(Utc::now() + ChronoDuration::hours(1)),
            max_attempts: 3,
            expected_instances: expected,
        }])
        .await
        .expect("enqueue");
    store
        .jobs_of_exam(exam_id)
        .await
        .expect("jobs")
        .into_iter()
        .find(|j| j.study_instance_uid == study)
        .expect("job")
        .id
}

pub struct Running {
    pub stop: watch::Sender<bool>,
    pub task: tokio::task::JoinHandle<()>,
}

impl Running {
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(30), self.task).await;
    }
}

pub fn start_mover(store: &Store, config: Arc<Config>, worker: &str) -> Running {
    let (stop, rx) = watch::channel(false);
    let mover = Mover::new(
        store.clone(),
        config,
        MoverOptions { worker: worker.into(), poll_interval: Duration::from_millis(100) },
    );
    let task = tokio::spawn(async move {
        mover.run(rx).await.expect("mover run");
    });
    Running { stop, task }
}

/// Waits (bounded) until the job reaches a finished state.
pub async fn finished(store: &Store, job_id: i64, within: Duration) -> priorfetch_store::Job {
    let start = Instant::now();
    loop {
        let job = store.job(job_id).await.expect("job").expect("job exists");
        if job.state.is_finished() {
            return job;
        }
        assert!(start.elapsed() < within, "job {job_id} not finished within {within:?}: {job:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (bounded) until `check` holds.
pub async fn until(within: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < within, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn errors_of(job: &priorfetch_store::Job) -> Vec<String> {
    job.errors.iter().map(|e| e.error.clone()).collect()
}

pub fn archive_toml(name: &str, ae: &str, port: u16, retrieve: &str, extra: &str) -> String {
    format!(
        "[[archives]]\nname = \"{name}\"\nae_title = \"{ae}\"\nhost = \"127.0.0.1\"\nport = {port}\nretrieve = \"{retrieve}\"\n\
         move_destination = \"DEST\"\nmax_associations = 2\n{extra}\n"
    )
}

pub fn destination_toml(port: u16, check_existing: bool) -> String {
    format!(
        "[destination]\nae_title = \"DEST\"\nhost = \"127.0.0.1\"\nport = {port}\ncheck_existing = {check_existing}\n"
    )
}

/// Every file under `dir`, recursively (what a job left in the spool).
pub fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.path().is_dir() {
            files.extend(walk(&entry.path()));
        } else {
            files.push(entry.path());
        }
    }
    files
}
