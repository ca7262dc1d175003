//! The relay of one job: instances arrive (a C-GET's sub-operations, later WADO-RS parts)
//! into the job's spool folder as Part-10 files, written under a temporary name until
//! complete; a forwarder task sends each to the destination by C-STORE on one association,
//! and deletes a file only once the destination confirmed it. Receiving awaits room when
//! the process's spool is full. Files an earlier attempt left are forwarded first, and
//! each SOP instance is counted once.
//!
//! Each relay is a `relay` span (a child of the span that starts it, e.g. the mover's
//! `retrieve`), from start to drained, with the confirmed/refused counts and bytes.

use crate::spool::JobSpool;
use priorfetch_dimse::association::EXPLICIT_VR_LE;
use priorfetch_dimse::get::{COMMON_STORAGE_CLASSES, DirSink, StoreSink};
use priorfetch_dimse::store_scu::{Part10, StoreStatusKind, storage_contexts};
use priorfetch_dimse::{Association, DimseError, Peer, ScuOptions};
use std::collections::HashSet;
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::Instrument;
use tracing::warn;

/// The longest a receiver pauses for room before it takes the instance anyway: a stuck
/// destination must not hold the archive's association forever.
const LONGEST_PAUSE: Duration = Duration::from_secs(600);

/// Where relayed instances go.
#[derive(Clone, Debug)]
pub enum Destination {
    /// C-STORE on one association.
    Dimse { peer: Peer, options: ScuOptions },
    /// STOW-RS, in batches.
    Web(priorfetch_dicomweb::DicomWebClient),
}

impl Destination {
    /// How instances are sent on (a span attribute).
    fn kind(&self) -> &'static str {
        match self {
            Destination::Dimse { .. } => "c-store",
            Destination::Web(_) => "stow-rs",
        }
    }
}

/// Files per STOW-RS request, and their bytes at most: a batch is read into memory.
const STOW_BATCH: usize = 20;
const STOW_BATCH_BYTES: u64 = 32 << 20;

/// Called with the number of distinct instances the destination confirmed so far.
pub type OnConfirmed = Arc<dyn Fn(u32) + Send + Sync>;

/// What the forwarder did.
#[derive(Debug, Default)]
pub struct Forwarded {
    /// SOP Instance UIDs the destination confirmed (success or warning).
    pub confirmed: HashSet<String>,
    /// Instances the destination refused (kept in the spool) or files that were unreadable.
    pub refused: u32,
    /// The SOP Instance UIDs of the refused instances that stay in the spool (a retry
    /// offers them again without fetching them).
    pub refused_instances: Vec<String>,
    /// Why forwarding stopped early (association failed); None when it drained the spool.
    pub error: Option<DimseError>,
    /// Bytes received into the spool during this attempt.
    pub bytes_received: u64,
}

/// Shared by the receiving sink and the forwarder.
struct Shared {
    spool: JobSpool,
    /// The forwarder stopped (error): receiving must not wait for room any more.
    forwarder_gone: AtomicBool,
    received: AtomicU64,
}

/// A running relay: hand its [`RelaySink`] to the receiving side, then [`Relay::finish`].
pub struct Relay {
    shared: Arc<Shared>,
    forwarder: JoinHandle<Forwarded>,
    /// The relay's span: the forwarder runs in it; closed by [`Relay::finish`].
    span: tracing::Span,
}

impl Relay {
    /// Starts the forwarder towards `destination` and queues the files an earlier attempt
    /// left in the job's folder.
    pub fn start(
        spool: JobSpool,
        destination: Destination,
        on_confirmed: OnConfirmed,
    ) -> std::io::Result<(Relay, RelaySink)> {
        let dir = spool.dir.clone();
        let shared = Arc::new(Shared { spool, forwarder_gone: AtomicBool::new(false), received: AtomicU64::new(0) });
        let (tx, rx) = mpsc::unbounded_channel();
        for path in leftovers(&dir) {
            shared.spool.add(file_size(&path));
            let _ = tx.send(path);
        }
        let sink = RelaySink {
            inner: DirSink::new(&dir)?,
            web: priorfetch_dicomweb::DirSink::new(&dir)?,
            tx,
            shared: shared.clone(),
        };
        let span = tracing::info_span!(
            "relay",
            destination = destination.kind(),
            confirmed = tracing::field::Empty,
            refused = tracing::field::Empty,
            bytes = tracing::field::Empty,
            "otel.status_code" = tracing::field::Empty,
        );
        let forwarder = match destination {
            Destination::Dimse { peer, options } => {
                tokio::spawn(forward(peer, options, rx, shared.clone(), on_confirmed).instrument(span.clone()))
            }
            Destination::Web(client) => {
                tokio::spawn(forward_stow(client, rx, shared.clone(), on_confirmed).instrument(span.clone()))
            }
        };
        Ok((Relay { shared, forwarder, span }, sink))
    }

