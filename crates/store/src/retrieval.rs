//! What the mover records besides the queue itself: the instances a retry still has to
//! bring, the destination's count, and the exam roll-up once its last job ends.

use crate::entity::{exam, retrieve_job};
use crate::jobs::held_by;
use crate::{ExamStatus, JobState, Store, StoreError};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait, Query, SelectStatement};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect, TransactionTrait};

/// An exam whose jobs have all ended, with the status they add up to.
#[derive(Debug, Clone, PartialEq)]
pub struct ExamRollUp {
    pub exam_id: i64,
    pub status: ExamStatus,
    pub scheduled_at: Option<DateTime<Utc>>,
    /// When the last job ended: compared with `scheduled_at` for the readiness SLO.
    pub ready_at: DateTime<Utc>,
}

impl Store {
    /// Records which instances the next attempt must bring (None: the whole study).
    /// Only the worker that holds the running job may set it.
    pub async fn set_pending_instances(
        &self,
        job_id: i64,
        worker: &str,
        pending: Option<&[String]>,
    ) -> Result<bool, StoreError> {
        let value = pending.map(|p| serde_json::json!(p));
        let result = retrieve_job::Entity::update_many()
            .col_expr(retrieve_job::Column::PendingInstances, Expr::value(value))
            .filter(held_by(job_id, worker))
            .exec(&self.db)
            .await
            .map_err(|e| StoreError::query("set pending instances", e))?;
        Ok(result.rows_affected == 1)
    }

    /// Records how many instances the destination confirmed.
    pub async fn set_received(&self, job_id: i64, worker: &str, received: i32) -> Result<bool, StoreError> {
        let result = retrieve_job::Entity::update_many()
            .col_expr(retrieve_job::Column::Received, Expr::value(received))
            .filter(held_by(job_id, worker))
            .exec(&self.db)
            .await
            .map_err(|e| StoreError::query("set received", e))?;
        Ok(result.rows_affected == 1)
    }

    /// Exams still `planned` or `fetching` although every job of theirs has ended: the
    /// process that ended the last job died (or lost the database) before rolling the
    /// exam up, or the rescuer ended that job. Rolls up to `limit` of them; returns the
    /// roll-ups made final here (each exam is made final once, whoever gets there first).
    pub async fn settle_exams(&self, limit: u64) -> Result<Vec<ExamRollUp>, StoreError> {
        let jobs_of_exam = || {
            Query::select()
                .expr(Expr::val(1))
                .from(retrieve_job::Entity)
                .and_where(
                    Expr::col((retrieve_job::Entity, retrieve_job::Column::ExamId))
                        .equals((exam::Entity, exam::Column::Id)),
                )
                .to_owned()
        };
        let open: Vec<&str> = JobState::ALL.iter().filter(|s| !s.is_finished()).map(|s| s.as_str()).collect();
        let open_jobs: SelectStatement = jobs_of_exam().and_where(retrieve_job::Column::State.is_in(open)).to_owned();
        let ids: Vec<i64> = exam::Entity::find()
            .select_only()
            .column(exam::Column::Id)
            .filter(exam::Column::Status.is_in([ExamStatus::Planned.as_str(), ExamStatus::Fetching.as_str()]))
            .filter(Expr::exists(jobs_of_exam()))
            .filter(Expr::exists(open_jobs).not())
            .limit(limit)
            .into_tuple()
            .all(&self.db)
            .await
            .map_err(|e| StoreError::query("find unsettled exams", e))?;
        let mut settled = Vec::new();
        for id in ids {
            if let Some(r) = self.roll_up_exam(id).await? {
                settled.push(r);
            }
        }
        Ok(settled)
    }

    /// After a job ended: while the exam has open jobs it is `fetching`; once none is
    /// left, its final status is set from the jobs' states. Returns the roll-up only to
    /// the one caller whose update made the exam final, so the SLO counts it once.
    pub async fn roll_up_exam(&self, exam_id: i64) -> Result<Option<ExamRollUp>, StoreError> {
        let op = "roll up exam";
        let txn = self.db.begin().await.map_err(|e| StoreError::query(op, e))?;
        let states: Vec<String> = retrieve_job::Entity::find()
            .select_only()
            .column(retrieve_job::Column::State)
            .filter(retrieve_job::Column::ExamId.eq(exam_id))
            .into_tuple()
            .all(&txn)
            .await
            .map_err(|e| StoreError::query(op, e))?;
        let states: Vec<JobState> = states.iter().filter_map(|s| JobState::parse(s)).collect();
        let now = Utc::now();
        let terminal: Vec<&str> = ExamStatus::TERMINAL.iter().map(|s| s.as_str()).collect();
        if states.is_empty() {
            txn.commit().await.map_err(|e| StoreError::query(op, e))?;
            return Ok(None);
        }
        if states.iter().any(|s| !s.is_finished()) {
            exam::Entity::update_many()
                .col_expr(exam::Column::Status, Expr::value(ExamStatus::Fetching.as_str()))
                .col_expr(exam::Column::UpdatedAt, Expr::value(now))
                .filter(exam::Column::Id.eq(exam_id))
                .filter(exam::Column::Status.eq(ExamStatus::Planned.as_str()))
                .exec(&txn)
                .await
                .map_err(|e| StoreError::query(op, e))?;
            txn.commit().await.map_err(|e| StoreError::query(op, e))?;
            return Ok(None);
        }
        let status = ExamStatus::roll_up(&states);
        let updated = exam::Entity::update_many()
            .col_expr(exam::Column::Status, Expr::value(status.as_str()))
            .col_expr(exam::Column::UpdatedAt, Expr::value(now))
            .col_expr(exam::Column::ReadyAt, Expr::value(now))
            .filter(exam::Column::Id.eq(exam_id))
            .filter(exam::Column::Status.is_not_in(terminal))
            .exec(&txn)
            .await
            .map_err(|e| StoreError::query(op, e))?;
        let exam = exam::Entity::find_by_id(exam_id).one(&txn).await.map_err(|e| StoreError::query(op, e))?;
        txn.commit().await.map_err(|e| StoreError::query(op, e))?;
        Ok((updated.rows_affected == 1).then(|| ExamRollUp {
            exam_id,
            status,
            scheduled_at: exam.and_then(|e| e.scheduled_at),
            ready_at: now,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exam_status_adds_up_from_job_states() {
        use JobState::*;
        assert_eq!(ExamStatus::roll_up(&[Completed, Skipped]), ExamStatus::Complete);
        assert_eq!(ExamStatus::roll_up(&[Completed, Cancelled]), ExamStatus::Complete);
        assert_eq!(ExamStatus::roll_up(&[Completed, Failed]), ExamStatus::Partial);
        assert_eq!(ExamStatus::roll_up(&[Partial]), ExamStatus::Partial);
        assert_eq!(ExamStatus::roll_up(&[Failed, Failed]), ExamStatus::Failed);
        assert_eq!(ExamStatus::roll_up(&[Cancelled]), ExamStatus::Cancelled);
    }
}
