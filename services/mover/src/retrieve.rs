//! One attempt of one job: associate, C-MOVE (or C-GET relayed to the destination),
//! persist progress at a bounded rate while extending the lease, verify at the
//! destination, then judge and record the outcome.
//!
//! Each attempt is a `retrieve` span in the exam's trace (the job's stored
//! `traceparent`): ids, archive, method, attempt, the final sub-operation counts and the
//! outcome; a relayed retrieve has a `relay` child (`priorfetch_relay`).

use crate::outage;
use crate::outcome::{self, Attempt, Verdict};
use crate::progress::{Live, Lost, persist_progress, run_until_done};
use crate::record::{RunEnd, finish, retry, roll_up, until_written};
use crate::{Ctx, metrics, relay};
use dicom_core::VR;
use dicom_dictionary_std::tags;
use priorfetch_config::{ArchiveConfig, RetrieveMethod};
use priorfetch_dimse::scu::identifier;
use priorfetch_dimse::{AeTitle, Association, DimseError, QueryModel, SubOperations};
use priorfetch_events::short_hash;

use priorfetch_store::{Counts, Finish, Job, JobState};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::watch;
use tracing::{Instrument, info, warn};

use crate::split::UIDS_PER_REQUEST;

/// The result of the network part of an attempt.
pub(crate) struct Retrieved {
    pub status: u16,
    pub arrived: u32,
    pub failed: u32,
    pub failed_instances: Vec<String>,
    pub cancelled: bool,
    pub bytes: u64,
}

/// Runs one attempt, then settles the job's spool folder: kept only when the job went
/// back to the queue for a retry (the next attempt here forwards what it holds).
pub(crate) async fn run_job(ctx: Arc<Ctx>, job: Job, stop: watch::Receiver<bool>) -> RunEnd {
    let id = job.id;
    ctx.running_ids().insert(id);
    let span = attempt_span(&job);
    let end = run_attempt(&ctx, job, stop).instrument(span.clone()).await;
    span.record("outcome", outcome_word(&end));
    // an attempt that did not bring the study (retried or not) is an error of the attempt
    if matches!(end, RunEnd::Finished(JobState::Failed | JobState::Partial) | RunEnd::Retrying) {
        span.record("otel.status_code", "ERROR");
    }
    ctx.running_ids().remove(&id);
    if end != RunEnd::Retrying {
        // Nothing is left to debug in a completed job's folder.
        let retention = match end {
            RunEnd::Finished(JobState::Completed) => std::time::Duration::ZERO,
            _ => ctx.config.mover.spool_retention,
        };
        priorfetch_relay::spool::end_job(std::path::Path::new(&ctx.config.mover.spool_dir), id, retention);
    }
    end
}

/// The span of one attempt, parented on the job's trace; the counts and outcome are
/// recorded when the attempt ends. No PHI: the study is not named (the job id is).
fn attempt_span(job: &Job) -> tracing::Span {
    let span = tracing::info_span!(
        "retrieve",
        job_id = job.id,
        exam_id = job.exam_id,
        archive = %job.archive,
        method = job.method.as_str(),
        attempt = job.attempt,
        completed = tracing::field::Empty,
        failed = tracing::field::Empty,
        warning = tracing::field::Empty,
        remaining = tracing::field::Empty,
        status = tracing::field::Empty,
        outcome = tracing::field::Empty,
        "otel.status_code" = tracing::field::Empty,
    );
    priorfetch_telemetry::traces::follow(&span, job.trace_parent.as_deref());
    span
}

/// The attempt's counts and final DIMSE status on its span (the current one).
fn record_counts(counts: &Counts, status: Option<i32>) {
    let span = tracing::Span::current();
    span.record("completed", counts.completed);
    span.record("failed", counts.failed);
    span.record("warning", counts.warning);
    if let Some(remaining) = counts.remaining {
        span.record("remaining", remaining);
    }
    if let Some(status) = status {
        span.record("status", format!("0x{status:04X}").as_str());
    }
}

fn outcome_word(end: &RunEnd) -> &'static str {
    match end {
        RunEnd::Finished(state) => state.as_str(),
        RunEnd::Retrying => "retrying",
        RunEnd::HandedBack => "handed_back",
        RunEnd::NotOwned => "not_owned",
    }
}