    /// Receiving is over (the sink is consumed): the forwarder drains what is spooled.
    pub async fn finish(self, sink: RelaySink) -> Forwarded {
        drop(sink);
        let mut done = match self.forwarder.await {
            Ok(done) => done,
            Err(e) => {
                Forwarded { error: Some(DimseError::Protocol(format!("relay task failed: {e}"))), ..Default::default() }
            }
        };
        done.bytes_received = self.shared.received.load(Ordering::Relaxed);
        self.span.record("confirmed", done.confirmed.len());
        self.span.record("refused", done.refused);
        self.span.record("bytes", done.bytes_received);
        if done.error.is_some() {
            self.span.record("otel.status_code", "ERROR");
        }
        done
    }
}

/// The receiving side: a [`StoreSink`] writing into the spool.
pub struct RelaySink {
    inner: DirSink,
    /// WADO-RS parts: whole Part-10 files, named by their SOP Instance UID once complete.
    web: priorfetch_dicomweb::DirSink,
    tx: mpsc::UnboundedSender<PathBuf>,
    shared: Arc<Shared>,
}

impl RelaySink {
    /// Another receiving side of the same relay, for one more association of a retrieve
    /// split over several: files are named by SOP Instance UID, so sinks never collide.
    /// Drop every one before [`Relay::finish`] (the forwarder drains until all are gone).
    pub fn another(&self) -> std::io::Result<RelaySink> {
        let dir = self.shared.spool.dir.clone();
        Ok(RelaySink {
            inner: DirSink::new(&dir)?,
            web: priorfetch_dicomweb::DirSink::new(&dir)?,
            tx: self.tx.clone(),
            shared: self.shared.clone(),
        })
    }

    /// Waits while the process's spool is full (another job's files may fill it too).
    async fn wait_for_room(&self) {
        let shared = &self.shared;
        let budget = shared.spool.budget();
        if !budget.is_full() {
            return;
        }
        let gone = || shared.forwarder_gone.load(Ordering::Relaxed);
        if !budget.wait_for_room(gone, LONGEST_PAUSE).await {
            warn!(spooled = budget.spooled(), "spool still full after {LONGEST_PAUSE:?}; receiving anyway");
        }
    }

    /// A complete file enters the spool and the forwarder's queue.
    fn hand_on(&self, path: PathBuf) {
        self.shared.spool.add(file_size(&path));
        // The forwarder gone means the attempt fails anyway; the file stays spooled.
        let _ = self.tx.send(path);
    }
}

impl priorfetch_dicomweb::Part10Sink for RelaySink {
    fn ready(&mut self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(self.wait_for_room())
    }

    fn begin(&mut self) -> std::io::Result<Box<dyn Write + Send>> {
        let writer = self.web.begin()?;
        Ok(Box::new(Counting { inner: writer, shared: self.shared.clone() }))
    }

    fn finish(&mut self, ok: bool) -> std::io::Result<()> {
        let before = self.web.stored.len();
        self.web.finish(ok)?;
        if self.web.stored.len() > before
            && let Some(path) = self.web.stored.pop()
        {
            self.hand_on(path);
        }
        Ok(())
    }
}

impl StoreSink for RelaySink {
    fn ready(&mut self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(self.wait_for_room())
    }

    fn begin(
        &mut self,
        sop_class: &str,
        sop_instance: &str,
        transfer_syntax: &str,
    ) -> std::io::Result<Box<dyn Write + Send>> {
        let writer = self.inner.begin(sop_class, sop_instance, transfer_syntax)?;
        Ok(Box::new(Counting { inner: writer, shared: self.shared.clone() }))
    }

    fn finish(&mut self, sop_instance: &str, ok: bool) -> std::io::Result<()> {
        let before = self.inner.stored.len();
        self.inner.finish(sop_instance, ok)?;
        if self.inner.stored.len() > before
            && let Some(path) = self.inner.stored.pop()
        {
            self.hand_on(path);
        }
        Ok(())
    }
}

