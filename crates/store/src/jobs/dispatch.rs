//! Deadline-aware dispatch beyond the claim order: boosting jobs whose exam is near, and
//! failing a job over to another archive that holds the same study when its own archive
//! cannot serve it in time (no free slot, or failing).
//!
//! A boost lowers `priority` to the top class (0) in place, so claims keep using the
//! claim index (archive, priority, deadline, id) instead of sorting on an expression of
//! `now`. The exam keeps its own priority; a re-plan writes the job's again.
//!
//! A failover rewrites the job's archive and method (the next archive in preference that
//! the plan found holding the study and that the job has not tried yet) and records the
//! archive it left in `tried_archives` and the error history, so it never goes back.

use super::{JobState, held_by, history_entry, state_in};
use crate::entity::{archive_slot, prior, retrieve_job};
use crate::{Store, StoreError};
use chrono::{DateTime, Utc};
use priorfetch_domain::RetrieveMethod;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, TransactionTrait};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// A job moved from one archive to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failover {
    pub job_id: i64,
    pub from: String,
    pub to: String,
}

/// Archives a job may fail over to, in preference order, with the method each is
/// retrieved by (from the configuration).
pub type ArchivePreference = [(String, RetrieveMethod)];

/// Jobs examined per failover pass (the nearest deadlines first).
const FAILOVER_BATCH: u64 = 200;

impl Store {
    /// Moves open jobs whose deadline is within `within` to the top priority class.
    /// Returns how many were boosted.
    pub async fn boost_due_soon(&self, within: Duration) -> Result<u64, StoreError> {
        let horizon = Utc::now() + within;
        let result = retrieve_job::Entity::update_many()
            .col_expr(retrieve_job::Column::Priority, Expr::value(0))
            .filter(state_in(&JobState::OPEN))
            .filter(retrieve_job::Column::Priority.gt(0))
            .filter(retrieve_job::Column::Deadline.lte(horizon))
            .exec(&self.db)
            .await
            .map_err(|e| StoreError::query("boost jobs", e))?;
        Ok(result.rows_affected)
    }

    /// The archive a running job of `worker` should fail over to, if any: the first of
    /// `preference` (skipping `unusable` ones, say in an outage) that the plan found
    /// holding the study and that the job has not tried.
    pub async fn failover_target(
        &self,
        job_id: i64,
        preference: &ArchivePreference,
        unusable: &HashSet<String>,
    ) -> Result<Option<(String, RetrieveMethod)>, StoreError> {
        let Some(job) = retrieve_job::Entity::find_by_id(job_id)
            .one(&self.db)
            .await
            .map_err(|e| StoreError::query("load job", e))?
        else {
            return Ok(None);
        };
        let holders = holders(&self.db, &[(job.exam_id, job.study_instance_uid.clone())]).await?;
        let held = holders.get(&(job.exam_id, job.study_instance_uid.clone())).cloned().unwrap_or_default();
        let tried = tried(&job);
        Ok(preference
            .iter()
            .find(|(name, _)| held.contains(name) && !tried.contains(name) && !unusable.contains(name))
            .cloned())
    }

    /// Moves a running job of `worker` to `to` (claimable there at once), recording why.
    /// The attempt it made here counts. False when the worker no longer holds the job.
    pub async fn fail_over_job(
        &self,
        job_id: i64,
        worker: &str,
        to: &(String, RetrieveMethod),
        error: &str,
    ) -> Result<bool, StoreError> {
        let op = "fail over job";
        let txn = self.db.begin().await.map_err(|e| StoreError::query(op, e))?;
        let Some(job) = retrieve_job::Entity::find()
            .filter(held_by(job_id, worker))
            .one(&txn)
            .await
            .map_err(|e| StoreError::query(op, e))?
        else {
            txn.commit().await.map_err(|e| StoreError::query(op, e))?;
            return Ok(false);
        };
        let now = Utc::now();
        move_job(&txn, &job, to, &format!("failover to {}: {error}", to.0), now).await?;
        super::finish::release_slot(&txn, job_id, worker).await?;
        self.notify_work(&txn).await?;
        txn.commit().await.map_err(|e| StoreError::query(op, e))?;
        self.wake_local();
        Ok(true)
    }

