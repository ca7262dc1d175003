//! The intake's insert on Postgres: a whole batch in one `INSERT ... SELECT FROM unnest(...)`
//! with one array per column. The statement text is the same whatever the batch size, so
//! it is parsed and planned once per connection (a prepared statement), where a multi-row
//! VALUES list of 500 rows × 16 parameters is a new statement to build, send, parse and
//! plan each time. Measured with `scripts/bench-intake`: see docs/operations.md, "Sizing".

use crate::exams::{Inserted, NewExam};
use crate::{ExamStatus, StoreError};
use chrono::{DateTime, Utc};
use sea_orm::sqlx::{self, PgPool};
use sea_orm::{DbErr, RuntimeErr};
use std::collections::{HashMap, HashSet};

/// A key repeated in one statement is inserted once: `ON CONFLICT DO NOTHING` skips rows
/// that conflict with rows the same statement inserted.
const INSERT: &str = "INSERT INTO exams (event_key, patient_id, issuer, patient_ids, accession_number, \
     study_instance_uid, scheduled_at, modality, body_part, procedure_code, procedure_text, priority, \
     trace_parent, status, created_at, updated_at) \
     SELECT k, p, i, j::jsonb, a, s, t, m, b, pc, pt, pr, tp, $14, $15, $15 \
     FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
                 $7::timestamptz[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[]) \
          AS u(k, p, i, j, a, s, t, m, b, pc, pt, pr, tp) \
     ON CONFLICT (event_key) DO NOTHING \
     RETURNING id, event_key";

const EXISTING: &str = "SELECT id, event_key FROM exams WHERE event_key = ANY($1::text[])";

fn query_error(e: sqlx::Error) -> StoreError {
    StoreError::query("insert exams", DbErr::Query(RuntimeErr::SqlxError(std::sync::Arc::new(e))))
}

/// Inserts `exams` in one statement (atomic on its own); one outcome per input, in order.
pub(crate) async fn insert_exams(
    pool: &PgPool,
    exams: &[NewExam],
    now: DateTime<Utc>,
) -> Result<Vec<Inserted>, StoreError> {
    let column = |f: fn(&NewExam) -> Option<String>| exams.iter().map(f).collect::<Vec<Option<String>>>();
    let keys: Vec<String> = exams.iter().map(|e| e.event_key.clone()).collect();
    let inserted: Vec<(i64, String)> = sqlx::query_as(INSERT)
        .bind(&keys)
        .bind(exams.iter().map(|e| e.patient_id.clone()).collect::<Vec<String>>())
        .bind(column(|e| e.issuer.clone()))
        .bind(column(|e| Some(e.identifiers_json().to_string())))
        .bind(column(|e| e.accession_number.clone()))
        .bind(column(|e| e.study_instance_uid.clone()))
        .bind(exams.iter().map(|e| e.scheduled_at).collect::<Vec<Option<DateTime<Utc>>>>())
        .bind(column(|e| e.modality.clone()))
        .bind(column(|e| e.body_part.clone()))
        .bind(column(|e| e.procedure_code.clone()))
        .bind(column(|e| e.procedure_text.clone()))
        .bind(column(|e| Some(e.priority.as_str().to_string())))
        .bind(column(|e| e.trace_parent.clone()))
        .bind(ExamStatus::Received.as_str())
        .bind(now)
        .fetch_all(pool)
        .await
        .map_err(query_error)?;
    // Only keys that were not inserted need a look-up (duplicates: redeliveries).
    let new: HashSet<&str> = inserted.iter().map(|(_, k)| k.as_str()).collect();
    let missing: Vec<&str> = keys.iter().map(String::as_str).filter(|k| !new.contains(k)).collect();
    let existing: Vec<(i64, String)> = if missing.is_empty() {
        Vec::new()
    } else {
        sqlx::query_as(EXISTING).bind(&missing).fetch_all(pool).await.map_err(query_error)?
    };
    let ids: HashMap<&str, i64> = inserted.iter().chain(&existing).map(|(id, k)| (k.as_str(), *id)).collect();
    // A key repeated inside one batch is new the first time, a duplicate after.
    let mut seen = HashSet::new();
    Ok(keys
        .iter()
        .map(|key| {
            let id = ids.get(key.as_str()).copied().unwrap_or_default();
            if new.contains(key.as_str()) && seen.insert(key.as_str()) {
                Inserted::New(id)
            } else {
                Inserted::Duplicate(id)
            }
        })
        .collect())
}
