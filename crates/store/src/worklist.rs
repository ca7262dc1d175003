//! What the worklist poller reconciles against: the exams of one source (an event-key
//! prefix, `mwl:<worklist>:`), looked up by key or by scheduled time, and the re-opening
//! of a cancelled exam whose step came back.

use crate::entity::exam;
use crate::exams::NewExam;
use crate::rows::exams_of;
use crate::{ExamRecord, ExamStatus, Store, StoreError};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait, LikeExpr};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, TransactionTrait};

/// `prefix%` with LIKE's own characters escaped (a worklist name may hold `_` or `%`).
fn like_prefix(prefix: &str) -> LikeExpr {
    let escaped: String = prefix
        .chars()
        .flat_map(|c| match c {
            '%' | '_' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect();
    LikeExpr::new(format!("{escaped}%")).escape('\\')
}

impl Store {
    /// The exams with these event keys, in no particular order (keys not found are
    /// absent). Chunked to keep each statement under SQLite's parameter limit.
    pub async fn exams_by_keys(&self, keys: &[String]) -> Result<Vec<ExamRecord>, StoreError> {
        let mut found = Vec::new();
        for chunk in keys.chunks(500) {
            let rows = exam::Entity::find()
                .filter(exam::Column::EventKey.is_in(chunk.iter().cloned()))
                .all(&self.db)
                .await
                .map_err(|e| StoreError::query("exams by key", e))?;
            found.extend(exams_of(rows)?);
        }
        Ok(found)
    }

    /// Exams whose event key starts with `key_prefix`, scheduled after `from` and at or
    /// before `to`, not cancelled: the ones a complete poll of that window must have seen.
    pub async fn open_exams_of_source(
        &self,
        key_prefix: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<ExamRecord>, StoreError> {
        let rows = exam::Entity::find()
            .filter(Expr::col(exam::Column::EventKey).like(like_prefix(key_prefix)))
            .filter(exam::Column::ScheduledAt.gt(from))
            .filter(exam::Column::ScheduledAt.lte(to))
            .filter(exam::Column::Status.ne(ExamStatus::Cancelled.as_str()))
            .order_by_asc(exam::Column::Id)
            .all(&self.db)
            .await
            .map_err(|e| StoreError::query("exams of source", e))?;
        // SQLite's LIKE ignores ASCII case: keep exact prefixes only.
        Ok(exams_of(rows)?.into_iter().filter(|e| e.event_key.starts_with(key_prefix)).collect())
    }

    /// A cancelled exam whose order is back (a worklist step rescheduled out of the
    /// polled window and back in): new details, and `received` for a fresh plan. Returns
    /// false when the exam was not cancelled (nothing changed).
    pub async fn reopen_exam(&self, id: i64, details: &NewExam) -> Result<bool, StoreError> {
        let op = "reopen exam";
        let txn = self.db.begin().await.map_err(|e| StoreError::query(op, e))?;
        let reopened = exam::Entity::update_many()
            .col_expr(exam::Column::Status, Expr::value(ExamStatus::Received.as_str()))
            .col_expr(exam::Column::ScheduledAt, Expr::value(details.scheduled_at))
            .col_expr(exam::Column::Modality, Expr::value(details.modality.clone()))
            .col_expr(exam::Column::BodyPart, Expr::value(details.body_part.clone()))
            .col_expr(exam::Column::ProcedureCode, Expr::value(details.procedure_code.clone()))
            .col_expr(exam::Column::ProcedureText, Expr::value(details.procedure_text.clone()))
            .col_expr(exam::Column::Priority, Expr::value(details.priority.as_str()))
            .col_expr(exam::Column::PatientIds, Expr::value(details.identifiers_json()))
            .col_expr(exam::Column::LeasedUntil, Expr::value(Option::<DateTime<Utc>>::None))
            .col_expr(exam::Column::Worker, Expr::value(Option::<String>::None))
            .col_expr(exam::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(exam::Column::Id.eq(id))
            .filter(exam::Column::Status.eq(ExamStatus::Cancelled.as_str()))
            .exec(&txn)
            .await
            .map_err(|e| StoreError::query(op, e))?
            .rows_affected
            > 0;
        if reopened {
            self.notify_work(&txn).await?;
        }
        txn.commit().await.map_err(|e| StoreError::query(op, e))?;
        if reopened {
            self.wake_local();
        }
        Ok(reopened)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn like_prefix_escapes() {
        use sea_orm::sea_query::{Expr, ExprTrait, PostgresQueryBuilder, Query};
        let sql =
            Query::select().expr(Expr::col("k").like(super::like_prefix("mwl:a_b%:"))).to_string(PostgresQueryBuilder);
        // Postgres escape strings: E'\\_' is the two characters \_
        assert!(sql.contains(r"LIKE E'mwl:a\\_b\\%:%' ESCAPE E'\\'"), "{sql}");
    }
}
