//! The mover's side of a split retrieve (`split/`; WADO-RS: `wado_split.rs`): the
//! archive's extra slots, the job's live counts, the C-GET relay shared by every
//! association, and the fallback to the ordinary one-association retrieve when the
//! archive refuses the parts.
//!
//! Extra associations are counted against the archive's `max_associations` across
//! replicas: each takes a free slot row of the archive under the job's id (so progress,
//! finish, retry and the rescuer extend and free it with the job's own), and is given
//! back as soon as the split ends. No free slot: no split.

use crate::progress::Live;
use crate::relay::{self, Relayed};
use crate::retrieve::{Retrieved, move_destination};
use crate::split::{self, Leg, Split, Totals};
use crate::{Ctx, metrics};
use priorfetch_config::{ArchiveConfig, RetrieveMethod};
use priorfetch_dimse::{AeTitle, Association, DimseError, QueryModel, StoreSink, SubOperations};
use priorfetch_store::{Counts, Job};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tracing::{info, warn};

/// The retrieve split over several associations, or `None` when it should not be (small
/// study, no free slot, an archive that refused before or refuses now): the caller then
/// retrieves the study on one association.
pub(crate) async fn try_split(
    ctx: &Ctx,
    archive: &ArchiveConfig,
    method: RetrieveMethod,
    job: &Job,
    live: &Arc<Mutex<Live>>,
    cancel: &watch::Receiver<bool>,
) -> Option<Result<Retrieved, DimseError>> {
    let m = &ctx.config.mover;
    let most = m.split_associations.min(archive.max_associations);
    let small = job.expected_instances.is_some_and(|n| (n.max(0) as u32) < m.split_threshold);
    if m.split_threshold == 0 || most < 2 || small || split::refuses(&archive.name) {
        return None;
    }
    let lease = ctx.config.queue.lease;
    let extra = match ctx.store.claim_extra_slots(job.id, &ctx.worker, &archive.name, most - 1, lease).await {
        Ok(n) => n as usize,
        Err(e) => {
            warn!(job = job.id, error = %e, "cannot claim extra slots; retrieving on one association");
            return None;
        }
    };
    if extra == 0 {
        return None;
    }
    metrics::ASSOCIATIONS_ACTIVE.with_label_values(&[&archive.name]).add(extra as i64);
    let result = match method {
        RetrieveMethod::Wado => match ctx.peers.web(&archive.name) {
            Ok(client) => {
                let study = &job.study_instance_uid;
                crate::wado_split::wado_split(ctx, &archive.name, &client, job.id, study, live, 1 + extra).await
            }
            Err(e) => Some(Err(e)),
        },
        _ => split_retrieve(ctx, archive, method, job, live, cancel, 1 + extra).await,
    };
    metrics::ASSOCIATIONS_ACTIVE.with_label_values(&[&archive.name]).sub(extra as i64);
    if let Err(e) = ctx.store.release_extra_slots(job.id, &ctx.worker).await {
        // the job's finish frees them anyway
        warn!(job = job.id, error = %e, "cannot give back the extra slots yet");
    }
    result
}

