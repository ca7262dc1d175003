//! One simulated day under one dispatch policy: its own Postgres database, archives and
//! destination; the listener's intake, the planner and the mover in-process exactly as
//! `priorfetch run` runs them; the day's messages sent on the simulated clock.

use crate::archives::DayArchives;
use crate::clock::Clock;
use crate::scenario::{DayExam, HOUR, Kind, archives};
use anyhow::Context;
use priorfetch_config::{Config, Dispatch, Sources};
use priorfetch_store::Store;
use sea_orm::{ConnectionTrait, Database};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// What a run needs besides the policy.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub kind: Kind,
    pub seed: u64,
    pub exams: Vec<DayExam>,
    /// Length of the simulated day in simulated seconds.
    pub day: f64,
    /// Simulated seconds per wall second.
    pub speed: f64,
    /// Postgres server URL (without a database); the run creates and drops its own.
    pub server: String,
}

/// Everything the report needs from a finished run.
pub struct RunData {
    pub dispatch: Dispatch,
    pub clock: Clock,
    pub received: Vec<pacs_sim::ReceivedInstance>,
    pub population: Vec<pacs_sim::StudySummary>,
    pub exams: Vec<crate::report::DbExam>,
    pub jobs: Vec<crate::report::DbJob>,
    pub wall: Duration,
}

/// Simulated time the run goes on after the last exam's schedule, so late priors still
/// arrive and are counted late rather than failed.
const GRACE: f64 = 2.0 * HOUR;
/// How far ahead retrieves may start (`prefetch.lead_time`), in simulated time.
const LEAD_TIME: f64 = 12.0 * HOUR;
/// `queue.boost_within` and `queue.failover_within`, in simulated time.
const NEAR: f64 = 1.5 * HOUR;

pub async fn run(spec: &RunSpec, dispatch: Dispatch) -> anyhow::Result<RunData> {
    let started = std::time::Instant::now();
    let db = ScratchDb::create(&spec.server).await?;
    let profiles = archives(spec.kind);
    let mut archives =
        DayArchives::start(spec.seed, spec.exams.len(), &profiles).await.context("starting the simulated archives")?;
    let spool = tempfile::tempdir().context("spool folder")?;
    // Orders placed before the day (clamped to 00:00) reached the hospital's systems
    // yesterday: they are taken in before simulated 00:00, so the day does not start with
    // a backlog the real one would not have.
    let yesterday = spec.exams.iter().filter(|e| e.ordered_at <= 0.0).count() as u64;
    let clock = Clock::new(spec.speed, SERVICES_START + YESTERDAY_PER_ORDER * yesterday as u32);
    let config = Arc::new(config(&db.url, spool.path(), &archives, &clock, dispatch)?);
    let store = Store::connect(&db.url, "", 10).await?;
    store.migrate().await?;

    let (stop, shutdown) = watch::channel(false);
    let intake = priorfetch_listener::http_intake(&config, store.clone());
    let planner = tokio::spawn(priorfetch_planner::Planner::new(store.clone(), config.clone()).run(shutdown.clone()));
    let mover = priorfetch_mover::Mover::new(
        store.clone(),
        config.clone(),
        priorfetch_mover::MoverOptions {
            worker: format!("day-{}", dispatch.as_str()),
            poll_interval: Duration::from_millis(200),
        },
    );
    let mover = tokio::spawn(mover.run(shutdown.clone()));
    // As `priorfetch run` does: expired leases handed back, so a stuck attempt costs its
    // lease, not the rest of the day.
    let q = &config.queue;
    let housekeeping =
        priorfetch_store::housekeeping::Housekeeping::from_cron(&q.rescue_schedule, &q.purge_schedule, q.retention)
            .map_err(|e| anyhow::anyhow!(e))?;
    let housekeeping = tokio::spawn(housekeeping.run(store.clone(), shutdown.clone()));
    archives.schedule_outages(&clock);

    let messages = crate::messages::of_day(&spec.exams, &archives.population, &clock);
    let (before, during): (Vec<_>, Vec<_>) = messages.into_iter().partition(|(at, _)| *at <= 0.0);
    for batch in before.chunks(100) {
        let bodies: Vec<&[u8]> = batch.iter().map(|(_, body)| body.as_bytes()).collect();
        refused(&intake.process(&bodies).await.context("intake")?)?;
    }
    if tokio::time::Instant::now() > clock.wall(0.0) {
        tracing::warn!(orders = before.len(), "yesterday's orders were still arriving at 00:00");
    }
    for (at, body) in during {
        tokio::time::sleep_until(clock.wall(at)).await;
        refused(&intake.process(&[body.as_bytes()]).await.context("intake")?)?;
    }
    let last = spec.exams.iter().map(DayExam::final_schedule).fold(0.0, f64::max).min(spec.day);
    tokio::time::sleep_until(clock.wall(last + GRACE)).await;

    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(15), planner).await;
    let _ = tokio::time::timeout(Duration::from_secs(15), mover).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), housekeeping).await;
    let (exams, jobs) = crate::report::read_db(&db.url).await?;
    let received = archives.dest.received();
    let population = archives.population.clone();
    archives.shutdown().await;
    drop(store);
    if std::env::var_os("PRIORFETCH_DAY_KEEP_DB").is_some() {
        eprintln!("kept the database of the {} run: {}", dispatch.as_str(), db.url);
    } else {
        db.drop().await;
    }
    Ok(RunData { dispatch, clock, received, population, exams, jobs, wall: started.elapsed() })
}

