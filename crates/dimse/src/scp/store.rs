//! C-STORE SCP: accepts every storage SOP class from allowed calling AEs, streams each
//! instance to `<out>/<SOPInstanceUID>.dcm` (temporary name, then rename) and reports it
//! on a channel with the C-MOVE that caused it (Move Originator AE / Message ID), so the
//! mover can correlate arrivals with its jobs.

use super::{ServerAssociation, VERIFICATION, accept_next, accepted, echo_response, next_command};
use crate::association::{EXPLICIT_VR_LE, IMPLICIT_VR_LE};
use crate::command::{Command, field, tags};
use crate::error::DimseError;
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
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// How the SCP behaves.
#[derive(Debug, Clone)]
pub struct StoreScpOptions {
    /// Our AE title; associations calling another AE are rejected.
    pub ae_title: AeTitle,
    /// Calling AEs allowed to store; empty means anyone (a test receiver).
    pub allowed_calling: Vec<AeTitle>,
    /// Folder the instances land in.
    pub out_dir: PathBuf,
    /// Associations served at once; more are rejected (transient) rather than queued, so a
    /// sender retries instead of timing out.
    pub max_associations: usize,
    /// Largest PDU we accept.
    pub max_pdu: u32,
    /// Longest silence inside an association before we give up on it.
    pub idle_timeout: Duration,
}

