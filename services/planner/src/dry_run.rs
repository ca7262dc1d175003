//! `priorfetch explain`: the plan an exam would get, written nowhere. The same steps as
//! [`Planner::plan_exam`] (procedure map, rule, identifier guard, C-FIND/QIDO fan-out over
//! every archive, selection, destination check, job timing), without recording the plan,
//! the priors or any job.

use crate::record::{self, Explained};
use crate::{PlanReport, Planner, guard, identity, inputs};
use chrono::Utc;
use priorfetch_domain::{DateRange, Exam, Needs, job_timing, select_priors};
use serde_json::{Value, json};

impl Planner {
    /// What planning `exam` would query, choose and schedule, and why, as JSON: `rule`,
    /// `inputs`, `archives` (identifier used, hashed, or why skipped), `cfind` (keys sent and
    /// outcomes per archive), `gaps`, `priors` (every candidate with its reason), `jobs`
    /// (what would be enqueued), `refusal` (an unsafe patient identifier). Queries the
    /// archives; writes nothing.
    pub async fn explain_dry(&self, exam: &Exam) -> Value {
        let inner = &self.inner;
        let config = &inner.config;
        let now = Utc::now();
        let timeout = config.planner.cfind_timeout;
        let (exam, mut notes) = inputs::fill(exam, &config.procedure_map);
        let exam = &exam;
        let picked = inner.rules.pick(exam);
        notes.extend(inputs::rule_gaps(&inner.rules, picked, exam));
        let nothing = |rule: Option<String>, refusal: Option<String>| {
            json!({ "rule": rule, "inputs": notes, "refusal": refusal, "archives": {}, "cfind": {}, "gaps": {},
                    "priors": [], "jobs": [] })
        };
        if let Some(record) = guard::refusal(exam, picked.map(|r| r.name.as_str())) {
            return nothing(record.rule, record.refusal);
        }
        let Some(rule) = picked else { return nothing(None, None) };
        let window = DateRange::lookback(exam.scheduled_at.unwrap_or(now), rule.lookback, now.date_naive());
        let needs = Needs::of(rule, exam);
        let findings = identity::find_all(&inner.archives, exam, window, needs, timeout).await;
        let mut report = PlanReport::empty(exam.id, Some(rule.name.clone()), notes.clone());
        let (mut explained, studies) = Explained::of(exam.id, &inner.archives, findings, &mut report);
        let mut decisions = select_priors(exam, rule, studies, &window);
        if let Some(dest) = &inner.destination {
            explained.check_destination(dest, exam.id, &mut decisions, timeout, &mut report).await;
        }
        let timing = job_timing(exam.scheduled_at, exam.priority, config.prefetch.lead_time, now);
        let priors: Vec<Value> = record::priors(&decisions)
            .iter()
            .map(|p| {
                json!({
                    "archive": p.archive, "study_instance_uid": p.study_instance_uid, "study_date": p.study_date,
                    "modalities": p.modalities, "description": p.description,
                    "expected_instances": p.expected_instances, "selected": p.selected, "reason": p.reason,
                })
            })
            .collect();
        let jobs: Vec<Value> = record::jobs(config, exam, &decisions, &timing)
            .iter()
            .map(|j| {
                json!({
                    "study_instance_uid": j.study_instance_uid, "archive": j.archive, "method": j.method,
                    "destination": j.destination, "priority": j.priority, "not_before": j.not_before,
                    "deadline": j.deadline, "expected_instances": j.expected_instances,
                })
            })
            .collect();
        json!({
            "rule": rule.name, "inputs": notes, "refusal": null,
            "lookback": { "from": window.from.to_string(), "to": window.to.to_string() },
            "archives": explained.archives, "cfind": explained.queries, "gaps": explained.gaps,
            "priors": priors, "jobs": jobs,
        })
    }
}
