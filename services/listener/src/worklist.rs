//! The Modality Worklist source (`intake.source` includes `worklist`): on a cron schedule,
//! C-FIND the MWL SCP for the steps from now to now + `look_ahead`, then make the exams
//! of this worklist (event keys `mwl:<name>:...`) agree with what it returned:
//!
//! - a step without an exam: a new exam (through [`Intake::process_events`]);
//! - a step whose time, modality, body part, procedure or priority changed: the exam is
//!   updated (a planned exam goes back to the planner);
//! - a step of a cancelled exam: the exam is re-opened (a step rescheduled beyond the
//!   window, then back into it);
//! - an exam scheduled in (now, now + look_ahead] whose step is gone: cancelled, but only
//!   after a complete poll (every C-FIND ended normally); a failed or truncated poll
//!   never cancels;
//! - a step that cannot be an exam: a dead letter (once per process) naming the attribute.
//!
//! A re-poll where nothing changed reads the exams and writes nothing.

use crate::intake::new_exam;
use crate::{Intake, Verdict, metrics};
use chrono::{DateTime, FixedOffset, Utc};
use priorfetch_config::{Config, WorklistConfig};
use priorfetch_dimse::worklist::{WorklistAnswer, WorklistFilter, query_worklist};
use priorfetch_dimse::{DimseError, Peer, ScuOptions};
use priorfetch_events::{DecodeError, ExamEvent, PatientIdentifier};
use priorfetch_store::{ExamRecord, ExamStatus, NewExam, Store, StoreError};
use priorfetch_worklist::{MapOptions, key_prefix, map_item};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;

/// Bad steps remembered as dead-lettered; beyond it the memory starts over (a step that
/// stays bad then gets one more dead letter, not one per poll).
const REMEMBERED_BAD_STEPS: usize = 10_000;

/// The worklist settings cannot be used (checked at start, so the listener fails loudly).
#[derive(Debug, thiserror::Error)]
#[error("intake.worklist: {0}")]
pub struct WorklistSetupError(String);

#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("worklist query failed: {0}")]
    Dimse(#[from] DimseError),
    #[error("worklist poll did not finish within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What one poll did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PollReport {
    /// Valid steps returned (each key once).
    pub steps: usize,
    pub new: usize,
    pub unchanged: usize,
    pub updated: usize,
    pub reopened: usize,
    pub cancelled: usize,
    /// Steps that cannot be exams (dead-lettered the first time).
    pub invalid: usize,
    /// New steps after the window's end (the SCP matches whole days): taken by a later poll.
    pub later: usize,
    /// Every C-FIND ended normally: only then are missing steps cancelled.
    pub complete: bool,
}

pub struct WorklistPoller {
    config: WorklistConfig,
    peer: Peer,
    scu: ScuOptions,
    schedule: cron::Schedule,
    map: MapOptions,
    intake: Intake,
    store: Store,
    /// Hashes of the bad steps already dead-lettered by this process.
    dead_lettered: Mutex<HashSet<[u8; 32]>>,
}

/// `intake.hl7.default_utc_offset` (validated at load) as an offset.
fn site_offset(config: &Config) -> Result<FixedOffset, WorklistSetupError> {
    let text = config.intake.hl7.default_utc_offset.trim();
    DateTime::parse_from_rfc3339(&format!("2000-01-01T00:00:00{text}"))
        .map(|t| *t.offset())
        .map_err(|_| WorklistSetupError(format!("intake.hl7.default_utc_offset '{text}' is not like +01:00")))
}

impl WorklistPoller {
    pub fn new(config: &Config, store: Store, intake: Intake) -> Result<WorklistPoller, WorklistSetupError> {
        let w = &config.intake.worklist;
        let peer = w.peer().map_err(WorklistSetupError)?;
        let schedule = cron::Schedule::from_str(&w.schedule)
            .map_err(|e| WorklistSetupError(format!("schedule '{}': {e}", w.schedule)))?;
        let tls = w
            .tls
            .as_ref()
            .map(|t| priorfetch_tls::ClientTls::load(t, &format!("worklist:{}", w.name), &w.host))
            .transpose()
            .map_err(|e| WorklistSetupError(format!("tls: {e}")))?;
        let calling = config.service.calling_ae().map_err(|e| WorklistSetupError(format!("service.ae_title: {e}")))?;
        let mut scu = ScuOptions::new(calling);
        scu.tls = tls;
        scu.dimse_timeout = scu.dimse_timeout.min(w.timeout);
        let map = MapOptions { worklist: w.name.clone(), default_offset: site_offset(config)? };
        Ok(WorklistPoller {
            config: w.clone(),
            peer,
            scu,
            schedule,
            map,
            intake,
            store,
            dead_lettered: Mutex::new(HashSet::new()),
        })
    }

