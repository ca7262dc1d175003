//! The planner: for each received exam, find the patient's studies on every archive at
//! once, pick the relevant priors by the rules, and schedule retrieve jobs.
//!
//! Layout:
//! - `lib.rs`: [`Planner`]: claims exams (lease, SKIP LOCKED), plans them with bounded
//!   concurrency, re-plans exams an archive was unreachable for, stops cleanly.
//! - `query.rs`: the C-FINDs (STUDY level by PatientID and StudyDate range, split when an
//!   archive caps matches; SERIES level for attributes only there; destination check).
//! - `pool.rs`: per-archive associations: capped by `max_associations`, reused, released
//!   after `planner.association_idle`.
//! - `api.rs`: `GET /api/exams/{id}`: the exam, the rule fired, C-FIND keys sent, priors
//!   with reasons, jobs.
//! - `metrics.rs`: `cfind_duration_seconds`, `cfind_matches_total`, `priors_selected_total`.
//!
//! The selection logic itself is pure and lives in `priorfetch-domain`.

pub mod api;
pub mod finder;
pub mod guard;
pub mod metrics;
pub mod pool;
pub mod query;

use chrono::Utc;
use finder::{Finder, WebFinder};
use futures::future::join_all;
use pool::Pool;
use priorfetch_config::{ArchiveConfig, Config, Protocol};
use priorfetch_dimse::{AeTitle, ScuOptions};
use priorfetch_domain::{DateRange, Decision, Exam, Needs, RuleSet, job_timing, select_priors, skip_present};
use priorfetch_store::{NewJob, PlanRecord, PriorRecord, RetryPolicy, Store, StoreError};
use query::{Findings, QueryLog};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// Recording the plan failed; the exam is handed back and planned again.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What one planning pass did (tests, benchmarks, logs).
#[derive(Debug, Clone)]
pub struct PlanReport {
    pub exam_id: i64,
    pub rule: Option<String>,
    /// One decision per study copy found, with its reason.
    pub decisions: Vec<Decision>,
    pub jobs_enqueued: u64,
    /// Archive (or `destination`) -> why its answer is missing or incomplete.
    pub gaps: BTreeMap<String, String>,
    pub replan_at: Option<chrono::DateTime<Utc>>,
    /// C-FINDs sent, all archives and the destination together.
    pub cfinds: usize,
}

impl PlanReport {
    /// (archive, StudyInstanceUID) of the copies to fetch, sorted.
    pub fn selected(&self) -> Vec<(String, String)> {
        let mut s: Vec<_> = self
            .decisions
            .iter()
            .filter(|d| d.selected)
            .map(|d| (d.study.archive.clone(), d.study.study_instance_uid.clone()))
            .collect();
        s.sort();
        s
    }
}

/// Tuning that is not configuration (the benchmark compares association reuse).
#[derive(Debug, Clone, Copy)]
pub struct PlannerOptions {
    pub reuse_associations: bool,
}

impl Default for PlannerOptions {
    fn default() -> Self {
        PlannerOptions { reuse_associations: true }
    }
}

struct Archive {
    config: ArchiveConfig,
    /// `Err`: the archive's address did not parse (an unvalidated config); each plan shows
    /// it as a gap.
    finder: Result<Finder, String>,
}

struct Inner {
    store: Store,
    config: Arc<Config>,
    rules: RuleSet,
    archives: Vec<Archive>,
    /// The destination, queried with `check_existing`.
    destination: Option<Finder>,
    worker: String,
}

/// The planning service; cheap to clone.
#[derive(Clone)]
pub struct Planner {
    inner: Arc<Inner>,
}

fn scu_options(config: &Config) -> ScuOptions {
    let ae = config.service.calling_ae().unwrap_or_else(|_| AeTitle::parse("PRIORFETCH").expect("valid AE"));
    let mut options = ScuOptions::new(ae);
    options.connect_timeout = config.planner.cfind_timeout.min(Duration::from_secs(10));
    options.association_timeout = config.planner.cfind_timeout;
    options.dimse_timeout = config.planner.cfind_timeout;
    options
}