async fn split_retrieve(
    ctx: &Ctx,
    archive: &ArchiveConfig,
    method: RetrieveMethod,
    job: &Job,
    live: &Arc<Mutex<Live>>,
    cancel: &watch::Receiver<bool>,
    associations: usize,
) -> Option<Result<Retrieved, DimseError>> {
    let model = QueryModel::StudyRoot;
    let peer = match ctx.peers.archive(&archive.name) {
        Ok(p) => p,
        Err(e) => return Some(Err(e)),
    };
    let options = match ctx.peers.scu_options(&archive.name) {
        Ok(o) => o,
        Err(e) => return Some(Err(e)),
    };
    let contexts = match method {
        RetrieveMethod::Get => priorfetch_dimse::get::find_and_get_contexts(model),
        _ => priorfetch_dimse::scu::query_contexts(model),
    };
    let mut first = match Association::connect(&peer, &options, &contexts).await {
        Ok(a) => a,
        Err(e) => return Some(Err(e)),
    };
    let instances = match split::study_instances(&mut first, &job.study_instance_uid).await {
        Ok(list) => list,
        Err(e) => {
            first.release().await;
            return Some(Err(e));
        }
    };
    if instances.len() < ctx.config.mover.split_threshold as usize {
        first.release().await;
        return None;
    }
    let parts = split::plan(&instances, associations);
    info!(job = job.id, archive = %archive.name, instances = instances.len(), parts = parts.len(), associations,
          "retrieve split over several associations");
    metrics::SPLIT_RETRIEVES.with_label_values(&[&archive.name, "split"]).inc();
    let split = Split {
        peer,
        options,
        contexts,
        model,
        study: job.study_instance_uid.clone(),
        archive: archive.name.clone(),
        cancel: cancel.clone(),
    };
    let (result, refused) = match method {
        RetrieveMethod::Get => get(ctx, archive, job, live, split, first, parts, associations).await,
        _ => {
            let destination = match AeTitle::parse(move_destination(ctx, archive, job)) {
                Ok(d) => d,
                Err(e) => return Some(Err(DimseError::Encode(format!("move destination of job {}: {e}", job.id)))),
            };
            let on_progress = progress(live, true);
            let out = split::run(split, first, parts, Leg::Move(destination), associations, on_progress).await;
            let result = match out.error {
                Some(e) => Err(e),
                None => Ok(Retrieved {
                    status: out.status,
                    arrived: out.completed + out.warning,
                    failed: out.failed,
                    failed_instances: out.failed_instances,
                    cancelled: false,
                    bytes: 0,
                }),
            };
            (result, out.refused)
        }
    };
    if let Some(why) = refused {
        // What the parts brought is superseded: the whole study comes again, counted anew.
        warn!(job = job.id, archive = %archive.name, reason = %why,
              "archive refused the split retrieve; retrieving the study on one association from now on");
        split::remember_refusal(&archive.name);
        metrics::SPLIT_RETRIEVES.with_label_values(&[&archive.name, "fallback"]).inc();
        if let Ok(mut l) = live.lock() {
            *l = Live::default();
        }
        return None;
    }
    Some(result)
}

/// C-GET over several associations into one relay: a sink per association, the
/// destination's confirmations counted once per instance.
#[allow(clippy::too_many_arguments)]
async fn get(
    ctx: &Ctx,
    archive: &ArchiveConfig,
    job: &Job,
    live: &Arc<Mutex<Live>>,
    split: Split,
    first: Association,
    parts: Vec<split::Part>,
    associations: usize,
) -> (Result<Retrieved, DimseError>, Option<String>) {
    let root = std::path::Path::new(&ctx.config.mover.spool_dir);
    let io = |e: std::io::Error| DimseError::Io(format!("spool folder under {}: {e}", root.display()));
    let spool = match priorfetch_relay::JobSpool::open(root, job.id, ctx.spool.clone()) {
        Ok(s) => s,
        Err(e) => return (Err(io(e)), None),
    };
    let (relay, sink) = match relay::start(ctx, spool, live) {
        Ok(r) => r,
        Err(e) => return (Err(e), None),
    };
    let mut sinks: Vec<Box<dyn StoreSink + Send>> = Vec::new();
    for _ in 0..associations {
        match sink.another() {
            Ok(s) => sinks.push(Box::new(s)),
            Err(e) => {
                let _ = relay.finish(sink).await;
                return (Err(io(e)), None);
            }
        }
    }
    let out = split::run(split, first, parts, Leg::Get(sinks), associations, progress(live, false)).await;
    let result = Relayed {
        status: out.status,
        failed: out.failed,
        failed_instances: out.failed_instances,
        ..Default::default()
    };
    let relayed = relay::finish(&archive.name, relay, sink, result, out.error).await;
    let retrieved = relayed.map(|r| Retrieved {
        status: r.status,
        arrived: r.relayed,
        failed: r.failed,
        failed_instances: r.failed_instances,
        cancelled: false,
        bytes: r.bytes,
    });
    (retrieved, out.refused)
}

/// The split's totals into the job's live counts. A C-GET's completions are the
/// destination's confirmations (the relay keeps them), so only a C-MOVE's count here.
fn progress(live: &Arc<Mutex<Live>>, completions: bool) -> split::OnProgress {
    let live = live.clone();
    Arc::new(move |t: &Totals| {
        let Ok(mut l) = live.lock() else { return };
        let remaining = t.in_flight.remaining.unwrap_or(0) as u32 + t.queued;
        l.counts = SubOperations {
            remaining: Some(remaining.min(u16::MAX as u32) as u16),
            completed: if completions { t.in_flight.completed } else { 0 },
            ..t.in_flight
        };
        let completed = if completions { t.completed as i32 } else { l.done_before.completed };
        l.done_before = Counts { remaining: None, completed, failed: t.failed as i32, warning: t.warning as i32 };
    })
}
