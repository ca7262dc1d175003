//! Scale-out benchmark: how planning and retrieving grow with replicas sharing one
//! Postgres. For each (planners, movers) pair, a fresh database gets the same exams; the
//! planners (`priorfetch planner` processes) plan them all against a simulated archive with
//! per-response latency (phase 1: plans/s), then the movers (`priorfetch mover` processes,
//! `mover.workers` each) retrieve every selected prior into a simulated destination
//! (phase 2: jobs/s, instances/s). The archive allows more associations than one mover
//! uses, so the table shows whether replicas add throughput or where it stops.
//!
//! Run through scripts/bench-scale (starts Postgres, builds the binary). Env:
//! BENCH_PATIENTS (300), BENCH_DELAY_MS (10, per archive response), BENCH_WORKERS (4 per
//! mover), BENCH_MAX_ASSOCIATIONS (16, the archive's cap shared by all movers),
//! BENCH_REPLICAS ("1:1,1:2,1:4,2:4": planners:movers), BENCH_TIMEOUT_S (300).

use chrono::Utc;
use pacs_sim::{DataSource, Faults, Sim, SimConfig, SimHandle, SyntheticSpec};
use priorfetch_store::{ExamPriority, JobState, NewExam, Store};
use priorfetch_testkit::bench::env_or;
use priorfetch_testkit::db::TestDb;
use priorfetch_testkit::ports::free_port;
use std::collections::HashSet;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `priorfetch` role process, stopped (SIGTERM, then kill) when dropped.
struct Replica(Child);

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let start = Instant::now();
        while matches!(self.0.try_wait(), Ok(None)) && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Setup {
    bin: PathBuf,
    patients: usize,
    delay: Duration,
    workers: u32,
    max_associations: u32,
    timeout: Duration,
}

struct Row {
    planners: usize,
    movers: usize,
    plans_per_s: f64,
    jobs: usize,
    jobs_per_s: f64,
    instances_per_s: f64,
    connections: i64,
}

fn spec(patients: usize) -> SyntheticSpec {
    SyntheticSpec {
        patients,
        seed: 7,
        studies_per_patient: (2, 5),
        series_per_study: (1, 2),
        instances_per_series: 4,
        rows: 64,
        columns: 64,
        ..Default::default()
    }
}

fn config_text(s: &Setup, db: &str, archive: u16, dest: u16, spool: &Path) -> String {
    format!(
        r#"
[service]
ae_title = "PRIORFETCH"
shutdown_grace = "5s"
[database]
url = "{db}"
max_connections = 8
[[archives]]
name = "archive"
ae_title = "ARCHIVE"
host = "127.0.0.1"
port = {archive}
priority = 1
retrieve = "move"
move_destination = "DEST"
max_associations = {max}
[destination]
ae_title = "DEST"
host = "127.0.0.1"
port = {dest}
check_existing = false
[[rules]]
name = "default"
match = {{}}
priors = {{ lookback = "10y", max = 3 }}
[planner]
concurrency = 8
[mover]
workers = {workers}
spool_dir = "{spool}"
progress_interval = "1s"
split_threshold = 0
"#,
        max = s.max_associations,
        workers = s.workers,
        spool = spool.display(),
    )
}