impl Planner {
    /// Must be called inside a tokio runtime (pools start their idle reapers).
    pub fn new(store: Store, config: Arc<Config>) -> Planner {
        Planner::with_options(store, config, PlannerOptions::default())
    }

    pub fn with_options(store: Store, config: Arc<Config>, options: PlannerOptions) -> Planner {
        // Rules were validated at load; a rule that still fails to compile is left out
        // (loudly) rather than taking the service down.
        let rules = RuleSet {
            rules: config
                .rules
                .iter()
                .enumerate()
                .filter_map(|(i, r)| {
                    priorfetch_domain::Rule::compile(i, r)
                        .map_err(|e| tracing::error!(error = %e, "rule left out"))
                        .ok()
                })
                .collect(),
        };
        let scu = scu_options(&config);
        let idle = config.planner.association_idle;
        let reuse = options.reuse_associations;
        let archives = config
            .archives
            .iter()
            .map(|a| {
                let finder = match a.protocol {
                    Protocol::Dimse => a.peer().and_then(|peer| {
                        let tls = priorfetch_tls::for_archive(a).map_err(|e| e.to_string())?;
                        let scu = ScuOptions { tls, ..scu.clone() };
                        Ok(Finder::Dimse(Pool::new(&a.name, peer, scu, a.max_associations, idle, reuse)))
                    }),
                    Protocol::Dicomweb => web_client(a, config.planner.cfind_timeout)
                        .map(|client| Finder::Web(WebFinder::new(client, a.max_associations, a.max_matches))),
                };
                Archive { config: a.clone(), finder }
            })
            .collect();
        let d = &config.destination;
        let destination = if d.check_existing {
            match d.protocol {
                // A TLS block that cannot be used disables the check rather than falling
                // back to plain TCP (which would send the query in clear).
                Protocol::Dimse => match priorfetch_tls::for_destination(d) {
                    Ok(tls) => d.peer().ok().map(|peer| {
                        Finder::Dimse(Pool::new("destination", peer, ScuOptions { tls, ..scu.clone() }, 2, idle, reuse))
                    }),
                    Err(e) => {
                        tracing::error!(error = %e, "destination check disabled: its TLS settings cannot be used");
                        None
                    }
                },
                Protocol::Dicomweb => {
                    let options = priorfetch_dicomweb::ClientOptions {
                        read_timeout: config.planner.cfind_timeout,
                        ..Default::default()
                    };
                    priorfetch_dicomweb::DicomWebClient::for_destination(d, &options)
                        .ok()
                        .map(|client| Finder::Web(WebFinder::new(client, 2, None)))
                }
            }
        } else {
            None
        };
        // Stable per host (or `queue.instance`): a restart hands back its predecessor's exams.
        let worker = priorfetch_store::worker_identity(&config.queue.instance, "planner");
        Planner { inner: Arc::new(Inner { store, config, rules, archives, destination, worker }) }
    }

    /// Associations opened so far per archive (benchmark).
    pub fn associations_opened(&self) -> BTreeMap<String, u64> {
        self.inner
            .archives
            .iter()
            .filter_map(|a| match &a.finder {
                Ok(Finder::Dimse(p)) => Some((a.config.name.clone(), p.associations_opened())),
                _ => None,
            })
            .collect()
    }