    /// Queued jobs that cannot start in time: due, deadline within `within`, their archive
    /// without a free slot (or `unusable`), and another archive of `preference` holding the
    /// study with a free slot. Each is moved there. Returns the moves.
    pub async fn fail_over_waiting(
        &self,
        within: Duration,
        preference: &ArchivePreference,
        unusable: &HashSet<String>,
    ) -> Result<Vec<Failover>, StoreError> {
        let op = "fail over waiting jobs";
        let now = Utc::now();
        let mut free = free_slots(&self.db).await?;
        let blocked: Vec<String> = preference
            .iter()
            .map(|(name, _)| name.clone())
            .filter(|name| unusable.contains(name) || free.get(name).copied().unwrap_or(0) == 0)
            .collect();
        if blocked.is_empty() {
            return Ok(Vec::new());
        }
        let waiting = retrieve_job::Entity::find()
            .filter(state_in(&JobState::OPEN))
            .filter(retrieve_job::Column::Archive.is_in(blocked))
            .filter(retrieve_job::Column::NotBefore.lte(now))
            .filter(retrieve_job::Column::Deadline.lte(now + within))
            .order_by_asc(retrieve_job::Column::Deadline)
            .limit(FAILOVER_BATCH)
            .all(&self.db)
            .await
            .map_err(|e| StoreError::query(op, e))?;
        if waiting.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<(i64, String)> = waiting.iter().map(|j| (j.exam_id, j.study_instance_uid.clone())).collect();
        let holders = holders(&self.db, &keys).await?;
        let mut moves = Vec::new();
        for job in waiting {
            let held = holders.get(&(job.exam_id, job.study_instance_uid.clone()));
            let tried = tried(&job);
            let target = preference.iter().find(|(name, _)| {
                *name != job.archive
                    && held.is_some_and(|h| h.contains(name))
                    && !tried.contains(name)
                    && !unusable.contains(name)
                    && free.get(name).copied().unwrap_or(0) > 0
            });
            let Some(target) = target.cloned() else { continue };
            let txn = self.db.begin().await.map_err(|e| StoreError::query(op, e))?;
            // Still queued as we saw it (a claimer may have taken it meanwhile).
            let still = retrieve_job::Entity::find_by_id(job.id)
                .filter(state_in(&JobState::OPEN))
                .filter(retrieve_job::Column::Archive.eq(job.archive.as_str()))
                .lock_exclusive()
                .one(&txn)
                .await
                .map_err(|e| StoreError::query(op, e))?;
            let Some(still) = still else {
                txn.commit().await.map_err(|e| StoreError::query(op, e))?;
                continue;
            };
            let why = format!("failover to {}: {} has no free slot before the exam", target.0, job.archive);
            move_job(&txn, &still, &target, &why, now).await?;
            self.notify_work(&txn).await?;
            txn.commit().await.map_err(|e| StoreError::query(op, e))?;
            if let Some(n) = free.get_mut(&target.0) {
                *n = n.saturating_sub(1);
            }
            moves.push(Failover { job_id: job.id, from: job.archive.clone(), to: target.0 });
        }
        if !moves.is_empty() {
            self.wake_local();
        }
        Ok(moves)
    }
}

/// Rewrites the job onto `to`: available now, the archive it leaves remembered.
async fn move_job<C: ConnectionTrait>(
    conn: &C,
    job: &retrieve_job::Model,
    to: &(String, RetrieveMethod),
    why: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let mut tried: Vec<String> = tried(job).into_iter().collect();
    tried.push(job.archive.clone());
    tried.sort();
    tried.dedup();
    let mut errors = job.errors.as_array().cloned().unwrap_or_default();
    errors.push(history_entry(job.attempt, why));
    retrieve_job::Entity::update_many()
        .col_expr(retrieve_job::Column::Archive, Expr::value(to.0.as_str()))
        .col_expr(retrieve_job::Column::Method, Expr::value(to.1.as_str()))
        .col_expr(retrieve_job::Column::State, Expr::value(JobState::Available.as_str()))
        .col_expr(retrieve_job::Column::NotBefore, Expr::value(now))
        .col_expr(retrieve_job::Column::TriedArchives, Expr::value(serde_json::json!(tried)))
        .col_expr(retrieve_job::Column::LastError, Expr::value(why))
        .col_expr(retrieve_job::Column::Errors, Expr::value(serde_json::Value::Array(errors)))
        .col_expr(retrieve_job::Column::LeasedUntil, Expr::value(Option::<DateTime<Utc>>::None))
        .col_expr(retrieve_job::Column::Worker, Expr::value(Option::<String>::None))
        .col_expr(retrieve_job::Column::UpdatedAt, Expr::value(now))
        .filter(retrieve_job::Column::Id.eq(job.id))
        .exec(conn)
        .await
        .map_err(|e| StoreError::query("fail over job", e))?;
    Ok(())
}

fn tried(job: &retrieve_job::Model) -> HashSet<String> {
    job.tried_archives
        .as_ref()
        .and_then(|v| v.as_array())
        .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// Free slots per archive.
async fn free_slots<C: ConnectionTrait>(conn: &C) -> Result<HashMap<String, usize>, StoreError> {
    let rows: Vec<String> = archive_slot::Entity::find()
        .select_only()
        .column(archive_slot::Column::Archive)
        .filter(archive_slot::Column::JobId.is_null())
        .into_tuple()
        .all(conn)
        .await
        .map_err(|e| StoreError::query("free slots", e))?;
    let mut free = HashMap::new();
    for archive in rows {
        *free.entry(archive).or_insert(0) += 1;
    }
    Ok(free)
}

/// Per (exam, study): the archives the plan found holding it.
async fn holders<C: ConnectionTrait>(
    conn: &C,
    keys: &[(i64, String)],
) -> Result<HashMap<(i64, String), HashSet<String>>, StoreError> {
    let exams: HashSet<i64> = keys.iter().map(|(e, _)| *e).collect();
    let wanted: HashSet<&(i64, String)> = keys.iter().collect();
    let rows: Vec<(i64, String, String)> = prior::Entity::find()
        .select_only()
        .column(prior::Column::ExamId)
        .column(prior::Column::StudyInstanceUid)
        .column(prior::Column::Archive)
        .filter(prior::Column::ExamId.is_in(exams))
        .into_tuple()
        .all(conn)
        .await
        .map_err(|e| StoreError::query("study holders", e))?;
    let mut holders: HashMap<(i64, String), HashSet<String>> = HashMap::new();
    for (exam, study, archive) in rows {
        let key = (exam, study);
        if wanted.contains(&key) {
            holders.entry(key).or_default().insert(archive);
        }
    }
    Ok(holders)
}
