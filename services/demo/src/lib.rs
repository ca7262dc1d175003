//! `priorfetch demo`: the whole product on one machine with nothing installed.
//!
//! Two simulated archives (NORTH: C-MOVE, caps C-FIND at 4 matches and stops with 0xFE00
//! as Orthanc does; SOUTH: C-GET, fails 30% of sub-operations on the first attempt), a
//! simulated destination (DEST: a storage SCP that answers C-FIND), SQLite, and a burst
//! of scheduled exams posted to the HTTP intake. The listener, planner and mover run
//! in-process exactly as `priorfetch run` runs them. The end is checked independently:
//! the priors the default rule should select are computed from the archives' own indexes
//! (not from the planner's tables), and every one of their instances must be at DEST.

use anyhow::Context;
use pacs_sim::{CapBehaviour, DataSource, Faults, MatchCap, Sim, SimConfig, SimHandle, StudySummary, SyntheticSpec};
use priorfetch_config::{Config, Sources};
use priorfetch_store::{ExamStatus, Store};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Exams in the burst (one patient each).
    pub exams: usize,
    /// Seed of the synthetic archives.
    pub seed: u64,
    /// Live progress bars (off in tests).
    pub progress: bool,
    /// Give up after this long.
    pub timeout: Duration,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions { exams: 40, seed: 42, progress: true, timeout: Duration::from_secs(60) }
    }
}

/// One exam's line in the final table.
#[derive(Debug, Clone)]
pub struct ExamLine {
    pub exam_id: i64,
    pub patient: String,
    pub modality: String,
    pub status: String,
    pub expected: usize,
    pub arrived: usize,
    pub jobs: usize,
    pub attempts: i32,
    pub instances: usize,
}

#[derive(Debug, Clone)]
pub struct DemoReport {
    pub lines: Vec<ExamLine>,
    pub elapsed: Duration,
    pub jobs_by_state: BTreeMap<String, usize>,
    /// Every expected prior's instances are at the destination.
    pub ok: bool,
}

impl DemoReport {
    pub fn expected(&self) -> usize {
        self.lines.iter().map(|l| l.expected).sum()
    }
    pub fn arrived(&self) -> usize {
        self.lines.iter().map(|l| l.arrived).sum()
    }
    pub fn instances(&self) -> usize {
        self.lines.iter().map(|l| l.instances).sum()
    }
    pub fn retried_attempts(&self) -> i32 {
        self.lines.iter().map(|l| l.attempts - l.jobs as i32).sum()
    }

    /// The final table, as printed.
    pub fn table(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "{:>5}  {:<12}  {:<4}  {:<9}  {:>7}  {:>7}  {:>4}  {:>8}  {:>9}\n",
            "exam", "patient", "mod", "status", "priors", "arrived", "jobs", "attempts", "instances"
        ));
        for l in &self.lines {
            out.push_str(&format!(
                "{:>5}  {:<12}  {:<4}  {:<9}  {:>7}  {:>7}  {:>4}  {:>8}  {:>9}\n",
                l.exam_id, l.patient, l.modality, l.status, l.expected, l.arrived, l.jobs, l.attempts, l.instances
            ));
        }
        let states: Vec<String> = self.jobs_by_state.iter().map(|(s, n)| format!("{s} {n}")).collect();
        out.push_str(&format!(
            "\n{} exams, {} of {} expected priors arrived ({} instances), jobs: {}, retried attempts: {}, {:.1} s\n",
            self.lines.len(),
            self.arrived(),
            self.expected(),
            self.instances(),
            states.join(", "),
            self.retried_attempts(),
            self.elapsed.as_secs_f64()
        ));
        out.push_str(if self.ok {
            "every expected prior is at the destination\n"
        } else {
            "SOME EXPECTED PRIORS DID NOT ARRIVE\n"
        });
        out
    }
}

/// The default rule of the demo, applied independently of the planner: studies of the
/// exam's modality within 10 years, most recent 3, one copy per StudyInstanceUID.
const LOOKBACK_DAYS: i64 = 3650;
const MAX_PRIORS: usize = 3;

struct Archives {
    north: SimHandle,
    south: SimHandle,
    dest: SimHandle,
}

