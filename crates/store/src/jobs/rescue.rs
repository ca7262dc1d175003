//! Rescue of claims whose holder is gone, and the retention purge.
//!
//! A claim's holder is gone when its lease expired (it stopped extending it), when its
//! worker identity's heartbeat expired (the process died: seconds, not a whole lease), or
//! when the same identity starts again (its predecessor crashed): then everything it
//! held is handed back at once.

use super::{JobState, PurgeReport, RescueReport, history_entry};
use crate::entity::{archive_slot, exam, retrieve_job, worker};
use crate::{Store, StoreError};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait, LockBehavior, LockType, Query, SelectStatement, SimpleExpr};
use sea_orm::{ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter, QuerySelect, TransactionTrait};
use std::time::Duration;

/// Which claims a rescue hands back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RescueScope<'a> {
    /// Expired leases; with `dead_workers`, also every claim of a worker whose heartbeat
    /// expired. The rescuer leaves that out right after its own database outage: every
    /// heartbeat lapsed then, and live workers need a beat to show they are alive.
    Expired { dead_workers: bool },
    /// Every claim of this worker identity: its previous incarnation crashed (start-up).
    Worker(&'a str),
}

/// Advisory lock key of the periodic rescuer ("pfrescue" in ASCII).
const RESCUER_LOCK: i64 = 0x7066_7265_7363_7565;
/// The retention purge's advisory lock ("pfpurge").
const PURGE_LOCK: i64 = 0x7066_7075_7267_6500;

/// Postgres: takes the transaction-scoped advisory lock `key` if it is free (the
/// rescuer's leader for this transaction). Other databases have one process: always true.
async fn lead(txn: &DatabaseTransaction, key: i64) -> Result<bool, StoreError> {
    use sea_orm::{ConnectionTrait, DbBackend, Statement};
    if txn.get_database_backend() != DbBackend::Postgres {
        return Ok(true);
    }
    let stmt =
        Statement::from_sql_and_values(DbBackend::Postgres, "SELECT pg_try_advisory_xact_lock($1)", [key.into()]);
    let row = txn.query_one_raw(stmt).await.map_err(|e| StoreError::query("rescuer lock", e))?;
    row.map(|r| r.try_get_by_index::<bool>(0))
        .transpose()
        .map_err(|e| StoreError::query("rescuer lock", e))
        .map(|b| b.unwrap_or(false))
}

/// Worker identities whose heartbeat expired.
fn dead_workers(now: DateTime<Utc>) -> SelectStatement {
    Query::select()
        .column(worker::Column::Name)
        .from(worker::Entity)
        .and_where(worker::Column::ExpiresAt.lt(now))
        .to_owned()
}

/// "Held by a holder that is gone", on a table's lease and worker columns.
fn gone<C: ColumnTrait>(scope: RescueScope<'_>, lease: C, holder: C, now: DateTime<Utc>) -> SimpleExpr {
    match scope {
        RescueScope::Expired { dead_workers: false } => lease.lt(now),
        RescueScope::Expired { dead_workers: true } => lease.lt(now).or(holder.in_subquery(dead_workers(now))),
        RescueScope::Worker(name) => holder.eq(name),
    }
}

impl Store {
    /// The rescuer with every rule on (see [`RescueScope::Expired`]).
    pub async fn rescue_expired(&self) -> Result<RescueReport, StoreError> {
        self.rescue(RescueScope::Expired { dead_workers: true }).await
    }

    /// At start-up: hands back everything the previous incarnation of `worker` held.
    pub async fn reclaim_worker(&self, worker: &str) -> Result<RescueReport, StoreError> {
        self.rescue(RescueScope::Worker(worker)).await
    }

