//! Read-only queries behind the readiness and queue signals (`crates/signals`): every
//! process runs them, so the signals exist whichever processes are up.
//!
//! Each is one statement that reads only what is open or recent: exams by `scheduled_at`
//! (`exams_scheduled_idx`), open jobs through the claim's partial index (its predicate,
//! `state IN ('scheduled', 'available', 'retryable')`, is spelled out literally so a generic
//! plan can use it), running jobs through their slot rows (no index of running jobs is
//! kept), so a queue holding a million finished rows costs nothing extra.

use crate::{Store, StoreError};
use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbBackend, QueryResult, Statement, Value};
use std::collections::BTreeMap;

/// Exams scheduled in the coming window, by readiness.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpcomingExams {
    /// Every selected prior completed (or nothing was to fetch).
    pub ready: i64,
    /// Not ready yet, on track.
    pub fetching: i64,
    /// Not ready, and scheduled within the at-risk window or a job is retrying after a
    /// failed attempt.
    pub at_risk: i64,
    /// Ended `partial` or `failed`.
    pub failed: i64,
}

/// Exams whose scheduled time is in a past window, by whether their priors were ready.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Readiness {
    /// Every prior complete before `scheduled_at`.
    pub in_time: i64,
    /// Complete after `scheduled_at`, or `scheduled_at` passed with priors still missing.
    pub late: i64,
    /// Ended `partial` or `failed`.
    pub failed: i64,
}

/// One archive's open jobs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenJobs {
    pub archive: String,
    pub scheduled: i64,
    pub available: i64,
    pub running: i64,
    pub retryable: i64,
    /// Scheduled, available or retryable with `not_before` reached: claimable now.
    pub due: i64,
    /// `not_before` of the oldest due job.
    pub oldest_due: Option<DateTime<Utc>>,
}

fn upcoming_sql() -> String {
    format!(
        "SELECT CASE \
           WHEN e.status = 'complete' THEN 'ready' \
           WHEN e.status IN ('partial', 'failed') THEN 'failed' \
           WHEN e.status = 'planned' AND {NO_JOBS} THEN 'ready' \
           WHEN e.scheduled_at <= $3 OR {RETRYING} THEN 'at_risk' \
           ELSE 'fetching' END AS readiness, count(*) AS n \
         FROM exams e \
         WHERE e.scheduled_at > $1 AND e.scheduled_at <= $2 AND e.status <> 'cancelled' \
         GROUP BY 1"
    )
}

fn readiness_sql() -> String {
    format!(
        "SELECT CASE \
           WHEN e.status IN ('partial', 'failed') THEN 'failed' \
           WHEN e.status = 'complete' AND COALESCE(e.ready_at, e.updated_at) <= e.scheduled_at THEN 'in_time' \
           WHEN e.status = 'planned' AND {NO_JOBS} AND {PLANNED_IN_TIME} THEN 'in_time' \
           ELSE 'late' END AS outcome, count(*) AS n \
         FROM exams e \
         WHERE e.scheduled_at >= $1 AND e.scheduled_at <= $2 AND e.status <> 'cancelled' \
         GROUP BY 1"
    )
}

/// Waiting jobs by archive and state, with those due and the oldest due (`$1` = now).
const WAITING_SQL: &str = "SELECT archive, state, count(*) AS n, \
       sum(CASE WHEN not_before <= $1 THEN 1 ELSE 0 END) AS due, \
       min(CASE WHEN not_before <= $1 THEN not_before END) AS oldest \
     FROM retrieve_jobs WHERE state IN ('scheduled', 'available', 'retryable') \
     GROUP BY archive, state";

/// Running jobs by archive, found through the slots they hold (a split retrieve holds
/// several: each job counts once).
const RUNNING_SQL: &str = "SELECT j.archive, count(DISTINCT j.id) AS n FROM archive_slots s \
     JOIN retrieve_jobs j ON j.id = s.job_id WHERE j.state = 'running' GROUP BY j.archive";

