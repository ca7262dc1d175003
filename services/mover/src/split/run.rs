//! Runs the parts of a split retrieve over several associations: one queue, one task
//! per association, each part's tries judged by [`super::judge`].

use super::{PART_TRIES, Part, PartEnd, judge};
use crate::metrics;
use priorfetch_dimse::{
    AeTitle, Association, ContextRequest, DimseError, Peer, QueryModel, ScuOptions, StoreSink, SubOperations,
};
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;
use tracing::{info, warn};

/// How the instances travel.
pub enum Leg {
    /// C-MOVE to this AE.
    Move(AeTitle),
    /// C-GET into these sinks, one per association (files named by SOP Instance UID).
    Get(Vec<Box<dyn StoreSink + Send>>),
}

/// Where a split retrieve goes and what it fetches.
#[derive(Clone)]
pub struct Split {
    pub peer: Peer,
    pub options: ScuOptions,
    /// What each further association proposes (the first one's contexts).
    pub contexts: Vec<ContextRequest>,
    pub model: QueryModel,
    pub study: String,
    /// The archive's name (logs, metrics, the refusal memory).
    pub archive: String,
    /// Turns true to stop: C-CANCEL on every association.
    pub cancel: watch::Receiver<bool>,
}

/// Progress of the whole split: counted instances (final tries) and what the requests
/// in flight reported so far.
#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    pub completed: u32,
    pub failed: u32,
    pub warning: u32,
    pub in_flight: SubOperations,
    /// Instances of parts still queued.
    pub queued: u32,
}

pub type OnProgress = Arc<dyn Fn(&Totals) + Send + Sync>;

#[derive(Debug, Default)]
pub struct SplitOutcome {
    /// 0x0000, or 0xB000 when sub-operations failed for good.
    pub status: u16,
    /// Sub-operations of final tries, as the archive counted them.
    pub completed: u32,
    pub warning: u32,
    pub failed: u32,
    /// Instances that failed for good (named by the archive, or every instance of a part
    /// whose tries ran out).
    pub failed_instances: Vec<String>,
    pub parts: usize,
    /// Tries beyond the first, over all parts.
    pub retried: usize,
    /// Associations that carried parts.
    pub associations: usize,
    /// Why the archive refused the parts: the caller retrieves the study whole instead.
    pub refused: Option<String>,
    /// Nothing was retrieved and this is why (no association, a permanent failure).
    pub error: Option<DimseError>,
    /// We cancelled (lost lease, shutdown).
    pub cancelled: bool,
}

struct State {
    queue: VecDeque<Part>,
    in_flight: Vec<SubOperations>,
    out: SplitOutcome,
    /// C-GET: instances that arrived whole (a retried part skips them).
    received: HashSet<String>,
    stop: bool,
    last_error: Option<DimseError>,
    /// Ends the attempt whatever the parts brought.
    fatal: Option<DimseError>,
}

struct Shared {
    split: Split,
    destination: Option<AeTitle>,
    state: Mutex<State>,
    on_progress: OnProgress,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn report(&self) {
        let totals = {
            let s = self.state();
            let mut in_flight = SubOperations::default();
            let mut remaining = 0u32;
            for c in &s.in_flight {
                in_flight.completed = in_flight.completed.saturating_add(c.completed);
                in_flight.failed = in_flight.failed.saturating_add(c.failed);
                in_flight.warning = in_flight.warning.saturating_add(c.warning);
                remaining += c.remaining.unwrap_or(0) as u32;
            }
            in_flight.remaining = Some(remaining.min(u16::MAX as u32) as u16);
            Totals {
                completed: s.out.completed,
                failed: s.out.failed,
                warning: s.out.warning,
                in_flight,
                queued: s.queue.iter().map(|p| p.sops.len() as u32).sum(),
            }
        };
        (self.on_progress)(&totals);
    }
}

/// Records each instance that arrived whole, for retries of its part.
struct Tracking {
    inner: Box<dyn StoreSink + Send>,
    shared: Arc<Shared>,
}

impl StoreSink for Tracking {
    fn ready(&mut self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        self.inner.ready()
    }
    fn begin(&mut self, class: &str, sop: &str, ts: &str) -> std::io::Result<Box<dyn std::io::Write + Send>> {
        self.inner.begin(class, sop, ts)
    }
    fn finish(&mut self, sop: &str, ok: bool) -> std::io::Result<()> {
        self.inner.finish(sop, ok)?;
        if ok {
            self.shared.state().received.insert(sop.to_string());
        }
        Ok(())
    }
}

