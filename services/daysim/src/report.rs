//! Readiness of a simulated day, judged twice: from what the destination actually
//! received (when each expected prior's last instance arrived, against the exam's final
//! schedule) and from what priorfetch recorded (exam status and `ready_at`). The first is
//! the truth; the second must agree with it.

use crate::messages::{by_patient, modality};
use crate::run::RunData;
use crate::scenario::DayExam;
use chrono::{DateTime, Utc};
use pacs_sim::{StudySummary, SyntheticSpec};
use sea_orm::{ConnectionTrait, Database, Statement};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// The day's rule: studies of the exam's modality within 10 years, the latest 3.
pub const MAX_PRIORS: usize = 3;

#[derive(Debug, Clone)]
pub struct DbExam {
    pub accession: String,
    pub status: String,
    pub scheduled_at: Option<DateTime<Utc>>,
    pub ready_at: Option<DateTime<Utc>>,
    pub jobs: i64,
}

#[derive(Debug, Clone)]
pub struct DbJob {
    pub accession: String,
    pub study: String,
    pub archive: String,
    pub state: String,
    pub attempt: i32,
    pub last_error: Option<String>,
    pub failed_over: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    InTime,
    Late,
    Failed,
}

/// One policy's day, as printed.
#[derive(Debug, Clone)]
pub struct DayResult {
    pub dispatch: String,
    /// Exams not cancelled.
    pub exams: usize,
    pub cancelled: usize,
    pub in_time: usize,
    pub late: usize,
    pub failed: usize,
    /// Reason -> count, for late and failed exams.
    pub late_reasons: BTreeMap<String, usize>,
    pub failed_reasons: BTreeMap<String, usize>,
    /// Minutes (simulated) between priors ready and the exam: p1, p5, p50.
    pub slack_minutes: [f64; 3],
    pub jobs: usize,
    pub failovers: usize,
    pub instances: usize,
    pub jobs_per_s: f64,
    pub instances_per_s: f64,
    /// Exams where priorfetch's record disagrees with the destination (beyond three wall
    /// seconds around the deadline).
    pub disagreements: usize,
    /// The first few disagreements, for the reader.
    pub disagreement_examples: Vec<String>,
    /// priorfetch's own count: (in time, late, failed).
    pub recorded: (usize, usize, usize),
    pub wall_s: f64,
}

impl DayResult {
    pub fn readiness(&self) -> f64 {
        if self.exams == 0 { 1.0 } else { self.in_time as f64 / self.exams as f64 }
    }
}

pub async fn read_db(url: &str) -> anyhow::Result<(Vec<DbExam>, Vec<DbJob>)> {
    let db = Database::connect(url).await?;
    let backend = db.get_database_backend();
    let rows = db
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT e.accession_number, e.status, e.scheduled_at, e.ready_at, \
             (SELECT count(*) FROM retrieve_jobs j WHERE j.exam_id = e.id) AS jobs FROM exams e",
        ))
        .await?;
    let mut exams = Vec::new();
    for r in rows {
        exams.push(DbExam {
            accession: r.try_get("", "accession_number").unwrap_or_default(),
            status: r.try_get("", "status")?,
            scheduled_at: r.try_get("", "scheduled_at")?,
            ready_at: r.try_get("", "ready_at")?,
            jobs: r.try_get("", "jobs")?,
        });
    }
    let rows = db
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT e.accession_number, j.study_instance_uid, j.archive, j.state, j.attempt, j.last_error, \
             j.tried_archives IS NOT NULL AS failed_over FROM retrieve_jobs j JOIN exams e ON e.id = j.exam_id",
        ))
        .await?;
    let mut jobs = Vec::new();
    for r in rows {
        jobs.push(DbJob {
            accession: r.try_get("", "accession_number").unwrap_or_default(),
            study: r.try_get("", "study_instance_uid")?,
            archive: r.try_get("", "archive")?,
            state: r.try_get("", "state")?,
            attempt: r.try_get("", "attempt")?,
            last_error: r.try_get("", "last_error")?,
            failed_over: r.try_get("", "failed_over")?,
        });
    }
    db.close().await.ok();
    Ok((exams, jobs))
}