async fn run_attempt(ctx: &Arc<Ctx>, job: Job, stop: watch::Receiver<bool>) -> RunEnd {
    let Some(archive) = ctx.config.archives.iter().find(|a| a.name == job.archive).cloned() else {
        let error = format!(
            "archive '{}' is not configured in this process: add it to [[archives]] or retry the job elsewhere",
            job.archive
        );
        return finish(ctx, &job, JobState::Failed, Counts::default(), None, Some(error), "failed").await;
    };
    // The job says how (the planner recorded the archive's method when it planned).
    let method = job.method;
    let study = short_hash(&job.study_instance_uid);
    let pending = job.pending();
    // Instances earlier attempts already delivered count towards this attempt's total.
    let base = job.delivered_before();
    let expected_now = job.expected_now();
    info!(job = job.id, archive = %archive.name, method = method.as_str(), study = %study, attempt = job.attempt,
          scope = if pending.is_some() { "failed instances" } else { "study" }, "retrieve started");

    let live = Arc::new(Mutex::new(Live::default()));
    let (cancel_tx, cancel_rx) = watch::channel(false);
    let started = Instant::now();
    let labels = [archive.name.as_str(), method.as_str()];
    metrics::ASSOCIATIONS_ACTIVE.with_label_values(&[&archive.name]).inc();
    let retrieve = retrieve(ctx, &archive, method, &job, pending, live.clone(), cancel_rx);
    // Its own task: the heartbeat goes on at its pace whatever the retrieve awaits (a
    // full spool pauses receiving inside the C-GET sink).
    let persist = tokio::spawn(persist_progress(ctx.clone(), job.id, base, live.clone(), cancel_tx, stop));
    let (result, lost) = run_until_done(retrieve, persist).await;
    metrics::ASSOCIATIONS_ACTIVE.with_label_values(&[&archive.name]).dec();
    metrics::RETRIEVE_DURATION.with_label_values(&labels).observe(started.elapsed().as_secs_f64());

    match lost {
        Some(Lost::Shutdown) => {
            let _ = until_written("hand back", job.id, || ctx.store.release_job(job.id, &ctx.worker)).await;
            metrics::JOB_ATTEMPTS.with_label_values(&[labels[0], labels[1], "handed_back"]).inc();
            info!(job = job.id, archive = %archive.name, "retrieve handed back at shutdown");
            return RunEnd::HandedBack;
        }
        Some(Lost::NotOwned) => {
            metrics::JOB_ATTEMPTS.with_label_values(&[labels[0], labels[1], "cancelled"]).inc();
            info!(job = job.id, archive = %archive.name, "retrieve stopped: job cancelled or lease lost");
            // A cancelled job's worker still frees its slot and rolls the exam up.
            let cancelled =
                Finish { state: JobState::Cancelled, counts: Counts::default(), last_status: None, error: None };
            let _ = until_written("cancel", job.id, || ctx.store.finish_job(job.id, &ctx.worker, &cancelled)).await;
            roll_up(ctx, job.exam_id).await;
            return RunEnd::NotOwned;
        }
        None => {}
    }

    let counts_so_far = live.lock().map(|l| l.total(base)).unwrap_or_default();
    let verdict = match result {
        Err(error) => {
            if matches!(error, DimseError::Rejected { .. }) {
                priorfetch_telemetry::archive_health::record(&archive.name, false);
            }
            if outage::is_loss(&error) {
                outage::lost(ctx, &archive.name, &error);
            }
            let status = match &error {
                DimseError::Status { status, .. } => Some(*status as i32),
                _ => None,
            };
            let wait = match &error {
                DimseError::Other { wait, .. } => *wait,
                _ => None,
            };
            (outcome::judge_error(&error), status, counts_so_far, wait)
        }
        Ok(r) => {
            priorfetch_telemetry::archive_health::record(&archive.name, true);
            metrics::RETRIEVE_BYTES.with_label_values(&[&archive.name]).inc_by(r.bytes);
            let verified = if ctx.config.destination.check_existing && r.failed == 0 && r.arrived > 0 {
                verify(ctx, &job).await
            } else {
                None
            };
            if let Some((found, _)) = verified {
                let _ = until_written("received", job.id, || ctx.store.set_received(job.id, &ctx.worker, found as i32))
                    .await;
            }
            let attempt = Attempt {
                expected: expected_now,
                arrived: r.arrived,
                failed: r.failed,
                status: r.status,
                failed_instances: r.failed_instances,
                cancelled_by_archive: r.cancelled,
                verified,
                method: method.as_str(),
                destination: move_destination(ctx, &archive, &job).to_string(),
            };
            let counts = Counts {
                remaining: Some(0),
                completed: base + r.arrived as i32,
                failed: r.failed as i32,
                warning: counts_so_far.warning,
            };
            (outcome::judge(&attempt), Some(r.status as i32), counts, None)
        }
    };
    let (verdict, status, counts, wait) = verdict;
    record_counts(&counts, status);
    match verdict {
        Verdict::Completed => {
            info!(job = job.id, archive = %archive.name, study = %study, completed = counts.completed,
                  seconds = started.elapsed().as_secs_f64(), "retrieve completed");
            let _ =
                until_written("pending", job.id, || ctx.store.set_pending_instances(job.id, &ctx.worker, None)).await;
            finish(ctx, &job, JobState::Completed, counts, status, None, "completed").await
        }
        Verdict::Permanent { error } => {
            warn!(job = job.id, archive = %archive.name, study = %study, %error, "retrieve failed for good");
            finish(ctx, &job, JobState::Failed, counts, status, Some(error), "failed").await
        }
        Verdict::Partial { error, pending: next } => {
            warn!(job = job.id, archive = %archive.name, study = %study, %error, "retrieve partial");
            // Named failures narrow the next attempt; otherwise it refetches what is left
            // of the current scope.
            let scope = next.as_deref().or(pending);
            let _ =
                until_written("pending", job.id, || ctx.store.set_pending_instances(job.id, &ctx.worker, scope)).await;
            retry(ctx, &job, &error, status, counts, "partial", None).await
        }
        Verdict::Retry { error } => {
            warn!(job = job.id, archive = %archive.name, study = %study, %error, "retrieve attempt failed");
            retry(ctx, &job, &error, status, counts, "retry", wait).await
        }
    }
}

