//! `priorfetch mover` as real processes against one Postgres: several replicas never
//! exceed an archive's association cap, and a mover killed with SIGKILL in the middle of
//! a retrieve loses nothing: after its lease expires another replica completes the job,
//! and no instance is counted twice.

use chrono::{Duration as ChronoDuration, Utc};
use pacs_sim::{DataSource, Faults, Sim, SimConfig, SimHandle, SyntheticSpec};
use priorfetch_store::{ExamPriority, JobState};
use priorfetch_store::{NewExam, NewJob, Store};
use priorfetch_testkit::db::TestDb;
use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Mover(Child);

impl Drop for Mover {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_mover(config: &Path, db: &TestDb, log: &Path) -> Mover {
    let child = Command::new(env!("CARGO_BIN_EXE_priorfetch"))
        .args(["--config", config.to_str().unwrap(), "mover"])
        .env("PRIORFETCH__DATABASE__URL", &db.url)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    Mover(child)
}

fn write_config(dir: &Path, archive: &SimHandle, dest: &SimHandle, method: &str) -> std::path::PathBuf {
    let path = dir.join("priorfetch.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[service]
ae_title = "PRIORFETCH"
admin_listen = "127.0.0.1:0"
shutdown_grace = "2s"
[[archives]]
name = "arch"
ae_title = "ARCH"
host = "127.0.0.1"
port = {ap}
retrieve = "{method}"
move_destination = "DEST"
max_associations = 2
[destination]
ae_title = "DEST"
host = "127.0.0.1"
port = {dp}
check_existing = true
[mover]
workers = 4
spool_dir = "{spool}"
spool_limit_mb = 64
progress_interval = "200ms"
dimse_timeout = "30s"
[queue]
lease = "5s"
heartbeat = "1s"
dead_after = "4s"
rescue_schedule = "* * * * * *"
purge_schedule = "0 17 3 * * *"
retention = "30d"
[retry]
max_attempts = 4
backoff = {{ initial = "200ms", factor = 2.0, max = "1s", jitter = 0.0 }}
"#,
            ap = archive.port(),
            dp = dest.port(),
            spool = dir.join("spool").display(),
        ),
    )
    .unwrap();
    path
}

async fn sims(spec: SyntheticSpec, faults: Faults) -> (SimHandle, SimHandle) {
    let dest = Sim::start(SimConfig::new("DEST", DataSource::Empty), "127.0.0.1:0").await.unwrap();
    let archive = Sim::start(
        SimConfig::new("ARCH", DataSource::Synthetic(spec))
            .with_destination("DEST", "127.0.0.1", dest.port())
            .with_faults(faults),
        "127.0.0.1:0",
    )
    .await
    .unwrap();
    (archive, dest)
}

async fn enqueue_all(store: &Store, archive: &SimHandle, method: &str) -> Vec<i64> {
    let exam = store
        .insert_exam(&NewExam {
            event_key: "mp-1".into(),
            patient_id: "P".into(),
            issuer: None,
            identifiers: Vec::new(),
            accession_number: None,
            study_instance_uid: None,
            scheduled_at: Some(Utc::now() + ChronoDuration::hours(1)),
            modality: None,
            body_part: None,
            procedure_code: None,
            procedure_text: None,
            priority: ExamPriority::Routine,
            trace_parent: None,
        })
        .await
        .unwrap()
        .id();
    let jobs: Vec<NewJob> = archive
        .index()
        .iter()
        .map(|s| NewJob {
            exam_id: exam,
            study_instance_uid: s.study_instance_uid.clone(),
            archive: "arch".into(),
            method: priorfetch_store::RetrieveMethod::parse(method).expect("move, get or wado"),
            destination: "DEST".into(),
            priority: 5,
            not_before: Utc::now() - ChronoDuration::seconds(1),
            deadline: None,
            max_attempts: 4,
            expected_instances: Some(s.instances as i32),
        })
        .collect();
    store.enqueue_jobs(&jobs).await.unwrap();
    store.jobs_of_exam(exam).await.unwrap().into_iter().map(|j| j.id).collect()
}

async fn all_finished(store: &Store, ids: &[i64]) -> bool {
    for id in ids {
        let j = store.job(*id).await.unwrap().unwrap();
        if !["completed", "partial", "failed", "cancelled"].contains(&j.state.as_str()) {
            return false;
        }
    }
    true
}