impl StoreScpOptions {
    pub fn new(ae_title: AeTitle, out_dir: &Path) -> Self {
        StoreScpOptions {
            ae_title,
            allowed_calling: Vec::new(),
            out_dir: out_dir.to_path_buf(),
            max_associations: 8,
            max_pdu: 1 << 20,
            idle_timeout: Duration::from_secs(60),
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
/// reasons a strict PACS gives (the sender's log then says what to fix).
#[derive(Debug, Clone)]
struct AllowList {
    allowed: Arc<Vec<String>>,
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
        if !self.allowed.is_empty() && !self.allowed.iter().any(|a| a == calling_ae_title.trim()) {
            return Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized);
        }
        Ok(())
    }
}

type ServerOptions = ServerAssociationOptions<'static, AllowList, dicom_ul::association::server::DefaultNegotiation>;

fn server_options(options: &StoreScpOptions, accept: bool) -> ServerOptions {
    // An over-cap association is answered by an allow-list nobody is on.
    let allowed = if accept {
        options.allowed_calling.iter().map(|a| a.to_string()).collect()
    } else {
        vec!["\u{1}over-capacity".to_string()]
    };
    let mut server = ServerAssociationOptions::new()
        .ae_access_control(AllowList { allowed: Arc::new(allowed) })
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
    let accepting = Arc::new(server_options(&options, true));
    let refusing = Arc::new(server_options(&options, false));
    let permits = Arc::new(Semaphore::new(options.max_associations.max(1)));
    let sequence = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    info!(ae = %options.ae_title, out = %options.out_dir.display(), "c-store scp listening");
    while let Some((socket, address)) = accept_next(&listener, &mut tasks, &shutdown).await {
        let permit = permits.clone().try_acquire_owned().ok();
        let server = if permit.is_some() { accepting.clone() } else { refusing.clone() };
        if permit.is_none() {
            warn!(%address, "association cap reached: rejecting");
        }
        let (options, stored, sequence, shutdown) =
            (options.clone(), stored.clone(), sequence.clone(), shutdown.clone());
        tasks.spawn(async move {
            let _permit = permit;
            if let Err(e) = serve(socket, &server, &options, &stored, &sequence, &shutdown).await {
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

async fn serve(
    socket: TcpStream,
    server: &ServerOptions,
    options: &StoreScpOptions,
    stored: &mpsc::Sender<StoredInstance>,
    sequence: &AtomicU64,
    shutdown: &CancellationToken,
) -> Result<(), DimseError> {
    let established = tokio::time::timeout(options.idle_timeout, server.establish_async(socket))
        .await
        .map_err(|_| DimseError::Timeout {
            peer: "c-store peer".into(),
            what: "an association request",
            after: options.idle_timeout,
        })?
        .map_err(|e| DimseError::Io(format!("association not established: {e}")))?;
    let (mut assoc, calling_ae) = accepted(established, options.ae_title.clone(), options.idle_timeout);
    let contexts = assoc.accepted_contexts();
    debug!(calling_ae = %calling_ae, contexts = contexts.len(), "c-store association accepted");
    while let Some((context_id, command)) = next_command(&mut assoc, shutdown).await? {
        match command.command_field() {
            Some(field::C_ECHO_RQ) => assoc.send(context_id, &echo_response(&command), None).await?,
            Some(field::C_STORE_RQ) => {
                let ts = contexts.iter().find(|(id, _, _)| *id == context_id).map(|(_, _, ts)| ts.clone());
                let class = command.string(tags::AFFECTED_SOP_CLASS_UID).unwrap_or_default();
                let instance = command.string(tags::AFFECTED_SOP_INSTANCE_UID).unwrap_or_default();
                let status = match ts {
                    Some(ts) if command.has_data_set() => {
                        let n = sequence.fetch_add(1, Ordering::Relaxed);
                        match store_one(&mut assoc, &options.out_dir, &class, &instance, &ts, n).await {
                            Ok((path, size)) => {
                                let record = StoredInstance {
                                    calling_ae: calling_ae.clone(),
                                    sop_class_uid: class.clone(),
                                    sop_instance_uid: instance.clone(),
                                    transfer_syntax: ts,
                                    path,
                                    size,
                                    move_originator_ae: command
                                        .string(tags::MOVE_ORIGINATOR_AE)
                                        .filter(|s| !s.is_empty()),
                                    move_originator_message_id: command.u16(tags::MOVE_ORIGINATOR_MESSAGE_ID),
                                };
                                let _ = stored.send(record).await;
                                0x0000
                            }
                            Err(StoreFailure::Network(e)) => return Err(e),
                            Err(StoreFailure::Disk(e)) => {
                                warn!(error = %e, "cannot write a received instance");
                                0xA700
                            }
                        }
                    }
                    Some(_) => 0xC000,
                    None => {
                        if command.has_data_set() {
                            assoc.receive_data(|_| Ok(())).await?;
                        }
                        0x0122
                    }
                };
                let mut rsp = Command::new(field::C_STORE_RSP);
                rsp.put_u16(tags::MESSAGE_ID_BEING_RESPONDED_TO, command.u16(tags::MESSAGE_ID).unwrap_or(0))
                    .put_uid(tags::AFFECTED_SOP_CLASS_UID, &class)
                    .put_uid(tags::AFFECTED_SOP_INSTANCE_UID, &instance)
                    .put_u16(tags::STATUS, status);
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

enum StoreFailure {
    Network(DimseError),
    Disk(std::io::Error),
}

/// Streams one data set to a temporary file, then renames it to `<SOPInstanceUID>.dcm`.
/// Writes are plain buffered file writes of at most one PDU each (page cache, no fsync):
/// cheaper than a blocking-pool round trip per fragment.
async fn store_one(
    assoc: &mut ServerAssociation,
    dir: &Path,
    class: &str,
    instance: &str,
    ts: &str,
    n: u64,
) -> Result<(PathBuf, u64), StoreFailure> {
    let name = crate::get::safe_file_name(instance);
    let temp = dir.join(format!(".{n}.{}.part", std::process::id()));
    let opened = open_part10(&temp, class, instance, ts);
    let mut writer = match opened {
        Ok(w) => Some(w),
        Err(e) => {
            assoc.receive_data(|_| Ok(())).await.map_err(StoreFailure::Network)?;
            return Err(StoreFailure::Disk(e));
        }
    };
    let mut disk_error: Option<std::io::Error> = None;
    let size = assoc
        .receive_data(|chunk| {
            if let Some(w) = writer.as_mut()
                && let Err(e) = w.write_all(chunk)
            {
                disk_error = Some(e);
                writer = None;
            }
            Ok(())
        })
        .await;
    let size = match size {
        Ok(s) => s,
        Err(e) => {
            drop(writer);
            let _ = std::fs::remove_file(&temp);
            return Err(StoreFailure::Network(e));
        }
    };
    let finished = match (writer, disk_error) {
        (Some(mut w), None) => w.flush().and_then(|_| {
            if name.is_empty() {
                return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "SOP instance UID is empty"));
            }
            let done = dir.join(format!("{name}.dcm"));
            std::fs::rename(&temp, &done).map(|_| done)
        }),
        (_, Some(e)) => Err(e),
        (None, None) => Err(std::io::Error::other("writer lost")),
    };
    match finished {
        Ok(path) => Ok((path, size)),
        Err(e) => {
            let _ = std::fs::remove_file(&temp);
            Err(StoreFailure::Disk(e))
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