async fn start_archives(seed: u64, patients: usize) -> anyhow::Result<Archives> {
    let dest = Sim::start(SimConfig::new("DEST", DataSource::Empty), "127.0.0.1:0").await?;
    let spec = |seed| SyntheticSpec {
        patients,
        seed,
        studies_per_patient: (3, 6),
        series_per_study: (1, 3),
        instances_per_series: 4,
        ..Default::default()
    };
    let north = Sim::start(
        SimConfig::new("NORTH", DataSource::Synthetic(spec(seed)))
            .with_destination("DEST", "127.0.0.1", dest.port())
            .with_faults(Faults {
                match_cap: Some(MatchCap { limit: 4, behaviour: CapBehaviour::Cancel }),
                ..Default::default()
            }),
        "127.0.0.1:0",
    )
    .await?;
    let south = Sim::start(
        SimConfig::new("SOUTH", DataSource::Synthetic(spec(seed + 1))).with_faults(Faults {
            failed_suboperation_ratio: 0.3,
            faults_first_attempts: Some(1),
            ..Default::default()
        }),
        "127.0.0.1:0",
    )
    .await?;
    Ok(Archives { north, south, dest })
}

fn demo_config(db_url: &str, spool: &std::path::Path, a: &Archives) -> anyhow::Result<Config> {
    let text = format!(
        r#"
[service]
ae_title = "PRIORFETCH"
admin_listen = "127.0.0.1:0"
shutdown_grace = "5s"
[database]
url = "{db_url}"
[[archives]]
name = "north"
ae_title = "NORTH"
host = "127.0.0.1"
port = {north}
priority = 1
retrieve = "move"
move_destination = "DEST"
max_associations = 4
max_matches = 4
[[archives]]
name = "south"
ae_title = "SOUTH"
host = "127.0.0.1"
port = {south}
priority = 2
retrieve = "get"
max_associations = 4
[destination]
ae_title = "DEST"
host = "127.0.0.1"
port = {dest}
check_existing = true
[[rules]]
name = "default"
match = {{}}
priors = {{ same_modality = true, lookback = "10y", max = {MAX_PRIORS} }}
[retry]
max_attempts = 5
backoff = {{ initial = "300ms", factor = 2.0, max = "3s", jitter = 0.1 }}
[mover]
workers = 8
spool_dir = "{spool}"
spool_limit_mb = 256
progress_interval = "250ms"
dimse_timeout = "30s"
[queue]
lease = "30s"
rescue_schedule = "*/2 * * * * *"
purge_schedule = "0 17 3 * * *"
retention = "30d"
"#,
        north = a.north.port(),
        south = a.south.port(),
        dest = a.dest.port(),
        spool = spool.display(),
    );
    Config::load(Sources { file: None, overlay: Some(&text), env: false }).map_err(|e| anyhow::anyhow!("{e}"))
}

/// One exam of the burst, as the independent check expects it.
struct ExpectedExam {
    patient: String,
    modality: String,
    /// Each prior the demo rule should select, with its instance count.
    priors: Vec<(String, usize)>,
}

/// What the demo rule should select for a patient and modality, from both archives'
/// indexes: each expected study with its instance count.
fn expected_priors(
    all: &[StudySummary],
    patient: &str,
    modality: &str,
    today: chrono::NaiveDate,
) -> Vec<(String, usize)> {
    let oldest = (today - chrono::Duration::days(LOOKBACK_DAYS)).format("%Y%m%d").to_string();
    let mut seen = HashSet::new();
    let mut studies: Vec<&StudySummary> = all
        .iter()
        .filter(|s| s.patient_id == patient && s.modalities.iter().any(|m| m == modality) && s.study_date >= oldest)
        .filter(|s| seen.insert(s.study_instance_uid.clone()))
        .collect();
    studies
        .sort_by(|a, b| b.study_date.cmp(&a.study_date).then_with(|| a.study_instance_uid.cmp(&b.study_instance_uid)));
    studies.into_iter().take(MAX_PRIORS).map(|s| (s.study_instance_uid.clone(), s.instances)).collect()
}

