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
//!
//! - `finish.rs`: progress (the per-job lease), finish, retry, hand-back, cancel.
//! - `rescue.rs`: claims of gone holders handed back; retention purge.
//! - `admin.rs`: operator commands and read-only views.
//! - `dispatch.rs`: deadline boosts and failovers to another archive.
//! - `slots.rs`: extra slots of a retrieve split over several associations.

mod admin;
mod dispatch;
mod finish;
mod rescue;
mod slots;

pub use dispatch::{ArchivePreference, Failover};
pub use rescue::RescueScope;

use crate::entity::{archive_slot, retrieve_job};
use crate::rows::job_of;
use crate::{Store, StoreError};
use chrono::{DateTime, Utc};
pub use priorfetch_domain::{Counts, Job, JobState, RetrieveMethod};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseTransaction, DbBackend, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    Statement, TransactionTrait, Value,
};
use std::time::Duration;

/// The order in which due jobs are claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClaimOrder {
    /// Priority class (boosted jobs are in the top one), then nearest deadline, then age.
    #[default]
    Deadline,
    /// Oldest job first, nothing else (a baseline).
    Fifo,
}

impl ClaimOrder {
    /// The ORDER BY list, columns prefixed with `alias` (the claim index serves `Deadline`).
    fn sql(self, alias: &str) -> String {
        match self {
            ClaimOrder::Deadline => format!("{alias}priority, {alias}deadline NULLS LAST, {alias}id"),
            ClaimOrder::Fifo => format!("{alias}id"),
        }
    }

    fn cmp(self, a: &retrieve_job::Model, b: &retrieve_job::Model) -> std::cmp::Ordering {
        match self {
            ClaimOrder::Deadline => (a.priority, a.deadline.is_none(), a.deadline, a.id).cmp(&(
                b.priority,
                b.deadline.is_none(),
                b.deadline,
                b.id,
            )),
            ClaimOrder::Fifo => a.id.cmp(&b.id),
        }
    }
}

/// A job to enqueue. Unique per (exam, study, destination): enqueueing it twice is a no-op.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub exam_id: i64,
    pub study_instance_uid: String,
    pub archive: String,
    pub method: RetrieveMethod,
    pub destination: String,
    pub priority: i32,
    pub not_before: DateTime<Utc>,
    pub deadline: Option<DateTime<Utc>>,
    pub max_attempts: i32,
    pub expected_instances: Option<i32>,
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
        method: Set(j.method.as_str().to_string()),
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

/// Job `job_id` while `worker` still runs it: not cancelled, finished, or rescued and
/// claimed by another worker since. Every write of a running attempt is bound by it.
pub(crate) fn held_by(job_id: i64, worker: &str) -> sea_orm::Condition {
    sea_orm::Condition::all()
        .add(retrieve_job::Column::Id.eq(job_id))
        .add(retrieve_job::Column::Worker.eq(worker))
        .add(retrieve_job::Column::State.eq(JobState::Running.as_str()))
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
    ) -> Result<Vec<Job>, StoreError> {
        self.claim_jobs_in_order(worker, archives, limit, lease, ClaimOrder::Deadline).await
    }

    /// [`Store::claim_jobs`] in the given order.
    pub async fn claim_jobs_in_order(
        &self,
        worker: &str,
        archives: &[String],
        limit: u32,
        lease: Duration,
        order: ClaimOrder,
    ) -> Result<Vec<Job>, StoreError> {
        if archives.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let now = Utc::now();
        let until = now + lease;
        let rows = match self.backend() {
            DbBackend::Postgres => self.claim_jobs_postgres(worker, archives, limit, now, until, order).await?,
            _ => self.claim_jobs_single_writer(worker, archives, limit, now, until, order).await?,
        };
        let mut claimed = Vec::with_capacity(rows.len());
        for row in rows {
            let id = row.id;
            match job_of(row) {
                Ok(job) => claimed.push(job),
                // A row edited by hand (say, an unknown method): failed with the reason
                // rather than claimed again and again.
                Err(unreadable) => {
                    let finish = Finish {
                        state: JobState::Failed,
                        counts: Counts::default(),
                        last_status: None,
                        error: Some(unreadable.to_string()),
                    };
                    self.finish_job(id, worker, &finish).await?;
                }
            }
        }
        Ok(claimed)
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
        order: ClaimOrder,
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
                 ORDER BY {j} LIMIT 1) b \
               ORDER BY {b} LIMIT $4), \
             candidates AS ( \
               SELECT c.id, c.archive, c.priority, c.deadline FROM best, LATERAL ( \
                 SELECT j.id, j.archive, j.priority, j.deadline FROM retrieve_jobs j \
                 WHERE j.archive = best.archive \
                   AND j.state IN ('scheduled', 'available', 'retryable') AND j.not_before <= $2 \
                 ORDER BY {j} \
                 LIMIT LEAST(best.n, $4) FOR UPDATE SKIP LOCKED) c), \
             picked AS ( \
               SELECT id, archive, priority, deadline, \
                      row_number() OVER (PARTITION BY archive ORDER BY {c}) AS rn \
               FROM (SELECT * FROM candidates ORDER BY {c} LIMIT $4) top), \
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
             RETURNING r.*",
            j = order.sql("j."),
            b = order.sql("b."),
            c = order.sql(""),
        );
        let stmt = Statement::from_sql_and_values(DbBackend::Postgres, sql, values);
        let mut jobs = retrieve_job::Entity::find()
            .from_raw_sql(stmt)
            .all(&self.db)
            .await
            .map_err(|e| StoreError::query("claim jobs", e))?;
        jobs.sort_by(|a, b| order.cmp(a, b));
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
        order: ClaimOrder,
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
            let mut query = retrieve_job::Entity::find()
                .filter(retrieve_job::Column::Archive.eq(*archive))
                .filter(state_in(&JobState::OPEN))
                .filter(retrieve_job::Column::NotBefore.lte(now));
            if order == ClaimOrder::Deadline {
                query = query
                    .order_by_asc(retrieve_job::Column::Priority)
                    .order_by_asc(Expr::col(retrieve_job::Column::Deadline).is_null())
                    .order_by_asc(retrieve_job::Column::Deadline);
            }
            let mut jobs = query
                .order_by_asc(retrieve_job::Column::Id)
                .limit(slots.len().min(limit as usize) as u64)
                .all(&txn)
                .await
                .map_err(|e| StoreError::query(op, e))?;
            candidates.append(&mut jobs);
        }
        candidates.sort_by(|a, b| order.cmp(a, b));
        candidates.truncate(limit as usize);
        let mut claimed = Vec::with_capacity(candidates.len());
        for job in candidates {
            let slot = by_archive
                .get_mut(job.archive.as_str())
                .and_then(|s| if s.is_empty() { None } else { Some(s.remove(0)) });
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
}
