//! The retrieve-job queue.
//!
//! States: `scheduled` (waiting for `not_before`), `available`, `running` (leased by a
//! worker), `retryable` (waiting for its backoff), and the finished `completed`, `partial`,
//! `failed`, `cancelled`, `skipped`. Claimable: scheduled/available/retryable with
//! `not_before <= now`.
//!
//! The per-archive association cap is a set of slot rows (`archive_slots`, one per
//! allowed concurrent retrieve). A claim takes a free slot row together with the job, both
//! locked `FOR UPDATE SKIP LOCKED` on Postgres, so concurrent claimers in any number of
//! processes can never hold more slots than exist. Finishing, retrying or rescuing a job
//! frees its slot.

use crate::entity::{archive_slot, retrieve_job};
use crate::{RetryPolicy, Store, StoreError};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, Statement, TransactionTrait, Value,
};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobState {
    Scheduled,
    Available,
    Running,
    Retryable,
    Completed,
    Partial,
    Failed,
    Cancelled,
    Skipped,
}

impl JobState {
    pub const ALL: [JobState; 9] = [
        JobState::Scheduled,
        JobState::Available,
        JobState::Running,
        JobState::Retryable,
        JobState::Completed,
        JobState::Partial,
        JobState::Failed,
        JobState::Cancelled,
        JobState::Skipped,
    ];
    pub const OPEN: [JobState; 3] = [JobState::Scheduled, JobState::Available, JobState::Retryable];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Scheduled => "scheduled",
            JobState::Available => "available",
            JobState::Running => "running",
            JobState::Retryable => "retryable",
            JobState::Completed => "completed",
            JobState::Partial => "partial",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::Skipped => "skipped",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Partial | JobState::Failed | JobState::Cancelled | JobState::Skipped
        )
    }
}

/// A job to enqueue. Unique per (exam, study, destination): enqueueing it twice is a no-op.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub exam_id: i64,
    pub study_instance_uid: String,
    pub archive: String,
    pub method: String,
    pub destination: String,
    pub priority: i32,
    pub not_before: DateTime<Utc>,
    pub deadline: Option<DateTime<Utc>>,
    pub max_attempts: i32,
    pub expected_instances: Option<i32>,
}

/// Sub-operation counts reported by the archive (C-MOVE/C-GET responses).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub remaining: Option<i32>,
    pub completed: i32,
    pub failed: i32,
    pub warning: i32,
}

