//! The attempt's heartbeat: live sub-operation counts, persisted every
//! `mover.progress_interval` with the lease extended; a job lost to another worker or
//! wanted back by shutdown cancels the retrieve.

use crate::Ctx;
use priorfetch_dimse::{DimseError, SubOperations};
use priorfetch_store::Counts;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tracing::warn;

/// Live progress of the attempt, shared between the retrieve and the persister.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Live {
    pub counts: SubOperations,
    /// Instances of earlier requests of this attempt (several series/batches).
    pub done_before: Counts,
    /// C-GET relay: instances the destination confirmed.
    pub relayed: u32,
}

impl Live {
    pub(crate) fn total(&self, base: i32) -> Counts {
        Counts {
            remaining: self.counts.remaining.map(i32::from),
            completed: base + self.done_before.completed + self.counts.completed as i32,
            failed: self.done_before.failed + self.counts.failed as i32,
            warning: self.done_before.warning + self.counts.warning as i32,
        }
    }
}

pub(crate) enum Lost {
    Shutdown,
    NotOwned,
}

/// Why the heartbeat ended early.
pub(crate) enum Ended {
    Lost(Lost),
    /// Nothing done for `mover.stall_timeout`: cancelled, and retried as a failed attempt.
    Stalled(std::time::Duration),
}

/// Drives the retrieve and the progress persister together; the persister stops first
/// when the retrieve ends, and cancels the retrieve when the job is lost or shutdown
/// hands it back.
pub(crate) async fn run_until_done<T>(
    retrieve: impl std::future::Future<Output = Result<T, DimseError>>,
    mut persist: tokio::task::JoinHandle<Ended>,
) -> (Result<T, DimseError>, Option<Lost>) {
    tokio::pin!(retrieve);
    tokio::select! {
        result = &mut retrieve => {
            persist.abort();
            (result, None)
        }
        joined = &mut persist => {
            // A persister that panicked lost nothing: the retrieve goes on, unwatched.
            let Ok(lost) = joined else { return (retrieve.await, None) };
            // The persister already sent C-CANCEL; let the archive answer, bounded.
            let result = match tokio::time::timeout(std::time::Duration::from_secs(10), &mut retrieve).await {
                Ok(result) => result,
                Err(_) => Err(DimseError::Protocol("no answer to C-CANCEL".into())),
            };
            match lost {
                // A failed attempt like any other: counted, retried with backoff.
                Ended::Stalled(after) => (Err(stalled(after)), None),
                Ended::Lost(lost) => (result, Some(lost)),
            }
        }
    }
}

fn stalled(after: std::time::Duration) -> DimseError {
    DimseError::Other {
        message: format!("no instance done for {}s: the attempt was cancelled", after.as_secs()),
        hint: "the archive (or the destination) stopped making progress while the association stayed \
               open; see the archive's log, or raise mover.stall_timeout for instances that take longer"
            .into(),
        retryable: true,
        wait: None,
    }
}

/// The job's heartbeat, every `progress_interval` whatever the archive does: persist
/// counts and extend the lease. Returns (after sending
/// C-CANCEL) when the job is no longer ours or shutdown wants it back; otherwise runs
/// until dropped.
pub(crate) async fn persist_progress(
    ctx: Arc<Ctx>,
    job_id: i64,
    base: i32,
    live: Arc<Mutex<Live>>,
    cancel: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) -> Ended {
    let lease = ctx.config.queue.lease;
    let stall_after = ctx.config.mover.stall_timeout;
    let mut moved_at = tokio::time::Instant::now();
    let mut seen = None;
    let mut tick = tokio::time::interval(ctx.config.mover.progress_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut last = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => {
                let _ = cancel.send(true);
                return Ended::Lost(Lost::Shutdown);
            }
        }
        let (counts, relayed) = match live.lock() {
            Ok(l) => (l.total(base), l.relayed),
            Err(_) => continue,
        };
        let done = (counts.completed, counts.failed, counts.warning, relayed);
        if seen != Some(done) {
            seen = Some(done);
            moved_at = tokio::time::Instant::now();
        } else if moved_at.elapsed() >= stall_after {
            warn!(job = job_id, seconds = stall_after.as_secs(), "retrieve stalled: cancelling the attempt");
            let _ = cancel.send(true);
            return Ended::Stalled(stall_after);
        }
        // Bounded: a hung connection must not hold back the next beat.
        let beat = tokio::time::timeout(lease / 2, ctx.store.update_progress(job_id, &ctx.worker, counts, lease)).await;
        match beat {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => {
                let _ = cancel.send(true);
                return Ended::Lost(Lost::NotOwned);
            }
            // The database is away: keep retrieving; the lease may lapse and another
            // worker would redo the study, which only costs time.
            Ok(Err(e)) => warn!(job = job_id, error = %e, "cannot persist progress"),
            Err(_) => warn!(job = job_id, "persisting progress timed out"),
        }
        if last != Some(relayed) && relayed > 0 {
            let _ = ctx.store.set_received(job_id, &ctx.worker, relayed as i32).await;
            last = Some(relayed);
        }
    }
}