/// The priors the day's rule selects for an exam, from the population.
pub fn expected_priors<'a>(exam: &DayExam, studies: &HashMap<&str, Vec<&'a StudySummary>>) -> Vec<&'a StudySummary> {
    let wanted = modality(exam, studies);
    let patient = SyntheticSpec::patient_id(exam.patient);
    let mut mine: Vec<&StudySummary> = studies
        .get(patient.as_str())
        .map(|s| s.iter().copied().filter(|s| s.modalities.contains(&wanted)).collect())
        .unwrap_or_default();
    mine.sort_by(|a, b| b.study_date.cmp(&a.study_date).then_with(|| a.study_instance_uid.cmp(&b.study_instance_uid)));
    mine.truncate(MAX_PRIORS);
    mine
}

/// When each study was complete at the destination (its n-th distinct instance).
fn completed_at(
    received: &[pacs_sim::ReceivedInstance],
    population: &[StudySummary],
) -> HashMap<String, DateTime<Utc>> {
    let sizes: HashMap<&str, usize> = population.iter().map(|s| (s.study_instance_uid.as_str(), s.instances)).collect();
    let mut seen: HashSet<&str> = HashSet::new();
    let mut arrivals: HashMap<&str, Vec<DateTime<Utc>>> = HashMap::new();
    let mut ordered: Vec<&pacs_sim::ReceivedInstance> = received.iter().collect();
    ordered.sort_by_key(|r| r.received_at);
    for r in ordered {
        if seen.insert(r.sop_instance_uid.as_str()) {
            arrivals.entry(r.study_instance_uid.as_str()).or_default().push(r.received_at);
        }
    }
    arrivals
        .into_iter()
        .filter_map(|(study, times)| {
            let n = *sizes.get(study)?;
            (times.len() >= n).then(|| (study.to_string(), times[n - 1]))
        })
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The outcome priorfetch recorded for an exam.
fn recorded(e: &DbExam, deadline: DateTime<Utc>) -> Outcome {
    match e.status.as_str() {
        "complete" if e.ready_at.is_some_and(|r| r <= deadline) => Outcome::InTime,
        "planned" if e.jobs == 0 => Outcome::InTime,
        "partial" | "failed" => Outcome::Failed,
        _ => Outcome::Late,
    }
}

pub fn judge(exams: &[DayExam], data: &RunData) -> DayResult {
    let studies = by_patient(&data.population);
    let complete = completed_at(&data.received, &data.population);
    let db: HashMap<&str, &DbExam> = data.exams.iter().map(|e| (e.accession.as_str(), e)).collect();
    let mut jobs_of: HashMap<&str, Vec<&DbJob>> = HashMap::new();
    for j in &data.jobs {
        jobs_of.entry(j.accession.as_str()).or_default().push(j);
    }
    // `ready_at` is written after the mover verified the study at the destination and
    // rolled the exam up: a moment after the last instance arrived.
    let tolerance = chrono::Duration::seconds(3);
    let mut r = DayResult {
        dispatch: data.dispatch.as_str().to_string(),
        exams: 0,
        cancelled: 0,
        in_time: 0,
        late: 0,
        failed: 0,
        late_reasons: BTreeMap::new(),
        failed_reasons: BTreeMap::new(),
        slack_minutes: [0.0; 3],
        jobs: data.jobs.len(),
        failovers: data.jobs.iter().filter(|j| j.failed_over).count(),
        instances: data.received.len(),
        jobs_per_s: 0.0,
        instances_per_s: 0.0,
        disagreements: 0,
        disagreement_examples: Vec::new(),
        recorded: (0, 0, 0),
        wall_s: data.wall.as_secs_f64(),
    };
    let mut slack = Vec::new();
    for exam in exams {
        if exam.cancelled_at.is_some() {
            r.cancelled += 1;
            continue;
        }
        r.exams += 1;
        let accession = crate::messages::accession(exam);
        let deadline = data.clock.utc(exam.final_schedule());
        let priors = expected_priors(exam, &studies);
        let times: Vec<Option<DateTime<Utc>>> =
            priors.iter().map(|p| complete.get(&p.study_instance_uid).copied()).collect();
        let jobs = jobs_of.get(accession.as_str()).cloned().unwrap_or_default();
        let ready = times.iter().copied().collect::<Option<Vec<_>>>().map(|t| t.into_iter().max());
        let truth = match ready {
            // Missing priors: failed when a job of the exam gave up, else late (still
            // retrieving, or not planned, when the day ended).
            None => match jobs.iter().find(|j| j.state == "failed" || j.state == "partial") {
                Some(j) => {
                    let why = format!("{} on {}: {}", j.state, j.archive, short(j.last_error.as_deref()));
                    *r.failed_reasons.entry(why).or_default() += 1;
                    Outcome::Failed
                }
                None => {
                    let open: BTreeSet<String> = jobs
                        .iter()
                        .filter(|j| !["completed", "cancelled", "skipped"].contains(&j.state.as_str()))
                        .map(|j| format!("{} {}", j.archive, j.state))
                        .collect();
                    let why = if jobs.is_empty() {
                        "not planned by the end of the day".to_string()
                    } else if open.is_empty() {
                        "a missing prior was never queued (its archive was away when the exam was planned)".to_string()
                    } else {
                        format!("still open at the end of the day: {}", Vec::from_iter(open).join(", "))
                    };
                    *r.late_reasons.entry(why).or_default() += 1;
                    Outcome::Late
                }
            },
            Some(None) => Outcome::InTime, // nothing to fetch
            Some(Some(at)) if at <= deadline => {
                slack.push((data.clock.sim_of(deadline) - data.clock.sim_of(at)) / 60.0);
                Outcome::InTime
            }
            Some(Some(_)) => {
                let last =
                    priors.iter().zip(&times).max_by_key(|(_, t)| **t).map(|(p, _)| p.study_instance_uid.as_str());
                let job = jobs.iter().find(|j| Some(j.study.as_str()) == last);
                let why = match job {
                    Some(j) if j.failed_over => format!("{} after a failover", j.archive),
                    Some(j) => format!("{} queue", j.archive),
                    None => "no job".into(),
                };
                let why = if exam.urgency == crate::scenario::Urgency::Stat { format!("STAT: {why}") } else { why };
                *r.late_reasons.entry(why).or_default() += 1;
                Outcome::Late
            }
        };
        match truth {
            Outcome::InTime => r.in_time += 1,
            Outcome::Late => r.late += 1,
            Outcome::Failed => r.failed += 1,
        }
        let said = db.get(accession.as_str()).map_or(Outcome::Failed, |e| recorded(e, deadline));
        match said {
            Outcome::InTime => r.recorded.0 += 1,
            Outcome::Late => r.recorded.1 += 1,
            Outcome::Failed => r.recorded.2 += 1,
        }
        let near_deadline = matches!(ready, Some(Some(at)) if (at - deadline).abs() < tolerance);
        if said != truth && !near_deadline {
            r.disagreements += 1;
            if r.disagreement_examples.len() < 5 {
                let status = db.get(accession.as_str()).map_or("absent", |e| e.status.as_str());
                let states: Vec<&str> = jobs.iter().map(|j| j.state.as_str()).collect();
                r.disagreement_examples.push(format!(
                    "{accession}: delivered {truth:?}, recorded {said:?} (status {status}, jobs {states:?}, expected {})",
                    priors.len()
                ));
            }
        }
    }
    slack.sort_by(f64::total_cmp);
    r.slack_minutes = [percentile(&slack, 0.01), percentile(&slack, 0.05), percentile(&slack, 0.5)];
    let day_wall = data.wall.as_secs_f64().max(1e-3);
    r.jobs_per_s = r.jobs as f64 / day_wall;
    r.instances_per_s = r.instances as f64 / day_wall;
    r
}

fn short(error: Option<&str>) -> String {
    let e = error.unwrap_or("no error recorded");
    e.chars().take(70).collect()
}
