//! Exams: idempotent intake, status, planner claims; dead letters.

use crate::entity::{dead_letter, exam};
use crate::rows::{exam_of, exams_of};
use crate::{ExamRecord, ExamStatus, Store, StoreError};
use chrono::{DateTime, Utc};
use priorfetch_domain::{ExamPriority, PatientIdentifier};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    Statement, TransactionTrait,
};
use std::time::Duration;

/// An exam as the intake decoded it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewExam {
    pub event_key: String,
    /// The primary identifier (`patient_id`, `issuer`).
    pub patient_id: String,
    pub issuer: Option<String>,
    /// Every identifier of the patient. The primary is stored with them whether listed
    /// or not; empty means the primary only.
    pub identifiers: Vec<PatientIdentifier>,
    pub accession_number: Option<String>,
    pub study_instance_uid: Option<String>,
    pub scheduled_at: Option<DateTime<Utc>>,
    pub modality: Option<String>,
    pub body_part: Option<String>,
    pub procedure_code: Option<String>,
    pub procedure_text: Option<String>,
    pub priority: ExamPriority,
    pub trace_parent: Option<String>,
}

impl NewExam {
    /// Every identifier, the primary included.
    pub fn all_identifiers(&self) -> Vec<PatientIdentifier> {
        PatientIdentifier::all(PatientIdentifier::new(self.patient_id.clone(), self.issuer.clone()), &self.identifiers)
    }

    /// [`NewExam::all_identifiers`] as stored in `exams.patient_ids`.
    pub(crate) fn identifiers_json(&self) -> serde_json::Value {
        serde_json::to_value(self.all_identifiers()).unwrap_or_default()
    }
}

/// The outcome of an idempotent insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    New(i64),
    /// The event key was seen before: a redelivery, nothing changed.
    Duplicate(i64),
}

impl Inserted {
    pub fn id(self) -> i64 {
        match self {
            Inserted::New(id) | Inserted::Duplicate(id) => id,
        }
    }
}

impl Store {
    /// Inserts exams, each unique by `event_key`: a key seen before is reported as a
    /// duplicate and changes nothing. Returns one outcome per input, in order. On Postgres
    /// a batch of any size is one statement (`exams_pg`); on SQLite up to one chunk (the
    /// usual batch) is one INSERT, larger batches take one transaction. Neither needs
    /// BEGIN/COMMIT round trips for the usual batch (the MLLP and HTTP intakes wait on it
    /// for every answer).
    pub async fn insert_exams(&self, exams: &[NewExam]) -> Result<Vec<Inserted>, StoreError> {
        let op = "insert exams";
        if exams.is_empty() {
            return Ok(Vec::new());
        }
        let now = Utc::now();
        if self.is_postgres() {
            let outcomes = crate::exams_pg::insert_exams(self.db.get_postgres_connection_pool(), exams, now).await?;
            if outcomes.iter().any(|o| matches!(o, Inserted::New(_))) {
                self.notify_work(&self.db).await?;
            }
            self.wake_local();
            return Ok(outcomes);
        }
        let outcomes = if exams.len() <= INSERT_CHUNK {
            let outcomes = insert_chunk(&self.db, exams, now).await?;
            if outcomes.iter().any(|o| matches!(o, Inserted::New(_))) {
                self.notify_work(&self.db).await?;
            }
            outcomes
        } else {
            let txn = self.db.begin().await.map_err(|e| StoreError::query(op, e))?;
            let mut outcomes = Vec::with_capacity(exams.len());
            for chunk in exams.chunks(INSERT_CHUNK) {
                outcomes.extend(insert_chunk(&txn, chunk, now).await?);
            }
            self.notify_work(&txn).await?;
            txn.commit().await.map_err(|e| StoreError::query(op, e))?;
            outcomes
        };
        self.wake_local();
        Ok(outcomes)
    }

    pub async fn insert_exam(&self, exam: &NewExam) -> Result<Inserted, StoreError> {
        Ok(self.insert_exams(std::slice::from_ref(exam)).await?[0])
    }

    pub async fn exam(&self, id: i64) -> Result<Option<ExamRecord>, StoreError> {
        let row = exam::Entity::find_by_id(id).one(&self.db).await.map_err(|e| StoreError::query("get exam", e))?;
        row.map(exam_of).transpose()
    }

    pub async fn exam_by_key(&self, event_key: &str) -> Result<Option<ExamRecord>, StoreError> {
        let row = exam::Entity::find()
            .filter(exam::Column::EventKey.eq(event_key))
            .one(&self.db)
            .await
            .map_err(|e| StoreError::query("get exam", e))?;
        row.map(exam_of).transpose()
    }