struct Counting<W> {
    inner: W,
    shared: Arc<Shared>,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.shared.received.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Sends each spooled file to the destination on one association; deletes it once the
/// destination answered success or warning.
async fn forward(
    destination: Peer,
    options: ScuOptions,
    mut files: mpsc::UnboundedReceiver<PathBuf>,
    shared: Arc<Shared>,
    on_confirmed: OnConfirmed,
) -> Forwarded {
    let mut done = Forwarded::default();
    let mut assoc: Option<Association> = None;
    while let Some(path) = files.recv().await {
        let size = file_size(&path);
        let part10 = match Part10::open(&path) {
            Ok(p) => p,
            Err(e) => {
                warn!(file = %path.display(), error = %e, "spooled file unreadable; dropped");
                let _ = std::fs::remove_file(&path);
                shared.spool.release(size);
                done.refused += 1;
                continue;
            }
        };
        if assoc.is_none() {
            let contexts =
                storage_contexts(COMMON_STORAGE_CLASSES.iter().map(|c| (c.to_string(), EXPLICIT_VR_LE.into())));
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
                shared.spool.release(size);
                done.confirmed.insert(part10.sop_instance_uid.clone());
                on_confirmed(done.confirmed.len() as u32);
            }
            Ok(status) => {
                warn!(
                    status = format!("0x{:04X}", status.status),
                    "destination refused an instance; kept in the spool"
                );
                done.refused += 1;
                done.refused_instances.push(part10.sop_instance_uid.clone());
            }
            // The destination takes no such SOP class: that instance cannot go, the rest can.
            Err(e @ DimseError::NoContext { .. }) => {
                warn!(error = %e, "destination refused an instance's SOP class; kept in the spool");
                done.refused += 1;
                done.refused_instances.push(part10.sop_instance_uid.clone());
            }
            Err(e) => {
                done.error = Some(e);
                break;
            }
        }
    }
    shared.forwarder_gone.store(true, Ordering::Relaxed);
    shared.spool.budget().wake();
    if let Some(a) = assoc {
        a.release().await;
    }
    done
}

/// Sends the spooled files by STOW-RS in batches (what is queued now, up to a batch);
/// deletes each once the destination stored it.
async fn forward_stow(
    client: priorfetch_dicomweb::DicomWebClient,
    mut files: mpsc::UnboundedReceiver<PathBuf>,
    shared: Arc<Shared>,
    on_confirmed: OnConfirmed,
) -> Forwarded {
    let mut done = Forwarded::default();
    while let Some(first) = files.recv().await {
        let mut batch = vec![first];
        let mut bytes = file_size(&batch[0]);
        while batch.len() < STOW_BATCH && bytes < STOW_BATCH_BYTES {
            match files.try_recv() {
                Ok(path) => {
                    bytes += file_size(&path);
                    batch.push(path);
                }
                Err(_) => break,
            }
        }
        let mut outgoing = Vec::with_capacity(batch.len());
        for path in batch {
            match priorfetch_dicomweb::sop_instance_uid(&path) {
                Ok(uid) => outgoing.push(priorfetch_dicomweb::Outgoing { path, sop_instance_uid: uid }),
                Err(e) => {
                    warn!(file = %path.display(), error = %e, "spooled file unreadable; dropped");
                    shared.spool.release(file_size(&path));
                    let _ = std::fs::remove_file(&path);
                    done.refused += 1;
                }
            }
        }
        match client.store(&outgoing).await {
            Ok(answer) => {
                for f in &outgoing {
                    if answer.stored.contains(&f.sop_instance_uid) {
                        shared.spool.release(file_size(&f.path));
                        let _ = std::fs::remove_file(&f.path);
                        done.confirmed.insert(f.sop_instance_uid.clone());
                    }
                }
                if !answer.failed.is_empty() {
                    warn!(
                        status = answer.status,
                        failed = answer.failed.len(),
                        "destination refused instances; kept in the spool"
                    );
                    done.refused += answer.failed.len() as u32;
                    done.refused_instances.extend(answer.failed);
                }
                on_confirmed(done.confirmed.len() as u32);
            }
            Err(e) => {
                done.error = Some(DimseError::Other {
                    message: format!("STOW-RS: {e}"),
                    hint: e.hint().to_string(),
                    retryable: e.is_transient(),
                    wait: None,
                });
                break;
            }
        }
    }
    shared.forwarder_gone.store(true, Ordering::Relaxed);
    shared.spool.budget().wake();
    done
}

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

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}
