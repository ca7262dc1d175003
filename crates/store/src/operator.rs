//! The operator's surface (issue 19): filtered views of exams and jobs, the bulk retry,
//! dead letters by ID with their replay outcome, and the audit trail of operator actions.
//! The admin API (`services/api`) and the CLI (`exams`, `jobs`, `dead-letters`) both call
//! these, so a filter means the same thing everywhere.

use crate::entity::{audit, dead_letter, exam, retrieve_job};
use crate::rows::{exams_of, jobs_of};
use crate::{ExamRecord, ExamStatus, Job, JobState, Store, StoreError};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    TransactionTrait,
};
use serde::Serialize;

pub use crate::entity::audit::Model as AuditRecord;

/// Which exams to list. Every field narrows; none set lists all (newest first).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ExamFilter {
    /// Scheduled at or after this time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduled_from: Option<DateTime<Utc>>,
    /// Scheduled before this time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduled_to: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<ExamStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accession: Option<String>,
    /// Any of the patient's identifiers (the primary or one of `patient_ids`; on SQLite the
    /// primary only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patient_id: Option<String>,
}

/// Which jobs to list or retry. `since`/`until` bound the job's last change
/// (`updated_at`): for a finished job, when it finished.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct JobFilter {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<JobState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exam_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
}

impl JobFilter {
    fn condition(&self) -> Condition {
        let mut c = Condition::all();
        if let Some(state) = self.state {
            c = c.add(retrieve_job::Column::State.eq(state.as_str()));
        }
        if let Some(archive) = &self.archive {
            c = c.add(retrieve_job::Column::Archive.eq(archive.as_str()));
        }
        if let Some(exam_id) = self.exam_id {
            c = c.add(retrieve_job::Column::ExamId.eq(exam_id));
        }
        if let Some(since) = self.since {
            c = c.add(retrieve_job::Column::UpdatedAt.gte(since));
        }
        if let Some(until) = self.until {
            c = c.add(retrieve_job::Column::UpdatedAt.lt(until));
        }
        c
    }
}

/// An operator action to record in `audit`.
#[derive(Debug, Clone)]
pub struct AuditEntry<'a> {
    pub actor: &'a str,
    pub action: &'a str,
    pub target: serde_json::Value,
}

async fn insert_audit<C: ConnectionTrait>(conn: &C, entry: &AuditEntry<'_>, outcome: &str) -> Result<(), StoreError> {
    audit::Entity::insert(audit::ActiveModel {
        at: Set(Utc::now()),
        actor: Set(entry.actor.to_string()),
        action: Set(entry.action.to_string()),
        target: Set(entry.target.clone()),
        outcome: Set(outcome.to_string()),
        ..Default::default()
    })
    .exec_without_returning(conn)
    .await
    .map_err(|e| StoreError::query("record audit", e))?;
    Ok(())
}

impl Store {
    /// Exams matching `filter`, at most `limit`: by scheduled time when a schedule window
    /// is given (the schedule view), else newest first.
    pub async fn find_exams(&self, filter: &ExamFilter, limit: u64) -> Result<Vec<ExamRecord>, StoreError> {
        let mut query = exam::Entity::find();
        if let Some(from) = filter.scheduled_from {
            query = query.filter(exam::Column::ScheduledAt.gte(from));
        }
        if let Some(to) = filter.scheduled_to {
            query = query.filter(exam::Column::ScheduledAt.lt(to));
        }
        if let Some(status) = filter.status {
            query = query.filter(exam::Column::Status.eq(status.as_str()));
        }
        if let Some(accession) = &filter.accession {
            query = query.filter(exam::Column::AccessionNumber.eq(accession.as_str()));
        }
        if let Some(patient) = &filter.patient_id {
            // the primary is indexed; other identifiers are matched in the JSON list
            let listed = serde_json::json!([{ "id": patient }]);
            let mut any = Condition::any().add(exam::Column::PatientId.eq(patient.as_str()));
            if self.is_postgres() {
                any = any.add(Expr::cust_with_values("patient_ids @> CAST($1 AS jsonb)", [listed.to_string()]));
            }
            query = query.filter(any);
        }
        query = if filter.scheduled_from.is_some() || filter.scheduled_to.is_some() {
            query.order_by_asc(exam::Column::ScheduledAt).order_by_asc(exam::Column::Id)
        } else {
            query.order_by_desc(exam::Column::Id)
        };
        let rows = query.limit(limit).all(&self.db).await.map_err(|e| StoreError::query("find exams", e))?;
        exams_of(rows)
    }

