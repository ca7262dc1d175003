//! C-STORE SCP: accepts every storage SOP class from allowed calling AEs, checks each
//! data set's head, streams it to `<out>/<SOPInstanceUID>.dcm` (temporary name, then
//! published without replacing anything; see `receive.rs`) and reports it on a channel
//! with the C-MOVE that caused it (Move Originator AE / Message ID), so the mover can
//! correlate arrivals with its jobs.
//!
//! A connection takes one of `max_associations` slots only once its A-ASSOCIATE-RQ has
//! arrived (see `handshake.rs`); a connection that sends nothing is closed after
//! `association_request_timeout`.

use super::handshake::{Rejection, Waited, Waiting, reject, wait_for_request};
use super::receive::{CANNOT_UNDERSTAND, Expected, Received, receive};
use super::{ServerAssociation, VERIFICATION, accept_next, accepted, echo_on_context, next_command, uid_digest};
use crate::association::{EXPLICIT_VR_LE, IMPLICIT_VR_LE};
use crate::command::{Command, field, tags};
use crate::dataset_guard::is_valid_uid;
use crate::error::DimseError;
use crate::link::ServerLink;
use crate::peer::AeTitle;
use crate::storage_classes::STORAGE_SOP_CLASSES;
use dicom_ul::association::server::{AccessControl, ServerAssociationOptions};
use dicom_ul::pdu::{AssociationRJServiceUserReason, UserIdentity};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// How the SCP behaves.
#[derive(Debug, Clone)]
pub struct StoreScpOptions {
    /// Our AE title; associations calling another AE are rejected.
    pub ae_title: AeTitle,
    /// Calling AEs allowed to store. Empty (and `allow_any_calling` off) refuses everyone.
    pub allowed_calling: Vec<AeTitle>,
    /// Accept any calling AE (a test receiver); off by default.
    pub allow_any_calling: bool,
    /// Folder the instances land in.
    pub out_dir: PathBuf,
    /// Associations served at once; more are rejected (transient, local limit exceeded)
    /// rather than queued, so a sender retries instead of timing out.
    pub max_associations: usize,
    /// Connections waiting for their A-ASSOCIATE-RQ; a new one beyond this closes the
    /// oldest waiting one.
    pub max_waiting: usize,
    /// How long a new connection may take to send its A-ASSOCIATE-RQ (the ARTIM timer of
    /// PS3.8 9.1.5), and to finish the negotiation.
    pub association_request_timeout: Duration,
    /// Largest PDU we accept.
    pub max_pdu: u32,
    /// Longest silence inside an association before we give up on it.
    pub idle_timeout: Duration,
    /// DICOM TLS on every connection; None: plain TCP.
    pub tls: Option<priorfetch_tls::ServerTls>,
}

impl StoreScpOptions {
    pub fn new(ae_title: AeTitle, out_dir: &Path) -> Self {
        StoreScpOptions {
            ae_title,
            allowed_calling: Vec::new(),
            allow_any_calling: false,
            out_dir: out_dir.to_path_buf(),
            max_associations: 8,
            max_waiting: 64,
            association_request_timeout: Duration::from_secs(10),
            max_pdu: 1 << 20,
            idle_timeout: Duration::from_secs(60),
            tls: None,
        }
    }
}

/// One instance stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredInstance {
    pub calling_ae: String,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub transfer_syntax: String,
    pub path: PathBuf,
    /// Bytes of the data set received (without the Part-10 header).
    pub size: u64,
    /// (0000,1030) of a C-STORE that is a C-MOVE sub-operation.
    pub move_originator_ae: Option<String>,
    /// (0000,1031): the message ID of that C-MOVE.
    pub move_originator_message_id: Option<u16>,
}

/// Rejects a wrong called AE and calling AEs not on the allow-list, with the A-ASSOCIATE-RJ
/// reasons a strict PACS gives (the sender's log then says what to fix). The same rule is
/// applied before a slot is taken (`Admission::check`); this copy guards dicom-ul's
/// negotiation as well.
#[derive(Debug, Clone)]
struct AllowList {
    /// `None`: any calling AE.
    allowed: Option<Arc<Vec<String>>>,
}

impl AllowList {
    fn new(options: &StoreScpOptions) -> AllowList {
        let list = options.allowed_calling.iter().map(|a| a.to_string()).collect();
        AllowList { allowed: (!options.allow_any_calling).then(|| Arc::new(list)) }
    }