/// Runs `parts` over `first` and up to `associations - 1` more associations (a C-GET:
/// one per sink). Never fails as a whole: see [`SplitOutcome`].
pub async fn run(
    split: Split,
    first: Association,
    parts: Vec<Part>,
    leg: Leg,
    associations: usize,
    on_progress: OnProgress,
) -> SplitOutcome {
    let (destination, sinks) = match leg {
        Leg::Move(ae) => (Some(ae), Vec::new()),
        Leg::Get(sinks) => (None, sinks),
    };
    let n = match destination {
        Some(_) => associations.max(1),
        None => associations.clamp(1, sinks.len().max(1)),
    };
    let archive = split.archive.clone();
    let state = State {
        out: SplitOutcome { parts: parts.len(), ..Default::default() },
        queue: parts.into(),
        in_flight: vec![SubOperations::default(); n],
        received: HashSet::new(),
        stop: false,
        last_error: None,
        fatal: None,
    };
    let shared = Arc::new(Shared { split, destination, state: Mutex::new(state), on_progress });
    let mut sinks = sinks.into_iter();
    let mut first = Some(first);
    let mut workers = tokio::task::JoinSet::new();
    for index in 0..n {
        let sink = sinks.next().map(|inner| Tracking { inner, shared: shared.clone() });
        workers.spawn(worker(shared.clone(), index, first.take(), sink));
    }
    let mut used = 0;
    while let Some(joined) = workers.join_next().await {
        used += usize::from(joined.unwrap_or(false));
    }
    let mut s = shared.state();
    let mut out = std::mem::take(&mut s.out);
    out.associations = used;
    let left: Vec<Part> = s.queue.drain(..).collect();
    let last_error = s.last_error.take();
    out.error = s.fatal.take();
    drop(s);
    if out.refused.is_none() && out.error.is_none() && !out.cancelled && !left.is_empty() {
        // no association took them: nothing retrieved means the attempt failed
        if out.completed + out.warning + out.failed == 0 && last_error.is_some() {
            out.error = last_error;
        } else {
            for part in left {
                out.failed += part.sops.len() as u32;
                out.failed_instances.extend(part.sops);
            }
        }
    }
    out.status = if out.failed > 0 { 0xB000 } else { 0 };
    info!(archive = %archive, parts = out.parts, retried = out.retried, associations = out.associations,
          completed = out.completed, failed = out.failed, refused = out.refused.is_some(), "split retrieve ended");
    out
}

/// One association's loop: takes parts until the queue is empty or the split stops.
/// True when it carried at least one part.
async fn worker(shared: Arc<Shared>, index: usize, mut assoc: Option<Association>, mut sink: Option<Tracking>) -> bool {
    let split = &shared.split;
    let mut carried = false;
    loop {
        let part = {
            let mut s = shared.state();
            if s.stop {
                break;
            }
            let Some(mut part) = s.queue.pop_front() else { break };
            if sink.is_some() {
                let before = part.sops.len();
                part.sops.retain(|u| !s.received.contains(u));
                // the rest of a series by name: SERIES level would send it all again
                part.whole_series &= part.sops.len() == before;
            }
            part
        };
        if part.sops.is_empty() {
            continue;
        }
        if assoc.is_none() {
            match Association::connect(&split.peer, &split.options, &split.contexts).await {
                Ok(a) => assoc = Some(a),
                Err(e) => {
                    // the archive may be at its own limit: the others go on
                    warn!(archive = %split.archive, association = index, error = %e, "split retrieve: cannot open one more association");
                    let mut s = shared.state();
                    s.queue.push_front(part);
                    s.last_error = Some(e);
                    break;
                }
            }
        }
        let Some(a) = assoc.as_mut() else { break };
        carried = true;
        let id = part.identifier(&split.study);
        let progress = |c: &SubOperations| {
            shared.state().in_flight[index] = *c;
            shared.report();
        };
        let cancel = Some(split.cancel.clone());
        let result = match (&shared.destination, sink.as_mut()) {
            (Some(dest), _) => a.retrieve_move(split.model, &id, dest, progress, cancel).await,
            (None, Some(sink)) => a.retrieve_get(split.model, &id, sink, progress, cancel).await,
            (None, None) => break,
        };
        let end = judge(&part, result, *split.cancel.borrow());
        let mut s = shared.state();
        s.in_flight[index] = SubOperations::default();
        let outcome = match end {
            PartEnd::Done { completed, warning, failed, failed_instances } => {
                s.out.completed += completed;
                s.out.warning += warning;
                s.out.failed += failed;
                s.out.failed_instances.extend(failed_instances);
                "done"
            }
            PartEnd::Again { next, completed, warning, broken, why } => {
                s.out.completed += completed;
                s.out.warning += warning;
                if broken {
                    assoc = None; // lost: the next try opens another
                }
                if next.tries < PART_TRIES {
                    warn!(archive = %split.archive, instances = next.sops.len(), part_try = next.tries + 1, reason = %why,
                          "split retrieve: part retried alone");
                    s.out.retried += 1;
                    s.queue.push_back(next);
                    "retried"
                } else {
                    warn!(archive = %split.archive, instances = next.sops.len(), reason = %why,
                          "split retrieve: part failed for good");
                    s.out.failed += next.sops.len() as u32;
                    s.out.failed_instances.extend(next.sops);
                    "failed"
                }
            }
            PartEnd::Refused(why) => {
                s.stop = true;
                s.out.refused.get_or_insert(why);
                "refused"
            }
            PartEnd::Cancelled => {
                s.stop = true;
                s.out.cancelled = true;
                "cancelled"
            }
            PartEnd::Fatal(e) => {
                s.stop = true;
                s.fatal = Some(e);
                "failed"
            }
        };
        drop(s);
        metrics::SPLIT_PARTS.with_label_values(&[split.archive.as_str(), outcome]).inc();
        shared.report();
    }
    if let Some(a) = assoc {
        a.release().await;
    }
    carried
}