    /// Exams with this accession number, oldest first (an order is usually one exam; a
    /// re-sent order under a new event ID is another).
    pub async fn exams_by_accession(&self, accession: &str) -> Result<Vec<ExamRecord>, StoreError> {
        let rows = exam::Entity::find()
            .filter(exam::Column::AccessionNumber.eq(accession))
            .order_by_asc(exam::Column::Id)
            .all(&self.db)
            .await
            .map_err(|e| StoreError::query("find exams by accession", e))?;
        exams_of(rows)
    }

    /// Jobs matching `filter`, newest first, at most `limit`.
    pub async fn find_jobs(&self, filter: &JobFilter, limit: u64) -> Result<Vec<Job>, StoreError> {
        let rows = retrieve_job::Entity::find()
            .filter(filter.condition())
            .order_by_desc(retrieve_job::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await
            .map_err(|e| StoreError::query("find jobs", e))?;
        jobs_of(rows)
    }

    /// Bulk retry: every job matching `filter` (running ones excepted) becomes claimable
    /// now with a fresh attempt budget, as [`Store::retry_now`] does for one. The audit
    /// row (`entry`, with the count) commits in the same transaction. Returns the count.
    pub async fn retry_jobs(&self, filter: &JobFilter, entry: &AuditEntry<'_>) -> Result<u64, StoreError> {
        let op = "bulk retry";
        let now = Utc::now();
        let txn = self.db.begin().await.map_err(|e| StoreError::query(op, e))?;
        let result = retrieve_job::Entity::update_many()
            .col_expr(retrieve_job::Column::State, Expr::value(JobState::Available.as_str()))
            .col_expr(retrieve_job::Column::NotBefore, Expr::value(now))
            .col_expr(retrieve_job::Column::Attempt, Expr::value(0))
            .col_expr(retrieve_job::Column::FinishedAt, Expr::value(Option::<DateTime<Utc>>::None))
            .col_expr(retrieve_job::Column::UpdatedAt, Expr::value(now))
            .filter(filter.condition())
            .filter(retrieve_job::Column::State.ne(JobState::Running.as_str()))
            .exec(&txn)
            .await
            .map_err(|e| StoreError::query(op, e))?;
        let requeued = result.rows_affected;
        insert_audit(&txn, entry, &format!("requeued {requeued}")).await?;
        if requeued > 0 {
            self.notify_work(&txn).await?;
        }
        txn.commit().await.map_err(|e| StoreError::query(op, e))?;
        if requeued > 0 {
            self.wake_local();
        }
        Ok(requeued)
    }

    /// Records an operator action and what came of it.
    pub async fn record_audit(&self, entry: &AuditEntry<'_>, outcome: &str) -> Result<(), StoreError> {
        insert_audit(&self.db, entry, outcome).await
    }

    /// The newest audit rows first.
    pub async fn audit_log(&self, limit: u64) -> Result<Vec<AuditRecord>, StoreError> {
        audit::Entity::find()
            .order_by_desc(audit::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await
            .map_err(|e| StoreError::query("list audit", e))
    }

    /// Newest dead letters first, at most `limit`.
    pub async fn list_dead_letters(&self, limit: u64) -> Result<Vec<crate::DeadLetter>, StoreError> {
        dead_letter::Entity::find()
            .order_by_desc(dead_letter::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await
            .map_err(|e| StoreError::query("list dead letters", e))
    }

    pub async fn dead_letter(&self, id: i64) -> Result<Option<crate::DeadLetter>, StoreError> {
        dead_letter::Entity::find_by_id(id).one(&self.db).await.map_err(|e| StoreError::query("get dead letter", e))
    }

    /// Notes a replay of dead letter `id` and its outcome.
    pub async fn mark_replayed(&self, id: i64, outcome: &str) -> Result<(), StoreError> {
        dead_letter::Entity::update_many()
            .col_expr(dead_letter::Column::ReplayedAt, Expr::value(Utc::now()))
            .col_expr(dead_letter::Column::ReplayOutcome, Expr::value(outcome))
            .filter(dead_letter::Column::Id.eq(id))
            .exec(&self.db)
            .await
            .map_err(|e| StoreError::query("mark dead letter replayed", e))?;
        Ok(())
    }
}
