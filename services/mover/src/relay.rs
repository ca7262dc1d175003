//! The C-GET leg of a retrieve: the archive's sub-operations go into the job's relay
//! (`priorfetch_relay`: spool folder, forwarder to the destination by C-STORE), and the
//! attempt's live counts follow both legs: failures and warnings from the archive,
//! completions only once the destination confirmed them.

use crate::progress::Live;
use crate::{Ctx, metrics};
use dicom_object::InMemDicomObject;
use priorfetch_dimse::{Association, DimseError, QueryModel, SubOperations};
use priorfetch_relay::{JobSpool, Relay, RelaySink};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// The job's relay towards the destination; its confirmations are the attempt's
/// completed count.
pub(crate) fn start(ctx: &Ctx, spool: JobSpool, live: &Arc<Mutex<Live>>) -> Result<(Relay, RelaySink), DimseError> {
    let destination = ctx.peers.relay_destination()?;
    let confirmed = live.clone();
    let on_confirmed = Arc::new(move |n: u32| {
        if let Ok(mut l) = confirmed.lock() {
            l.relayed = n;
            l.done_before.completed = n as i32;
        }
    });
    Relay::start(spool, destination, on_confirmed).map_err(|e| DimseError::Io(format!("spool folder: {e}")))
}

/// The result of a relayed C-GET or WADO-RS retrieve.
#[derive(Debug, Default)]
pub struct Relayed {
    pub status: u16,
    /// Distinct instances the destination confirmed.
    pub relayed: u32,
    /// Failed sub-operations at the archive plus C-STOREs the destination refused.
    pub failed: u32,
    pub failed_instances: Vec<String>,
    pub cancelled_by_archive: bool,
    pub bytes: u64,
    /// The SOP Instance UIDs the destination confirmed.
    pub confirmed: std::collections::HashSet<String>,
}

// One attempt's pieces, each owned by a different layer (association, job, progress).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn get_and_relay(
    ctx: &Ctx,
    archive: &str,
    assoc: &mut Association,
    model: QueryModel,
    ids: Vec<InMemDicomObject>,
    spool: JobSpool,
    live: Arc<Mutex<Live>>,
    cancel: watch::Receiver<bool>,
) -> Result<Relayed, DimseError> {
    let (relay, mut sink) = start(ctx, spool, &live)?;
    let mut result = Relayed::default();
    let mut get_error = None;
    for id in &ids {
        let progress = live.clone();
        let outcome = assoc
            .retrieve_get(
                model,
                id,
                &mut sink,
                |c| {
                    // Arrived means confirmed by the destination: the forwarder keeps that count
                    // in `done_before.completed`, so the archive leg's own completed stays out.
                    if let Ok(mut l) = progress.lock() {
                        l.counts = SubOperations { completed: 0, ..*c };
                    }
                },
                Some(cancel.clone()),
            )
            .await;
        match outcome {
            Ok(o) => {
                if result.status == 0 {
                    result.status = o.status;
                }
                result.failed += o.counts.failed as u32;
                result.failed_instances.extend(o.failed_instances);
                if let Ok(mut l) = live.lock() {
                    l.done_before.failed += o.counts.failed as i32;
                    l.done_before.warning += o.counts.warning as i32;
                    l.counts = Default::default();
                }
                if o.cancelled {
                    result.cancelled_by_archive = !*cancel.borrow();
                    break;
                }
            }
            Err(e) => {
                get_error = Some(e);
                break;
            }
        }
    }
    finish(archive, relay, sink, result, get_error).await
}

/// Receiving is over: the forwarder drains what is spooled, then ends; `result` (the
/// archive leg's status and failures) gets the destination's confirmations.
pub(crate) async fn finish(
    archive: &str,
    relay: Relay,
    sink: RelaySink,
    mut result: Relayed,
    get_error: Option<DimseError>,
) -> Result<Relayed, DimseError> {
    let forwarded = relay.finish(sink).await;
    result.bytes = forwarded.bytes_received;
    metrics::SUBOPERATIONS.with_label_values(&[archive, "relayed"]).inc_by(forwarded.confirmed.len() as u64);
    if forwarded.refused > 0 {
        metrics::SUBOPERATIONS.with_label_values(&[archive, "relay_failed"]).inc_by(forwarded.refused as u64);
    }
    if let Some(e) = get_error {
        return Err(e);
    }
    if let Some(e) = forwarded.error {
        return Err(e);
    }
    result.relayed = forwarded.confirmed.len() as u32;
    // Refused instances stay in the spool; naming them lets the retry offer them again
    // without a fetch, unless the archive's own failures went unnamed (then the study is
    // retried whole anyway).
    if result.failed as usize == result.failed_instances.len() {
        result.failed_instances.extend(forwarded.refused_instances);
    }
    result.failed += forwarded.refused;
    if result.status == 0 && forwarded.refused > 0 {
        result.status = 0xB000;
    }
    result.confirmed = forwarded.confirmed;
    Ok(result)
}
