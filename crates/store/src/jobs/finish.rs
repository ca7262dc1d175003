//! A running job's progress and how its attempt ends: finish, retry with backoff,
//! hand-back at shutdown, cancel. Each frees the job's slot in the same transaction.

use super::{Counts, Finish, JobState, RetryOutcome, held_by, history_entry, state_in};
use crate::entity::{archive_slot, retrieve_job};
use crate::{RetryPolicy, Store, StoreError};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait, QueryFilter, QuerySelect, Statement,
    TransactionTrait,
};
use std::time::Duration;

impl Store {
    /// Persists progress and extends the lease. Returns false when the worker no longer
    /// owns a running job (cancelled, or its lease was rescued): the caller must stop the
    /// retrieve (C-CANCEL).
    pub async fn update_progress(
        &self,
        job_id: i64,
        worker: &str,
        counts: Counts,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let op = "update progress";
        let now = Utc::now();
        let until = now + lease;
        if self.is_postgres() {
            return self.update_progress_postgres(job_id, worker, counts, until, now).await;
        }
        let txn = self.db.begin().await.map_err(|e| StoreError::query(op, e))?;
        let result = retrieve_job::Entity::update_many()
            .col_expr(retrieve_job::Column::Remaining, Expr::value(counts.remaining))
            .col_expr(retrieve_job::Column::Completed, Expr::value(counts.completed))
            .col_expr(retrieve_job::Column::Failed, Expr::value(counts.failed))
            .col_expr(retrieve_job::Column::Warning, Expr::value(counts.warning))
            .col_expr(retrieve_job::Column::LeasedUntil, Expr::value(until))
            .col_expr(retrieve_job::Column::UpdatedAt, Expr::value(now))
            .filter(held_by(job_id, worker))
            .exec(&txn)
            .await
            .map_err(|e| StoreError::query(op, e))?;
        if result.rows_affected == 1 {
            archive_slot::Entity::update_many()
                .col_expr(archive_slot::Column::LeasedUntil, Expr::value(until))
                .filter(archive_slot::Column::JobId.eq(job_id))
                .exec(&txn)
                .await
                .map_err(|e| StoreError::query(op, e))?;
        }
        txn.commit().await.map_err(|e| StoreError::query(op, e))?;
        Ok(result.rows_affected == 1)
    }

    /// Postgres: one statement for the job and its slot. A heartbeat is cancelled when its
    /// retrieve ends or it times out; an explicit transaction cancelled between its two
    /// updates would leave the job's row locked on a pooled connection, and the attempt's
    /// outcome write would wait on that lock.
    async fn update_progress_postgres(
        &self,
        job_id: i64,
        worker: &str,
        counts: Counts,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let sql = "WITH job AS ( \
                 UPDATE retrieve_jobs SET remaining = $3, completed = $4, failed = $5, warning = $6, \
                   leased_until = $7, updated_at = $8 \
                 WHERE id = $1 AND worker = $2 AND state = 'running' RETURNING id), \
               slot AS ( \
                 UPDATE archive_slots SET leased_until = $7 WHERE job_id = $1 AND EXISTS (SELECT 1 FROM job) \
                 RETURNING slot) \
               SELECT (SELECT count(*) FROM job) AS owned, (SELECT count(*) FROM slot) AS slots";
        let stmt = Statement::from_sql_and_values(
            DbBackend::Postgres,
            sql,
            [
                job_id.into(),
                worker.into(),
                counts.remaining.into(),
                counts.completed.into(),
                counts.failed.into(),
                counts.warning.into(),
                until.into(),
                now.into(),
            ],
        );
        let row = self.db.query_one_raw(stmt).await.map_err(|e| StoreError::query("update progress", e))?;
        Ok(row.and_then(|r| r.try_get_by_index::<i64>(0).ok()).unwrap_or(0) == 1)
    }

