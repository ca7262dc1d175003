//! The plan as recorded: per archive the identity used, the queries sent and the gaps
//! left (the explanation), priors with reasons, retrieve jobs for the selected copies,
//! and the decisions as the store recorded them (a re-plan may unselect over `max` or
//! keep a started job).

use crate::finder::Finder;
use crate::identity::ArchiveIdentity;
use crate::query::{self, Findings, QueryLog};
use crate::{Archive, PlanReport};
use priorfetch_config::Config;
use priorfetch_domain::{Decision, Exam, JobTiming, StudyMatch, skip_present};
use priorfetch_store::{NewJob, PlanOutcome, PriorRecord};
use serde_json::{Map, Value, json};
use std::time::Duration;

/// The plan's explanation, per archive (and `destination`).
pub(crate) struct Explained {
    /// The queries sent and how each ended.
    pub queries: Map<String, Value>,
    /// Why an answer is missing or incomplete, and whether a re-plan may help.
    pub gaps: Map<String, Value>,
    /// The patient identifier used (hashed), or why the archive was skipped.
    pub archives: Map<String, Value>,
    /// Some gap may close on a later re-plan.
    pub retry: bool,
}

impl Explained {
    /// The fan-out's answers: the explanation, the report's gaps and skips, the studies.
    pub fn of(
        exam_id: i64,
        archives: &[Archive],
        findings: Vec<(ArchiveIdentity, Findings)>,
        report: &mut PlanReport,
    ) -> (Explained, Vec<StudyMatch>) {
        let mut e = Explained { queries: Map::new(), gaps: Map::new(), archives: Map::new(), retry: false };
        let mut studies = Vec::new();
        for (archive, (who, f)) in archives.iter().zip(findings) {
            let name = archive.config.name.clone();
            e.archives.insert(name.clone(), who.to_json(&archive.config));
            if let ArchiveIdentity::Skip(why) = who {
                tracing::info!(exam_id, archive = %name, reason = %why, "archive not queried");
                report.skipped.insert(name, why);
                continue;
            }
            report.cfinds += f.queries.len();
            e.queries.insert(name.clone(), serde_json::to_value(&f.queries).unwrap_or_default());
            if let Some((why, retry)) = f.gap {
                tracing::warn!(exam_id, archive = %name, error = %why, "archive answer missing or incomplete");
                e.retry |= retry;
                e.gaps.insert(name.clone(), json!({ "error": why, "retry": retry }));
                report.gaps.insert(name, why);
            }
            studies.extend(f.studies);
        }
        (e, studies)
    }

    /// `destination.check_existing`: selected priors the destination holds completely
    /// are skipped. A failed check is a gap, not an error: fetching what may already be
    /// there is safe.
    pub async fn check_destination(
        &mut self,
        dest: &Finder,
        exam_id: i64,
        decisions: &mut [Decision],
        timeout: Duration,
        report: &mut PlanReport,
    ) {
        let uids: Vec<String> =
            decisions.iter().filter(|d| d.selected).map(|d| d.study.study_instance_uid.clone()).collect();
        if uids.is_empty() {
            return;
        }
        let mut log: Vec<QueryLog> = Vec::new();
        match query::at_destination(dest, &uids, timeout, &mut log).await {
            Ok(present) => skip_present(decisions, &present),
            Err(e) => {
                tracing::warn!(exam_id, error = %e, "destination check failed; fetching all selected priors");
                self.gaps.insert("destination".into(), json!({ "error": e, "retry": false }));
                report.gaps.insert("destination".into(), e);
            }
        }
        report.cfinds += log.len();
        self.queries.insert("destination".into(), serde_json::to_value(&log).unwrap_or_default());
    }
}

fn instances(n: Option<u32>) -> Option<i32> {
    n.map(|n| n.min(i32::MAX as u32) as i32)
}

/// One job per selected copy, from the archive and method the config names.
pub(crate) fn jobs(config: &Config, exam: &Exam, decisions: &[Decision], timing: &JobTiming) -> Vec<NewJob> {
    decisions
        .iter()
        .filter(|d| d.selected)
        .filter_map(|d| {
            let archive = config.archive(&d.study.archive)?;
            Some(NewJob {
                exam_id: exam.id,
                study_instance_uid: d.study.study_instance_uid.clone(),
                archive: archive.name.clone(),
                method: archive.retrieve,
                destination: config.destination.name().to_string(),
                priority: timing.priority,
                not_before: timing.not_before,
                deadline: timing.deadline,
                max_attempts: config.retry.max_attempts as i32,
                expected_instances: instances(d.study.instances),
            })
        })
        .collect()
}

/// Every candidate copy with its decision.
pub(crate) fn priors(decisions: &[Decision]) -> Vec<PriorRecord> {
    decisions
        .iter()
        .map(|d| PriorRecord {
            archive: d.study.archive.clone(),
            study_instance_uid: d.study.study_instance_uid.clone(),
            study_date: d.study.study_date_raw.clone(),
            modalities: (!d.study.modalities.is_empty()).then(|| d.study.modalities.join("\\")),
            description: d.study.description.clone(),
            expected_instances: instances(d.study.instances),
            selected: d.selected,
            reason: d.reason.clone(),
        })
        .collect()
}

/// The decisions as recorded (a re-plan may unselect over `max` or keep a started job).
pub(crate) fn apply_outcome(decisions: &mut [Decision], outcome: &PlanOutcome) {
    let recorded: std::collections::HashMap<(&str, &str), &PriorRecord> =
        outcome.priors.iter().map(|p| ((p.archive.as_str(), p.study_instance_uid.as_str()), p)).collect();
    for d in decisions.iter_mut() {
        if let Some(p) = recorded.get(&(d.study.archive.as_str(), d.study.study_instance_uid.as_str())) {
            d.selected = p.selected;
            d.reason.clone_from(&p.reason);
        }
    }
}
