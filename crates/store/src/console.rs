//! What the web console (`services/console`) reads beyond the operator views: each
//! exam's jobs summed for the schedule, the archives' slots in use, their last retrieve
//! and last C-FIND, and the operator's reschedule of one job.
//!
//! Every read is bounded: by exam IDs (the unique key's leading column), by the slot
//! table (one row per allowed association), by the finished-jobs index walked backwards,
//! or by a `LIMIT` over the newest plans.

use crate::entity::{archive_slot, exam_plan, retrieve_job};
use crate::rows::job_of;
use crate::{ExamPlan, Job, JobState, Store, StoreError};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, TransactionTrait};
use std::collections::{BTreeMap, BTreeSet};

/// One exam's jobs, summed for the schedule view.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExamJobs {
    /// Jobs neither skipped nor cancelled: the priors expected at the destination.
    pub expected: i64,
    /// Jobs completed: the priors arrived.
    pub arrived: i64,
    /// Jobs that ended `partial` or `failed`.
    pub failed: i64,
    /// Jobs still waiting or running.
    pub open: i64,
    /// Open jobs that failed an attempt before (they carry an error).
    pub retrying: i64,
    /// The archives the jobs fetch from.
    pub archives: BTreeSet<String>,
}

/// One archive's retrieve slots (`max_associations`, across replicas).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotUse {
    pub archive: String,
    /// Slot rows: the archive's association cap.
    pub total: i64,
    /// Slots a job holds (an expired lease counts until the rescuer frees it).
    pub in_use: i64,
}

/// States a reschedule re-opens: finished without every instance.
const REOPENED: [JobState; 2] = [JobState::Failed, JobState::Partial];

impl Store {
    /// The jobs of `exam_ids`, summed per exam (exams without jobs are absent).
    pub async fn jobs_by_exam(&self, exam_ids: &[i64]) -> Result<BTreeMap<i64, ExamJobs>, StoreError> {
        let mut out: BTreeMap<i64, ExamJobs> = BTreeMap::new();
        if exam_ids.is_empty() {
            return Ok(out);
        }
        let rows: Vec<(i64, String, String, i64, i64)> = retrieve_job::Entity::find()
            .select_only()
            .column(retrieve_job::Column::ExamId)
            .column(retrieve_job::Column::Archive)
            .column(retrieve_job::Column::State)
            .column_as(retrieve_job::Column::Id.count(), "n")
            .column_as(retrieve_job::Column::LastError.count(), "errors")
            .filter(retrieve_job::Column::ExamId.is_in(exam_ids.iter().copied()))
            .group_by(retrieve_job::Column::ExamId)
            .group_by(retrieve_job::Column::Archive)
            .group_by(retrieve_job::Column::State)
            .into_tuple()
            .all(&self.db)
            .await
            .map_err(|e| StoreError::query("jobs by exam", e))?;
        for (exam_id, archive, state, n, errors) in rows {
            let sum = out.entry(exam_id).or_default();
            let Some(state) = JobState::parse(&state) else { continue };
            if matches!(state, JobState::Skipped | JobState::Cancelled) {
                continue;
            }
            sum.expected += n;
            sum.archives.insert(archive);
            match state {
                JobState::Completed => sum.arrived += n,
                JobState::Partial | JobState::Failed => sum.failed += n,
                _ => {
                    sum.open += n;
                    sum.retrying += errors;
                }
            }
        }
        Ok(out)
    }

    /// Slots per archive with how many a job holds, sorted by archive.
    pub async fn slot_use(&self) -> Result<Vec<SlotUse>, StoreError> {
        let rows: Vec<(String, i64, i64)> = archive_slot::Entity::find()
            .select_only()
            .column(archive_slot::Column::Archive)
            .column_as(archive_slot::Column::Slot.count(), "total")
            .column_as(archive_slot::Column::JobId.count(), "in_use")
            .group_by(archive_slot::Column::Archive)
            .order_by_asc(archive_slot::Column::Archive)
            .into_tuple()
            .all(&self.db)
            .await
            .map_err(|e| StoreError::query("slot use", e))?;
        Ok(rows.into_iter().map(|(archive, total, in_use)| SlotUse { archive, total, in_use }).collect())
    }

    /// The job of `archive` that finished last, of `state` when given (walks the
    /// finished-jobs index from its newest end).
    pub async fn last_finished_job(&self, archive: &str, state: Option<JobState>) -> Result<Option<Job>, StoreError> {
        let mut query = retrieve_job::Entity::find()
            .filter(retrieve_job::Column::Archive.eq(archive))
            .filter(retrieve_job::Column::FinishedAt.is_not_null());
        if let Some(state) = state {
            query = query.filter(retrieve_job::Column::State.eq(state.as_str()));
        }
        let row = query
            .order_by_desc(retrieve_job::Column::FinishedAt)
            .one(&self.db)
            .await
            .map_err(|e| StoreError::query("last finished job", e))?;
        row.map(job_of).transpose()
    }

    /// The newest plans first, at most `limit` (their queries tell each archive's last
    /// C-FIND and how it ended).
    pub async fn recent_plans(&self, limit: u64) -> Result<Vec<ExamPlan>, StoreError> {
        exam_plan::Entity::find()
            .order_by_desc(exam_plan::Column::PlannedAt)
            .limit(limit)
            .all(&self.db)
            .await
            .map_err(|e| StoreError::query("recent plans", e))
    }

    /// Operator's reschedule: job `job_id` is next tried at `at`. A waiting job
    /// (scheduled, available, retryable) keeps its state and attempts; a `failed` or
    /// `partial` one is re-opened as `scheduled` with a fresh attempt budget. False when
    /// the job does not exist or is in any other state (running, completed, cancelled,
    /// skipped).
    pub async fn reschedule_job(&self, job_id: i64, at: DateTime<Utc>) -> Result<bool, StoreError> {
        let op = "reschedule job";
        let now = Utc::now();
        let txn = self.db.begin().await.map_err(|e| StoreError::query(op, e))?;
        let waiting = retrieve_job::Entity::update_many()
            .col_expr(retrieve_job::Column::NotBefore, Expr::value(at))
            .col_expr(retrieve_job::Column::UpdatedAt, Expr::value(now))
            .filter(retrieve_job::Column::Id.eq(job_id))
            .filter(retrieve_job::Column::State.is_in(JobState::OPEN.iter().map(|s| s.as_str())))
            .exec(&txn)
            .await
            .map_err(|e| StoreError::query(op, e))?;
        let mut done = waiting.rows_affected == 1;
        if !done {
            let reopened = retrieve_job::Entity::update_many()
                .col_expr(retrieve_job::Column::State, Expr::value(JobState::Scheduled.as_str()))
                .col_expr(retrieve_job::Column::NotBefore, Expr::value(at))
                .col_expr(retrieve_job::Column::Attempt, Expr::value(0))
                .col_expr(retrieve_job::Column::FinishedAt, Expr::value(Option::<DateTime<Utc>>::None))
                .col_expr(retrieve_job::Column::UpdatedAt, Expr::value(now))
                .filter(retrieve_job::Column::Id.eq(job_id))
                .filter(retrieve_job::Column::State.is_in(REOPENED.iter().map(|s| s.as_str())))
                .exec(&txn)
                .await
                .map_err(|e| StoreError::query(op, e))?;
            done = reopened.rows_affected == 1;
        }
        if done {
            // idle movers re-read when the next job is due
            self.notify_work(&txn).await?;
        }
        txn.commit().await.map_err(|e| StoreError::query(op, e))?;
        if done {
            self.wake_local();
        }
        Ok(done)
    }
}
