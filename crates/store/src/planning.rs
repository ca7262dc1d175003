//! Plans: the planner's outcome for an exam, recorded in one transaction (every candidate
//! prior with its reason, the plan's explanation, the retrieve jobs), and re-plans of
//! exams an archive was unreachable for.

mod reconcile;

use crate::entity::{exam, exam_plan, prior, retrieve_job};
use crate::{ExamRecord, ExamStatus, NewJob, Store, StoreError};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DbBackend, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Statement,
    TransactionTrait,
};
use std::time::Duration;

/// A candidate prior study and the planner's decision on it.
#[derive(Debug, Clone, PartialEq)]
pub struct PriorRecord {
    pub archive: String,
    pub study_instance_uid: String,
    pub study_date: Option<String>,
    /// Backslash-separated modalities.
    pub modalities: Option<String>,
    pub description: Option<String>,
    pub expected_instances: Option<i32>,
    pub selected: bool,
    pub reason: String,
}

/// Everything one planning pass decided about an exam.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanRecord {
    pub exam_id: i64,
    pub rule: Option<String>,
    /// Per archive: the C-FIND queries sent and their outcome (JSON, shown as is).
    pub queries: serde_json::Value,
    /// Per archive that could not be queried completely: why (JSON object; empty = none).
    pub gaps: serde_json::Value,
    /// Per archive: the patient identifier used (`{"patient": {"issuer", "id_hash",
    /// "chosen_by"}}`) or why the archive was not queried (`{"skipped": "..."}`).
    pub archives: serde_json::Value,
    /// Exam fields filled from `[[procedure_map]]` and rule inputs the exam lacked, with
    /// what the planner did instead (a JSON list; empty = nothing to say).
    pub inputs: serde_json::Value,
    /// When to plan again (gaps left), or `None`.
    pub replan_at: Option<DateTime<Utc>>,
    pub priors: Vec<PriorRecord>,
    /// Jobs for selected priors only (others are dropped).
    pub jobs: Vec<NewJob>,
    /// The rule's `max`: live jobs of the exam (earlier plans' included) never exceed it.
    pub max_jobs: Option<u32>,
    /// The exam cannot be planned (e.g. a wildcard patient ID): why. The exam becomes
    /// `failed`, no job is added, unfinished jobs of earlier plans are cancelled.
    pub refusal: Option<String>,
}

/// What recording a plan did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlanOutcome {
    /// Jobs added (new rows, or rows skipped earlier and queued again).
    pub jobs_inserted: u64,
    /// Jobs of earlier plans skipped (not started, prior no longer selected) or cancelled
    /// (refused plan).
    pub jobs_stopped: u64,
    /// The priors as recorded: a prior over `max` counting existing jobs is unselected,
    /// one whose job already started stays selected; reasons say so.
    pub priors: Vec<PriorRecord>,
}

/// Statuses from which an exam may be re-planned (not cancelled, not being planned).
const REPLANNABLE: [ExamStatus; 5] =
    [ExamStatus::Planned, ExamStatus::Fetching, ExamStatus::Complete, ExamStatus::Partial, ExamStatus::Failed];

impl Store {
    /// Records a plan in one transaction: the exam's priors are replaced by
    /// `plan.priors`, its explanation is stored (attempts counted), the jobs are enqueued
    /// (existing (exam, study, destination) jobs are kept), and a `planning` exam becomes
    /// `planned`. An exam cancelled meanwhile gets its explanation but no jobs.
    /// Returns how many jobs were new.
    pub async fn record_plan(&self, plan: &PlanRecord) -> Result<u64, StoreError> {
        Ok(self.record_plan_outcome(plan).await?.jobs_inserted)
    }