/// How an attempt ended for good.
#[derive(Debug, Clone, PartialEq)]
pub struct Finish {
    /// Completed, Partial, Failed or Skipped.
    pub state: JobState,
    pub counts: Counts,
    pub last_status: Option<i32>,
    /// Recorded as `last_error` and appended to the error history.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryOutcome {
    /// Back in the queue, claimable from this time.
    Retrying { not_before: DateTime<Utc> },
    /// `max_attempts` reached: finished as failed (or partial when some instances arrived).
    Exhausted(JobState),
    /// The worker no longer holds the job (lease lost or cancelled): nothing changed.
    NotOwned,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RescueReport {
    pub retried: u64,
    pub failed: u64,
    pub slots_freed: u64,
    pub exams_released: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeReport {
    pub jobs: u64,
    pub exams: u64,
    pub dead_letters: u64,
}

/// Inserts jobs in chunks inside `txn`; an existing (exam, study, destination) is a no-op.
/// Returns how many rows were new.
pub(crate) async fn insert_jobs(
    txn: &DatabaseTransaction,
    jobs: &[NewJob],
    now: DateTime<Utc>,
    op: &'static str,
) -> Result<u64, StoreError> {
    let mut inserted = 0;
    for chunk in jobs.chunks(500) {
        inserted += retrieve_job::Entity::insert_many(chunk.iter().map(|j| job_row(j, now)))
            .on_conflict(
                OnConflict::columns([
                    retrieve_job::Column::ExamId,
                    retrieve_job::Column::StudyInstanceUid,
                    retrieve_job::Column::Destination,
                ])
                .do_nothing()
                .to_owned(),
            )
            .exec_without_returning(txn)
            .await
            .map_err(|e| StoreError::query(op, e))?;
    }
    Ok(inserted)
}

/// The row of a newly enqueued job: `available` when due, else `scheduled`.
fn job_row(j: &NewJob, now: DateTime<Utc>) -> retrieve_job::ActiveModel {
    retrieve_job::ActiveModel {
        exam_id: Set(j.exam_id),
        study_instance_uid: Set(j.study_instance_uid.clone()),
        archive: Set(j.archive.clone()),
        method: Set(j.method.clone()),
        destination: Set(j.destination.clone()),
        state: Set(if j.not_before <= now { JobState::Available } else { JobState::Scheduled }.as_str().to_string()),
        priority: Set(j.priority),
        not_before: Set(j.not_before),
        deadline: Set(j.deadline),
        attempt: Set(0),
        max_attempts: Set(j.max_attempts),
        remaining: Set(None),
        completed: Set(0),
        failed: Set(0),
        warning: Set(0),
        expected_instances: Set(j.expected_instances),
        last_status: Set(None),
        last_error: Set(None),
        errors: Set(serde_json::json!([])),
        leased_until: Set(None),
        worker: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
        finished_at: Set(None),
        ..Default::default()
    }
}

fn state_in(states: &[JobState]) -> sea_orm::sea_query::SimpleExpr {
    retrieve_job::Column::State.is_in(states.iter().map(|s| s.as_str()))
}

fn history_entry(attempt: i32, error: &str) -> serde_json::Value {
    serde_json::json!({ "at": Utc::now().to_rfc3339(), "attempt": attempt, "error": error })
}

impl Store {
    /// Makes the slot rows match each archive's `max_associations`: adds missing slots,
    /// removes free slots above the cap (busy ones go once their job ends and a later
    /// sync runs). Call at start-up of every service that claims.
    pub async fn sync_archive_slots(&self, caps: &[(String, u32)]) -> Result<(), StoreError> {
        let op = "sync archive slots";
        let txn = self.db.begin().await.map_err(|e| StoreError::query(op, e))?;
        for (archive, cap) in caps {
            let rows = (0..*cap as i32).map(|slot| archive_slot::ActiveModel {
                archive: Set(archive.clone()),
                slot: Set(slot),
                job_id: Set(None),
                leased_until: Set(None),
            });
            archive_slot::Entity::insert_many(rows)
                .on_conflict(
                    OnConflict::columns([archive_slot::Column::Archive, archive_slot::Column::Slot])
                        .do_nothing()
                        .to_owned(),
                )
                .exec_without_returning(&txn)
                .await
                .map_err(|e| StoreError::query(op, e))?;
            archive_slot::Entity::delete_many()
                .filter(archive_slot::Column::Archive.eq(archive.as_str()))
                .filter(archive_slot::Column::Slot.gte(*cap as i32))
                .filter(archive_slot::Column::JobId.is_null())
                .exec(&txn)
                .await
                .map_err(|e| StoreError::query(op, e))?;
        }
        txn.commit().await.map_err(|e| StoreError::query(op, e))
    }

    /// Enqueues jobs; those whose (exam, study, destination) already exists are skipped.
    /// Returns how many were new. Wakes idle movers (NOTIFY on commit).
    pub async fn enqueue_jobs(&self, jobs: &[NewJob]) -> Result<u64, StoreError> {
        let op = "enqueue jobs";
        if jobs.is_empty() {
            return Ok(0);
        }
        let now = Utc::now();
        let txn = self.db.begin().await.map_err(|e| StoreError::query(op, e))?;
        let inserted = insert_jobs(&txn, jobs, now, op).await?;
        self.notify_work(&txn).await?;
        txn.commit().await.map_err(|e| StoreError::query(op, e))?;
        self.wake_local();
        Ok(inserted)
    }

    /// Claims up to `limit` due jobs of the given archives (those whose retrieve window is
    /// open), each with a free slot of its archive, highest priority then nearest deadline
    /// first, leased to `worker` for `lease`. Increments `attempt`.
    pub async fn claim_jobs(
        &self,
        worker: &str,
        archives: &[String],
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<retrieve_job::Model>, StoreError> {
        if archives.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let now = Utc::now();
        let until = now + lease;
        match self.backend() {
            DbBackend::Postgres => self.claim_jobs_postgres(worker, archives, limit, now, until).await,
            _ => self.claim_jobs_single_writer(worker, archives, limit, now, until).await,
        }
    }

    /// One statement: candidate jobs per archive that has free slots (locked, skipping
    /// rows other claimers hold), free slots (likewise), paired by rank within the
    /// archive; the pairs update both tables.
    async fn claim_jobs_postgres(
        &self,
        worker: &str,
        archives: &[String],
        limit: u32,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<retrieve_job::Model>, StoreError> {
        let mut values: Vec<Value> = vec![worker.into(), now.into(), until.into(), (limit as i64).into()];
        let placeholders: Vec<String> = archives
            .iter()
            .map(|a| {
                values.push(a.as_str().into());
                format!("${}", values.len())
            })
            .collect();
        let archive_list = placeholders.join(", ");
        // A claim is only a lease, so it does not wait for the WAL flush (set_config with
        // is_local: this statement's own transaction only): if the server crashed before
        // flushing it, the job is simply open again, and the claimer's first progress update
        // finds it lost and sends C-CANCEL. Finishes, intake and plans stay synchronous.
        // Only the rows a claim will use get locked (a lock writes the tuple): the best
        // due job of each archive with free slots is looked up without locking, archives
        // are taken in that order, then at most `free slots` jobs and as many slot rows
        // of each chosen archive are locked, skipping rows other claimers hold.
        let sql = format!(
            "WITH free AS ( \
               SELECT archive, count(*) AS n FROM archive_slots \
               WHERE job_id IS NULL AND archive IN ({archive_list}) \
                 AND set_config('synchronous_commit', 'off', true) IS NOT NULL GROUP BY archive), \
             best AS ( \
               SELECT f.archive, f.n, b.priority, b.deadline, b.id FROM free f, LATERAL ( \
                 SELECT j.priority, j.deadline, j.id FROM retrieve_jobs j \
                 WHERE j.archive = f.archive \
                   AND j.state IN ('scheduled', 'available', 'retryable') AND j.not_before <= $2 \
                 ORDER BY j.priority, j.deadline NULLS LAST, j.id LIMIT 1) b \
               ORDER BY b.priority, b.deadline NULLS LAST, b.id LIMIT $4), \
             candidates AS ( \
               SELECT c.id, c.archive, c.priority, c.deadline FROM best, LATERAL ( \
                 SELECT j.id, j.archive, j.priority, j.deadline FROM retrieve_jobs j \
                 WHERE j.archive = best.archive \
                   AND j.state IN ('scheduled', 'available', 'retryable') AND j.not_before <= $2 \
                 ORDER BY j.priority, j.deadline NULLS LAST, j.id \
                 LIMIT LEAST(best.n, $4) FOR UPDATE SKIP LOCKED) c), \
             picked AS ( \
               SELECT id, archive, priority, deadline, \
                      row_number() OVER (PARTITION BY archive ORDER BY priority, deadline NULLS LAST, id) AS rn \
               FROM (SELECT * FROM candidates ORDER BY priority, deadline NULLS LAST, id LIMIT $4) top), \
             wanted AS (SELECT archive, count(*) AS k FROM picked GROUP BY archive), \
             slots AS ( \
               SELECT s.archive, s.slot, row_number() OVER (PARTITION BY s.archive ORDER BY s.slot) AS rn \
               FROM wanted, LATERAL ( \
                 SELECT archive, slot FROM archive_slots \
                 WHERE archive = wanted.archive AND job_id IS NULL \
                 ORDER BY slot LIMIT wanted.k FOR UPDATE SKIP LOCKED) s), \
             pairs AS ( \
               SELECT p.id, s.archive, s.slot FROM picked p \
               JOIN slots s ON s.archive = p.archive AND s.rn = p.rn), \
             taken AS ( \
               UPDATE archive_slots a SET job_id = pairs.id, leased_until = $3 \
               FROM pairs WHERE a.archive = pairs.archive AND a.slot = pairs.slot \
               RETURNING a.job_id) \
             UPDATE retrieve_jobs r SET state = 'running', attempt = r.attempt + 1, worker = $1, \
               leased_until = $3, updated_at = $2, remaining = NULL, completed = 0, failed = 0, warning = 0 \
             FROM taken WHERE r.id = taken.job_id \
             RETURNING r.*"
        );
        let stmt = Statement::from_sql_and_values(DbBackend::Postgres, sql, values);
        let mut jobs = retrieve_job::Entity::find()
            .from_raw_sql(stmt)
            .all(&self.db)
            .await
            .map_err(|e| StoreError::query("claim jobs", e))?;
        jobs.sort_by(|a, b| (a.priority, a.deadline.is_none(), a.deadline, a.id).cmp(&(b.priority, b.deadline.is_none(), b.deadline, b.id)));
        Ok(jobs)
    }

    /// SQLite: the store's single connection makes this transaction the only writer.
    async fn claim_jobs_single_writer(
        &self,
        worker: &str,
        archives: &[String],
        limit: u32,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<retrieve_job::Model>, StoreError> {
        let op = "claim jobs";
        let txn = self.db.begin().await.map_err(|e| StoreError::query(op, e))?;
        let free_slots: Vec<(String, i32)> = archive_slot::Entity::find()
            .select_only()
            .column(archive_slot::Column::Archive)
            .column(archive_slot::Column::Slot)
            .filter(archive_slot::Column::JobId.is_null())
            .filter(archive_slot::Column::Archive.is_in(archives.iter().map(String::as_str)))
            .order_by_asc(archive_slot::Column::Slot)
            .into_tuple()
            .all(&txn)
            .await
            .map_err(|e| StoreError::query(op, e))?;
        let mut candidates: Vec<retrieve_job::Model> = Vec::new();
        let mut by_archive: std::collections::BTreeMap<&str, Vec<i32>> = Default::default();
        for (archive, slot) in &free_slots {
            by_archive.entry(archive.as_str()).or_default().push(*slot);
        }
        for (archive, slots) in &by_archive {
            let mut jobs = retrieve_job::Entity::find()
                .filter(retrieve_job::Column::Archive.eq(*archive))
                .filter(state_in(&JobState::OPEN))
                .filter(retrieve_job::Column::NotBefore.lte(now))
                .order_by_asc(retrieve_job::Column::Priority)
                .order_by_asc(Expr::col(retrieve_job::Column::Deadline).is_null())
                .order_by_asc(retrieve_job::Column::Deadline)
                .order_by_asc(retrieve_job::Column::Id)
                .limit(slots.len().min(limit as usize) as u64)
                .all(&txn)
                .await
                .map_err(|e| StoreError::query(op, e))?;
            candidates.append(&mut jobs);
        }
        candidates.sort_by(|a, b| (a.priority, a.deadline.is_none(), a.deadline, a.id).cmp(&(b.priority, b.deadline.is_none(), b.deadline, b.id)));
        candidates.truncate(limit as usize);
        let mut claimed = Vec::with_capacity(candidates.len());
        for job in candidates {
            let slot = by_archive.get_mut(job.archive.as_str()).and_then(|s| if s.is_empty() { None } else { Some(s.remove(0)) });
            let Some(slot) = slot else { continue };
            archive_slot::Entity::update_many()
                .col_expr(archive_slot::Column::JobId, Expr::value(job.id))
                .col_expr(archive_slot::Column::LeasedUntil, Expr::value(until))
                .filter(archive_slot::Column::Archive.eq(job.archive.as_str()))
                .filter(archive_slot::Column::Slot.eq(slot))
                .exec(&txn)
                .await
                .map_err(|e| StoreError::query(op, e))?;
            let mut updated = retrieve_job::Entity::update_many()
                .col_expr(retrieve_job::Column::State, Expr::value(JobState::Running.as_str()))
                .col_expr(retrieve_job::Column::Attempt, Expr::col(retrieve_job::Column::Attempt).add(1))
                .col_expr(retrieve_job::Column::Worker, Expr::value(worker))
                .col_expr(retrieve_job::Column::LeasedUntil, Expr::value(until))
                .col_expr(retrieve_job::Column::UpdatedAt, Expr::value(now))
                .col_expr(retrieve_job::Column::Remaining, Expr::value(Option::<i32>::None))
                .col_expr(retrieve_job::Column::Completed, Expr::value(0))
                .col_expr(retrieve_job::Column::Failed, Expr::value(0))
                .col_expr(retrieve_job::Column::Warning, Expr::value(0))
                .filter(retrieve_job::Column::Id.eq(job.id))
                .exec_with_returning(&txn)
                .await
                .map_err(|e| StoreError::query(op, e))?;
            claimed.append(&mut updated);
        }
        txn.commit().await.map_err(|e| StoreError::query(op, e))?;
        Ok(claimed)
    }

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
        let txn = self.db.begin().await.map_err(|e| StoreError::query(op, e))?;
        let result = retrieve_job::Entity::update_many()
            .col_expr(retrieve_job::Column::Remaining, Expr::value(counts.remaining))
            .col_expr(retrieve_job::Column::Completed, Expr::value(counts.completed))
            .col_expr(retrieve_job::Column::Failed, Expr::value(counts.failed))
            .col_expr(retrieve_job::Column::Warning, Expr::value(counts.warning))
            .col_expr(retrieve_job::Column::LeasedUntil, Expr::value(until))
            .col_expr(retrieve_job::Column::UpdatedAt, Expr::value(now))
            .filter(retrieve_job::Column::Id.eq(job_id))
            .filter(retrieve_job::Column::Worker.eq(worker))
            .filter(retrieve_job::Column::State.eq(JobState::Running.as_str()))
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
            .filter(retrieve_job::Column::Id.eq(job_id))
            .filter(retrieve_job::Column::Worker.eq(worker))
            .filter(retrieve_job::Column::State.eq(JobState::Running.as_str()))
            .exec(&txn)
            .await
            .map_err(|e| StoreError::query(op, e))?;
        release_slot(&txn, job_id, worker).await?;
        self.notify_work(&txn).await?;
        txn.commit().await.map_err(|e| StoreError::query(op, e))?;
        self.wake_local();
        Ok(result.rows_affected == 1)
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

    /// The rescuer (run from a cron schedule): running jobs whose lease expired (their
    /// worker died) go back to `retryable` at once, or `failed` when out of attempts;
    /// slots whose lease expired are freed; planning exams whose lease expired go back
    /// to `received`.
    pub async fn rescue_expired(&self) -> Result<RescueReport, StoreError> {
        let op = "rescue expired";
        let now = Utc::now();
        let txn = self.db.begin().await.map_err(|e| StoreError::query(op, e))?;
        // Every running job holds a slot whose lease moves with the job's, so the expired
        // slots (a small table) lead to the stuck jobs without an index of running jobs.
        let expired_slots = Query::select()
            .column(archive_slot::Column::JobId)
            .from(archive_slot::Entity)
            .and_where(archive_slot::Column::JobId.is_not_null())
            .and_where(archive_slot::Column::LeasedUntil.lt(now))
            .to_owned();
        let stuck = retrieve_job::Entity::find()
            .filter(retrieve_job::Column::Id.in_subquery(expired_slots))
            .filter(retrieve_job::Column::State.eq(JobState::Running.as_str()))
            .filter(retrieve_job::Column::LeasedUntil.lt(now))
            .lock_with_behavior(sea_orm::sea_query::LockType::Update, sea_orm::sea_query::LockBehavior::SkipLocked)
            .all(&txn)
            .await
            .map_err(|e| StoreError::query(op, e))?;
        let mut report = RescueReport::default();
        for job in stuck {
            let worker = job.worker.clone().unwrap_or_default();
            let mut errors = job.errors.as_array().cloned().unwrap_or_default();
            let error = format!("lease expired: worker '{worker}' stopped reporting (crashed or cut off)");
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
                .exec(&txn)
                .await
                .map_err(|e| StoreError::query(op, e))?;
            if exhausted { report.failed += 1 } else { report.retried += 1 }
        }
        let freed = archive_slot::Entity::update_many()
            .col_expr(archive_slot::Column::JobId, Expr::value(Option::<i64>::None))
            .col_expr(archive_slot::Column::LeasedUntil, Expr::value(Option::<DateTime<Utc>>::None))
            .filter(archive_slot::Column::JobId.is_not_null())
            .filter(archive_slot::Column::LeasedUntil.lt(now))
            .exec(&txn)
            .await
            .map_err(|e| StoreError::query(op, e))?;
        report.slots_freed = freed.rows_affected;
        use crate::entity::exam;
        let exams = exam::Entity::update_many()
            .col_expr(exam::Column::Status, Expr::value("received"))
            .col_expr(exam::Column::LeasedUntil, Expr::value(Option::<DateTime<Utc>>::None))
            .col_expr(exam::Column::Worker, Expr::value(Option::<String>::None))
            .col_expr(exam::Column::UpdatedAt, Expr::value(now))
            .filter(exam::Column::Status.eq("planning"))
            .filter(exam::Column::LeasedUntil.lt(now))
            .exec(&txn)
            .await
            .map_err(|e| StoreError::query(op, e))?;
        report.exams_released = exams.rows_affected;
        if report.retried + report.exams_released > 0 {
            self.notify_work(&txn).await?;
        }
        txn.commit().await.map_err(|e| StoreError::query(op, e))?;
        if report.retried + report.exams_released > 0 {
            self.wake_local();
        }
        Ok(report)
    }

    /// Retention: deletes finished jobs, finished exams without open jobs, and dead letters
    /// older than `older_than`.
    pub async fn purge_finished(&self, older_than: Duration) -> Result<PurgeReport, StoreError> {
        let op = "purge";
        let cutoff = Utc::now() - older_than;
        let finished: Vec<&str> = JobState::ALL.iter().filter(|s| s.is_finished()).map(|s| s.as_str()).collect();
        let jobs = retrieve_job::Entity::delete_many()
            .filter(retrieve_job::Column::State.is_in(finished))
            .filter(retrieve_job::Column::FinishedAt.lt(cutoff))
            .exec(&self.db)
            .await
            .map_err(|e| StoreError::query(op, e))?;
        use crate::entity::{dead_letter, exam};
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
            .exec(&self.db)
            .await
            .map_err(|e| StoreError::query(op, e))?;
        let letters = dead_letter::Entity::delete_many()
            .filter(dead_letter::Column::ReceivedAt.lt(cutoff))
            .exec(&self.db)
            .await
            .map_err(|e| StoreError::query(op, e))?;
        Ok(PurgeReport { jobs: jobs.rows_affected, exams: exams.rows_affected, dead_letters: letters.rows_affected })
    }

    /// Operator's retry (`priorfetch jobs retry`): a finished or waiting job becomes
    /// claimable now with a fresh attempt budget. A running job is left alone.
    pub async fn retry_now(&self, job_id: i64) -> Result<bool, StoreError> {
        let now = Utc::now();
        let result = retrieve_job::Entity::update_many()
            .col_expr(retrieve_job::Column::State, Expr::value(JobState::Available.as_str()))
            .col_expr(retrieve_job::Column::NotBefore, Expr::value(now))
            .col_expr(retrieve_job::Column::Attempt, Expr::value(0))
            .col_expr(retrieve_job::Column::FinishedAt, Expr::value(Option::<DateTime<Utc>>::None))
            .col_expr(retrieve_job::Column::UpdatedAt, Expr::value(now))
            .filter(retrieve_job::Column::Id.eq(job_id))
            .filter(retrieve_job::Column::State.ne(JobState::Running.as_str()))
            .exec(&self.db)
            .await
            .map_err(|e| StoreError::query("retry job now", e))?;
        if result.rows_affected == 1 {
            self.notify_work(&self.db).await?;
            self.wake_local();
        }
        Ok(result.rows_affected == 1)
    }

    /// Operator's cancel of one unfinished job (a running one learns it at its next
    /// progress update).
    pub async fn cancel_job(&self, job_id: i64) -> Result<bool, StoreError> {
        let now = Utc::now();
        let mut open = JobState::OPEN.to_vec();
        open.push(JobState::Running);
        let result = retrieve_job::Entity::update_many()
            .col_expr(retrieve_job::Column::State, Expr::value(JobState::Cancelled.as_str()))
            .col_expr(retrieve_job::Column::UpdatedAt, Expr::value(now))
            .col_expr(retrieve_job::Column::FinishedAt, Expr::value(now))
            .filter(retrieve_job::Column::Id.eq(job_id))
            .filter(state_in(&open))
            .exec(&self.db)
            .await
            .map_err(|e| StoreError::query("cancel job", e))?;
        Ok(result.rows_affected == 1)
    }

    /// Newest jobs first, optionally of one state.
    pub async fn list_jobs(&self, state: Option<JobState>, limit: u64) -> Result<Vec<retrieve_job::Model>, StoreError> {
        let mut query = retrieve_job::Entity::find().order_by_desc(retrieve_job::Column::Id).limit(limit);
        if let Some(state) = state {
            query = query.filter(retrieve_job::Column::State.eq(state.as_str()));
        }
        query.all(&self.db).await.map_err(|e| StoreError::query("list jobs", e))
    }

    pub async fn job(&self, id: i64) -> Result<Option<retrieve_job::Model>, StoreError> {
        retrieve_job::Entity::find_by_id(id).one(&self.db).await.map_err(|e| StoreError::query("get job", e))
    }

    pub async fn jobs_of_exam(&self, exam_id: i64) -> Result<Vec<retrieve_job::Model>, StoreError> {
        retrieve_job::Entity::find()
            .filter(retrieve_job::Column::ExamId.eq(exam_id))
            .order_by_asc(retrieve_job::Column::Id)
            .all(&self.db)
            .await
            .map_err(|e| StoreError::query("list jobs", e))
    }

    /// Job counts by state, for the `jobs{state}` gauge and `jobs list`.
    pub async fn job_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        retrieve_job::Entity::find()
            .select_only()
            .column(retrieve_job::Column::State)
            .column_as(retrieve_job::Column::Id.count(), "n")
            .group_by(retrieve_job::Column::State)
            .into_tuple()
            .all(&self.db)
            .await
            .map_err(|e| StoreError::query("count jobs", e))
    }

    /// How many jobs of `archive` are running now (tests and `doctor`).
    pub async fn running_jobs(&self, archive: &str) -> Result<i64, StoreError> {
        let backend = self.backend();
        let stmt = Statement::from_sql_and_values(
            backend,
            match backend {
                DbBackend::Postgres => "SELECT count(*) FROM retrieve_jobs WHERE archive = $1 AND state = 'running'",
                _ => "SELECT count(*) FROM retrieve_jobs WHERE archive = ? AND state = 'running'",
            },
            [archive.into()],
        );
        let row = self.db.query_one_raw(stmt).await.map_err(|e| StoreError::query("count running", e))?;
        Ok(row.and_then(|r| r.try_get_by_index::<i64>(0).ok()).unwrap_or(0))
    }
}

async fn owned_running(
    txn: &DatabaseTransaction,
    job_id: i64,
    worker: &str,
) -> Result<Option<retrieve_job::Model>, StoreError> {
    retrieve_job::Entity::find_by_id(job_id)
        .filter(retrieve_job::Column::Worker.eq(worker))
        .filter(retrieve_job::Column::State.eq(JobState::Running.as_str()))
        .one(txn)
        .await
        .map_err(|e| StoreError::query("load job", e))
}

/// Frees the job's slot, unless another worker has claimed the job again since (after a
/// rescue): that slot is the new claim's.
async fn release_slot(txn: &DatabaseTransaction, job_id: i64, worker: &str) -> Result<(), StoreError> {
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