fn log_of(dir: &Path) -> String {
    let mut out = String::new();
    for name in ["a.log", "b.log", "c.log"] {
        out.push_str(&std::fs::read_to_string(dir.join(name)).unwrap_or_default());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_mover_processes_never_exceed_the_archive_cap() {
    let db = TestDb::postgres().await;
    let store = Store::connect(&db.url, "", 4).await.unwrap();
    store.migrate().await.unwrap();
    let spec = SyntheticSpec {
        patients: 6,
        seed: 3,
        studies_per_patient: (3, 3),
        series_per_study: (1, 1),
        instances_per_series: 8,
        ..Default::default()
    };
    let (archive, dest) =
        sims(spec, Faults { response_delay: Some(Duration::from_millis(100)), ..Default::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &archive, &dest, "move");
    let ids = enqueue_all(&store, &archive, "move").await;
    assert_eq!(ids.len(), 18);

    let _movers: Vec<Mover> =
        ["a.log", "b.log", "c.log"].iter().map(|l| start_mover(&config, &db, &dir.path().join(l))).collect();
    let start = Instant::now();
    let mut max_running = 0;
    while !all_finished(&store, &ids).await {
        max_running = max_running.max(store.running_jobs("arch").await.unwrap());
        assert!(start.elapsed() < Duration::from_secs(120), "jobs not finished:\n{}", log_of(dir.path()));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(max_running <= 2, "cap exceeded: {max_running} running");
    assert_eq!(max_running, 2, "the replicas did run retrieves side by side");
    for id in &ids {
        let j = store.job(*id).await.unwrap().unwrap();
        assert_eq!(j.state, JobState::Completed, "{j:?}");
    }
    let expected: usize = archive.index().iter().map(|s| s.instances).sum();
    let arrived: HashSet<String> = dest.received().into_iter().map(|r| r.sop_instance_uid).collect();
    assert_eq!(arrived.len(), expected);
}

async fn kill_mid_retrieve(method: &str) {
    let db = TestDb::postgres().await;
    let store = Store::connect(&db.url, "", 4).await.unwrap();
    store.migrate().await.unwrap();
    let spec = SyntheticSpec {
        patients: 1,
        seed: 5,
        studies_per_patient: (1, 1),
        series_per_study: (2, 2),
        instances_per_series: 20,
        ..Default::default()
    };
    let (archive, dest) =
        sims(spec, Faults { response_delay: Some(Duration::from_millis(700)), ..Default::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &archive, &dest, method);
    let ids = enqueue_all(&store, &archive, method).await;
    let id = ids[0];
    let study = archive.index()[0].clone();

    let mut first = start_mover(&config, &db, &dir.path().join("a.log"));
    let start = Instant::now();
    loop {
        let j = store.job(id).await.unwrap().unwrap();
        if j.state == JobState::Running && j.counts.completed > 0 {
            break;
        }
        assert!(j.state != JobState::Completed, "finished before the kill; slow the archive down");
        assert!(start.elapsed() < Duration::from_secs(60), "no progress:\n{}", log_of(dir.path()));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first.0.kill().unwrap(); // SIGKILL: no chance to hand the job back
    first.0.wait().unwrap();
    let at_kill = dest.received().len();
    assert!(at_kill < study.instances, "killed mid-retrieve ({at_kill} of {})", study.instances);

    let _second = start_mover(&config, &db, &dir.path().join("b.log"));
    let start = Instant::now();
    while !all_finished(&store, &ids).await {
        assert!(start.elapsed() < Duration::from_secs(90), "not finished after restart:\n{}", log_of(dir.path()));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let j = store.job(id).await.unwrap().unwrap();
    assert_eq!(j.state, JobState::Completed, "{j:?}\n{}", log_of(dir.path()));
    assert_eq!(j.counts.completed as usize, study.instances, "no instance counted twice");
    assert_eq!(j.counts.failed, 0);
    assert!(j.attempt >= 2, "{j:?}");
    let errors = format!("{:?}", j.errors);
    // found dead by its heartbeat, or (the backstop) by its expired lease
    assert!(errors.contains("stopped reporting") || errors.contains("lease expired"), "{errors}");
    let arrived: HashSet<String> = dest
        .received()
        .into_iter()
        .filter(|r| r.study_instance_uid == study.study_instance_uid)
        .map(|r| r.sop_instance_uid)
        .collect();
    assert_eq!(arrived.len(), study.instances, "every instance at the destination");
    assert_eq!(j.received as usize, study.instances, "verified at the destination");
    if method == "get" {
        // the mover deletes the folder right after it recorded the outcome: wait (bounded)
        let spool = dir.path().join("spool");
        let left = || -> Vec<_> {
            std::fs::read_dir(&spool).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default()
        };
        let start = Instant::now();
        while !left().is_empty() && start.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(left().is_empty(), "spool emptied: {:?}", left());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mover_killed_mid_c_move_loses_nothing() {
    kill_mid_retrieve("move").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mover_killed_mid_c_get_relay_loses_nothing() {
    kill_mid_retrieve("get").await;
}
