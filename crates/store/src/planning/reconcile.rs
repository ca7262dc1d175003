//! A plan's jobs against the jobs earlier plans of the exam left. A re-plan (an archive
//! back after an outage) sees more candidates and may pick other priors, so:
//! - open jobs of priors the plan now marks skipped are skipped (never run);
//! - jobs that already started stay, count against the rule's `max`, and keep their
//!   prior selected, so no running or finished job belongs to a prior marked skipped;
//! - new jobs are added only from selected priors and only up to `max` counting the
//!   exam's live jobs; the priors left out say why.

use super::{PlanRecord, PriorRecord};
use crate::entity::retrieve_job;
use crate::{JobState, NewJob, StoreError};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder};
use std::collections::{HashMap, HashSet};

/// What reconciling did, for the caller's report.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Applied {
    pub inserted: u64,
    pub skipped: u64,
    /// The priors as recorded (selection and reasons after reconciliation).
    pub priors: Vec<PriorRecord>,
}

/// A job that neither ran nor will run: not live, does not count against `max`.
fn dead(state: &str) -> bool {
    state == JobState::Skipped.as_str() || state == JobState::Cancelled.as_str()
}

fn open(state: &str) -> bool {
    JobState::OPEN.iter().any(|s| s.as_str() == state)
}

async fn jobs_of(
    txn: &DatabaseTransaction,
    exam_id: i64,
    op: &'static str,
) -> Result<Vec<retrieve_job::Model>, StoreError> {
    retrieve_job::Entity::find()
        .filter(retrieve_job::Column::ExamId.eq(exam_id))
        .order_by_asc(retrieve_job::Column::Id)
        .all(txn)
        .await
        .map_err(|e| StoreError::query(op, e))
}

/// Moves the given jobs to `state` if they have not started (a claim racing this wins:
/// the job is then running and counted as live).
async fn stop_open(
    txn: &DatabaseTransaction,
    ids: Vec<i64>,
    state: JobState,
    why: &str,
    now: DateTime<Utc>,
    also_running: bool,
    op: &'static str,
) -> Result<u64, StoreError> {
    if ids.is_empty() {
        return Ok(0);
    }
    let mut states: Vec<&str> = JobState::OPEN.iter().map(|s| s.as_str()).collect();
    if also_running {
        states.push(JobState::Running.as_str());
    }
    let result = retrieve_job::Entity::update_many()
        .col_expr(retrieve_job::Column::State, Expr::value(state.as_str()))
        .col_expr(retrieve_job::Column::LastError, Expr::value(why.to_string()))
        .col_expr(retrieve_job::Column::UpdatedAt, Expr::value(now))
        .col_expr(retrieve_job::Column::FinishedAt, Expr::value(now))
        .filter(retrieve_job::Column::Id.is_in(ids))
        .filter(retrieve_job::Column::State.is_in(states))
        .exec(txn)
        .await
        .map_err(|e| StoreError::query(op, e))?;
    Ok(result.rows_affected)
}

/// A refused plan (unsafe patient keys): every job of the exam that has not finished is
/// cancelled, running ones too (the mover sees the cancellation at its next update).
pub(super) async fn refuse(
    txn: &DatabaseTransaction,
    exam_id: i64,
    why: &str,
    now: DateTime<Utc>,
    op: &'static str,
) -> Result<u64, StoreError> {
    let ids = jobs_of(txn, exam_id, op).await?.into_iter().map(|j| j.id).collect();
    stop_open(txn, ids, JobState::Cancelled, &format!("cancelled: {why}"), now, true, op).await
}

/// Applies `plan` to the exam's jobs in `txn`; see the module docs.
pub(super) async fn apply(
    txn: &DatabaseTransaction,
    plan: &PlanRecord,
    now: DateTime<Utc>,
    op: &'static str,
) -> Result<Applied, StoreError> {
    // studies the plan saw, and those it selects (one copy at most)
    let seen: HashSet<&str> = plan.priors.iter().map(|p| p.study_instance_uid.as_str()).collect();
    let chosen: HashSet<&str> =
        plan.priors.iter().filter(|p| p.selected).map(|p| p.study_instance_uid.as_str()).collect();
    let before = jobs_of(txn, plan.exam_id, op).await?;
    let to_skip: Vec<i64> = before
        .iter()
        .filter(|j| open(&j.state))
        .filter(|j| seen.contains(j.study_instance_uid.as_str()) && !chosen.contains(j.study_instance_uid.as_str()))
        .map(|j| j.id)
        .collect();
    let why = "skipped: a re-plan no longer selects this prior (see the exam's priors for the reason)";
    let skipped = stop_open(txn, to_skip, JobState::Skipped, why, now, false, op).await?;

    let after = jobs_of(txn, plan.exam_id, op).await?;
    let decided = decide(plan, &after);
    let mut inserted = crate::jobs::insert_jobs(txn, &decided.insert, now, op).await?;
    for (id, job) in &decided.reopen {
        inserted += reopen(txn, *id, job, now, op).await?;
    }
    Ok(Applied { inserted, skipped, priors: decided.priors })
}