    pub async fn set_exam_status(&self, id: i64, status: ExamStatus) -> Result<(), StoreError> {
        exam::Entity::update_many()
            .col_expr(exam::Column::Status, Expr::value(status.as_str()))
            .col_expr(exam::Column::LeasedUntil, Expr::value(Option::<DateTime<Utc>>::None))
            .col_expr(exam::Column::Worker, Expr::value(Option::<String>::None))
            .col_expr(exam::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(exam::Column::Id.eq(id))
            .exec(&self.db)
            .await
            .map_err(|e| StoreError::query("set exam status", e))?;
        Ok(())
    }

    /// Exams of a patient's order, for update and cancel events (matched by accession
    /// number, or by study instance UID when the order has no accession).
    pub async fn find_exams_for_order(
        &self,
        patient_id: &str,
        accession_number: Option<&str>,
        study_instance_uid: Option<&str>,
    ) -> Result<Vec<ExamRecord>, StoreError> {
        let mut query = exam::Entity::find().filter(exam::Column::PatientId.eq(patient_id));
        query = match (accession_number, study_instance_uid) {
            (Some(acc), _) => query.filter(exam::Column::AccessionNumber.eq(acc)),
            (None, Some(uid)) => query.filter(exam::Column::StudyInstanceUid.eq(uid)),
            (None, None) => return Ok(Vec::new()),
        };
        let rows =
            query.order_by_asc(exam::Column::Id).all(&self.db).await.map_err(|e| StoreError::query("find exams", e))?;
        exams_of(rows)
    }

    /// Applies an `exam.updated` event: new schedule and order details. A planned exam
    /// goes back to `received` so the planner re-plans it (its queued jobs are cancelled;
    /// re-planning enqueues what the new details call for).
    pub async fn update_exam(&self, id: i64, changes: &NewExam) -> Result<(), StoreError> {
        let op = "update exam";
        let now = Utc::now();
        let txn = self.db.begin().await.map_err(|e| StoreError::query(op, e))?;
        let Some(current) = exam::Entity::find_by_id(id).one(&txn).await.map_err(|e| StoreError::query(op, e))? else {
            return Ok(());
        };
        let replan = matches!(ExamStatus::parse(&current.status), Some(ExamStatus::Planned | ExamStatus::Fetching));
        let mut update = exam::Entity::update_many()
            .col_expr(exam::Column::ScheduledAt, Expr::value(changes.scheduled_at.or(current.scheduled_at)))
            .col_expr(exam::Column::Modality, Expr::value(changes.modality.clone().or(current.modality)))
            .col_expr(exam::Column::BodyPart, Expr::value(changes.body_part.clone().or(current.body_part)))
            .col_expr(
                exam::Column::ProcedureCode,
                Expr::value(changes.procedure_code.clone().or(current.procedure_code)),
            )
            .col_expr(
                exam::Column::ProcedureText,
                Expr::value(changes.procedure_text.clone().or(current.procedure_text)),
            )
            .col_expr(exam::Column::Priority, Expr::value(changes.priority.as_str()))
            .col_expr(exam::Column::UpdatedAt, Expr::value(now))
            .filter(exam::Column::Id.eq(id));
        if !changes.identifiers.is_empty() {
            // the order is matched by the primary identifier, which stays; the list is
            // the update's (a merge of patient records may add or drop identifiers)
            let primary = PatientIdentifier::new(current.patient_id.clone(), current.issuer.clone());
            let ids = serde_json::to_value(PatientIdentifier::all(primary, &changes.identifiers)).unwrap_or_default();
            update = update.col_expr(exam::Column::PatientIds, Expr::value(ids));
        }
        if replan {
            update = update
                .col_expr(exam::Column::Status, Expr::value(ExamStatus::Received.as_str()))
                .col_expr(exam::Column::ReadyAt, Expr::value(Option::<DateTime<Utc>>::None));
        }
        update.exec(&txn).await.map_err(|e| StoreError::query(op, e))?;
        if replan {
            crate::entity::retrieve_job::Entity::update_many()
                .col_expr(crate::entity::retrieve_job::Column::State, Expr::value("cancelled"))
                .col_expr(crate::entity::retrieve_job::Column::FinishedAt, Expr::value(now))
                .col_expr(crate::entity::retrieve_job::Column::UpdatedAt, Expr::value(now))
                .filter(crate::entity::retrieve_job::Column::ExamId.eq(id))
                .filter(crate::entity::retrieve_job::Column::State.is_in(["scheduled", "available", "retryable"]))
                .exec(&txn)
                .await
                .map_err(|e| StoreError::query(op, e))?;
            self.notify_work(&txn).await?;
        }
        txn.commit().await.map_err(|e| StoreError::query(op, e))?;
        if replan {
            self.wake_local();
        }
        Ok(())
    }

    /// Applies an `exam.cancelled` event: the exam and all its unfinished jobs end as
    /// cancelled. Returns the jobs that were running (their movers send C-CANCEL).
    pub async fn cancel_exam(&self, id: i64) -> Result<Vec<i64>, StoreError> {
        exam::Entity::update_many()
            .col_expr(exam::Column::Status, Expr::value(ExamStatus::Cancelled.as_str()))
            .col_expr(exam::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(exam::Column::Id.eq(id))
            .exec(&self.db)
            .await
            .map_err(|e| StoreError::query("cancel exam", e))?;
        self.cancel_exam_jobs(id).await
    }

    /// Newest exams first (`priorfetch demo`, tests, the admin API).
    pub async fn list_exams(&self, limit: u64) -> Result<Vec<ExamRecord>, StoreError> {
        let rows = exam::Entity::find()
            .order_by_desc(exam::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await
            .map_err(|e| StoreError::query("list exams", e))?;
        exams_of(rows)
    }

    /// Exam counts by status.
    pub async fn exam_counts(&self) -> Result<Vec<(ExamStatus, i64)>, StoreError> {
        let rows: Vec<(String, i64)> = exam::Entity::find()
            .select_only()
            .column(exam::Column::Status)
            .column_as(exam::Column::Id.count(), "n")
            .group_by(exam::Column::Status)
            .into_tuple()
            .all(&self.db)
            .await
            .map_err(|e| StoreError::query("count exams", e))?;
        Ok(crate::rows::counts_of(rows, ExamStatus::parse, "exams"))
    }

    pub async fn count_exams(&self) -> Result<u64, StoreError> {
        use sea_orm::PaginatorTrait;
        exam::Entity::find().count(&self.db).await.map_err(|e| StoreError::query("count exams", e))
    }

    pub async fn dead_letters(&self) -> Result<Vec<crate::DeadLetter>, StoreError> {
        dead_letter::Entity::find()
            .order_by_asc(dead_letter::Column::Id)
            .all(&self.db)
            .await
            .map_err(|e| StoreError::query("list dead letters", e))
    }

    /// Claims up to `limit` received exams for planning, with a lease; on Postgres in one
    /// `UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED)` statement.
    pub async fn claim_exams(&self, worker: &str, limit: u32, lease: Duration) -> Result<Vec<ExamRecord>, StoreError> {
        let op = "claim exams";
        let now = Utc::now();
        let until = now + lease;
        match self.backend() {
            DbBackend::Postgres => {
                let sql = "UPDATE exams SET status = 'planning', worker = $1, leased_until = $2, updated_at = $3 \
                           WHERE id IN (SELECT id FROM exams WHERE status = 'received' ORDER BY \
                           (priority = 'stat') DESC, scheduled_at NULLS LAST, id LIMIT $4 FOR UPDATE SKIP LOCKED) \
                           RETURNING *";
                let stmt = Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    sql,
                    [worker.into(), until.into(), now.into(), (limit as i64).into()],
                );
                let rows = exam::Entity::find()
                    .from_raw_sql(stmt)
                    .all(&self.db)
                    .await
                    .map_err(|e| StoreError::query(op, e))?;
                exams_of(rows)
            }
            _ => {
                let txn = self.db.begin().await.map_err(|e| StoreError::query(op, e))?;
                let ids: Vec<i64> = exam::Entity::find()
                    .select_only()
                    .column(exam::Column::Id)
                    .filter(exam::Column::Status.eq(ExamStatus::Received.as_str()))
                    .order_by_desc(ExprTrait::eq(Expr::col(exam::Column::Priority), "stat"))
                    .order_by_asc(exam::Column::ScheduledAt)
                    .order_by_asc(exam::Column::Id)
                    .limit(limit as u64)
                    .into_tuple()
                    .all(&txn)
                    .await
                    .map_err(|e| StoreError::query(op, e))?;
                let claimed = exam::Entity::update_many()
                    .col_expr(exam::Column::Status, Expr::value(ExamStatus::Planning.as_str()))
                    .col_expr(exam::Column::Worker, Expr::value(worker))
                    .col_expr(exam::Column::LeasedUntil, Expr::value(until))
                    .col_expr(exam::Column::UpdatedAt, Expr::value(now))
                    .filter(exam::Column::Id.is_in(ids))
                    .exec_with_returning(&txn)
                    .await
                    .map_err(|e| StoreError::query(op, e))?;
                txn.commit().await.map_err(|e| StoreError::query(op, e))?;
                exams_of(claimed)
            }
        }
    }

    /// Records messages the intake could not use; one transaction for the batch.
    pub async fn insert_dead_letters(&self, letters: &[(String, Vec<u8>, String)]) -> Result<(), StoreError> {
        if letters.is_empty() {
            return Ok(());
        }
        let now = Utc::now();
        let rows = letters.iter().map(|(source, payload, reason)| dead_letter::ActiveModel {
            source: Set(source.clone()),
            payload: Set(payload.clone()),
            reason: Set(reason.clone()),
            received_at: Set(now),
            ..Default::default()
        });
        dead_letter::Entity::insert_many(rows)
            .exec_without_returning(&self.db)
            .await
            .map_err(|e| StoreError::query("insert dead letters", e))?;
        Ok(())
    }

    /// Deletes the oldest dead letters beyond the newest `keep`; returns how many went.
    /// Ids only grow, so the bound is one indexed range delete.
    pub async fn trim_dead_letters(&self, keep: u64) -> Result<u64, StoreError> {
        let op = "trim dead letters";
        let newest: Option<i64> = dead_letter::Entity::find()
            .select_only()
            .column_as(dead_letter::Column::Id.max(), "max")
            .into_tuple()
            .one(&self.db)
            .await
            .map_err(|e| StoreError::query(op, e))?
            .flatten();
        let Some(cutoff) = newest.map(|n| n - Ord::min(keep, i64::MAX as u64) as i64) else { return Ok(0) };
        if cutoff <= 0 {
            return Ok(0);
        }
        let deleted = dead_letter::Entity::delete_many()
            .filter(dead_letter::Column::Id.lte(cutoff))
            .exec(&self.db)
            .await
            .map_err(|e| StoreError::query(op, e))?;
        Ok(deleted.rows_affected)
    }
}

/// Rows per INSERT: keeps the statement under SQLite's bound-parameter limit.
const INSERT_CHUNK: usize = 500;

/// One multi-row INSERT ... ON CONFLICT DO NOTHING, then a look-up of the keys that were
/// already there (redeliveries).
async fn insert_chunk<C: ConnectionTrait>(
    conn: &C,
    chunk: &[NewExam],
    now: DateTime<Utc>,
) -> Result<Vec<Inserted>, StoreError> {
    let op = "insert exams";
    let mut outcomes = Vec::with_capacity(chunk.len());
    let rows = chunk.iter().map(|e| exam::ActiveModel {
        event_key: Set(e.event_key.clone()),
        patient_id: Set(e.patient_id.clone()),
        issuer: Set(e.issuer.clone()),
        patient_ids: Set(Some(e.identifiers_json())),
        accession_number: Set(e.accession_number.clone()),
        study_instance_uid: Set(e.study_instance_uid.clone()),
        scheduled_at: Set(e.scheduled_at),
        modality: Set(e.modality.clone()),
        body_part: Set(e.body_part.clone()),
        procedure_code: Set(e.procedure_code.clone()),
        procedure_text: Set(e.procedure_text.clone()),
        priority: Set(e.priority.as_str().to_string()),
        status: Set(ExamStatus::Received.as_str().to_string()),
        trace_parent: Set(e.trace_parent.clone()),
        leased_until: Set(None),
        worker: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    });
    let inserted: Vec<(i64, String)> = exam::Entity::insert_many(rows)
        .on_conflict(OnConflict::column(exam::Column::EventKey).do_nothing().to_owned())
        .exec_with_returning(conn)
        .await
        .map_err(|e| StoreError::query(op, e))?
        .into_iter()
        .map(|m| (m.id, m.event_key))
        .collect();
    // Only keys that were not inserted need a look-up (duplicates: redeliveries).
    let returned: std::collections::HashSet<&str> = inserted.iter().map(|(_, k)| k.as_str()).collect();
    let missing: Vec<&str> = chunk.iter().map(|e| e.event_key.as_str()).filter(|k| !returned.contains(k)).collect();
    let mut existing: Vec<(i64, String)> = if missing.is_empty() {
        Vec::new()
    } else {
        exam::Entity::find()
            .select_only()
            .column(exam::Column::Id)
            .column(exam::Column::EventKey)
            .filter(exam::Column::EventKey.is_in(missing))
            .into_tuple()
            .all(conn)
            .await
            .map_err(|e| StoreError::query(op, e))?
    };
    existing.extend(inserted.iter().cloned());
    let new: std::collections::HashSet<&str> = inserted.iter().map(|(_, k)| k.as_str()).collect();
    let ids: std::collections::HashMap<&str, i64> = existing.iter().map(|(id, k)| (k.as_str(), *id)).collect();
    // A key repeated inside one batch is new the first time, a duplicate after.
    let mut seen = std::collections::HashSet::new();
    for e in chunk {
        let key = e.event_key.as_str();
        let id = ids.get(key).copied().unwrap_or_default();
        outcomes.push(if new.contains(key) && seen.insert(key) { Inserted::New(id) } else { Inserted::Duplicate(id) });
    }
    Ok(outcomes)
}