    fn allows(&self, calling_ae: &str) -> bool {
        self.allowed.as_ref().is_none_or(|list| list.iter().any(|a| a == calling_ae.trim()))
    }
}

impl AccessControl for AllowList {
    fn check_access(
        &self,
        this_ae_title: &str,
        calling_ae_title: &str,
        called_ae_title: &str,
        _user_identity: Option<&UserIdentity>,
    ) -> Result<(), AssociationRJServiceUserReason> {
        if called_ae_title.trim() != this_ae_title.trim() {
            return Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized);
        }
        if !self.allows(calling_ae_title) {
            return Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized);
        }
        Ok(())
    }
}

type ServerOptions = ServerAssociationOptions<'static, AllowList, dicom_ul::association::server::DefaultNegotiation>;

fn server_options(options: &StoreScpOptions) -> ServerOptions {
    let mut server = ServerAssociationOptions::new()
        .ae_access_control(AllowList::new(options))
        .ae_title(options.ae_title.to_string())
        .max_pdu_length(options.max_pdu)
        .read_timeout(options.idle_timeout)
        .write_timeout(options.idle_timeout)
        .with_abstract_syntax(VERIFICATION);
    for class in STORAGE_SOP_CLASSES {
        server = server.with_abstract_syntax(*class);
    }
    for ts in [
        EXPLICIT_VR_LE,
        IMPLICIT_VR_LE,
        "1.2.840.10008.1.2.4.70",
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.4.91",
        "1.2.840.10008.1.2.5",
        "1.2.840.10008.1.2.4.80",
        "1.2.840.10008.1.2.4.81",
    ] {
        server = server.with_transfer_syntax(ts);
    }
    server
}

/// What every connection shares: the negotiation options, the association slots, the
/// connections waiting for their request.
struct Admission {
    server: ServerOptions,
    allow: AllowList,
    slots: Arc<Semaphore>,
    waiting: Arc<Waiting>,
    sequence: AtomicU64,
}

impl Admission {
    /// The A-ASSOCIATE-RJ a request gets before any slot is considered, if any.
    fn check(&self, options: &StoreScpOptions, called_ae: &str, calling_ae: &str) -> Option<Rejection> {
        if called_ae.trim() != options.ae_title.as_str().trim() {
            Some(Rejection::CALLED_AE)
        } else if !self.allow.allows(calling_ae) {
            Some(Rejection::CALLING_AE)
        } else {
            None
        }
    }
}

/// Serves C-STORE (and C-ECHO) on `listener` until `shutdown` is cancelled, then waits for
/// running associations to finish (at most `idle_timeout`). Each stored instance is sent
/// on `stored`; a full channel slows the senders down (backpressure), a closed one is
/// ignored.
pub async fn run_store_scp(
    listener: TcpListener,
    options: StoreScpOptions,
    stored: mpsc::Sender<StoredInstance>,
    shutdown: CancellationToken,
) -> Result<(), DimseError> {
    std::fs::create_dir_all(&options.out_dir)
        .map_err(|e| DimseError::Io(format!("creating {}: {e}", options.out_dir.display())))?;
    let admission = Arc::new(Admission {
        server: server_options(&options),
        allow: AllowList::new(&options),
        slots: Arc::new(Semaphore::new(options.max_associations.max(1))),
        waiting: Arc::new(Waiting::new(options.max_waiting)),
        sequence: AtomicU64::new(0),
    });
    if !options.allow_any_calling && options.allowed_calling.is_empty() {
        warn!(ae = %options.ae_title, "c-store scp allows no calling AE: every association will be rejected");
    }
    let mut tasks = tokio::task::JoinSet::new();
    info!(ae = %options.ae_title, out = %options.out_dir.display(), allowed = options.allowed_calling.len(),
        any = options.allow_any_calling, "c-store scp listening");
    while let Some((socket, address)) = accept_next(&listener, &mut tasks, &shutdown).await {
        if let Some(tls) = options.tls.clone() {
            let (options, stored, shutdown, admission) =
                (options.clone(), stored.clone(), shutdown.clone(), admission.clone());
            tasks.spawn(async move {
                serve_tls(socket, address, tls, &admission, &options, &stored, &shutdown).await;
            });
            continue;
        }
        let (ticket, evicted_one) = admission.waiting.admit();
        if evicted_one {
            debug!("too many connections without an association request: closed the oldest");
        }
        let (options, stored, shutdown, admission) =
            (options.clone(), stored.clone(), shutdown.clone(), admission.clone());
        tasks.spawn(async move {
            let waited = tokio::select! {
                _ = ticket.evicted.cancelled() => return,
                _ = shutdown.cancelled() => return,
                w = wait_for_request(&socket, options.association_request_timeout) => w,
            };
            drop(ticket);
            let request = match waited {
                Waited::Request(r) => r,
                Waited::TimedOut => return debug!(%address, "no association request in time: closing"),
                Waited::NotARequest(why) => return debug!(%address, %why, "closing a connection"),
            };
            let within = options.association_request_timeout;
            if let Some(rejection) = admission.check(&options, &request.called_ae, &request.calling_ae) {
                info!(%address, calling_ae = %request.calling_ae, reason = rejection.reason, "association rejected");
                return reject(socket, rejection, within).await;
            }
            let Ok(slot) = admission.slots.clone().try_acquire_owned() else {
                warn!(%address, calling_ae = %request.calling_ae, "association cap reached: rejecting (local limit exceeded)");
                return reject(socket, Rejection::LOCAL_LIMIT, within).await;
            };
            let within = options.association_request_timeout;
            let established = match tokio::time::timeout(within, admission.server.establish_async(socket)).await {
                Ok(Ok(a)) => ServerLink::Plain(a),
                Ok(Err(e)) => return debug!(%address, error = %e, "association not established"),
                Err(_) => return debug!(%address, "association negotiation too slow: closing"),
            };
            if let Err(e) = serve(established, slot, &admission, &options, &stored, &shutdown).await {
                debug!(%address, error = %e, "c-store association ended with an error");
            }
        });
    }
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(options.idle_timeout, drain).await.is_err() {
        warn!("c-store scp: associations still running at shutdown were aborted");
    }
    Ok(())
}

