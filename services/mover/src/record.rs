//! Recording an attempt's outcome. The database may be away when a retrieve ends (a
//! restart, a network cut): the outcome is kept in memory and the write retried with
//! backoff until it lands, so the job's slot is freed seconds after the database is back
//! instead of when the lease runs out. Bounded by [`WRITE_PATIENCE`]: by then the rescuer
//! has long handed the job to another worker, and the write would find it gone.

use crate::{Ctx, metrics};

use priorfetch_store::{Counts, ExamRollUp, ExamStatus, Finish, Job, JobState, RetryOutcome, StoreError};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// How a job run ended, for the dispatcher.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEnd {
    /// The job is finished in this state.
    Finished(JobState),
    /// Back in the queue for a later attempt.
    Retrying,
    /// Shutdown: handed back untouched.
    HandedBack,
    /// Cancelled meanwhile, or the lease was lost to another worker.
    NotOwned,
}

/// How long an outcome write is retried.
pub const WRITE_PATIENCE: Duration = Duration::from_secs(600);
const FIRST_DELAY: Duration = Duration::from_millis(200);
const MAX_DELAY: Duration = Duration::from_secs(2);

/// Runs `write` until it succeeds, waiting 0.2 s, 0.4 s ... 2 s between tries, for at
/// most [`WRITE_PATIENCE`]; returns the last error after that.
pub(crate) async fn until_written<T, F, Fut>(what: &str, job: i64, mut write: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let started = Instant::now();
    let mut delay = FIRST_DELAY;
    let mut tries = 0u32;
    loop {
        match write().await {
            Ok(v) => {
                if tries > 0 {
                    info!(
                        job,
                        what,
                        tries = tries + 1,
                        waited_s = started.elapsed().as_secs_f64(),
                        "outcome written after the database came back"
                    );
                }
                return Ok(v);
            }
            Err(e) if started.elapsed() >= WRITE_PATIENCE => return Err(e),
            Err(e) => {
                if tries == 0 {
                    warn!(job, what, error = %e, "cannot write to the database; keeping the outcome and retrying");
                }
                tries += 1;
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_DELAY);
            }
        }
    }
}

pub(crate) async fn finish(
    ctx: &Ctx,
    job: &Job,
    state: JobState,
    counts: Counts,
    last_status: Option<i32>,
    error: Option<String>,
    outcome: &str,
) -> RunEnd {
    metrics::JOB_ATTEMPTS.with_label_values(&[job.archive.as_str(), job.method.as_str(), outcome]).inc();
    count_suboperations(&job.archive, counts);
    let finish = Finish { state, counts, last_status, error };
    match until_written("finish", job.id, || ctx.store.finish_job(job.id, &ctx.worker, &finish)).await {
        Ok(true) => {
            roll_up(ctx, job.exam_id).await;
            RunEnd::Finished(state)
        }
        Ok(false) => RunEnd::NotOwned,
        Err(e) => {
            warn!(job = job.id, error = %e, "gave up recording the outcome; the rescuer hands the job back");
            RunEnd::NotOwned
        }
    }
}

/// Puts the job back with backoff, never sooner than `wait` (the archive's Retry-After).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn retry(
    ctx: &Ctx,
    job: &Job,
    error: &str,
    last_status: Option<i32>,
    counts: Counts,
    outcome: &str,
    wait: Option<std::time::Duration>,
) -> RunEnd {
    metrics::JOB_ATTEMPTS.with_label_values(&[job.archive.as_str(), job.method.as_str(), outcome]).inc();
    count_suboperations(&job.archive, counts);
    let error = format!("attempt {}: {error}", job.attempt);
    let policy = ctx.policy.at_least(wait.unwrap_or_default());
    if crate::dispatch::fail_over(ctx, job, &error, policy.delay(Ord::max(job.attempt, 1) as u32)).await {
        return RunEnd::Retrying;
    }
    let write = || ctx.store.retry_job(job.id, &ctx.worker, &error, last_status, counts, &policy);
    match until_written("retry", job.id, write).await {
        Ok(RetryOutcome::Retrying { .. }) => RunEnd::Retrying,
        Ok(RetryOutcome::Exhausted(state)) => {
            roll_up(ctx, job.exam_id).await;
            RunEnd::Finished(state)
        }
        Ok(RetryOutcome::NotOwned) => RunEnd::NotOwned,
        Err(e) => {
            warn!(job = job.id, error = %e, "gave up recording the retry; the rescuer hands the job back");
            RunEnd::NotOwned
        }
    }
}

fn count_suboperations(archive: &str, counts: Counts) {
    for (result, n) in [("completed", counts.completed), ("failed", counts.failed), ("warning", counts.warning)] {
        if n > 0 {
            metrics::SUBOPERATIONS.with_label_values(&[archive, result]).inc_by(n as u64);
        }
    }
}

/// After a job ended: the exam's status, and the readiness SLO once its last job ended.
pub(crate) async fn roll_up(ctx: &Ctx, exam_id: i64) {
    match until_written("roll up", exam_id, || ctx.store.roll_up_exam(exam_id)).await {
        Ok(Some(r)) => count_ready(&r),
        Ok(None) => {}
        Err(e) => warn!(exam = exam_id, error = %e, "cannot roll the exam up"),
    }
}

/// Rolls up exams whose last job ended without a roll-up (its mover was killed between
/// the two writes, or the rescuer ended the job): they would stay `fetching` for good.
pub(crate) async fn settle(ctx: &Ctx) {
    match ctx.store.settle_exams(SETTLE_BATCH).await {
        Ok(settled) => {
            for r in &settled {
                count_ready(r);
            }
            if !settled.is_empty() {
                info!(exams = settled.len(), "rolled up exams whose last job ended elsewhere");
            }
        }
        Err(e) => warn!(error = %e, "cannot look for exams to roll up"),
    }
}

/// Exams rolled up per settle pass (a pass runs every few seconds).
const SETTLE_BATCH: u64 = 200;

/// Counts a final roll-up in the readiness SLO.
fn count_ready(r: &ExamRollUp) {
    let outcome = match r.status {
        ExamStatus::Complete => match r.scheduled_at {
            Some(at) if r.ready_at > at => "late",
            _ => "in_time",
        },
        ExamStatus::Cancelled => return,
        _ => "failed",
    };
    metrics::EXAMS_READY.with_label_values(&[outcome]).inc();
    info!(exam = r.exam_id, status = r.status.as_str(), outcome, "exam priors ready");
}
