//! WADO-RS of a large study over several connections at once (the DIMSE split is
//! `split/`): one request per series of a multi-series study, per instance of a
//! single-series one (WADO-RS names no UID lists), all into the job's relay. A request
//! that fails is retried alone (up to [`crate::split::PART_TRIES`] tries); what the
//! destination did not confirm in the end is named as failed, so the job's retry asks for
//! exactly that.

use crate::relay::{self, Relayed};
use crate::retrieve::Retrieved;
use crate::wado::{as_dimse, instances};
use crate::{Ctx, metrics, progress::Live};
use priorfetch_dicomweb::{DicomWebClient, DicomWebError, Target};
use priorfetch_dimse::DimseError;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use tracing::{info, warn};

/// `None`: the study is below `mover.split_threshold`; fetch it whole.
pub(crate) async fn wado_split(
    ctx: &Ctx,
    archive: &str,
    client: &DicomWebClient,
    job_id: i64,
    study: &str,
    live: &Arc<Mutex<Live>>,
    connections: usize,
) -> Option<Result<Retrieved, DimseError>> {
    let list = match instances(client, study).await {
        Ok(list) => list,
        Err(e) => return Some(Err(as_dimse(e))),
    };
    if list.len() < ctx.config.mover.split_threshold as usize {
        return None;
    }
    let mut by_series: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (series, sop) in &list {
        by_series.entry(series.clone()).or_default().push(sop.clone());
    }
    let targets: VecDeque<(Target, u32)> = if by_series.len() > 1 {
        by_series.keys().map(|s| (Target::Series { study: study.into(), series: s.clone() }, 0)).collect()
    } else {
        list.iter()
            .map(|(series, sop)| {
                (Target::Instance { study: study.into(), series: series.clone(), instance: sop.clone() }, 0)
            })
            .collect()
    };
    info!(
        job = job_id,
        archive,
        instances = list.len(),
        requests = targets.len(),
        connections,
        "WADO-RS retrieve split over several connections"
    );
    metrics::SPLIT_RETRIEVES.with_label_values(&[archive, "split"]).inc();
    let root = std::path::Path::new(&ctx.config.mover.spool_dir);
    let io = |e: std::io::Error| DimseError::Io(format!("spool folder under {}: {e}", root.display()));
    let spool = match priorfetch_relay::JobSpool::open(root, job_id, ctx.spool.clone()) {
        Ok(s) => s,
        Err(e) => return Some(Err(io(e))),
    };
    let (relay, sink) = match relay::start(ctx, spool, live) {
        Ok(r) => r,
        Err(e) => return Some(Err(e)),
    };
    let queue = Arc::new(Mutex::new(targets));
    let last_error: Arc<Mutex<Option<DicomWebError>>> = Arc::default();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections.max(1) {
        let mut sink = match sink.another() {
            Ok(s) => s,
            Err(e) => {
                tasks.abort_all();
                let _ = relay.finish(sink).await;
                return Some(Err(io(e)));
            }
        };
        let (queue, last_error, client, archive) =
            (queue.clone(), last_error.clone(), client.clone(), archive.to_string());
        tasks.spawn(async move {
            loop {
                let next = queue.lock().ok().and_then(|mut q| q.pop_front());
                let Some((target, tries)) = next else { break };
                let outcome = match client.retrieve(&target, "*", &mut sink).await {
                    Ok(_) => "done",
                    Err(e) if tries + 1 < crate::split::PART_TRIES && (e.is_transient() || is_cut(&e)) => {
                        warn!(archive = %archive, error = %e, "split WADO-RS: request retried alone");
                        if let Ok(mut q) = queue.lock() {
                            q.push_back((target, tries + 1));
                        }
                        "retried"
                    }
                    Err(e) => {
                        warn!(archive = %archive, error = %e, "split WADO-RS: request failed for good");
                        if let Ok(mut l) = last_error.lock() {
                            *l = Some(e);
                        }
                        "failed"
                    }
                };
                metrics::SPLIT_PARTS.with_label_values(&[archive.as_str(), outcome]).inc();
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let forwarded = relay::finish(archive, relay, sink, Relayed::default(), None).await;
    let error = last_error.lock().ok().and_then(|mut l| l.take());
    let result = forwarded.and_then(|r| {
        // every listed instance the destination did not confirm is named as failed
        let missing: Vec<String> = list
            .iter()
            .map(|(_, sop)| sop)
            .filter(|sop| !r.confirmed.contains(*sop) && !r.failed_instances.contains(*sop))
            .cloned()
            .collect();
        match error {
            Some(e) if r.relayed == 0 => Err(as_dimse(e)),
            _ => {
                let failed = r.failed + missing.len() as u32;
                let mut failed_instances = r.failed_instances;
                failed_instances.extend(missing);
                Ok(Retrieved {
                    status: if failed > 0 { 0xB000 } else { 0 },
                    arrived: r.relayed,
                    failed,
                    failed_instances,
                    cancelled: false,
                    bytes: r.bytes,
                })
            }
        }
    });
    Some(result)
}

fn is_cut(e: &DicomWebError) -> bool {
    matches!(e, DicomWebError::Truncated { .. })
}