    /// Polls at start, then on the schedule, until `shutdown`. A failed poll is logged and
    /// counted; the next tick tries again.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = self.poll_logged() => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            let Some(next) = self.schedule.upcoming(Utc).next() else {
                tracing::warn!(worklist = %self.config.name, "worklist schedule has no further time; polling stops");
                let _ = shutdown.wait_for(|stop| *stop).await;
                return;
            };
            let wait = (next - Utc::now()).to_std().unwrap_or_default();
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    }

    async fn poll_logged(&self) {
        let name = self.config.name.as_str();
        match self.poll().await {
            Ok(r) => tracing::info!(
                worklist = name,
                steps = r.steps,
                new = r.new,
                updated = r.updated,
                reopened = r.reopened,
                cancelled = r.cancelled,
                invalid = r.invalid,
                complete = r.complete,
                "worklist polled"
            ),
            // Errors carry the SCP's address and status, never an item's content.
            Err(e) => tracing::warn!(worklist = name, error = %e, "worklist poll failed; retrying at the next tick"),
        }
    }

    /// One poll now.
    pub async fn poll(&self) -> Result<PollReport, PollError> {
        self.poll_at(Utc::now()).await
    }

    /// One poll as if it were `now` (tests move the window).
    pub async fn poll_at(&self, now: DateTime<Utc>) -> Result<PollReport, PollError> {
        let name = self.config.name.as_str();
        let end = now + chrono::Duration::from_std(self.config.look_ahead).unwrap_or(chrono::Duration::days(1));
        let filters = self.filters(now, end);
        // `timeout` bounds the whole poll; cut short while writing, the next poll finishes
        // the job (every write is its own transaction and the reconcile is idempotent).
        let deadline = tokio::time::Instant::now() + self.config.timeout;
        let query = tokio::time::timeout_at(deadline, query_worklist(&self.peer, &self.scu, &filters));
        let answer = match query.await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => {
                metrics::WORKLIST_POLLS.with_label_values(&[name, "unreachable"]).inc();
                return Err(e.into());
            }
            Err(_) => {
                metrics::WORKLIST_POLLS.with_label_values(&[name, "unreachable"]).inc();
                return Err(PollError::Timeout(self.config.timeout));
            }
        };
        let report = match tokio::time::timeout_at(deadline, self.reconcile(answer, now, end)).await {
            Ok(Ok(report)) => report,
            Ok(Err(e)) => {
                metrics::WORKLIST_POLLS.with_label_values(&[name, "failed"]).inc();
                return Err(e.into());
            }
            Err(_) => {
                metrics::WORKLIST_POLLS.with_label_values(&[name, "failed"]).inc();
                return Err(PollError::Timeout(self.config.timeout));
            }
        };
        let outcome = if report.complete { "ok" } else { "incomplete" };
        metrics::WORKLIST_POLLS.with_label_values(&[name, outcome]).inc();
        metrics::WORKLIST_STEPS.with_label_values(&[name]).set(report.steps as i64);
        metrics::WORKLIST_LAST_SUCCESS.with_label_values(&[name]).set(Utc::now().timestamp());
        for (change, n) in [
            ("new", report.new),
            ("updated", report.updated),
            ("reopened", report.reopened),
            ("cancelled", report.cancelled),
            ("invalid", report.invalid),
        ] {
            metrics::WORKLIST_CHANGES.with_label_values(&[name, change]).inc_by(n as u64);
        }
        Ok(report)
    }

    /// One C-FIND per station AE × modality (none listed: any), over the local dates
    /// (in the site's offset) the window touches.
    fn filters(&self, now: DateTime<Utc>, end: DateTime<Utc>) -> Vec<WorklistFilter> {
        let day = |t: DateTime<Utc>| t.with_timezone(&self.map.default_offset).format("%Y%m%d").to_string();
        let dates = format!("{}-{}", day(now), day(end));
        let stations: Vec<Option<String>> = if self.config.station_ae.is_empty() {
            vec![None]
        } else {
            self.config.station_ae.iter().cloned().map(Some).collect()
        };
        let modalities: Vec<Option<String>> = if self.config.modalities.is_empty() {
            vec![None]
        } else {
            self.config.modalities.iter().cloned().map(Some).collect()
        };
        stations
            .iter()
            .flat_map(|station| {
                modalities.iter().map(|modality| WorklistFilter {
                    dates: dates.clone(),
                    station_ae: station.clone(),
                    modality: modality.clone(),
                })
            })
            .collect()
    }

    async fn reconcile(
        &self,
        answer: WorklistAnswer,
        now: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<PollReport, StoreError> {
        let mut report = PollReport { complete: !answer.incomplete, ..PollReport::default() };
        let steps = self.sort_steps(&answer, &mut report);
        let keys: Vec<String> = steps.valid.iter().map(|e| e.event_key.clone()).collect();
        let existing: HashMap<String, ExamRecord> =
            self.store.exams_by_keys(&keys).await?.into_iter().map(|e| (e.event_key.clone(), e)).collect();
        let mut fresh = Vec::new();
        for event in steps.valid {
            let row = new_exam(&event);
            match existing.get(&event.event_key) {
                None if row.scheduled_at.is_some_and(|t| t > end) => report.later += 1,
                None => fresh.push(event),
                Some(exam) if exam.status == ExamStatus::Cancelled => {
                    report.reopened += usize::from(self.store.reopen_exam(exam.exam.id, &row).await?);
                }
                Some(exam) if changed(exam, &row) => {
                    self.store.update_exam(exam.exam.id, &row).await?;
                    report.updated += 1;
                }
                Some(_) => report.unchanged += 1,
            }
        }
        self.commit_new(fresh, steps.bad, &mut report).await?;
        // Remembered only once their dead letters are committed.
        self.remember_dead_lettered(steps.bad_digests);
        if report.complete {
            let prefix = key_prefix(&self.config.name);
            for exam in self.store.open_exams_of_source(&prefix, now, end).await? {
                if !steps.seen.contains(&exam.event_key) {
                    self.store.cancel_exam(exam.exam.id).await?;
                    tracing::info!(exam_id = exam.exam.id, "worklist step gone; exam cancelled");
                    report.cancelled += 1;
                }
            }
        }
        Ok(report)
    }

    fn remember_dead_lettered(&self, digests: HashSet<[u8; 32]>) {
        let mut remembered = self.dead_lettered.lock().unwrap_or_else(|p| p.into_inner());
        if remembered.len() + digests.len() > REMEMBERED_BAD_STEPS {
            remembered.clear();
        }
        remembered.extend(digests);
    }

    /// New exams and first-seen bad steps through the intake (verdicts, dead letters).
    async fn commit_new(
        &self,
        fresh: Vec<ExamEvent>,
        bad: Vec<(DecodeError, Vec<u8>)>,
        report: &mut PollReport,
    ) -> Result<(), StoreError> {
        let fresh_count = fresh.len();
        let mut events: Vec<Result<ExamEvent, DecodeError>> = fresh.into_iter().map(Ok).collect();
        let mut payloads: Vec<Vec<u8>> = vec![Vec::new(); events.len()];
        for (error, payload) in bad {
            events.push(Err(error));
            payloads.push(payload);
        }
        if events.is_empty() {
            return Ok(());
        }
        let payloads: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        // The bad steps' verdicts follow the new ones' and were counted when sorted.
        for verdict in self.intake.process_events(events, &payloads).await?.into_iter().take(fresh_count) {
            match verdict {
                Verdict::Accepted(_) => report.new += 1,
                // another listener replica inserted it a moment ago
                Verdict::Duplicate(_) => report.unchanged += 1,
                // the database refused the row: dead-lettered by the intake
                _ => report.invalid += 1,
            }
        }
        Ok(())
    }

    /// The answer's steps: valid events (each key once), the keys of every step seen
    /// (bad ones too: a step that turned bad is not a step that left), and the bad steps
    /// not dead-lettered before, each with its item as DICOM JSON.
    fn sort_steps(&self, answer: &WorklistAnswer, report: &mut PollReport) -> Steps {
        let mut steps = Steps::default();
        let remembered = self.dead_lettered.lock().unwrap_or_else(|p| p.into_inner());
        for item in &answer.items {
            for step in map_item(item, &self.map) {
                let first = step.key.as_ref().is_none_or(|k| steps.seen.insert(k.clone()));
                match step.event {
                    Ok(event) if first => steps.valid.push(event),
                    Ok(_) => {}
                    Err(error) => {
                        report.invalid += 1;
                        let payload = priorfetch_worklist::item_payload(item);
                        let digest: [u8; 32] =
                            Sha256::new().chain_update(&payload).chain_update(error.to_string()).finalize().into();
                        if !remembered.contains(&digest) && steps.bad_digests.insert(digest) {
                            steps.bad.push((error, payload));
                        }
                    }
                }
            }
        }
        report.steps = steps.valid.len();
        steps
    }
}

