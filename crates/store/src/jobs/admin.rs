//! Operator commands and read-only views of the queue.

use super::{JobState, state_in};
use crate::entity::retrieve_job;
use crate::rows::{job_of, jobs_of};
use crate::{Job, Store, StoreError};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Statement};

impl Store {
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
    pub async fn list_jobs(&self, state: Option<JobState>, limit: u64) -> Result<Vec<Job>, StoreError> {
        let mut query = retrieve_job::Entity::find().order_by_desc(retrieve_job::Column::Id).limit(limit);
        if let Some(state) = state {
            query = query.filter(retrieve_job::Column::State.eq(state.as_str()));
        }
        jobs_of(query.all(&self.db).await.map_err(|e| StoreError::query("list jobs", e))?)
    }

    pub async fn job(&self, id: i64) -> Result<Option<Job>, StoreError> {
        let row =
            retrieve_job::Entity::find_by_id(id).one(&self.db).await.map_err(|e| StoreError::query("get job", e))?;
        row.map(job_of).transpose()
    }

    pub async fn jobs_of_exam(&self, exam_id: i64) -> Result<Vec<Job>, StoreError> {
        let rows = retrieve_job::Entity::find()
            .filter(retrieve_job::Column::ExamId.eq(exam_id))
            .order_by_asc(retrieve_job::Column::Id)
            .all(&self.db)
            .await
            .map_err(|e| StoreError::query("list jobs", e))?;
        jobs_of(rows)
    }

    /// Job counts by state, for the `jobs{state}` gauge and `jobs list`.
    pub async fn job_counts(&self) -> Result<Vec<(JobState, i64)>, StoreError> {
        let rows: Vec<(String, i64)> = retrieve_job::Entity::find()
            .select_only()
            .column(retrieve_job::Column::State)
            .column_as(retrieve_job::Column::Id.count(), "n")
            .group_by(retrieve_job::Column::State)
            .into_tuple()
            .all(&self.db)
            .await
            .map_err(|e| StoreError::query("count jobs", e))?;
        Ok(crate::rows::counts_of(rows, JobState::parse, "retrieve_jobs"))
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
