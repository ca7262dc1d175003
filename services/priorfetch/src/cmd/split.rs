//! `priorfetch retrieve --associations N`: the study over N associations at once, cut
//! as the mover cuts it (`priorfetch_mover::split`): by series, or IMAGE-level batches of
//! SOP Instance UIDs; a part that fails is retried alone. An archive that refuses the
//! parts gets the study whole on one association (the caller's ordinary path).

use crate::Failure;
use priorfetch_dimse::scu::query_contexts;
use priorfetch_dimse::{
    AeTitle, Association, DimseError, DirSink, Peer, QueryModel, RetrieveOutcome, ScuOptions, StoreSink, SubOperations,
};
use priorfetch_mover::split::{self, Leg, Split, Totals};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// How the split retrieve sends the study.
pub(super) enum Via<'a> {
    Move(&'a AeTitle),
    Get(&'a Path),
}

/// `None`: retrieve the study the ordinary way (the archive refused the parts, or its
/// C-FIND listed no instance: the ordinary path reports that).
pub(super) async fn retrieve(
    peer: &Peer,
    options: &ScuOptions,
    study: &str,
    via: Via<'_>,
    associations: usize,
    bar: &indicatif::ProgressBar,
) -> Result<Option<Result<RetrieveOutcome, DimseError>>, Failure> {
    let model = QueryModel::StudyRoot;
    let contexts = match via {
        Via::Move(_) => query_contexts(model),
        Via::Get(_) => priorfetch_dimse::get::find_and_get_contexts(model),
    };
    let started = Instant::now();
    let mut first = match Association::connect(peer, options, &contexts).await {
        Ok(a) => a,
        Err(e) => return Ok(Some(Err(e))),
    };
    let instances = match split::study_instances(&mut first, study).await {
        Ok(list) => list,
        Err(e) => {
            first.release().await;
            return Ok(Some(Err(e)));
        }
    };
    if instances.is_empty() {
        first.release().await;
        return Ok(None);
    }
    let parts = split::plan(&instances, associations);
    bar.set_length(instances.len() as u64);
    let leg = match via {
        Via::Move(dest) => Leg::Move(dest.clone()),
        Via::Get(out) => {
            let mut sinks: Vec<Box<dyn StoreSink + Send>> = Vec::new();
            for _ in 0..associations {
                let sink = DirSink::new(out).map_err(|e| anyhow::anyhow!("--out {}: {e}", out.display()))?;
                sinks.push(Box::new(sink));
            }
            Leg::Get(sinks)
        }
    };
    let shown = bar.clone();
    let on_progress = Arc::new(move |t: &Totals| {
        let f = &t.in_flight;
        let done = (t.completed + t.failed + t.warning) as u64 + (f.completed + f.failed + f.warning) as u64;
        shown.set_position(done);
        shown.set_message(format!("failed {} warning {}", t.failed + f.failed as u32, t.warning + f.warning as u32));
    });
    // nothing cancels a one-shot retrieve but Ctrl-C, which ends the process
    let (_keep, cancel) = tokio::sync::watch::channel(false);
    let split = Split {
        peer: peer.clone(),
        options: options.clone(),
        contexts,
        model,
        study: study.to_string(),
        archive: peer.to_string(),
        cancel,
    };
    let out = split::run(split, first, parts, leg, associations, on_progress).await;
    if let Some(why) = out.refused {
        eprintln!("warning: the archive refused the split retrieve ({why}); retrieving the study on one association");
        return Ok(None);
    }
    if let Some(e) = out.error {
        return Ok(Some(Err(e)));
    }
    let count = |n: u32| n.min(u16::MAX as u32) as u16;
    Ok(Some(Ok(RetrieveOutcome {
        status: out.status,
        counts: SubOperations {
            remaining: Some(0),
            completed: count(out.completed),
            failed: count(out.failed),
            warning: count(out.warning),
        },
        failed_instances: out.failed_instances,
        cancelled: false,
        elapsed: started.elapsed(),
    })))
}