#[derive(Default)]
struct Steps {
    valid: Vec<ExamEvent>,
    seen: HashSet<String>,
    bad: Vec<(DecodeError, Vec<u8>)>,
    bad_digests: HashSet<[u8; 32]>,
}

/// Whether the step says something the exam does not. A value the step no longer sends
/// is not a change: `update_exam` keeps the stored one, so comparing it would update on
/// every poll.
fn changed(exam: &ExamRecord, row: &NewExam) -> bool {
    let e = &exam.exam;
    let differs = |new: &Option<String>, old: &Option<String>| new.is_some() && new != old;
    (row.scheduled_at.is_some() && row.scheduled_at != e.scheduled_at)
        || differs(&row.modality, &e.modality)
        || differs(&row.body_part, &e.body_part)
        || differs(&row.procedure_code, &e.procedure_code)
        || differs(&row.procedure_text, &e.procedure_text)
        || row.priority != e.priority
        || (!row.identifiers.is_empty()
            && identifiers_after_update(exam, row) != e.identifiers.iter().cloned().collect())
}

/// The identifiers `update_exam` would store: the exam keeps its primary one.
fn identifiers_after_update(exam: &ExamRecord, row: &NewExam) -> HashSet<PatientIdentifier> {
    let primary = PatientIdentifier::new(exam.exam.patient_id.clone(), exam.exam.issuer.clone());
    PatientIdentifier::all(primary, &row.identifiers).into_iter().collect()
}