    /// Postgres: one statement frees the slot and finishes the job (the claim/finish
    /// benchmark's hot path).
    async fn finish_job_postgres(&self, job_id: i64, worker: &str, finish: &Finish) -> Result<bool, StoreError> {
        let now = Utc::now();
        let sql = "WITH job AS ( \
                 UPDATE retrieve_jobs SET state = $3, remaining = $4, completed = $5, failed = $6, warning = $7, \
                   last_status = $8, last_error = $9, \
                   errors = CASE WHEN $9::text IS NULL THEN errors ELSE errors || jsonb_build_array( \
                     jsonb_build_object('at', $10::timestamptz, 'attempt', attempt, 'error', $9::text)) END, \
                   leased_until = NULL, updated_at = $10, finished_at = $10 \
                 WHERE id = $1 AND worker = $2 AND state = 'running' RETURNING id), \
               slot AS ( \
                 UPDATE archive_slots SET job_id = NULL, leased_until = NULL WHERE job_id = $1 \
                   AND NOT EXISTS (SELECT 1 FROM retrieve_jobs WHERE id = $1 AND state = 'running' AND worker <> $2) \
                 RETURNING slot) \
               SELECT (SELECT count(*) FROM job) AS finished, (SELECT count(*) FROM slot) AS freed";
        let c = finish.counts;
        let stmt = Statement::from_sql_and_values(
            DbBackend::Postgres,
            sql,
            [
                job_id.into(),
                worker.into(),
                finish.state.as_str().into(),
                c.remaining.into(),
                c.completed.into(),
                c.failed.into(),
                c.warning.into(),
                finish.last_status.into(),
                finish.error.clone().into(),
                now.into(),
            ],
        );
        let row = self.db.query_one_raw(stmt).await.map_err(|e| StoreError::query("finish job", e))?;
        Ok(row.and_then(|r| r.try_get_by_index::<i64>(0).ok()).unwrap_or(0) == 1)
    }

    /// Ends a running job for good. Returns false when the worker no longer owned it.
    pub async fn finish_job(&self, job_id: i64, worker: &str, finish: &Finish) -> Result<bool, StoreError> {
        if self.is_postgres() {
            return self.finish_job_postgres(job_id, worker, finish).await;
        }
        let op = "finish job";
        debug_assert!(finish.state.is_finished(), "finish_job needs a finished state");
        let txn = self.db.begin().await.map_err(|e| StoreError::query(op, e))?;
        let Some(job) = owned_running(&txn, job_id, worker).await? else {
            release_slot(&txn, job_id, worker).await?; // a cancelled job's worker still frees its slot
            txn.commit().await.map_err(|e| StoreError::query(op, e))?;
            return Ok(false);
        };
        let now = Utc::now();
        let mut errors = job.errors.as_array().cloned().unwrap_or_default();
        if let Some(error) = &finish.error {
            errors.push(history_entry(job.attempt, error));
        }
        retrieve_job::Entity::update_many()
            .col_expr(retrieve_job::Column::State, Expr::value(finish.state.as_str()))
            .col_expr(retrieve_job::Column::Remaining, Expr::value(finish.counts.remaining))
            .col_expr(retrieve_job::Column::Completed, Expr::value(finish.counts.completed))
            .col_expr(retrieve_job::Column::Failed, Expr::value(finish.counts.failed))
            .col_expr(retrieve_job::Column::Warning, Expr::value(finish.counts.warning))
            .col_expr(retrieve_job::Column::LastStatus, Expr::value(finish.last_status))
            .col_expr(retrieve_job::Column::LastError, Expr::value(finish.error.clone()))
            .col_expr(retrieve_job::Column::Errors, Expr::value(serde_json::Value::Array(errors)))
            .col_expr(retrieve_job::Column::LeasedUntil, Expr::value(Option::<DateTime<Utc>>::None))
            .col_expr(retrieve_job::Column::UpdatedAt, Expr::value(now))
            .col_expr(retrieve_job::Column::FinishedAt, Expr::value(now))
            .filter(retrieve_job::Column::Id.eq(job_id))
            .exec(&txn)
            .await
            .map_err(|e| StoreError::query(op, e))?;
        release_slot(&txn, job_id, worker).await?;
        txn.commit().await.map_err(|e| StoreError::query(op, e))?;
        Ok(true)
    }

