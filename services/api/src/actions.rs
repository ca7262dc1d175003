//! Operator actions, shared by the API, the web console and the CLI: each one is done, then audited
//! (`audit` table: who, what, on which target, outcome) and logged at info without PHI
//! (job and dead-letter IDs, archive names and counts only).

use crate::filters::{FilterError, JobParams, retry_filter};
use priorfetch_config::{Config, IntakeSource};
use priorfetch_listener::Verdict;
use priorfetch_store::{AuditEntry, Store, StoreError};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error(transparent)]
    Filter(#[from] FilterError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no dead letter {0}")]
    NoDeadLetter(i64),
    #[error("dead letter {id} came from source '{origin}', which cannot be replayed")]
    UnknownSource { id: i64, origin: String },
}

/// Bulk retry of the jobs `params` selects (state defaults to `failed`); returns how many
/// were requeued. The audit row carries the filter as given and parsed.
pub async fn bulk_retry(store: &Store, actor: &str, params: &JobParams) -> Result<u64, ActionError> {
    let filter = retry_filter(params, chrono::Utc::now())?;
    let target = serde_json::to_value(&filter).unwrap_or_default();
    let entry = AuditEntry { actor, action: "jobs.bulk_retry", target: target.clone() };
    let requeued = store.retry_jobs(&filter, &entry).await?;
    tracing::info!(%actor, filter = %target, requeued, "operator: bulk retry");
    Ok(requeued)
}

/// One job made claimable now; false when it does not exist or is running.
pub async fn retry(store: &Store, actor: &str, job: i64) -> Result<bool, ActionError> {
    let done = store.retry_now(job).await?;
    let outcome = if done { "requeued" } else { "refused: no such job, or running" };
    store.record_audit(&AuditEntry { actor, action: "jobs.retry", target: json!({ "job": job }) }, outcome).await?;
    tracing::info!(%actor, job, outcome, "operator: retry");
    Ok(done)
}

/// One unfinished job cancelled; false when it does not exist or already ended.
pub async fn cancel(store: &Store, actor: &str, job: i64) -> Result<bool, ActionError> {
    let done = store.cancel_job(job).await?;
    let outcome = if done { "cancelled" } else { "refused: no such job, or finished" };
    store.record_audit(&AuditEntry { actor, action: "jobs.cancel", target: json!({ "job": job }) }, outcome).await?;
    tracing::info!(%actor, job, outcome, "operator: cancel");
    Ok(done)
}

/// One job's next attempt set to `at` (a waiting job keeps its attempts; a failed or
/// partial one is re-opened with a fresh budget); false when it does not exist or is
/// running, completed, cancelled or skipped.
pub async fn reschedule(
    store: &Store,
    actor: &str,
    job: i64,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<bool, ActionError> {
    let done = store.reschedule_job(job, at).await?;
    let outcome = if done { "rescheduled" } else { "refused: no such job, or not waiting or failed" };
    let target = json!({ "job": job, "not_before": at });
    store.record_audit(&AuditEntry { actor, action: "jobs.reschedule", target }, outcome).await?;
    tracing::info!(%actor, job, %at, outcome, "operator: reschedule");
    Ok(done)
}

/// What a replay did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replayed {
    /// The intake's verdict: accepted, duplicate, updated, cancelled, unmatched, invalid.
    pub outcome: &'static str,
    pub exam_id: Option<i64>,
    /// Why it is still invalid.
    pub reason: Option<String>,
}

impl Replayed {
    fn text(&self) -> String {
        match (&self.exam_id, &self.reason) {
            (Some(id), _) => format!("{} exam {id}", self.outcome),
            (None, Some(reason)) => format!("{}: {reason}", self.outcome),
            (None, None) => self.outcome.to_string(),
        }
    }
}

/// Feeds dead letter `id`'s payload back into the intake it came from, exactly as that
/// source's listener would (same decoding, same event keys): the exam is recorded once,
/// however often the letter is replayed. The letter keeps its row and notes the outcome.
pub async fn replay(store: &Store, config: &Config, actor: &str, id: i64) -> Result<Replayed, ActionError> {
    let letter = store.dead_letter(id).await?.ok_or(ActionError::NoDeadLetter(id))?;
    let source = serde_json::from_value::<IntakeSource>(json!(letter.source))
        .map_err(|_| ActionError::UnknownSource { id, origin: letter.source.clone() })?;
    let intake = priorfetch_listener::intake_of(config, store.clone(), source);
    let verdict = intake.replay(&letter.payload).await?;
    let replayed = Replayed {
        outcome: verdict.outcome(),
        exam_id: match verdict {
            Verdict::Accepted(id) | Verdict::Duplicate(id) => Some(id),
            _ => None,
        },
        reason: match &verdict {
            Verdict::Invalid { reason, .. } => Some(reason.clone()),
            _ => None,
        },
    };
    let text = replayed.text();
    store.mark_replayed(id, &text).await?;
    store
        .record_audit(&AuditEntry { actor, action: "dead_letters.replay", target: json!({ "dead_letter": id }) }, &text)
        .await?;
    tracing::info!(%actor, dead_letter = id, source = %letter.source, outcome = replayed.outcome, exam_id = ?replayed.exam_id,
                   "operator: dead letter replayed");
    Ok(replayed)
}