/// The statements above (Postgres form) with the index each must be planned on: the
/// plan test of `tests/signals.rs` checks them on a queue of many finished rows.
#[doc(hidden)]
pub fn signal_statements() -> Vec<(&'static str, String, &'static str)> {
    vec![
        ("upcoming exams", upcoming_sql(), "exams_scheduled_idx"),
        ("exam readiness", readiness_sql(), "exams_scheduled_idx"),
        ("waiting jobs", WAITING_SQL.to_string(), "retrieve_jobs_claim_idx"),
        ("running jobs", RUNNING_SQL.to_string(), "retrieve_jobs_pkey"),
    ]
}

/// Not ready, with an open job that failed an attempt before (retrying).
const RETRYING: &str = "EXISTS (SELECT 1 FROM retrieve_jobs j WHERE j.exam_id = e.id \
     AND j.state IN ('scheduled', 'available', 'retryable', 'running') AND j.last_error IS NOT NULL)";
/// Planned before the exam's time (by primary key: a join would read every plan).
const PLANNED_IN_TIME: &str =
    "EXISTS (SELECT 1 FROM exam_plans p WHERE p.exam_id = e.id AND p.planned_at <= e.scheduled_at)";
/// A plan that selected nothing: the exam is ready when planned.
const NO_JOBS: &str = "NOT EXISTS (SELECT 1 FROM retrieve_jobs j WHERE j.exam_id = e.id)";

impl Store {
    /// Exams (not cancelled) with `scheduled_at` in (`now`, `until`], by readiness; those
    /// not ready and scheduled by `at_risk_until` are at risk.
    pub async fn upcoming_exams(
        &self,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        at_risk_until: DateTime<Utc>,
    ) -> Result<UpcomingExams, StoreError> {
        let sql = upcoming_sql();
        let rows =
            self.signal_rows("upcoming exams", &sql, vec![now.into(), until.into(), at_risk_until.into()]).await?;
        let mut out = UpcomingExams::default();
        for (state, n) in labelled_counts(&rows, "upcoming exams")? {
            match state.as_str() {
                "ready" => out.ready = n,
                "failed" => out.failed = n,
                "at_risk" => out.at_risk = n,
                _ => out.fetching = n,
            }
        }
        Ok(out)
    }