pub async fn run(options: DemoOptions) -> anyhow::Result<DemoReport> {
    let started = Instant::now();
    let work = tempfile::tempdir().context("temp folder")?;
    let db_url = format!("sqlite://{}?mode=rwc", work.path().join("demo.db").display());
    let archives = start_archives(options.seed, options.exams).await.context("starting the simulated archives")?;
    let config = Arc::new(demo_config(&db_url, &work.path().join("spool"), &archives)?);
    let store = Store::connect(&db_url, "", 1).await?;
    store.migrate().await?;

    let (stop, shutdown) = watch::channel(false);
    let intake = priorfetch_listener::Intake::new(
        store.clone(),
        priorfetch_listener::decode_options(&config, priorfetch_config::IntakeSource::Http),
    );
    let routes = priorfetch_listener::http::routes(intake);
    let store_ready = store.clone();
    let ready: priorfetch_telemetry::admin::ReadyCheck = Arc::new(move || {
        let store = store_ready.clone();
        Box::pin(async move { store.ping().await.map_err(|e| e.to_string()) })
    });
    let mut admin_stop = shutdown.clone();
    let (admin, admin_task) = priorfetch_telemetry::admin::serve(
        "127.0.0.1:0".parse()?,
        priorfetch_telemetry::admin::router(ready, routes),
        async move {
            let _ = admin_stop.wait_for(|s| *s).await;
        },
    )
    .await?;
    let planner = tokio::spawn(priorfetch_planner::Planner::new(store.clone(), config.clone()).run(shutdown.clone()));
    let mover = priorfetch_mover::Mover::new(
        store.clone(),
        config.clone(),
        priorfetch_mover::MoverOptions { worker: "demo".into(), poll_interval: Duration::from_millis(200) },
    );
    let mover = tokio::spawn(mover.run(shutdown.clone()));

    // The burst: one exam per patient, of the modality of one of the patient's studies.
    let all: Vec<StudySummary> = archives.north.index().into_iter().chain(archives.south.index()).collect();
    let today = chrono::Utc::now().date_naive();
    let scheduled = chrono::Utc::now() + chrono::Duration::hours(2);
    let mut expected: HashMap<String, ExpectedExam> = HashMap::new();
    for i in 0..options.exams {
        let patient = SyntheticSpec::patient_id(i);
        let Some(study) = all.iter().filter(|s| s.patient_id == patient).max_by(|a, b| a.study_date.cmp(&b.study_date))
        else {
            continue;
        };
        let modality = study.modalities.first().cloned().unwrap_or_else(|| "CT".into());
        let event_id = format!("demo-{i}");
        let body = serde_json::json!({
            "event_id": event_id, "type": "exam.scheduled",
            "patient": { "id": patient, "issuer": "SIM" },
            "accession_number": format!("DEMO{i:04}"),
            "study_instance_uid": format!("1.2.826.0.1.3680043.10.777.{}.{i}", options.seed),
            "scheduled_at": scheduled.to_rfc3339(),
            "priority": if i % 10 == 0 { "stat" } else { "routine" },
            "modality": modality, "body_part": study.body_part,
        });
        let status = post_event(admin, &body.to_string()).await?;
        anyhow::ensure!(status == 202, "the intake answered {status} to exam {i}");
        // The JSON decoder keys events as `json:<event_id>`.
        let priors = expected_priors(&all, &patient, &modality, today);
        expected.insert(format!("json:{event_id}"), ExpectedExam { patient: patient.clone(), modality, priors });
    }

    let bars =
        Bars::new(options.progress, expected.len() as u64, expected.values().map(|e| e.priors.len() as u64).sum());
    let deadline = Instant::now() + options.timeout;
    loop {
        let exams = store.list_exams(10_000).await?;
        let finished = exams.iter().filter(|e| e.status.is_terminal()).count();
        let planned = exams.iter().filter(|e| !matches!(e.status, ExamStatus::Received | ExamStatus::Planning)).count();
        let counts = store.job_counts().await?;
        let done_jobs: i64 = counts.iter().filter(|(s, _)| s.is_finished()).map(|(_, n)| *n).sum();
        bars.update(planned as u64, done_jobs as u64, archives.dest.received().len() as u64);
        if finished == expected.len() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bars.finish();
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), planner).await;
    let _ = tokio::time::timeout(Duration::from_secs(10), mover).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), admin_task).await;

    // The independent check: expected priors vs what DEST holds.
    let mut at_dest: HashMap<String, HashSet<String>> = HashMap::new();
    for r in archives.dest.received() {
        at_dest.entry(r.study_instance_uid).or_default().insert(r.sop_instance_uid);
    }
    let mut lines = Vec::new();
    let mut jobs_by_state: BTreeMap<String, usize> = BTreeMap::new();
    let mut ok = true;
    for exam in store.list_exams(10_000).await?.into_iter().rev() {
        let Some(ExpectedExam { patient, modality, priors }) = expected.get(&exam.event_key) else { continue };
        let jobs = store.jobs_of_exam(exam.exam.id).await?;
        for j in &jobs {
            *jobs_by_state.entry(j.state.as_str().to_string()).or_default() += 1;
        }
        let arrived = priors.iter().filter(|(uid, n)| at_dest.get(uid).is_some_and(|got| got.len() >= *n)).count();
        ok &= arrived == priors.len();
        lines.push(ExamLine {
            exam_id: exam.exam.id,
            patient: patient.clone(),
            modality: modality.clone(),
            status: exam.status.as_str().to_string(),
            expected: priors.len(),
            arrived,
            jobs: jobs.len(),
            attempts: jobs.iter().map(|j| j.attempt).sum(),
            instances: priors.iter().map(|(uid, _)| at_dest.get(uid).map_or(0, |s| s.len())).sum(),
        });
    }
    ok &= lines.len() == expected.len();
    archives.north.shutdown().await;
    archives.south.shutdown().await;
    archives.dest.shutdown().await;
    Ok(DemoReport { lines, elapsed: started.elapsed(), jobs_by_state, ok })
}