/// The AE title a C-MOVE names: the job's destination, under the name the archive knows
/// it by (`move_destination`) when it is our configured destination.
pub(crate) fn move_destination<'a>(ctx: &'a Ctx, archive: &'a ArchiveConfig, job: &'a Job) -> &'a str {
    match &archive.move_destination {
        Some(alias) if job.destination == ctx.config.destination.ae_title => alias,
        _ => &job.destination,
    }
}

/// The network part: one association, one request for the study or one per batch of
/// named instances; a large study over several associations (`parallel.rs`).
async fn retrieve(
    ctx: &Ctx,
    archive: &ArchiveConfig,
    method: RetrieveMethod,
    job: &Job,
    pending: Option<&[String]>,
    live: Arc<Mutex<Live>>,
    cancel: watch::Receiver<bool>,
) -> Result<Retrieved, DimseError> {
    let model = QueryModel::StudyRoot;
    // DIMSE archives: our calling AE and the archive's address (not needed for WADO-RS)
    let dimse = || Ok::<_, DimseError>((ctx.peers.archive(&archive.name)?, ctx.peers.scu_options(&archive.name)?));
    if pending.is_none()
        && let Some(result) = crate::parallel::try_split(ctx, archive, method, job, &live, &cancel).await
    {
        return result;
    }
    match method {
        RetrieveMethod::Wado => {
            let client = ctx.peers.web(&archive.name)?;
            let root = std::path::Path::new(&ctx.config.mover.spool_dir);
            let spool = priorfetch_relay::JobSpool::open(root, job.id, ctx.spool.clone())
                .map_err(|e| DimseError::Io(format!("spool folder under {}: {e}", root.display())))?;
            let pending = still_to_fetch(pending, &spool);
            let r = crate::wado::wado_and_relay(
                ctx,
                &archive.name,
                &client,
                &job.study_instance_uid,
                pending.as_deref(),
                spool,
                live,
            )
            .await?;
            Ok(Retrieved {
                status: r.status,
                arrived: r.relayed,
                failed: r.failed,
                failed_instances: r.failed_instances,
                cancelled: false,
                bytes: r.bytes,
            })
        }
        RetrieveMethod::Get => {
            let (peer, options) = dimse()?;
            let root = std::path::Path::new(&ctx.config.mover.spool_dir);
            let spool = priorfetch_relay::JobSpool::open(root, job.id, ctx.spool.clone())
                .map_err(|e| DimseError::Io(format!("spool folder under {}: {e}", root.display())))?;
            let contexts = priorfetch_dimse::get::find_and_get_contexts(model);
            let mut assoc = Association::connect(&peer, &options, &contexts).await?;
            let ids = match still_to_fetch(pending, &spool) {
                // every named instance waits in the spool: the relay offers them again
                Some(left) if left.is_empty() => Vec::new(),
                left => identifiers(&mut assoc, &job.study_instance_uid, left.as_deref()).await?,
            };
            let result = relay::get_and_relay(ctx, &archive.name, &mut assoc, model, ids, spool, live, cancel).await;
            assoc.release().await;
            result.map(|r| Retrieved {
                status: r.status,
                arrived: r.relayed,
                failed: r.failed,
                failed_instances: r.failed_instances,
                cancelled: r.cancelled_by_archive,
                bytes: r.bytes,
            })
        }
        RetrieveMethod::Move => {
            let (peer, options) = dimse()?;
            let destination = AeTitle::parse(move_destination(ctx, archive, job))
                .map_err(|e| DimseError::Encode(format!("move destination of job {}: {e}", job.id)))?;
            let contexts = priorfetch_dimse::scu::query_contexts(model);
            let mut assoc = Association::connect(&peer, &options, &contexts).await?;
            let ids = identifiers(&mut assoc, &job.study_instance_uid, pending).await?;
            let result = move_all(&mut assoc, model, &ids, &destination, &live, cancel).await;
            assoc.release().await;
            result
        }
    }
}