    /// Running jobs whose holder is gone go back to `retryable` at once (the attempt
    /// counts: a job that crashes its worker must not loop forever), or `failed` when out
    /// of attempts; slots are freed when their lease expired, their holder is gone, or
    /// their job is not running; planning exams whose holder is gone go back to `received`.
    pub async fn rescue(&self, scope: RescueScope<'_>) -> Result<RescueReport, StoreError> {
        let op = "rescue";
        let now = Utc::now();
        let txn = self.db.begin().await.map_err(|e| StoreError::query(op, e))?;
        if matches!(scope, RescueScope::Expired { .. }) && !lead(&txn, RESCUER_LOCK).await? {
            // Another replica's rescuer holds this tick: two would only contend (and could
            // deadlock) on the same rows.
            return Ok(RescueReport::default());
        }
        let mut report = rescue_jobs(&txn, scope, now).await?;
        report.slots_freed = free_slots(&txn, scope, now).await?;
        let exams = exam::Entity::update_many()
            .col_expr(exam::Column::Status, Expr::value("received"))
            .col_expr(exam::Column::LeasedUntil, Expr::value(Option::<DateTime<Utc>>::None))
            .col_expr(exam::Column::Worker, Expr::value(Option::<String>::None))
            .col_expr(exam::Column::UpdatedAt, Expr::value(now))
            .filter(exam::Column::Status.eq("planning"))
            .filter(gone(scope, exam::Column::LeasedUntil, exam::Column::Worker, now))
            .exec(&txn)
            .await
            .map_err(|e| StoreError::query(op, e))?;
        report.exams_released = exams.rows_affected;
        let woke = report.retried + report.exams_released + report.slots_freed > 0;
        if woke {
            self.notify_work(&txn).await?;
        }
        txn.commit().await.map_err(|e| StoreError::query(op, e))?;
        if woke {
            self.wake_local();
        }
        Ok(report)
    }

    /// Retention: deletes finished jobs, finished exams without open jobs, and dead letters
    /// older than `older_than`.
    pub async fn purge_finished(&self, older_than: Duration) -> Result<PurgeReport, StoreError> {
        let op = "purge";
        let cutoff = Utc::now() - older_than;
        let txn = self.db.begin().await.map_err(|e| StoreError::query(op, e))?;
        // Replicas run the same cron: one purges, the others find the lock taken and skip.
        if !lead(&txn, PURGE_LOCK).await? {
            return Ok(PurgeReport::default());
        }
        let finished: Vec<&str> = JobState::ALL.iter().filter(|s| s.is_finished()).map(|s| s.as_str()).collect();
        let jobs = retrieve_job::Entity::delete_many()
            .filter(retrieve_job::Column::State.is_in(finished))
            .filter(retrieve_job::Column::FinishedAt.lt(cutoff))
            .exec(&txn)
            .await
            .map_err(|e| StoreError::query(op, e))?;
        use crate::entity::dead_letter;
        let terminal: Vec<&str> = crate::ExamStatus::TERMINAL.iter().map(|s| s.as_str()).collect();
        let exams = exam::Entity::delete_many()
            .filter(exam::Column::Status.is_in(terminal))
            .filter(exam::Column::UpdatedAt.lt(cutoff))
            .filter(
                exam::Column::Id.not_in_subquery(
                    sea_orm::sea_query::Query::select()
                        .column(retrieve_job::Column::ExamId)
                        .from(retrieve_job::Entity)
                        .to_owned(),
                ),
            )
            .exec(&txn)
            .await
            .map_err(|e| StoreError::query(op, e))?;
        let letters = dead_letter::Entity::delete_many()
            .filter(dead_letter::Column::ReceivedAt.lt(cutoff))
            .exec(&txn)
            .await
            .map_err(|e| StoreError::query(op, e))?;
        // Heartbeats of identities that never came back (replaced pods).
        worker::Entity::delete_many()
            .filter(worker::Column::ExpiresAt.lt(cutoff))
            .exec(&txn)
            .await
            .map_err(|e| StoreError::query(op, e))?;
        txn.commit().await.map_err(|e| StoreError::query(op, e))?;
        Ok(PurgeReport { jobs: jobs.rows_affected, exams: exams.rows_affected, dead_letters: letters.rows_affected })
    }
}

