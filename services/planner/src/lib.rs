//! The planner: for each received exam, find the patient's studies on every archive at
//! once, pick the relevant priors by the rules, and schedule retrieve jobs.
//!
//! Layout:
//! - `lib.rs`: [`Planner`]: claims exams (lease, SKIP LOCKED), plans them with bounded
//!   concurrency, re-plans exams an archive was unreachable for, stops cleanly.
//! - `identity.rs`: the patient identifier each archive is queried with
//!   (`patient_id_issuer`), or why it is skipped; the fan-out over all archives.
//! - `inputs.rs`: modality/body part from `[[procedure_map]]`, and the rule inputs an exam
//!   lacked, said in the plan.
//! - `record.rs`: the plan as recorded: explanation per archive (identity, queries,
//!   gaps, destination check), prior rows, jobs.
//! - `query.rs`: the C-FINDs (STUDY level by PatientID and StudyDate range, split when an
//!   archive caps matches; SERIES level for attributes only there; destination check).
//! - `pool.rs`: per-archive associations: capped by `max_associations`, reused, released
//!   after `planner.association_idle`.
//! - `dry_run.rs`: `Planner::explain_dry`, the plan an exam would get, recorded nowhere
//!   (`priorfetch explain`).
//! - `comeback.rs`: an archive answering again brings forward the re-plans of the exams
//!   planned without it.
//! - `api.rs`: an exam's explanation (the rule fired, C-FIND keys sent, priors with reasons,
//!   jobs), served by the operator API (`services/api`).
//! - `metrics.rs`: `cfind_duration_seconds`, `cfind_matches_total`, `priors_selected_total`.
//!
//! Traces: each plan is a `plan` span in the exam's trace (its stored `traceparent`),
//! with a `cfind` or `qido` child per query (`query.rs`); the jobs carry the trace on.
//!
//! The selection logic itself is pure and lives in `priorfetch-domain`.

pub mod api;
mod comeback;
mod dry_run;
pub mod finder;
pub mod guard;
pub mod identity;
pub mod inputs;
pub mod metrics;
pub mod pool;
pub mod query;
mod record;
mod traced;

use chrono::Utc;
use finder::{Finder, WebFinder};
use inputs::InputNote;
use pool::Pool;
use priorfetch_config::{ArchiveConfig, Config, Protocol};
use priorfetch_dimse::{AeTitle, ScuOptions};
use priorfetch_domain::{DateRange, Decision, Exam, Needs, RuleSet, job_timing, select_priors};
use priorfetch_store::{PlanRecord, RetryPolicy, Store, StoreError};
use record::Explained;
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
    /// Archive -> why it was not queried (no identifier of its `patient_id_issuer`).
    pub skipped: BTreeMap<String, String>,
    /// Fields filled from `[[procedure_map]]`, rule inputs the exam lacked.
    pub inputs: Vec<InputNote>,
}

impl PlanReport {
    /// A plan that queried nothing (yet).
    fn empty(exam_id: i64, rule: Option<String>, inputs: Vec<InputNote>) -> PlanReport {
        PlanReport {
            exam_id,
            rule,
            decisions: Vec::new(),
            jobs_enqueued: 0,
            gaps: BTreeMap::new(),
            replan_at: None,
            cfinds: 0,
            skipped: BTreeMap::new(),
            inputs,
        }
    }

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
    /// records the plan. Unreachable archives leave gaps, not errors; archives without an
    /// identifier of their `patient_id_issuer` are skipped, and the plan says so.
    pub async fn plan_exam(&self, exam: &Exam) -> Result<PlanReport, PlanError> {
        self.plan_exam_traced(exam, None, true).await
    }