/// Wall time to start the services before simulated 00:00, and to take in each of
/// yesterday's orders on top.
const SERVICES_START: Duration = Duration::from_secs(3);
const YESTERDAY_PER_ORDER: Duration = Duration::from_millis(4);

/// Every message of the day is valid: a refusal is a bug in the simulation.
fn refused(verdicts: &[priorfetch_listener::Verdict]) -> anyhow::Result<()> {
    for verdict in verdicts {
        if let priorfetch_listener::Verdict::Invalid { reason, .. } = verdict {
            anyhow::bail!("the intake refused a message of the day: {reason}");
        }
    }
    Ok(())
}

fn config(
    db_url: &str,
    spool: &std::path::Path,
    archives: &DayArchives,
    clock: &Clock,
    dispatch: Dispatch,
) -> anyhow::Result<Config> {
    let ports = archives.ports();
    let mut text = format!(
        r#"
[service]
ae_title = "PRIORFETCH"
admin_listen = "127.0.0.1:0"
shutdown_grace = "5s"
[database]
url = "{db_url}"
[destination]
ae_title = "DEST"
host = "127.0.0.1"
port = {dest}
check_existing = true
[prefetch]
lead_time = "{lead}"
[[rules]]
name = "default"
match = {{}}
priors = {{ same_modality = true, lookback = "10y", max = {max} }}
[planner]
replan_backoff = {{ initial = "2s", factor = 2.0, max = "20s", jitter = 0.1 }}
[retry]
max_attempts = 10
backoff = {{ initial = "300ms", factor = 2.0, max = "20s", jitter = 0.1 }}
[mover]
workers = 12
spool_dir = "{spool}"
spool_limit_mb = 256
progress_interval = "250ms"
dimse_timeout = "10s"
stall_timeout = "20s"
[queue]
lease = "6s"
rescue_schedule = "*/2 * * * * *"
dispatch = "{dispatch}"
boost_within = "{near}"
failover_within = "{near}"
"#,
        dest = archives.dest.port(),
        lead = clock.config_span(LEAD_TIME),
        max = crate::report::MAX_PRIORS,
        spool = spool.display(),
        dispatch = dispatch.as_str(),
        near = clock.config_span(NEAR),
    );
    for (p, _) in &archives.archives {
        text.push_str(&format!(
            "[[archives]]\nname = \"{}\"\nae_title = \"{}\"\nhost = \"127.0.0.1\"\nport = {}\npriority = {}\n\
             retrieve = \"{}\"\nmax_associations = {}\n{}",
            p.name,
            p.ae_title,
            ports[p.name],
            p.priority,
            p.retrieve,
            p.max_associations,
            if p.retrieve == "move" { "move_destination = \"DEST\"\n" } else { "" },
        ));
    }
    Config::load(Sources { file: None, overlay: Some(&text), env: false }).map_err(|e| anyhow::anyhow!("{e}"))
}

/// A database of its own on the Postgres server, dropped at the end.
struct ScratchDb {
    server: String,
    name: String,
    url: String,
}

impl ScratchDb {
    async fn create(server: &str) -> anyhow::Result<ScratchDb> {
        let server = server.trim_end_matches('/').to_string();
        let admin = Database::connect(format!("{server}/postgres"))
            .await
            .with_context(|| format!("no PostgreSQL at {server}: start one (scripts/test starts it)"))?;
        let name = format!("pf_day_{}_{}", std::process::id(), rand_suffix());
        admin.execute_unprepared(&format!("CREATE DATABASE {name}")).await?;
        admin.close().await.ok();
        Ok(ScratchDb { url: format!("{server}/{name}"), server, name })
    }

    async fn drop(self) {
        if let Ok(admin) = Database::connect(format!("{}/postgres", self.server)).await {
            let _ = admin.execute_unprepared(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)).await;
            admin.close().await.ok();
        }
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos() as u64)
}