    /// Puts a failed attempt back in the queue after the policy's backoff, or finishes the
    /// job when `max_attempts` is reached (`partial` if some instances arrived, else
    /// `failed`). The error goes into the history either way.
    pub async fn retry_job(
        &self,
        job_id: i64,
        worker: &str,
        error: &str,
        last_status: Option<i32>,
        counts: Counts,
        policy: &RetryPolicy,
    ) -> Result<RetryOutcome, StoreError> {
        let op = "retry job";
        let txn = self.db.begin().await.map_err(|e| StoreError::query(op, e))?;
        let Some(job) = owned_running(&txn, job_id, worker).await? else {
            release_slot(&txn, job_id, worker).await?;
            txn.commit().await.map_err(|e| StoreError::query(op, e))?;
            return Ok(RetryOutcome::NotOwned);
        };
        let now = Utc::now();
        let mut errors = job.errors.as_array().cloned().unwrap_or_default();
        errors.push(history_entry(job.attempt, error));
        let (state, not_before, finished_at, outcome) = if job.attempt >= job.max_attempts {
            let state = if counts.completed > 0 { JobState::Partial } else { JobState::Failed };
            (state, job.not_before, Some(now), RetryOutcome::Exhausted(state))
        } else {
            let delay = policy.delay(Ord::max(job.attempt, 1) as u32);
            let at = now + delay;
            (JobState::Retryable, at, None, RetryOutcome::Retrying { not_before: at })
        };
        retrieve_job::Entity::update_many()
            .col_expr(retrieve_job::Column::State, Expr::value(state.as_str()))
            .col_expr(retrieve_job::Column::NotBefore, Expr::value(not_before))
            .col_expr(retrieve_job::Column::Remaining, Expr::value(counts.remaining))
            .col_expr(retrieve_job::Column::Completed, Expr::value(counts.completed))
            .col_expr(retrieve_job::Column::Failed, Expr::value(counts.failed))
            .col_expr(retrieve_job::Column::Warning, Expr::value(counts.warning))
            .col_expr(retrieve_job::Column::LastStatus, Expr::value(last_status))
            .col_expr(retrieve_job::Column::LastError, Expr::value(error))
            .col_expr(retrieve_job::Column::Errors, Expr::value(serde_json::Value::Array(errors)))
            .col_expr(retrieve_job::Column::LeasedUntil, Expr::value(Option::<DateTime<Utc>>::None))
            .col_expr(retrieve_job::Column::Worker, Expr::value(Option::<String>::None))
            .col_expr(retrieve_job::Column::UpdatedAt, Expr::value(now))
            .col_expr(retrieve_job::Column::FinishedAt, Expr::value(finished_at))
            .filter(retrieve_job::Column::Id.eq(job_id))
            .exec(&txn)
            .await
            .map_err(|e| StoreError::query(op, e))?;
        release_slot(&txn, job_id, worker).await?;
        if matches!(outcome, RetryOutcome::Retrying { .. }) {
            self.notify_work(&txn).await?;
        }
        txn.commit().await.map_err(|e| StoreError::query(op, e))?;
        Ok(outcome)
    }

    /// Hands a running job back untouched (graceful shutdown): claimable again at once,
    /// and the attempt it started is not counted.
    pub async fn release_job(&self, job_id: i64, worker: &str) -> Result<bool, StoreError> {
        let op = "release job";
        let now = Utc::now();
        let txn = self.db.begin().await.map_err(|e| StoreError::query(op, e))?;
        let result = retrieve_job::Entity::update_many()
            .col_expr(retrieve_job::Column::State, Expr::value(JobState::Available.as_str()))
            .col_expr(retrieve_job::Column::Attempt, Expr::col(retrieve_job::Column::Attempt).sub(1))
            .col_expr(retrieve_job::Column::LeasedUntil, Expr::value(Option::<DateTime<Utc>>::None))
            .col_expr(retrieve_job::Column::Worker, Expr::value(Option::<String>::None))
            .col_expr(retrieve_job::Column::UpdatedAt, Expr::value(now))
            .filter(held_by(job_id, worker))
            .exec(&txn)
            .await
            .map_err(|e| StoreError::query(op, e))?;
        release_slot(&txn, job_id, worker).await?;
        self.notify_work(&txn).await?;
        txn.commit().await.map_err(|e| StoreError::query(op, e))?;
        self.wake_local();
        Ok(result.rows_affected == 1)
    }