    async fn plan(&self, exam: &Exam) -> Result<PlanReport, PlanError> {
        let inner = &self.inner;
        let config = &inner.config;
        let now = Utc::now();
        let timeout = config.planner.cfind_timeout;
        // fields the rules need, from [[procedure_map]] now (a config change reaches
        // stored exams), and what is still missing
        let (exam, mut notes) = inputs::fill(exam, &config.procedure_map);
        let exam = &exam;
        let picked = inner.rules.pick(exam);
        notes.extend(inputs::rule_gaps(&inner.rules, picked, exam));
        let inputs_json = serde_json::to_value(&notes).unwrap_or_default();
        // no C-FIND with a key that would match other patients (wildcard, list, empty)
        if let Some(mut record) = guard::refusal(exam, picked.map(|r| r.name.as_str())) {
            record.inputs = inputs_json;
            inner.store.record_plan(&record).await?;
            let gaps = BTreeMap::from([("exam".to_string(), record.refusal.unwrap_or_default())]);
            return Ok(PlanReport { gaps, ..PlanReport::empty(exam.id, record.rule, notes) });
        }
        let Some(rule) = picked else {
            let record = PlanRecord {
                exam_id: exam.id,
                rule: None,
                queries: serde_json::json!({}),
                gaps: serde_json::json!({}),
                archives: serde_json::json!({}),
                inputs: inputs_json,
                replan_at: None,
                priors: Vec::new(),
                jobs: Vec::new(),
                max_jobs: Some(0),
                refusal: None,
            };
            inner.store.record_plan(&record).await?;
            tracing::info!(exam_id = exam.id, "no rule matches the exam: nothing to fetch");
            return Ok(PlanReport::empty(exam.id, None, notes));
        };
        let window = DateRange::lookback(exam.scheduled_at.unwrap_or(now), rule.lookback, now.date_naive());
        let needs = Needs::of(rule, exam);
        let findings = identity::find_all(&inner.archives, exam, window, needs, timeout).await;

        let mut report = PlanReport::empty(exam.id, Some(rule.name.clone()), notes);
        let (mut explained, studies) = Explained::of(exam.id, &inner.archives, findings, &mut report);
        // copies of one study on several archives (under different patient IDs too) are
        // one candidate: selection and the destination check go by StudyInstanceUID
        let mut decisions = select_priors(exam, rule, studies, &window);
        if let Some(dest) = &inner.destination {
            explained.check_destination(dest, exam.id, &mut decisions, timeout, &mut report).await;
        }

        let timing = job_timing(exam.scheduled_at, exam.priority, config.prefetch.lead_time, now);
        let attempts = inner.store.exam_plan(exam.id).await?.map_or(0, |p| p.attempts.max(0) as u32);
        report.replan_at = (explained.retry && attempts < config.planner.max_replans).then(|| {
            let b = &config.planner.replan_backoff;
            let policy = RetryPolicy { initial: b.initial, factor: b.factor, max: b.max, jitter: b.jitter };
            now + policy.delay(attempts + 1)
        });
        let record = PlanRecord {
            exam_id: exam.id,
            rule: Some(rule.name.clone()),
            queries: serde_json::Value::Object(explained.queries),
            gaps: serde_json::Value::Object(explained.gaps),
            archives: serde_json::Value::Object(explained.archives),
            inputs: inputs_json,
            replan_at: report.replan_at,
            priors: record::priors(&decisions),
            jobs: record::jobs(config, exam, &decisions, &timing),
            max_jobs: Some(rule.max),
            refusal: None,
        };
        // the store reconciles with earlier plans' jobs (max counted over them all)
        let outcome = inner.store.record_plan_outcome(&record).await?;
        report.jobs_enqueued = outcome.jobs_inserted;
        record::apply_outcome(&mut decisions, &outcome);
        let selected = decisions.iter().filter(|d| d.selected).count();
        metrics::PRIORS_SELECTED.with_label_values(&[rule.name.as_str()]).inc_by(selected as u64);
        tracing::info!(
            exam_id = exam.id, rule = %rule.name, candidates = decisions.len(), selected,
            jobs_enqueued = report.jobs_enqueued, jobs_stopped = outcome.jobs_stopped, gaps = report.gaps.len(),
            skipped = report.skipped.len(), cfinds = report.cfinds, "exam planned"
        );
        report.decisions = decisions;
        Ok(report)
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
        let mut comebacks = comeback::Comebacks::default();
        while !*shutdown.borrow() {
            signal.mark_seen();
            comebacks.wake_replans(&inner.store).await;
            while tasks.try_join_next().is_some() {}
            let mut free = permits.available_permits() as u32;
            let mut failed = false;
            if free > 0 {
                match inner.store.claim_exams(&inner.worker, free, lease).await {
                    Ok(exams) => {
                        free -= exams.len() as u32;
                        for exam in exams {
                            self.spawn_plan(&mut tasks, &permits, &running, exam.exam, exam.trace_parent, true);
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
                            self.spawn_plan(&mut tasks, &permits, &running, exam.exam, exam.trace_parent, false);
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
        trace_parent: Option<String>,
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
            if let Err(e) = planner.plan_exam_traced(&exam, trace_parent.as_deref(), fresh).await {
                tracing::warn!(exam_id = exam.id, error = %e, "planning failed; the exam will be planned again");
                if fresh {
                    let _ = planner.inner.store.release_exam(exam.id).await;
                }
            }
            running.lock().unwrap_or_else(|e| e.into_inner()).remove(&exam.id);
        });
    }
}

/// The archive's DICOMweb client (`base_url`, `auth`), built once.
fn web_client(archive: &ArchiveConfig, timeout: Duration) -> Result<priorfetch_dicomweb::DicomWebClient, String> {
    let options = priorfetch_dicomweb::ClientOptions { read_timeout: timeout, ..Default::default() };
    priorfetch_dicomweb::DicomWebClient::for_archive(archive, &options).map_err(|e| e.to_string())
}