fn start(s: &Setup, config: &Path, role: &str, log: &Path) -> Replica {
    let admin = free_port();
    let child = Command::new(&s.bin)
        .args(["--config", config.to_str().unwrap_or_default(), role])
        .env("PRIORFETCH__SERVICE__ADMIN_LISTEN", format!("127.0.0.1:{admin}"))
        .env("RUST_LOG", "warn")
        .env("TCP_NODELAY", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"))
        .spawn()
        .expect("start a priorfetch replica");
    let mut replica = Replica(child);
    let ready = Instant::now();
    while TcpStream::connect(("127.0.0.1", admin)).is_err() {
        if let Ok(Some(status)) = replica.0.try_wait() {
            panic!("priorfetch {role} exited ({status}):\n{}", std::fs::read_to_string(log).unwrap_or_default());
        }
        assert!(ready.elapsed() < Duration::from_secs(30), "priorfetch {role} never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    replica
}

fn exams(patients: usize) -> Vec<NewExam> {
    let scheduled = Utc::now() + chrono::Duration::hours(2);
    (0..patients)
        .map(|p| NewExam {
            event_key: format!("scale-{p}"),
            patient_id: SyntheticSpec::patient_id(p),
            issuer: None,
            identifiers: Vec::new(),
            accession_number: Some(format!("SCALE{p:05}")),
            study_instance_uid: None,
            scheduled_at: Some(scheduled),
            modality: Some("CT".into()),
            body_part: None,
            procedure_code: None,
            procedure_text: None,
            priority: ExamPriority::Routine,
            trace_parent: None,
        })
        .collect()
}

/// Polls `done` every 100 ms until it holds; the elapsed seconds.
async fn until<F: AsyncFnMut() -> bool>(what: &str, timeout: Duration, mut done: F) -> f64 {
    let t = Instant::now();
    while !done().await {
        assert!(t.elapsed() < timeout, "{what}: not done after {timeout:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    t.elapsed().as_secs_f64()
}

async fn connections(store: &Store, db: &TestDb) -> i64 {
    use sea_orm::ConnectionTrait;
    let name = db.url.rsplit('/').next().unwrap_or_default().to_string();
    let stmt = sea_orm::Statement::from_sql_and_values(
        sea_orm::DbBackend::Postgres,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1",
        [name.into()],
    );
    match store.connection().query_one_raw(stmt).await {
        Ok(Some(row)) => row.try_get_by_index::<i64>(0).unwrap_or(0),
        _ => 0,
    }
}

async fn run_once(s: &Setup, planners: usize, movers: usize) -> Row {
    let dest = Sim::start(SimConfig::new("DEST", DataSource::Empty), "127.0.0.1:0").await.expect("destination");
    let faults =
        Faults { response_delay: Some(s.delay), query_delay: Some(Duration::from_millis(2)), ..Default::default() };
    let archive: SimHandle = Sim::start(
        SimConfig::new("ARCHIVE", DataSource::Synthetic(spec(s.patients)))
            .with_destination("DEST", "127.0.0.1", dest.port())
            .with_faults(faults),
        "127.0.0.1:0",
    )
    .await
    .expect("archive");
    let db = TestDb::postgres().await;
    let store = Store::connect(&db.url, "", 4).await.expect("connect");
    store.migrate().await.expect("migrate");
    let work = tempfile::tempdir().expect("temp dir");
    let config = work.path().join("priorfetch.toml");
    std::fs::write(&config, config_text(s, &db.url, archive.port(), dest.port(), &work.path().join("spool")))
        .expect("config");
    store.insert_exams(&exams(s.patients)).await.expect("insert exams");

    // Phase 1: planning only.
    let mut running: Vec<Replica> =
        (0..planners).map(|i| start(s, &config, "planner", &work.path().join(format!("planner{i}.log")))).collect();
    let plan_s = until("planning", s.timeout, async || {
        let exams = store.list_exams(s.patients as u64 + 10).await.unwrap_or_default();
        exams.len() == s.patients && exams.iter().all(|e| !["received", "planning"].contains(&e.status.as_str()))
    })
    .await;

    // Phase 2: retrieving.
    let instances_before = dest.received().len();
    let t = Instant::now();
    let mut peak = 0;
    for i in 0..movers {
        running.push(start(s, &config, "mover", &work.path().join(format!("mover{i}.log"))));
    }
    let open = [JobState::Scheduled, JobState::Available, JobState::Running, JobState::Retryable];
    until("retrieving", s.timeout, async || {
        peak = peak.max(connections(&store, &db).await);
        let counts = store.job_counts().await.unwrap_or_default();
        counts.iter().filter(|(state, _)| open.contains(state)).map(|(_, n)| *n).sum::<i64>() == 0
    })
    .await;
    let move_s = t.elapsed().as_secs_f64();
    drop(running);

    let jobs = store.list_jobs(None, 1_000_000).await.expect("jobs");
    let failed: Vec<_> = jobs.iter().filter(|j| j.state != JobState::Completed).map(|j| j.id).collect();
    assert!(failed.is_empty(), "jobs not completed: {failed:?}");
    let received = dest.received();
    let distinct: HashSet<&str> = received.iter().map(|r| r.sop_instance_uid.as_str()).collect();
    let expected: i64 = jobs.iter().map(|j| j.expected_instances.unwrap_or(0) as i64).sum();
    assert_eq!(distinct.len() as i64, expected, "every selected instance at the destination once");
    let instances = received.len() - instances_before;
    archive.shutdown().await;
    dest.shutdown().await;
    Row {
        planners,
        movers,
        plans_per_s: s.patients as f64 / plan_s,
        jobs: jobs.len(),
        jobs_per_s: jobs.len() as f64 / move_s,
        instances_per_s: instances as f64 / move_s,
        connections: peak,
    }
}

fn replicas(text: &str) -> Vec<(usize, usize)> {
    text.split(',')
        .filter_map(|pair| {
            let (p, m) = pair.trim().split_once(':')?;
            Some((p.parse().ok()?, m.parse().ok()?))
        })
        .collect()
}

#[tokio::main]
async fn main() {
    let bin = std::env::current_exe().unwrap().parent().and_then(|d| d.parent()).unwrap().join("priorfetch");
    assert!(bin.exists(), "{} missing: run through scripts/bench-scale", bin.display());
    let s = Setup {
        bin,
        patients: env_or("BENCH_PATIENTS", 300usize),
        delay: Duration::from_millis(env_or("BENCH_DELAY_MS", 10u64)),
        workers: env_or("BENCH_WORKERS", 4u32),
        max_associations: env_or("BENCH_MAX_ASSOCIATIONS", 16u32),
        timeout: Duration::from_secs(env_or("BENCH_TIMEOUT_S", 300u64)),
    };
    let pairs = replicas(&std::env::var("BENCH_REPLICAS").unwrap_or_else(|_| "1:1,1:2,1:4,2:4".into()));
    println!(
        "{} exams, archive {} ms per response, {} workers per mover, archive max_associations {}",
        s.patients,
        s.delay.as_millis(),
        s.workers,
        s.max_associations
    );
    println!("planners movers  plans/s   jobs  jobs/s  instances/s  db connections (peak)");
    for (planners, movers) in pairs {
        let r = run_once(&s, planners, movers).await;
        println!(
            "{:>8} {:>6} {:>8.1} {:>6} {:>7.1} {:>12.0} {:>6}",
            r.planners, r.movers, r.plans_per_s, r.jobs, r.jobs_per_s, r.instances_per_s, r.connections
        );
    }
}
