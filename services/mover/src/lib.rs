//! The mover: turns retrieve jobs into images at the destination, honestly counted.
//!
//! Layout:
//! - `lib.rs`: the dispatcher: claims due jobs of archives whose retrieve window is open
//!   (the store enforces each archive's association cap across replicas), runs up to
//!   `mover.workers` at once, wakes on NOTIFY, hands running jobs back on shutdown.
//! - `retrieve.rs`: one attempt: C-MOVE or C-GET, progress persisted at a bounded rate
//!   (extending the lease; a lost lease or a cancelled job sends C-CANCEL), verification.
//! - `progress.rs`: the attempt's heartbeat: counts persisted, lease extended, a lost job cancelled.
//! - `peer.rs`: our calling AE and timeouts, the archive's address.
//! - `record.rs`: the outcome's write, retried until the database takes it.
//! - `dispatch.rs`: claim order, deadline boosts, failovers to another archive.
//! - `outage.rs`: archives that went away are held and probed; their return wakes their jobs.
//! - `relay.rs`: the C-GET leg into the job's relay (`priorfetch_relay`: spool and
//!   forwarder to the destination by C-STORE), with live counts of both legs.
//! - `verify.rs`: how many instances of a study the destination holds.
//! - `outcome.rs`: the pure judgement: completed only when every instance arrived.
//! - `split/`: one large study over several associations (parts by series or
//!   IMAGE-level UID batches, each retried alone; refusal remembered); also used by
//!   `priorfetch retrieve --associations`.
//! - `parallel.rs`: the mover's side of it: extra archive slots, live counts, the C-GET
//!   relay shared by the associations, the fallback to one association.
//! - `wado_split.rs`: a large study by WADO-RS over several connections (per series, or
//!   per instance of a single series), into one relay.
//! - `wado.rs`: the WADO-RS leg into the job's relay, as C-GET's.
//! - `metrics.rs`: the mover's Prometheus metrics.

mod dispatch;
pub mod metrics;
pub(crate) mod outage;
pub mod outcome;
mod parallel;
mod peer;
mod progress;
mod record;
mod relay;
mod retrieve;
pub mod split;
pub mod verify;
mod wado;
mod wado_split;

pub use record::RunEnd;

use chrono::Utc;
use priorfetch_config::Config;
use priorfetch_relay::SpoolBudget;
use priorfetch_store::{HeartbeatOptions, RetryPolicy, Store, StoreError};
use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{info, warn};

/// What one mover process is called and how often it looks for work without a wake-up.
#[derive(Debug, Clone)]
pub struct MoverOptions {
    /// Written into claimed jobs and beaten as this process's heartbeat. Empty (the
    /// default): `queue.instance` or the host name, then `/mover`. Stable across
    /// restarts, so a restarted mover hands back at once what its crashed predecessor held.
    pub worker: String,
    /// Polling fallback when no NOTIFY arrives (scheduled jobs becoming due, windows).
    pub poll_interval: Duration,
}

impl Default for MoverOptions {
    fn default() -> Self {
        MoverOptions { worker: String::new(), poll_interval: Duration::from_secs(1) }
    }
}

/// Shared by the running jobs.
pub(crate) struct Ctx {
    pub store: Store,
    pub config: Arc<Config>,
    pub worker: String,
    pub policy: RetryPolicy,
    /// The spool budget shared by every running C-GET of the process.
    pub spool: Arc<SpoolBudget>,
    /// Jobs running in this process (the spool sweep leaves their folders alone).
    pub running: Mutex<HashSet<i64>>,
    /// Archives held while they are away (their jobs are not claimed).
    pub outages: outage::Outages,
    /// Each archive's retrieve windows, parsed once.
    pub windows: Vec<(String, priorfetch_config::windows::Windows)>,
    /// Our calling AE, the archives' and the destination's addresses, parsed once.
    pub peers: peer::Peers,
}

impl Ctx {
    pub(crate) fn running_ids(&self) -> std::sync::MutexGuard<'_, HashSet<i64>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct Mover {
    ctx: Arc<Ctx>,
    options: MoverOptions,
}

#[derive(Debug, thiserror::Error)]
pub enum MoverError {
    #[error("cannot prepare the archive slots: {0}")]
    Slots(#[source] StoreError),
}

impl Mover {
    pub fn new(store: Store, config: Arc<Config>, options: MoverOptions) -> Mover {
        let b = &config.retry.backoff;
        let policy = RetryPolicy { initial: b.initial, factor: b.factor, max: b.max, jitter: b.jitter };
        let mut options = options;
        if options.worker.trim().is_empty() {
            options.worker = priorfetch_store::worker_identity(&config.queue.instance, "mover");
        }
        let worker = options.worker.clone();
        let spool = SpoolBudget::new(config.mover.spool_limit_mb);
        let windows = config
            .archives
            .iter()
            .map(|a| (a.name.clone(), priorfetch_config::windows::Windows::parse(&a.retrieve_windows)))
            .collect();
        let peers = peer::Peers::new(&config);
        Mover {
            ctx: Arc::new(Ctx {
                store,
                config,
                worker,
                policy,
                spool,
                running: Mutex::new(HashSet::new()),
                outages: outage::Outages::default(),
                windows,
                peers,
            }),
            options,
        }
    }