    /// Exams (not cancelled) with `scheduled_at` in [`from`, `to`], by readiness at that
    /// time. A complete exam counts by `ready_at` (rows from before that column: by its
    /// last update, which was the roll-up); an exam planned with no jobs by its plan's
    /// time; any other exam not final has missed its time.
    pub async fn exam_readiness(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Readiness, StoreError> {
        let sql = readiness_sql();
        let rows = self.signal_rows("exam readiness", &sql, vec![from.into(), to.into()]).await?;
        let mut out = Readiness::default();
        for (outcome, n) in labelled_counts(&rows, "exam readiness")? {
            match outcome.as_str() {
                "in_time" => out.in_time = n,
                "failed" => out.failed = n,
                _ => out.late = n,
            }
        }
        Ok(out)
    }

    /// Open jobs by archive (sorted by archive): per state, due now, the oldest due.
    pub async fn open_jobs(&self, now: DateTime<Utc>) -> Result<Vec<OpenJobs>, StoreError> {
        let op = "open jobs";
        let waiting = self.signal_rows(op, WAITING_SQL, vec![now.into()]).await?;
        let running = self.signal_rows(op, RUNNING_SQL, vec![]).await?;
        let mut by_archive: BTreeMap<String, OpenJobs> = BTreeMap::new();
        for row in &waiting {
            let archive: String = row.try_get_by_index(0).map_err(|e| StoreError::query(op, e))?;
            let state: String = row.try_get_by_index(1).map_err(|e| StoreError::query(op, e))?;
            let n: i64 = row.try_get_by_index(2).map_err(|e| StoreError::query(op, e))?;
            let due: i64 = row.try_get_by_index::<Option<i64>>(3).map_err(|e| StoreError::query(op, e))?.unwrap_or(0);
            let oldest = oldest_of(row, 4, self.backend()).map_err(|e| StoreError::query(op, e))?;
            let jobs = of_archive(&mut by_archive, archive);
            match state.as_str() {
                "scheduled" => jobs.scheduled += n,
                "available" => jobs.available += n,
                _ => jobs.retryable += n,
            }
            jobs.due += due;
            jobs.oldest_due = match (jobs.oldest_due, oldest) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        for row in &running {
            let archive: String = row.try_get_by_index(0).map_err(|e| StoreError::query(op, e))?;
            let n: i64 = row.try_get_by_index(1).map_err(|e| StoreError::query(op, e))?;
            of_archive(&mut by_archive, archive).running += n;
        }
        Ok(by_archive.into_values().collect())
    }

    /// Identities of the workers whose heartbeat has not expired at `now`.
    pub async fn live_workers(&self, now: DateTime<Utc>) -> Result<Vec<String>, StoreError> {
        let op = "live workers";
        let rows = self.signal_rows(op, "SELECT name FROM workers WHERE expires_at > $1", vec![now.into()]).await?;
        rows.iter().map(|r| r.try_get_by_index::<String>(0).map_err(|e| StoreError::query(op, e))).collect()
    }

    /// Runs `sql` written with Postgres placeholders (`$1`); SQLite takes them as `?1`.
    async fn signal_rows(
        &self,
        op: &'static str,
        sql: &str,
        values: Vec<Value>,
    ) -> Result<Vec<QueryResult>, StoreError> {
        let backend = self.backend();
        let sql = match backend {
            DbBackend::Postgres => sql.to_string(),
            _ => sql.replace('$', "?"),
        };
        let stmt = Statement::from_sql_and_values(backend, sql, values);
        self.db.query_all_raw(stmt).await.map_err(|e| StoreError::query(op, e))
    }
}

fn of_archive(map: &mut BTreeMap<String, OpenJobs>, archive: String) -> &mut OpenJobs {
    map.entry(archive.clone()).or_insert_with(|| OpenJobs { archive, ..Default::default() })
}

/// (label, count) rows of the `GROUP BY 1` queries.
fn labelled_counts(rows: &[QueryResult], op: &'static str) -> Result<Vec<(String, i64)>, StoreError> {
    rows.iter()
        .map(|r| {
            let label: String = r.try_get_by_index(0).map_err(|e| StoreError::query(op, e))?;
            let n: i64 = r.try_get_by_index(1).map_err(|e| StoreError::query(op, e))?;
            Ok((label, n))
        })
        .collect()
}

/// A `min(timestamp)`: typed on Postgres; on SQLite the stored text, which carries no
/// column type through an aggregate, so it is parsed here.
fn oldest_of(row: &QueryResult, index: usize, backend: DbBackend) -> Result<Option<DateTime<Utc>>, sea_orm::DbErr> {
    if backend == DbBackend::Postgres {
        return row.try_get_by_index::<Option<DateTime<Utc>>>(index);
    }
    let text: Option<String> = row.try_get_by_index(index)?;
    Ok(text.and_then(|t| parse_stored_time(&t)))
}

/// Timestamps as sqlx stores them in SQLite (RFC 3339, with a `T` or a space).
fn parse_stored_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .or_else(|_| DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%:z"))
        .map(|t| t.with_timezone(&Utc))
        .ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn stored_times_parse_in_both_spellings() {
        let a = super::parse_stored_time("2026-12-20T10:00:00.5+00:00").unwrap();
        let b = super::parse_stored_time("2026-12-20 10:00:00.5+00:00").unwrap();
        assert_eq!(a, b);
        assert!(super::parse_stored_time("garbage").is_none());
    }
}