/// Over TLS the A-ASSOCIATE-RQ cannot be peeked at before the handshake: the slot is
/// taken first (a connection beyond the cap is closed) and dicom-ul answers the AE checks.
async fn serve_tls(
    socket: TcpStream,
    address: std::net::SocketAddr,
    tls: priorfetch_tls::ServerTls,
    admission: &Admission,
    options: &StoreScpOptions,
    stored: &mpsc::Sender<StoredInstance>,
    shutdown: &CancellationToken,
) {
    let Ok(slot) = admission.slots.clone().try_acquire_owned() else {
        return warn!(%address, "association cap reached: closing a TLS connection");
    };
    let within = options.association_request_timeout;
    let server = admission.server.clone().tls_config(tls.config());
    let established = match tokio::time::timeout(within, server.establish_tls_async(socket)).await {
        Ok(Ok(a)) => ServerLink::Tls(a),
        Ok(Err(e)) => {
            return match priorfetch_tls::diagnose(&e) {
                Some(problem) => {
                    warn!(%address, %problem, hint = %problem.hint("service.tls"), "TLS handshake with a sender failed")
                }
                None => info!(%address, error = %e, "TLS association not established"),
            };
        }
        Err(_) => return debug!(%address, "TLS handshake or association request too slow: closing"),
    };
    if let Err(e) = serve(established, slot, admission, options, stored, shutdown).await {
        debug!(%address, error = %e, "c-store association ended with an error");
    }
}

