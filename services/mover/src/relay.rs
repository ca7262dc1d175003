//! C-GET relay: instances arrive over the archive's association into a per-job spool
//! folder (Part-10 files, written under a temporary name until complete), a forwarder
//! sends each to the destination by C-STORE, and a file is deleted only once the
//! destination confirmed it. The spool is bounded for the whole process (`spool.rs`):
//! receiving pauses while it is full. A failed attempt put back for a retry leaves the
//! unconfirmed files; the next attempt here forwards those first, and counts each SOP
//! instance once. What happens to the folder when the job ends is `spool.rs`'s.

use crate::progress::Live;
use crate::spool::JobSpool;
use crate::{Ctx, metrics};
use dicom_object::InMemDicomObject;
use priorfetch_dimse::get::{DirSink, StoreSink};
use priorfetch_dimse::store_scu::{Part10, StoreStatusKind, storage_contexts};
use priorfetch_dimse::{Association, DimseError, Peer, QueryModel, SubOperations};
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tracing::warn;

/// Complete files a crashed or failed attempt left behind (half-written ones are discarded).
fn leftovers(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        match path.extension().and_then(|e| e.to_str()) {
            Some("dcm") => files.push(path),
            Some("part") => {
                let _ = std::fs::remove_file(&path);
            }
            _ => {}
        }
    }
    files.sort();
    files
}

/// The result of a relayed C-GET.
pub struct Relayed {
    pub status: u16,
    /// Distinct instances the destination confirmed.
    pub relayed: u32,
    /// Failed sub-operations at the archive plus C-STOREs the destination refused.
    pub failed: u32,
    pub failed_instances: Vec<String>,
    pub cancelled_by_archive: bool,
    pub bytes: u64,
}

/// Shared by the receiving sink and the forwarder: the job's share of the process's
/// spool budget.
struct Budget {
    spool: JobSpool,
    /// The forwarder stopped (error): receiving must not wait for room any more.
    forwarder_gone: AtomicBool,
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
    let dir = spool.dir.clone();
    let budget = Arc::new(Budget { spool, forwarder_gone: AtomicBool::new(false) });
    let (tx, rx) = mpsc::unbounded_channel();
    for path in leftovers(&dir) {
        budget.spool.add(file_size(&path));
        let _ = tx.send(path);
    }
    let d = &ctx.config.destination;
    let destination =
        Peer::new(&d.ae_title, &d.host, d.port as u16).map_err(|e| DimseError::Encode(format!("destination: {e}")))?;
    let options = crate::peer::scu_options(ctx)?;
    let forwarder = tokio::spawn(forward(destination, options, rx, budget.clone(), live.clone()));

