//! Deadline-aware dispatch (`queue.dispatch = "deadline"`): the claim order, boosts of
//! jobs whose exam is near, and failovers to another archive holding the same study when
//! a job's own archive is full, away or failing and the exam is near. `fifo` does none
//! of it (a baseline for comparison).

use crate::Ctx;
use chrono::Utc;
use priorfetch_config::{Config, Dispatch};
use priorfetch_store::{ClaimOrder, Job, RetrieveMethod};
use std::collections::HashSet;
use tracing::{info, warn};

pub(crate) fn claim_order(config: &Config) -> ClaimOrder {
    match config.queue.dispatch {
        Dispatch::Deadline => ClaimOrder::Deadline,
        Dispatch::Fifo => ClaimOrder::Fifo,
    }
}

/// The configured archives in preference order (lower `priority` first), with the
/// method each is retrieved by: where a failover looks.
pub(crate) fn preference(config: &Config) -> Vec<(String, RetrieveMethod)> {
    let mut archives: Vec<_> = config.archives.iter().collect();
    archives.sort_by_key(|a| a.priority);
    archives.into_iter().map(|a| (a.name.clone(), a.retrieve)).collect()
}

fn failovers_on(config: &Config) -> bool {
    config.queue.dispatch == Dispatch::Deadline && !config.queue.failover_within.is_zero()
}

/// Archives nothing should move to now: window closed or away.
fn unusable(ctx: &Ctx) -> HashSet<String> {
    let open: HashSet<String> = crate::open_archives(ctx).into_iter().collect();
    ctx.config.archives.iter().map(|a| a.name.clone()).filter(|a| !open.contains(a)).collect()
}

/// The periodic part: boosts, then queued jobs that cannot start in time moved.
pub(crate) async fn tick(ctx: &Ctx) {
    let q = &ctx.config.queue;
    if q.dispatch != Dispatch::Deadline {
        return;
    }
    match ctx.store.boost_due_soon(q.boost_within).await {
        Ok(n) if n > 0 => info!(jobs = n, "jobs boosted: their exams are due soon"),
        Ok(_) => {}
        Err(e) => warn!(error = %e, "cannot boost jobs"),
    }
    if !failovers_on(&ctx.config) {
        return;
    }
    match ctx.store.fail_over_waiting(q.failover_within, &preference(&ctx.config), &unusable(ctx)).await {
        Ok(moves) => {
            for m in moves {
                info!(job = m.job_id, from = %m.from, to = %m.to, "job failed over: its archive has no free slot before the exam");
            }
        }
        Err(e) => warn!(error = %e, "cannot fail jobs over"),
    }
}

/// After a failed attempt: when the exam is due within `failover_within` (or would be by
/// the time the retry's backoff ends) and another archive holds the study, the job moves
/// there instead of waiting for this one. True when it moved.
pub(crate) async fn fail_over(ctx: &Ctx, job: &Job, error: &str, backoff: std::time::Duration) -> bool {
    if !failovers_on(&ctx.config) {
        return false;
    }
    let Some(deadline) = job.deadline else { return false };
    let horizon =
        chrono::Duration::from_std(ctx.config.queue.failover_within + backoff).unwrap_or(chrono::Duration::MAX);
    if deadline > Utc::now() + horizon {
        return false;
    }
    let mut unusable = unusable(ctx);
    unusable.insert(job.archive.clone());
    let target = match ctx.store.failover_target(job.id, &preference(&ctx.config), &unusable).await {
        Ok(Some(target)) => target,
        Ok(None) => return false,
        Err(e) => {
            warn!(job = job.id, error = %e, "cannot look for a failover archive");
            return false;
        }
    };
    match ctx.store.fail_over_job(job.id, &ctx.worker, &target, error).await {
        Ok(true) => {
            info!(job = job.id, from = %job.archive, to = %target.0, "job failed over after a failed attempt: the exam is near");
            true
        }
        Ok(false) => false,
        Err(e) => {
            warn!(job = job.id, error = %e, "cannot fail the job over");
            false
        }
    }
}