async fn move_all(
    assoc: &mut Association,
    model: QueryModel,
    ids: &[dicom_object::InMemDicomObject],
    destination: &AeTitle,
    live: &Arc<Mutex<Live>>,
    cancel: watch::Receiver<bool>,
) -> Result<Retrieved, DimseError> {
    let mut total =
        Retrieved { status: 0, arrived: 0, failed: 0, failed_instances: Vec::new(), cancelled: false, bytes: 0 };
    for id in ids {
        let progress = live.clone();
        let outcome = assoc
            .retrieve_move(
                model,
                id,
                destination,
                |c| {
                    if let Ok(mut l) = progress.lock() {
                        l.counts = *c;
                    }
                },
                Some(cancel.clone()),
            )
            .await?;
        let c = outcome.counts;
        total.status = if total.status == 0 { outcome.status } else { total.status };
        total.arrived += (c.completed + c.warning) as u32;
        total.failed += c.failed as u32;
        total.failed_instances.extend(outcome.failed_instances);
        if let Ok(mut l) = live.lock() {
            l.done_before.completed += c.completed as i32;
            l.done_before.failed += c.failed as i32;
            l.done_before.warning += c.warning as i32;
            l.counts = SubOperations::default();
        }
        if outcome.cancelled {
            total.cancelled = !*cancel.borrow();
            break;
        }
    }
    Ok(total)
}

/// The whole study, or the named instances.
async fn identifiers(
    assoc: &mut Association,
    study: &str,
    pending: Option<&[String]>,
) -> Result<Vec<dicom_object::InMemDicomObject>, DimseError> {
    match pending {
        None => Ok(vec![identifier("STUDY", &[(tags::STUDY_INSTANCE_UID, VR::UI, study)])]),
        Some(uids) => instance_identifiers(assoc, study, uids).await,
    }
}

/// IMAGE-level identifiers for named instances: Study Root needs each instance's series,
/// which one C-FIND of the study's instances tells.
pub(crate) async fn instance_identifiers(
    assoc: &mut Association,
    study: &str,
    uids: &[String],
) -> Result<Vec<dicom_object::InMemDicomObject>, DimseError> {
    let wanted: std::collections::HashSet<&str> = uids.iter().map(String::as_str).collect();
    let mut by_series: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (series, sop) in crate::split::study_instances(assoc, study).await? {
        if wanted.contains(sop.as_str()) {
            by_series.entry(series).or_default().push(sop);
        }
    }
    let mut ids = Vec::new();
    for (series, sops) in &by_series {
        for batch in sops.chunks(UIDS_PER_REQUEST) {
            let list = batch.join("\\");
            ids.push(identifier(
                "IMAGE",
                &[
                    (tags::STUDY_INSTANCE_UID, VR::UI, study),
                    (tags::SERIES_INSTANCE_UID, VR::UI, series.as_str()),
                    (tags::SOP_INSTANCE_UID, VR::UI, list.as_str()),
                ],
            ));
        }
    }
    if ids.is_empty() {
        // The archive no longer lists them: fall back to the whole study.
        ids.push(identifier("STUDY", &[(tags::STUDY_INSTANCE_UID, VR::UI, study)]));
    }
    Ok(ids)
}

/// With `destination.check_existing`: how many instances of the study the destination
/// holds, next to how many the study has. `None` when the destination cannot say.
async fn verify(ctx: &Ctx, job: &Job) -> Option<(u32, u32)> {
    let expected = job.expected_instances? as u32;
    let counted = match ctx.peers.relay_destination().ok()? {
        priorfetch_relay::Destination::Web(client) => {
            crate::verify::count_by_qido(&client, &job.study_instance_uid).await
        }
        priorfetch_relay::Destination::Dimse { peer, options } => {
            crate::verify::count_instances(&peer, &options, &job.study_instance_uid).await
        }
    };
    match counted {
        Ok(found) => Some((found, expected)),
        Err(e) => {
            warn!(job = job.id, error = %e, hint = %e.hint(), "cannot verify at the destination");
            None
        }
    }
}

/// The named instances an earlier attempt did not leave complete in the spool.
fn still_to_fetch(pending: Option<&[String]>, spool: &priorfetch_relay::JobSpool) -> Option<Vec<String>> {
    // a whole-study attempt (no names) needs no look at the spool
    let uids = pending?;
    let spooled = spool.spooled_instances();
    Some(uids.iter().filter(|u| !spooled.contains(*u)).cloned().collect())
}