/// Puts a job skipped by an earlier re-plan, or cancelled by an update of the exam, back
/// in the queue: its prior is selected again.
async fn reopen(
    txn: &DatabaseTransaction,
    id: i64,
    job: &NewJob,
    now: DateTime<Utc>,
    op: &'static str,
) -> Result<u64, StoreError> {
    let state = if job.not_before <= now { JobState::Available } else { JobState::Scheduled };
    let result = retrieve_job::Entity::update_many()
        .col_expr(retrieve_job::Column::State, Expr::value(state.as_str()))
        .col_expr(retrieve_job::Column::Archive, Expr::value(job.archive.clone()))
        .col_expr(retrieve_job::Column::Method, Expr::value(job.method.as_str()))
        .col_expr(retrieve_job::Column::Priority, Expr::value(job.priority))
        .col_expr(retrieve_job::Column::NotBefore, Expr::value(job.not_before))
        .col_expr(retrieve_job::Column::Deadline, Expr::value(job.deadline))
        .col_expr(retrieve_job::Column::ExpectedInstances, Expr::value(job.expected_instances))
        .col_expr(retrieve_job::Column::LastError, Expr::value(Option::<String>::None))
        .col_expr(retrieve_job::Column::FinishedAt, Expr::value(Option::<DateTime<Utc>>::None))
        .col_expr(retrieve_job::Column::UpdatedAt, Expr::value(now))
        .filter(retrieve_job::Column::Id.eq(id))
        .filter(retrieve_job::Column::State.is_in([JobState::Skipped.as_str(), JobState::Cancelled.as_str()]))
        .exec(txn)
        .await
        .map_err(|e| StoreError::query(op, e))?;
    Ok(result.rows_affected)
}

/// The pure part: given the exam's jobs after skipping, which of the plan's jobs to add
/// (new rows, or skipped rows to reopen) and how each prior ends up.
#[derive(Debug, Default)]
pub(super) struct Decided {
    pub insert: Vec<NewJob>,
    pub reopen: Vec<(i64, NewJob)>,
    pub priors: Vec<PriorRecord>,
}

pub(super) fn decide(plan: &PlanRecord, jobs: &[retrieve_job::Model]) -> Decided {
    let key = |uid: &str, dest: &str| (uid.to_string(), dest.to_string());
    let live: HashMap<(String, String), &retrieve_job::Model> =
        jobs.iter().filter(|j| !dead(&j.state)).map(|j| (key(&j.study_instance_uid, &j.destination), j)).collect();
    // Skipped by an earlier re-plan, or cancelled when the exam was updated: the prior is
    // selected again, so the row (unique per exam, study, destination) goes back in the
    // queue; inserting a new one would be a no-op and the prior would never come.
    let skipped_rows: HashMap<(String, String), i64> =
        jobs.iter().filter(|j| dead(&j.state)).map(|j| (key(&j.study_instance_uid, &j.destination), j.id)).collect();
    let selected: HashSet<(&str, &str)> = plan
        .priors
        .iter()
        .filter(|p| p.selected)
        .map(|p| (p.archive.as_str(), p.study_instance_uid.as_str()))
        .collect();
    let mut count = live.len() as u64;
    let max = plan.max_jobs.map(u64::from);
    let mut out = Decided::default();
    // (archive, uid) of selected priors that get no job: over the budget
    let mut over: HashSet<(String, String)> = HashSet::new();
    for job in &plan.jobs {
        // (c): a job only ever comes from a selected prior of this very plan
        if !selected.contains(&(job.archive.as_str(), job.study_instance_uid.as_str())) {
            continue;
        }
        let k = key(&job.study_instance_uid, &job.destination);
        if live.contains_key(&k) {
            continue; // already there: counted
        }
        if max.is_some_and(|m| count >= m) {
            over.insert((job.archive.clone(), job.study_instance_uid.clone()));
            continue;
        }
        count += 1;
        match skipped_rows.get(&k) {
            Some(id) => out.reopen.push((*id, job.clone())),
            None => out.insert.push(job.clone()),
        }
    }
    let live_uids: HashMap<&str, &retrieve_job::Model> =
        live.values().map(|j| (j.study_instance_uid.as_str(), *j)).collect();
    let chosen: HashSet<&str> =
        plan.priors.iter().filter(|p| p.selected).map(|p| p.study_instance_uid.as_str()).collect();
    // a study with a started job the plan does not select keeps one copy selected: the
    // job's archive when the plan saw it there, else the first copy seen
    let mut keep: HashMap<&str, usize> = HashMap::new();
    for (i, p) in plan.priors.iter().enumerate() {
        let uid = p.study_instance_uid.as_str();
        let Some(job) = live_uids.get(uid) else { continue };
        if chosen.contains(uid) {
            continue;
        }
        let entry = keep.entry(uid).or_insert(i);
        if job.archive == p.archive && plan.priors[*entry].archive != job.archive {
            *entry = i;
        }
    }
    let existing = live.len();
    out.priors = plan
        .priors
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut p = p.clone();
            let uid = p.study_instance_uid.as_str();
            if p.selected && over.contains(&(p.archive.clone(), p.study_instance_uid.clone())) {
                p.selected = false;
                p.reason = format!(
                    "skipped: beyond max {} of rule '{}': {existing} jobs of earlier plans already count ({})",
                    plan.max_jobs.unwrap_or_default(),
                    plan.rule.as_deref().unwrap_or("-"),
                    p.reason
                );
            } else if keep.get(uid) == Some(&i)
                && let Some(job) = live_uids.get(uid)
            {
                // started before this plan: it is fetched (or was tried), so it stays selected
                p.selected = true;
                p.reason =
                    format!("kept: an earlier plan's retrieve job already started ({}); {}", job.state, p.reason);
            }
            p
        })
        .collect();
    out
}