    /// Plans one exam (claimed by the caller: status `planning`, or a re-plan) and
    /// records the plan. Unreachable archives leave gaps, not errors.
    pub async fn plan_exam(&self, exam: &Exam) -> Result<PlanReport, PlanError> {
        let inner = &self.inner;
        let config = &inner.config;
        let now = Utc::now();
        let timeout = config.planner.cfind_timeout;
        // no C-FIND with a key that would match other patients (wildcard, list, empty)
        if let Some(record) = guard::refusal(exam, inner.rules.pick(exam).map(|r| r.name.as_str())) {
            inner.store.record_plan(&record).await?;
            let why = record.refusal.unwrap_or_default();
            return Ok(PlanReport {
                exam_id: exam.id,
                rule: record.rule,
                decisions: Vec::new(),
                jobs_enqueued: 0,
                gaps: BTreeMap::from([("exam".to_string(), why)]),
                replan_at: None,
                cfinds: 0,
            });
        }
        let Some(rule) = inner.rules.pick(exam) else {
            let record = PlanRecord {
                exam_id: exam.id,
                rule: None,
                queries: serde_json::json!({}),
                gaps: serde_json::json!({}),
                replan_at: None,
                priors: Vec::new(),
                jobs: Vec::new(),
                max_jobs: Some(0),
                refusal: None,
            };
            inner.store.record_plan(&record).await?;
            tracing::info!(exam_id = exam.id, "no rule matches the exam: nothing to fetch");
            return Ok(PlanReport {
                exam_id: exam.id,
                rule: None,
                decisions: Vec::new(),
                jobs_enqueued: 0,
                gaps: BTreeMap::new(),
                replan_at: None,
                cfinds: 0,
            });
        };
        let window = DateRange::lookback(exam.scheduled_at.unwrap_or(now), rule.lookback, now.date_naive());
        let needs = Needs::of(rule, exam);

        let findings: Vec<Findings> = join_all(inner.archives.iter().map(|archive| {
            let exam = &exam;
            async move {
                let finder = match &archive.finder {
                    Ok(finder) => finder,
                    Err(e) => return Findings { gap: Some((e.clone(), false)), ..Default::default() },
                };
                let mut f = query::find_studies(finder, &archive.config, exam, window, needs, timeout).await;
                if needs.modalities || needs.body_part {
                    let mut queries = std::mem::take(&mut f.queries);
                    for study in f.studies.iter_mut() {
                        let in_window = study.study_date().is_some_and(|d| window.contains(d));
                        if in_window
                            && needs.missing_in(study)
                            && let Err(e) =
                                query::enrich(finder, &archive.config.name, study, timeout, &mut queries).await
                        {
                            tracing::warn!(archive = %archive.config.name, error = %e, "series-level c-find failed");
                        }
                    }
                    f.queries = queries;
                }
                f
            }
        }))
        .await;

        let mut queries = serde_json::Map::new();
        let mut gaps_json = serde_json::Map::new();
        let mut gaps = BTreeMap::new();
        let mut retry_gap = false;
        let mut cfinds = 0;
        let mut studies = Vec::new();
        for (archive, f) in inner.archives.iter().zip(findings) {
            let name = archive.config.name.clone();
            cfinds += f.queries.len();
            queries.insert(name.clone(), serde_json::to_value(&f.queries).unwrap_or_default());
            if let Some((why, retry)) = f.gap {
                tracing::warn!(exam_id = exam.id, archive = %name, error = %why, "archive answer missing or incomplete");
                retry_gap |= retry;
                gaps_json.insert(name.clone(), serde_json::json!({ "error": why, "retry": retry }));
                gaps.insert(name, why);
            }
            studies.extend(f.studies);
        }

        let mut decisions = select_priors(exam, rule, studies, &window);
        if let Some(dest) = &inner.destination {
            let uids: Vec<String> =
                decisions.iter().filter(|d| d.selected).map(|d| d.study.study_instance_uid.clone()).collect();
            if !uids.is_empty() {
                let mut log: Vec<QueryLog> = Vec::new();
                match query::at_destination(dest, &uids, timeout, &mut log).await {
                    Ok(present) => skip_present(&mut decisions, &present),
                    Err(e) => {
                        // Not fatal: fetching what may already be there is safe.
                        tracing::warn!(exam_id = exam.id, error = %e, "destination check failed; fetching all selected priors");
                        gaps_json.insert("destination".into(), serde_json::json!({ "error": e, "retry": false }));
                        gaps.insert("destination".into(), e);
                    }
                }
                cfinds += log.len();
                queries.insert("destination".into(), serde_json::to_value(&log).unwrap_or_default());
            }
        }

        let timing = job_timing(exam.scheduled_at, exam.priority, config.prefetch.lead_time, now);
        let jobs: Vec<NewJob> = decisions
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
                    expected_instances: d.study.instances.map(|n| n.min(i32::MAX as u32) as i32),
                })
            })
            .collect();

        let attempts = inner.store.exam_plan(exam.id).await?.map_or(0, |p| p.attempts.max(0) as u32);
        let replan_at = (retry_gap && attempts < config.planner.max_replans).then(|| {
            let b = &config.planner.replan_backoff;
            let policy = RetryPolicy { initial: b.initial, factor: b.factor, max: b.max, jitter: b.jitter };
            now + policy.delay(attempts + 1)
        });
        let priors = decisions
            .iter()
            .map(|d| PriorRecord {
                archive: d.study.archive.clone(),
                study_instance_uid: d.study.study_instance_uid.clone(),
                study_date: d.study.study_date_raw.clone(),
                modalities: (!d.study.modalities.is_empty()).then(|| d.study.modalities.join("\\")),
                description: d.study.description.clone(),
                expected_instances: d.study.instances.map(|n| n.min(i32::MAX as u32) as i32),
                selected: d.selected,
                reason: d.reason.clone(),
            })
            .collect();
        let record = PlanRecord {
            exam_id: exam.id,
            rule: Some(rule.name.clone()),
            queries: serde_json::Value::Object(queries),
            gaps: serde_json::Value::Object(gaps_json),
            replan_at,
            priors,
            jobs,
            max_jobs: Some(rule.max),
            refusal: None,
        };
        // the store reconciles with earlier plans' jobs (max counted over them all)
        let outcome = inner.store.record_plan_outcome(&record).await?;
        let jobs_enqueued = outcome.jobs_inserted;
        apply_outcome(&mut decisions, &outcome);
        let selected = decisions.iter().filter(|d| d.selected).count();
        metrics::PRIORS_SELECTED.with_label_values(&[rule.name.as_str()]).inc_by(selected as u64);
        tracing::info!(
            exam_id = exam.id, rule = %rule.name, candidates = decisions.len(), selected, jobs_enqueued,
            jobs_stopped = outcome.jobs_stopped, gaps = gaps.len(), cfinds, "exam planned"
        );
        Ok(PlanReport {
            exam_id: exam.id,
            rule: Some(rule.name.clone()),
            decisions,
            jobs_enqueued,
            gaps,
            replan_at,
            cfinds,
        })
    }

    /// Claims and plans exams until `shutdown` turns true: new exams first, then due
    /// re-plans, at most `planner.concurrency` at once; idle, it waits for a wake-up
    /// (NOTIFY), the next re-plan, or a 5 s fallback poll. On shutdown, running plans get
    /// `service.shutdown_grace` to finish; unfinished exams are handed back.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let inner = &self.inner;
        let concurrency = inner.config.planner.concurrency.max(1) as usize;
        let lease = inner.config.queue.lease;
        let permits = Arc::new(Semaphore::new(concurrency));
        let running: Arc<Mutex<HashSet<i64>>> = Default::default();
        let mut tasks = JoinSet::new();
        let mut signal = inner.store.work_signal().await;
        // The heartbeat keeps this worker alive for the rescuer and extends the leases of
        // the exams it plans (a plan may outlast `queue.lease`).
        let q = &inner.config.queue;
        let beat = priorfetch_store::HeartbeatOptions {
            every: q.heartbeat,
            dead_after: q.dead_after,
            exam_lease: Some(lease),
        };
        let (_heartbeat, reclaimed) = inner.store.start_worker(&inner.worker, beat).await;
        if let Err(e) = reclaimed {
            tracing::warn!(error = %e, "cannot hand back the previous run's exams; the rescuer will");
        }
        tracing::info!(worker = %inner.worker, concurrency, "planner started");
        while !*shutdown.borrow() {
            signal.mark_seen();
            while tasks.try_join_next().is_some() {}
            let mut free = permits.available_permits() as u32;
            let mut failed = false;
            if free > 0 {
                match inner.store.claim_exams(&inner.worker, free, lease).await {
                    Ok(exams) => {
                        free -= exams.len() as u32;
                        for exam in exams {
                            self.spawn_plan(&mut tasks, &permits, &running, exam.exam, true);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "claiming exams failed");
                        failed = true;
                    }
                }
            }
            if free > 0 && !failed {
                match inner.store.claim_replans(free, lease).await {
                    Ok(exams) => {
                        for exam in exams {
                            self.spawn_plan(&mut tasks, &permits, &running, exam.exam, false);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "claiming re-plans failed");
                        failed = true;
                    }
                }
            }
            let mut wait = if failed { Duration::from_secs(1) } else { Duration::from_secs(5) };
            if let Ok(Some(next)) = inner.store.next_replan_at().await {
                wait = wait.min((next - Utc::now()).to_std().unwrap_or(Duration::ZERO).max(Duration::from_millis(50)));
            }
            let saturated = permits.available_permits() == 0;
            tokio::select! {
                woke = signal.wait(wait), if !saturated => { let _ = woke; }
                _ = tasks.join_next(), if !tasks.is_empty() => {}
                _ = shutdown.changed() => {}
            }
        }
        let grace = inner.config.service.shutdown_grace;
        if tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await.is_err() {
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
        let unfinished: Vec<i64> = running.lock().unwrap_or_else(|e| e.into_inner()).drain().collect();
        for id in unfinished {
            if let Err(e) = inner.store.release_exam(id).await {
                tracing::warn!(exam_id = id, error = %e, "cannot hand the exam back; the rescuer will");
            }
        }
        for finder in inner.archives.iter().filter_map(|a| a.finder.as_ref().ok()).chain(&inner.destination) {
            if let Finder::Dimse(pool) = finder {
                pool.close().await;
            }
        }
        tracing::info!("planner stopped");
    }

    fn spawn_plan(
        &self,
        tasks: &mut JoinSet<()>,
        permits: &Arc<Semaphore>,
        running: &Arc<Mutex<HashSet<i64>>>,
        exam: Exam,
        fresh: bool,
    ) {
        let Ok(permit) = permits.clone().try_acquire_owned() else { return };
        let planner = self.clone();
        let running = running.clone();
        if fresh {
            running.lock().unwrap_or_else(|e| e.into_inner()).insert(exam.id);
        }
        tasks.spawn(async move {
            let _permit = permit;
            if let Err(e) = planner.plan_exam(&exam).await {
                tracing::warn!(exam_id = exam.id, error = %e, "planning failed; the exam will be planned again");
                if fresh {
                    let _ = planner.inner.store.release_exam(exam.id).await;
                }
            }
            running.lock().unwrap_or_else(|e| e.into_inner()).remove(&exam.id);
        });
    }
}

/// The decisions as recorded (a re-plan may unselect over `max` or keep a started job).
fn apply_outcome(decisions: &mut [Decision], outcome: &priorfetch_store::PlanOutcome) {
    let recorded: std::collections::HashMap<(&str, &str), &PriorRecord> =
        outcome.priors.iter().map(|p| ((p.archive.as_str(), p.study_instance_uid.as_str()), p)).collect();
    for d in decisions.iter_mut() {
        if let Some(p) = recorded.get(&(d.study.archive.as_str(), d.study.study_instance_uid.as_str())) {
            d.selected = p.selected;
            d.reason.clone_from(&p.reason);
        }
    }
}

/// The archive's DICOMweb client (`base_url`, `auth`), built once.
fn web_client(archive: &ArchiveConfig, timeout: Duration) -> Result<priorfetch_dicomweb::DicomWebClient, String> {
    let options = priorfetch_dicomweb::ClientOptions { read_timeout: timeout, ..Default::default() };
    priorfetch_dicomweb::DicomWebClient::for_archive(archive, &options).map_err(|e| e.to_string())
}