/// POST /api/events over plain HTTP/1.1 (no client library needed for one request type).
async fn post_event(addr: SocketAddr, body: &str) -> anyhow::Result<u16> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!(
        "POST /api/events HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response);
    text.get(9..12).and_then(|s| s.parse().ok()).context("malformed HTTP response from the intake")
}

/// Live progress: exams planned, jobs finished, instances at the destination.
struct Bars {
    multi: Option<indicatif::MultiProgress>,
    planned: indicatif::ProgressBar,
    jobs: indicatif::ProgressBar,
    instances: indicatif::ProgressBar,
}

impl Bars {
    fn new(show: bool, exams: u64, priors: u64) -> Bars {
        let style = indicatif::ProgressStyle::with_template("{prefix:>22} [{bar:40}] {pos}/{len}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> ");
        let bar = |prefix: &'static str, len: u64| {
            let b = if show { indicatif::ProgressBar::new(len) } else { indicatif::ProgressBar::hidden() };
            b.set_style(style.clone());
            b.set_prefix(prefix);
            b
        };
        let (planned, jobs) = (bar("exams planned", exams), bar("retrieve jobs finished", priors));
        let instances = if show { indicatif::ProgressBar::new_spinner() } else { indicatif::ProgressBar::hidden() };
        instances.set_prefix("instances at DEST");
        let multi = show.then(indicatif::MultiProgress::new);
        if let Some(m) = &multi {
            let planned = m.add(planned.clone());
            let jobs = m.add(jobs.clone());
            let instances = m.add(instances.clone());
            return Bars { multi, planned, jobs, instances };
        }
        Bars { multi, planned, jobs, instances }
    }

    fn update(&self, planned: u64, jobs: u64, instances: u64) {
        self.planned.set_position(planned);
        if jobs > self.jobs.length().unwrap_or(0) {
            self.jobs.set_length(jobs);
        }
        self.jobs.set_position(jobs);
        self.instances.set_message(format!("{instances} instances at DEST"));
        self.instances.tick();
    }

    fn finish(&self) {
        self.planned.finish();
        self.jobs.finish();
        self.instances.finish();
        if let Some(m) = &self.multi {
            let _ = m.clear();
        }
    }
}