async fn serve(
    established: ServerLink,
    _slot: OwnedSemaphorePermit,
    admission: &Admission,
    options: &StoreScpOptions,
    stored: &mpsc::Sender<StoredInstance>,
    shutdown: &CancellationToken,
) -> Result<(), DimseError> {
    let (mut assoc, calling_ae) = accepted(established, options.ae_title.clone(), options.idle_timeout);
    let contexts = assoc.accepted_contexts();
    debug!(calling_ae = %calling_ae, contexts = contexts.len(), "c-store association accepted");
    while let Some((context_id, command)) = next_command(&mut assoc, shutdown).await? {
        // next_command only returns commands on accepted contexts
        let Some((_, abstract_syntax, ts)) = contexts.iter().find(|(id, _, _)| *id == context_id) else {
            continue;
        };
        match command.command_field() {
            Some(field::C_ECHO_RQ) => assoc.send(context_id, &echo_on_context(&command, abstract_syntax), None).await?,
            Some(field::C_STORE_RQ) => {
                let n = admission.sequence.fetch_add(1, Ordering::Relaxed);
                let (status, comment, record) =
                    store_request(&mut assoc, &command, abstract_syntax, ts, options, n).await?;
                if let Some(mut record) = record {
                    record.calling_ae = calling_ae.clone();
                    let _ = stored.send(record).await;
                }
                let mut rsp = Command::new(field::C_STORE_RSP);
                rsp.put_u16(tags::MESSAGE_ID_BEING_RESPONDED_TO, command.u16(tags::MESSAGE_ID).unwrap_or(0))
                    .put_uid(
                        tags::AFFECTED_SOP_CLASS_UID,
                        &command.string(tags::AFFECTED_SOP_CLASS_UID).unwrap_or_default(),
                    )
                    .put_uid(
                        tags::AFFECTED_SOP_INSTANCE_UID,
                        &command.string(tags::AFFECTED_SOP_INSTANCE_UID).unwrap_or_default(),
                    )
                    .put_u16(tags::STATUS, status);
                if let Some(comment) = comment {
                    rsp.put_ae(tags::ERROR_COMMENT, &comment);
                }
                assoc.send(context_id, &rsp, None).await?;
            }
            other => {
                warn!(command = other.unwrap_or(0), "unsupported command on the c-store scp: aborting");
                assoc.abort().await;
                return Err(DimseError::Protocol(format!("unsupported command 0x{:04X}", other.unwrap_or(0))));
            }
        }
    }
    Ok(())
}

/// One C-STORE-RQ and its data set: the status, an error comment, and the record of a
/// stored instance (its calling AE filled in by the caller).
async fn store_request(
    assoc: &mut ServerAssociation,
    command: &Command,
    context_class: &str,
    ts: &str,
    options: &StoreScpOptions,
    n: u64,
) -> Result<(u16, Option<String>, Option<StoredInstance>), DimseError> {
    let class = command.string(tags::AFFECTED_SOP_CLASS_UID).unwrap_or_default();
    let instance = command.string(tags::AFFECTED_SOP_INSTANCE_UID).unwrap_or_default();
    let refusal = if !command.has_data_set() {
        Some((CANNOT_UNDERSTAND, "C-STORE-RQ without a data set"))
    } else if !is_valid_uid(&class) || !is_valid_uid(&instance) {
        Some((CANNOT_UNDERSTAND, "Affected SOP Class/Instance UID is not a valid UID"))
    } else if class != context_class {
        Some((0x0122, "SOP class differs from the presentation context's"))
    } else {
        None
    };
    if let Some((status, comment)) = refusal {
        if command.has_data_set() {
            assoc.receive_data(|_| Ok(())).await?;
        }
        debug!(status, comment, "c-store refused");
        return Ok((status, Some(comment.to_string()), None));
    }
    let temp = options.out_dir.join(format!(".{n}.{}.part", std::process::id()));
    let expected = Expected { sop_class: &class, sop_instance: &instance, transfer_syntax: ts };
    match receive(assoc, &options.out_dir, &temp, &expected).await? {
        Received::Stored { path, size, again } => {
            if again {
                debug!(instance = %uid_digest(&instance), "identical instance received again");
            }
            let record = StoredInstance {
                calling_ae: String::new(),
                sop_class_uid: class,
                sop_instance_uid: instance,
                transfer_syntax: ts.to_string(),
                path,
                size,
                move_originator_ae: command.string(tags::MOVE_ORIGINATOR_AE).filter(|s| !s.is_empty()),
                move_originator_message_id: command.u16(tags::MOVE_ORIGINATOR_MESSAGE_ID),
            };
            Ok((0x0000, None, Some(record)))
        }
        Received::Refused { status, comment } => {
            warn!(status = format_args!("0x{status:04X}"), %comment, instance = %uid_digest(&instance), "c-store refused");
            Ok((status, Some(comment), None))
        }
    }
}

/// A file with preamble, `DICM` and the File Meta Information group, ready for the data set.
pub(crate) fn open_part10(
    path: &Path,
    class: &str,
    instance: &str,
    ts: &str,
) -> std::io::Result<std::io::BufWriter<std::fs::File>> {
    let mut file = std::io::BufWriter::with_capacity(256 * 1024, std::fs::File::create(path)?);
    let meta = dicom_object::FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(class)
        .media_storage_sop_instance_uid(instance)
        .transfer_syntax(ts)
        .implementation_class_uid("1.2.826.0.1.3680043.10.543.1")
        .implementation_version_name("PRIORFETCH")
        .build()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
    file.write_all(&[0u8; 128])?;
    file.write_all(b"DICM")?;
    meta.write(&mut file).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(file)
}