    /// An archive is reachable again: its jobs that failed since `since` (when it went
    /// away) are due at once instead of after their backoff, which the outage, not the
    /// job, caused. Returns how many.
    pub async fn wake_archive_jobs(&self, archive: &str, since: DateTime<Utc>) -> Result<u64, StoreError> {
        let op = "wake archive jobs";
        let now = Utc::now();
        let txn = self.db.begin().await.map_err(|e| StoreError::query(op, e))?;
        let result = retrieve_job::Entity::update_many()
            .col_expr(retrieve_job::Column::NotBefore, Expr::value(now))
            .filter(retrieve_job::Column::Archive.eq(archive))
            .filter(retrieve_job::Column::State.eq(JobState::Retryable.as_str()))
            .filter(retrieve_job::Column::NotBefore.gt(now))
            .filter(retrieve_job::Column::UpdatedAt.gte(since))
            .exec(&txn)
            .await
            .map_err(|e| StoreError::query(op, e))?;
        if result.rows_affected > 0 {
            self.notify_work(&txn).await?;
        }
        txn.commit().await.map_err(|e| StoreError::query(op, e))?;
        if result.rows_affected > 0 {
            self.wake_local();
        }
        Ok(result.rows_affected)
    }

    /// Cancels every unfinished job of an exam. Queued jobs end at once; running ones are
    /// marked cancelled, and their worker learns it from its next progress update (which
    /// returns false) and sends C-CANCEL. Returns the ids of the jobs that were running.
    pub async fn cancel_exam_jobs(&self, exam_id: i64) -> Result<Vec<i64>, StoreError> {
        let op = "cancel exam jobs";
        let now = Utc::now();
        let txn = self.db.begin().await.map_err(|e| StoreError::query(op, e))?;
        let running: Vec<i64> = retrieve_job::Entity::find()
            .select_only()
            .column(retrieve_job::Column::Id)
            .filter(retrieve_job::Column::ExamId.eq(exam_id))
            .filter(retrieve_job::Column::State.eq(JobState::Running.as_str()))
            .into_tuple()
            .all(&txn)
            .await
            .map_err(|e| StoreError::query(op, e))?;
        let mut open = JobState::OPEN.to_vec();
        open.push(JobState::Running);
        retrieve_job::Entity::update_many()
            .col_expr(retrieve_job::Column::State, Expr::value(JobState::Cancelled.as_str()))
            .col_expr(retrieve_job::Column::UpdatedAt, Expr::value(now))
            .col_expr(retrieve_job::Column::FinishedAt, Expr::value(now))
            .filter(retrieve_job::Column::ExamId.eq(exam_id))
            .filter(state_in(&open))
            .exec(&txn)
            .await
            .map_err(|e| StoreError::query(op, e))?;
        txn.commit().await.map_err(|e| StoreError::query(op, e))?;
        Ok(running)
    }
}

async fn owned_running(
    txn: &DatabaseTransaction,
    job_id: i64,
    worker: &str,
) -> Result<Option<retrieve_job::Model>, StoreError> {
    retrieve_job::Entity::find()
        .filter(held_by(job_id, worker))
        .one(txn)
        .await
        .map_err(|e| StoreError::query("load job", e))
}

/// Frees the job's slot, unless another worker has claimed the job again since (after a
/// rescue): that slot is the new claim's.
pub(super) async fn release_slot(txn: &DatabaseTransaction, job_id: i64, worker: &str) -> Result<(), StoreError> {
    let reclaimed = retrieve_job::Entity::find_by_id(job_id)
        .filter(retrieve_job::Column::State.eq(JobState::Running.as_str()))
        .filter(retrieve_job::Column::Worker.ne(worker))
        .one(txn)
        .await
        .map_err(|e| StoreError::query("release slot", e))?;
    if reclaimed.is_some() {
        return Ok(());
    }
    archive_slot::Entity::update_many()
        .col_expr(archive_slot::Column::JobId, Expr::value(Option::<i64>::None))
        .col_expr(archive_slot::Column::LeasedUntil, Expr::value(Option::<DateTime<Utc>>::None))
        .filter(archive_slot::Column::JobId.eq(job_id))
        .exec(txn)
        .await
        .map_err(|e| StoreError::query("release slot", e))?;
    Ok(())
}