async fn rescue_jobs(
    txn: &DatabaseTransaction,
    scope: RescueScope<'_>,
    now: DateTime<Utc>,
) -> Result<RescueReport, StoreError> {
    let op = "rescue jobs";
    // Every running job holds a slot (a small table), so the slots lead to the running
    // jobs without an index of running jobs.
    let held = Query::select()
        .column(archive_slot::Column::JobId)
        .from(archive_slot::Entity)
        .and_where(archive_slot::Column::JobId.is_not_null())
        .to_owned();
    let stuck = retrieve_job::Entity::find()
        .filter(retrieve_job::Column::Id.in_subquery(held))
        .filter(retrieve_job::Column::State.eq(JobState::Running.as_str()))
        .filter(gone(scope, retrieve_job::Column::LeasedUntil, retrieve_job::Column::Worker, now))
        .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
        .all(txn)
        .await
        .map_err(|e| StoreError::query(op, e))?;
    let mut report = RescueReport::default();
    for job in stuck {
        let worker = job.worker.clone().unwrap_or_default();
        let error = match scope {
            RescueScope::Worker(_) => format!("worker '{worker}' restarted while running this job (crashed or killed)"),
            _ => format!("worker '{worker}' stopped reporting (crashed or cut off)"),
        };
        let mut errors = job.errors.as_array().cloned().unwrap_or_default();
        errors.push(history_entry(job.attempt, &error));
        let exhausted = job.attempt >= job.max_attempts;
        let state = if exhausted { JobState::Failed } else { JobState::Retryable };
        retrieve_job::Entity::update_many()
            .col_expr(retrieve_job::Column::State, Expr::value(state.as_str()))
            .col_expr(retrieve_job::Column::NotBefore, Expr::value(now))
            .col_expr(retrieve_job::Column::LastError, Expr::value(error))
            .col_expr(retrieve_job::Column::Errors, Expr::value(serde_json::Value::Array(errors)))
            .col_expr(retrieve_job::Column::LeasedUntil, Expr::value(Option::<DateTime<Utc>>::None))
            .col_expr(retrieve_job::Column::Worker, Expr::value(Option::<String>::None))
            .col_expr(retrieve_job::Column::UpdatedAt, Expr::value(now))
            .col_expr(retrieve_job::Column::FinishedAt, Expr::value(if exhausted { Some(now) } else { None }))
            .filter(retrieve_job::Column::Id.eq(job.id))
            .exec(txn)
            .await
            .map_err(|e| StoreError::query(op, e))?;
        if exhausted { report.failed += 1 } else { report.retried += 1 }
    }
    Ok(report)
}

/// Frees slots whose lease expired, whose job is not running (rescued above, finished,
/// gone), or whose cancelled job's holder is gone. A cancelled job keeps its slot while
/// its live worker sends C-CANCEL: the association is still open.
async fn free_slots(txn: &DatabaseTransaction, scope: RescueScope<'_>, now: DateTime<Utc>) -> Result<u64, StoreError> {
    let job_of_slot = || {
        Query::select()
            .expr(Expr::val(1))
            .from(retrieve_job::Entity)
            .and_where(
                Expr::col((retrieve_job::Entity, retrieve_job::Column::Id))
                    .equals((archive_slot::Entity, archive_slot::Column::JobId)),
            )
            .to_owned()
    };
    let alive = job_of_slot()
        .and_where(retrieve_job::Column::State.is_in([JobState::Running.as_str(), JobState::Cancelled.as_str()]))
        .to_owned();
    let holder_gone = job_of_slot()
        .and_where(gone(scope, retrieve_job::Column::LeasedUntil, retrieve_job::Column::Worker, now))
        .to_owned();
    let lease_expired = match scope {
        RescueScope::Worker(_) => Expr::val(false),
        _ => archive_slot::Column::LeasedUntil.lt(now),
    };
    let freed = archive_slot::Entity::update_many()
        .col_expr(archive_slot::Column::JobId, Expr::value(Option::<i64>::None))
        .col_expr(archive_slot::Column::LeasedUntil, Expr::value(Option::<DateTime<Utc>>::None))
        .filter(archive_slot::Column::JobId.is_not_null())
        .filter(lease_expired.or(Expr::exists(alive).not()).or(Expr::exists(holder_gone)))
        .exec(txn)
        .await
        .map_err(|e| StoreError::query("free slots", e))?;
    Ok(freed.rows_affected)
}