    let mut sink = SpoolSink {
        inner: DirSink::new(&dir).map_err(|e| DimseError::Io(e.to_string()))?,
        tx,
        budget: budget.clone(),
        bytes: Arc::new(AtomicU64::new(0)),
    };
    let bytes = sink.bytes.clone();
    let mut result = Relayed {
        status: 0,
        relayed: 0,
        failed: 0,
        failed_instances: Vec::new(),
        cancelled_by_archive: false,
        bytes: 0,
    };
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
    drop(sink); // closes the channel: the forwarder drains what is spooled, then ends
    let forwarded = match forwarder.await {
        Ok(f) => f,
        Err(e) => return Err(DimseError::Protocol(format!("relay task failed: {e}"))),
    };
    result.bytes = bytes.load(Ordering::Relaxed);
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
    result.failed += forwarded.refused;
    Ok(result)
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

struct Forwarded {
    confirmed: HashSet<String>,
    refused: u32,
    error: Option<DimseError>,
}

/// Sends each spooled file to the destination on one association; deletes it once the
/// destination answered success or warning.
async fn forward(
    destination: Peer,
    options: priorfetch_dimse::ScuOptions,
    mut files: mpsc::UnboundedReceiver<PathBuf>,
    budget: Arc<Budget>,
    live: Arc<Mutex<Live>>,
) -> Forwarded {
    let mut done = Forwarded { confirmed: HashSet::new(), refused: 0, error: None };
    let mut assoc: Option<Association> = None;
    while let Some(path) = files.recv().await {
        let size = file_size(&path);
        let part10 = match Part10::open(&path) {
            Ok(p) => p,
            Err(e) => {
                warn!(file = %path.display(), error = %e, "spooled file unreadable; dropped");
                let _ = std::fs::remove_file(&path);
                budget.spool.release(size);
                done.refused += 1;
                continue;
            }
        };
        if assoc.is_none() {
            let contexts = storage_contexts(
                priorfetch_dimse::get::COMMON_STORAGE_CLASSES
                    .iter()
                    .map(|c| (c.to_string(), priorfetch_dimse::association::EXPLICIT_VR_LE.to_string())),
            );
            match Association::connect(&destination, &options, &contexts).await {
                Ok(a) => assoc = Some(a),
                Err(e) => {
                    done.error = Some(e);
                    break;
                }
            }
        }
        let Some(a) = assoc.as_mut() else { break };
        match a.store_file(&part10, None).await {
            Ok(status) if status.kind != StoreStatusKind::Failure => {
                let _ = std::fs::remove_file(&path);
                budget.spool.release(size);
                done.confirmed.insert(part10.sop_instance_uid.clone());
                if let Ok(mut l) = live.lock() {
                    l.relayed = done.confirmed.len() as u32;
                    l.done_before.completed = done.confirmed.len() as i32;
                }
            }
            Ok(status) => {
                warn!(
                    status = format!("0x{:04X}", status.status),
                    "destination refused an instance; kept in the spool"
                );
                done.refused += 1;
            }
            // The destination takes no such SOP class: that instance cannot go, the rest can.
            Err(e @ DimseError::NoContext { .. }) => {
                warn!(error = %e, "destination refused an instance's SOP class; kept in the spool");
                done.refused += 1;
            }
            Err(e) => {
                done.error = Some(e);
                break;
            }
        }
    }
    budget.forwarder_gone.store(true, Ordering::Relaxed);
    if let Some(a) = assoc {
        a.release().await;
    }
    done
}

/// The C-GET sink: spool files, each handed to the forwarder when complete.
struct SpoolSink {
    inner: DirSink,
    tx: mpsc::UnboundedSender<PathBuf>,
    budget: Arc<Budget>,
    bytes: Arc<AtomicU64>,
}

struct Counting<W> {
    inner: W,
    bytes: Arc<AtomicU64>,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl StoreSink for SpoolSink {
    fn begin(
        &mut self,
        sop_class: &str,
        sop_instance: &str,
        transfer_syntax: &str,
    ) -> std::io::Result<Box<dyn Write + Send>> {
        self.wait_for_room();
        let writer = self.inner.begin(sop_class, sop_instance, transfer_syntax)?;
        Ok(Box::new(Counting { inner: writer, bytes: self.bytes.clone() }))
    }

    fn finish(&mut self, sop_instance: &str, ok: bool) -> std::io::Result<()> {
        let before = self.inner.stored.len();
        self.inner.finish(sop_instance, ok)?;
        if self.inner.stored.len() > before
            && let Some(path) = self.inner.stored.pop()
        {
            self.budget.spool.add(file_size(&path));
            // The forwarder gone means the attempt fails anyway; the file stays spooled.
            let _ = self.tx.send(path);
        }
        Ok(())
    }
}

impl SpoolSink {
    /// Pauses receiving while the spool is over budget. The archive's association then
    /// backs up in TCP, which is the point. Bounded: after 10 minutes it proceeds.
    fn wait_for_room(&self) {
        // The budget is the whole process's: another job's files may fill it too.
        let full = || self.budget.spool.budget().is_full() && !self.budget.forwarder_gone.load(Ordering::Relaxed);
        if !full() {
            return;
        }
        // The sink is called from the association's task; blocking is only allowed on the
        // multi-thread runtime, where block_in_place hands the worker's other tasks away.
        if tokio::runtime::Handle::try_current()
            .map(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
            .unwrap_or(false)
        {
            tokio::task::block_in_place(|| {
                for _ in 0..60_000 {
                    if !full() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            });
        }
    }
}