    /// [`Store::record_plan`], reconciling with the jobs of earlier plans (see
    /// `planning/reconcile.rs`) and reporting the priors as recorded.
    pub async fn record_plan_outcome(&self, plan: &PlanRecord) -> Result<PlanOutcome, StoreError> {
        let op = "record plan";
        let now = Utc::now();
        let txn = self.db.begin().await.map_err(|e| StoreError::query(op, e))?;
        let found: Option<(String, Option<String>)> = exam::Entity::find_by_id(plan.exam_id)
            .select_only()
            .column(exam::Column::Status)
            .column(exam::Column::TraceParent)
            .into_tuple()
            .one(&txn)
            .await
            .map_err(|e| StoreError::query(op, e))?;
        let Some((status, trace_parent)) = found else {
            return Ok(PlanOutcome::default()); // purged meanwhile: nothing to plan for
        };
        let cancelled = status == "cancelled";
        let mut outcome = PlanOutcome::default();
        if let Some(why) = plan.refusal.as_deref() {
            outcome.jobs_stopped = reconcile::refuse(&txn, plan.exam_id, why, now, op).await?;
            outcome.priors = plan.priors.iter().map(|p| PriorRecord { selected: false, ..p.clone() }).collect();
        } else if !cancelled {
            let applied = reconcile::apply(&txn, plan, now, op).await?;
            (outcome.jobs_inserted, outcome.jobs_stopped, outcome.priors) =
                (applied.inserted, applied.skipped, applied.priors);
            // The jobs join the exam's trace (the mover parents each attempt's span on it).
            if let Some(trace_parent) = trace_parent.filter(|_| applied.inserted > 0) {
                retrieve_job::Entity::update_many()
                    .col_expr(retrieve_job::Column::TraceParent, Expr::value(trace_parent))
                    .filter(retrieve_job::Column::ExamId.eq(plan.exam_id))
                    .filter(retrieve_job::Column::TraceParent.is_null())
                    .exec(&txn)
                    .await
                    .map_err(|e| StoreError::query(op, e))?;
            }
        } else {
            outcome.priors = plan.priors.clone();
        }

        prior::Entity::delete_many()
            .filter(prior::Column::ExamId.eq(plan.exam_id))
            .exec(&txn)
            .await
            .map_err(|e| StoreError::query(op, e))?;
        for chunk in outcome.priors.chunks(500) {
            let rows = chunk.iter().map(|p| prior::ActiveModel {
                exam_id: Set(plan.exam_id),
                archive: Set(p.archive.clone()),
                study_instance_uid: Set(p.study_instance_uid.clone()),
                study_date: Set(p.study_date.clone()),
                modalities: Set(p.modalities.clone()),
                description: Set(p.description.clone()),
                expected_instances: Set(p.expected_instances),
                selected: Set(p.selected && !cancelled),
                reason: Set(p.reason.clone()),
                created_at: Set(now),
                ..Default::default()
            });
            prior::Entity::insert_many(rows)
                .on_conflict(
                    OnConflict::columns([
                        prior::Column::ExamId,
                        prior::Column::Archive,
                        prior::Column::StudyInstanceUid,
                    ])
                    .do_nothing()
                    .to_owned(),
                )
                .exec_without_returning(&txn)
                .await
                .map_err(|e| StoreError::query(op, e))?;
        }

        let attempts: Option<i32> = exam_plan::Entity::find_by_id(plan.exam_id)
            .select_only()
            .column(exam_plan::Column::Attempts)
            .into_tuple()
            .one(&txn)
            .await
            .map_err(|e| StoreError::query(op, e))?;
        let row = exam_plan::ActiveModel {
            exam_id: Set(plan.exam_id),
            rule: Set(plan.rule.clone()),
            queries: Set(plan.queries.clone()),
            gaps: Set(plan.gaps.clone()),
            archives: Set(Some(plan.archives.clone())),
            inputs: Set(Some(plan.inputs.clone())),
            attempts: Set(attempts.unwrap_or(0) + 1),
            replan_at: Set(if cancelled || plan.refusal.is_some() { None } else { plan.replan_at }),
            planned_at: Set(now),
        };
        exam_plan::Entity::insert(row)
            .on_conflict(
                OnConflict::column(exam_plan::Column::ExamId)
                    .update_columns([
                        exam_plan::Column::Rule,
                        exam_plan::Column::Queries,
                        exam_plan::Column::Gaps,
                        exam_plan::Column::Archives,
                        exam_plan::Column::Inputs,
                        exam_plan::Column::Attempts,
                        exam_plan::Column::ReplanAt,
                        exam_plan::Column::PlannedAt,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(&txn)
            .await
            .map_err(|e| StoreError::query(op, e))?;

        let inserted = outcome.jobs_inserted;
        if !cancelled {
            // a refused exam fails from any status (also a re-plan of a row stored before
            // the check existed); a normal plan moves only `planning` to `planned`
            // a refused plan moves every status but `cancelled` to `failed`
            let (to, from): (ExamStatus, Vec<ExamStatus>) = if plan.refusal.is_some() {
                (ExamStatus::Failed, ExamStatus::ALL.into_iter().filter(|s| *s != ExamStatus::Cancelled).collect())
            } else {
                (ExamStatus::Planned, vec![ExamStatus::Planning])
            };
            exam::Entity::update_many()
                .col_expr(exam::Column::Status, Expr::value(to.as_str()))
                .col_expr(exam::Column::LeasedUntil, Expr::value(Option::<DateTime<Utc>>::None))
                .col_expr(exam::Column::Worker, Expr::value(Option::<String>::None))
                .col_expr(exam::Column::UpdatedAt, Expr::value(now))
                .filter(exam::Column::Id.eq(plan.exam_id))
                .filter(exam::Column::Status.is_in(from.iter().map(|s| s.as_str())))
                .exec(&txn)
                .await
                .map_err(|e| StoreError::query(op, e))?;
        }
        if inserted > 0 {
            self.notify_work(&txn).await?;
        }
        txn.commit().await.map_err(|e| StoreError::query(op, e))?;
        if inserted > 0 {
            self.wake_local();
        }
        Ok(outcome)
    }

    /// A failed planning pass (database or bug, not an archive: archives leave gaps):
    /// the exam goes back to `received` so another pass tries again.
    pub async fn release_exam(&self, exam_id: i64) -> Result<(), StoreError> {
        exam::Entity::update_many()
            .col_expr(exam::Column::Status, Expr::value("received"))
            .col_expr(exam::Column::LeasedUntil, Expr::value(Option::<DateTime<Utc>>::None))
            .col_expr(exam::Column::Worker, Expr::value(Option::<String>::None))
            .col_expr(exam::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(exam::Column::Id.eq(exam_id))
            .filter(exam::Column::Status.eq("planning"))
            .exec(&self.db)
            .await
            .map_err(|e| StoreError::query("release exam", e))?;
        Ok(())
    }

    pub async fn exam_plan(&self, exam_id: i64) -> Result<Option<exam_plan::Model>, StoreError> {
        exam_plan::Entity::find_by_id(exam_id).one(&self.db).await.map_err(|e| StoreError::query("get exam plan", e))
    }

    /// The exam's candidate priors, selected first, then by archive and study.
    pub async fn priors_of_exam(&self, exam_id: i64) -> Result<Vec<prior::Model>, StoreError> {
        prior::Entity::find()
            .filter(prior::Column::ExamId.eq(exam_id))
            .order_by_desc(prior::Column::Selected)
            .order_by_desc(prior::Column::StudyDate)
            .order_by_asc(prior::Column::Archive)
            .order_by_asc(prior::Column::Id)
            .all(&self.db)
            .await
            .map_err(|e| StoreError::query("list priors", e))
    }

    /// Claims up to `limit` exams whose re-plan is due. The claim pushes `replan_at` out
    /// by `lease`, so a worker that dies mid-plan leaves the exam due again afterwards;
    /// recording the new plan sets the next `replan_at` (or none).
    pub async fn claim_replans(&self, limit: u32, lease: Duration) -> Result<Vec<ExamRecord>, StoreError> {
        let op = "claim replans";
        let now = Utc::now();
        let until = now + lease;
        let txn = self.db.begin().await.map_err(|e| StoreError::query(op, e))?;
        let statuses = REPLANNABLE.iter().map(|s| format!("'{}'", s.as_str())).collect::<Vec<_>>().join(", ");
        let ids: Vec<i64> = match self.backend() {
            DbBackend::Postgres => {
                let sql = format!(
                    "SELECT p.exam_id FROM exam_plans p JOIN exams e ON e.id = p.exam_id \
                     WHERE p.replan_at IS NOT NULL AND p.replan_at <= $1 AND e.status IN ({statuses}) \
                     ORDER BY p.replan_at LIMIT $2 FOR UPDATE OF p SKIP LOCKED"
                );
                let stmt =
                    Statement::from_sql_and_values(DbBackend::Postgres, sql, [now.into(), (limit as i64).into()]);
                use sea_orm::ConnectionTrait;
                txn.query_all_raw(stmt)
                    .await
                    .map_err(|e| StoreError::query(op, e))?
                    .iter()
                    .map(|row| row.try_get::<i64>("", "exam_id"))
                    .collect::<Result<_, _>>()
                    .map_err(|e| StoreError::query(op, e))?
            }
            _ => {
                let due: Vec<i64> = exam_plan::Entity::find()
                    .select_only()
                    .column(exam_plan::Column::ExamId)
                    .filter(exam_plan::Column::ReplanAt.lte(now))
                    .order_by_asc(exam_plan::Column::ReplanAt)
                    .into_tuple()
                    .all(&txn)
                    .await
                    .map_err(|e| StoreError::query(op, e))?;
                if due.is_empty() {
                    Vec::new()
                } else {
                    exam::Entity::find()
                        .select_only()
                        .column(exam::Column::Id)
                        .filter(exam::Column::Id.is_in(due))
                        .filter(exam::Column::Status.is_in(REPLANNABLE.map(ExamStatus::as_str)))
                        .limit(limit as u64)
                        .into_tuple()
                        .all(&txn)
                        .await
                        .map_err(|e| StoreError::query(op, e))?
                }
            }
        };
        if ids.is_empty() {
            txn.commit().await.map_err(|e| StoreError::query(op, e))?;
            return Ok(Vec::new());
        }
        exam_plan::Entity::update_many()
            .col_expr(exam_plan::Column::ReplanAt, Expr::value(until))
            .filter(exam_plan::Column::ExamId.is_in(ids.clone()))
            .exec(&txn)
            .await
            .map_err(|e| StoreError::query(op, e))?;
        let exams = exam::Entity::find()
            .filter(exam::Column::Id.is_in(ids))
            .order_by_asc(exam::Column::Id)
            .all(&txn)
            .await
            .map_err(|e| StoreError::query(op, e))?;
        txn.commit().await.map_err(|e| StoreError::query(op, e))?;
        crate::rows::exams_of(exams)
    }

    /// `archive` answers again: exams whose plan has a gap for it and a re-plan pending
    /// are re-planned now instead of after their backoff (which the outage, not the exam,
    /// caused). Returns how many.
    pub async fn replan_gaps_now(&self, archive: &str) -> Result<u64, StoreError> {
        let op = "re-plan gaps now";
        let has_gap = match self.backend() {
            DbBackend::Postgres => "gaps ? $2",
            _ => "json_extract(gaps, '$.\"' || $2 || '\"') IS NOT NULL",
        };
        let sql = format!(
            "UPDATE exam_plans SET replan_at = $1 WHERE replan_at IS NOT NULL AND replan_at > $1 AND {has_gap}"
        );
        let stmt = Statement::from_sql_and_values(self.backend(), sql, [Utc::now().into(), archive.into()]);
        use sea_orm::ConnectionTrait;
        let result = self.db.execute_raw(stmt).await.map_err(|e| StoreError::query(op, e))?;
        if result.rows_affected() > 0 {
            self.wake_local();
        }
        Ok(result.rows_affected())
    }

    /// The earliest pending re-plan, so an idle planner knows how long it may sleep.
    pub async fn next_replan_at(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let next: Option<Option<DateTime<Utc>>> = exam_plan::Entity::find()
            .select_only()
            .column(exam_plan::Column::ReplanAt)
            .filter(exam_plan::Column::ReplanAt.is_not_null())
            .order_by_asc(exam_plan::Column::ReplanAt)
            .into_tuple()
            .one(&self.db)
            .await
            .map_err(|e| StoreError::query("next replan", e))?;
        Ok(next.flatten())
    }
}