    /// Runs until `shutdown` turns true; then stops claiming, gives running retrieves
    /// `service.shutdown_grace` to finish, and hands the rest back to the queue.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> Result<(), MoverError> {
        let ctx = self.ctx.clone();
        let caps: Vec<(String, u32)> =
            ctx.config.archives.iter().map(|a| (a.name.clone(), a.max_associations)).collect();
        ctx.store.sync_archive_slots(&caps).await.map_err(MoverError::Slots)?;
        let spool_root = Path::new(&ctx.config.mover.spool_dir).to_path_buf();
        // This process runs nothing yet: unmarked folders are a crashed predecessor's.
        priorfetch_relay::spool::remove_orphans(&spool_root);
        let _heartbeat = start_heartbeat(&ctx).await;
        let mut sweep = tokio::time::interval(Duration::from_secs(30));
        let workers = ctx.config.mover.workers.max(1) as usize;
        let (hand_back, hand_back_rx) = watch::channel(false);
        let mut running: JoinSet<RunEnd> = JoinSet::new();
        let mut signal = ctx.store.work_signal().await;
        let mut gauges = tokio::time::interval(Duration::from_secs(5));
        info!(worker = %ctx.worker, workers, archives = caps.len(), "mover started");

        loop {
            if *shutdown.borrow() {
                break;
            }
            let free = workers.saturating_sub(running.len());
            let mut claimed = 0;
            if free > 0 {
                let open = open_archives(&ctx);
                signal.mark_seen();
                let (lease, order) = (ctx.config.queue.lease, dispatch::claim_order(&ctx.config));
                match ctx.store.claim_jobs_in_order(&ctx.worker, &open, free as u32, lease, order).await {
                    Ok(jobs) => {
                        claimed = jobs.len();
                        for job in jobs {
                            running.spawn(retrieve::run_job(ctx.clone(), job, hand_back_rx.clone()));
                        }
                    }
                    Err(e) => warn!(error = %e, "cannot claim jobs"),
                }
            }
            if claimed > 0 && running.len() < workers {
                continue; // there may be more due work
            }
            tokio::select! {
                _ = shutdown.changed() => {}
                Some(_) = running.join_next(), if !running.is_empty() => {}
                _ = signal.wait(self.options.poll_interval) => {}
                _ = gauges.tick() => {
                    record::settle(&ctx).await;
                    dispatch::tick(&ctx).await;
                }
                _ = sweep.tick() => {
                    let running_ids = ctx.running_ids().clone();
                    priorfetch_relay::spool::sweep(&spool_root, ctx.config.mover.spool_retention, &running_ids);
                }
            }
        }

        info!(running = running.len(), "mover stopping");
        let grace = ctx.config.service.shutdown_grace;
        let drained = tokio::time::timeout(grace, async { while running.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            let _ = hand_back.send(true);
            // Each job sends C-CANCEL and releases itself, bounded inside.
            let _ =
                tokio::time::timeout(Duration::from_secs(15), async { while running.join_next().await.is_some() {} })
                    .await;
            running.abort_all();
        }
        info!("mover stopped");
        Ok(())
    }
}

/// Beats this mover's identity and hands back what its predecessor held (kill -9,
/// OOM): those jobs and slots are free again at once instead of after a lease.
async fn start_heartbeat(ctx: &Ctx) -> priorfetch_store::Heartbeat {
    let q = &ctx.config.queue;
    let options = HeartbeatOptions { every: q.heartbeat, dead_after: q.dead_after, exam_lease: None };
    let (heartbeat, reclaimed) = ctx.store.start_worker(&ctx.worker, options).await;
    match reclaimed {
        Ok(r) if r.retried + r.failed + r.slots_freed > 0 => {
            warn!(worker = %ctx.worker, retried = r.retried, failed = r.failed, slots_freed = r.slots_freed,
                  "handed back the jobs of this worker's previous run")
        }
        Ok(_) => {}
        Err(e) => warn!(worker = %ctx.worker, error = %e, "cannot hand back the previous run's jobs; the rescuer will"),
    }
    heartbeat
}

/// Archives that may be retrieved from now: their retrieve window is open and they are
/// not away (see `outage.rs`).
pub(crate) fn open_archives(ctx: &Ctx) -> Vec<String> {
    let now = Utc::now();
    ctx.windows
        .iter()
        .filter(|(name, windows)| windows.is_open(now) && !ctx.outages.is_held(name))
        .map(|(name, _)| name.clone())
        .collect()
}
