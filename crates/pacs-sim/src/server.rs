//! [`Sim::start`]: index the data, listen, serve associations until shutdown. The
//! association cap and rejections are answered here with a hand-written A-ASSOCIATE-RJ,
//! so any result/source/reason can be sent (dicom-ul only rejects permanently).

use crate::SimError;
use crate::config::{DataSource, Faults, RejectReason, SimConfig, SyntheticSpec};
use crate::index::{Index, Study, StudySummary};
use crate::stats::{Counters, SimStats};
use dicom_ul::association::server::{AccessControl, Negotiation, ServerAssociationOptions};
use dicom_ul::pdu::{AssociationRJServiceUserReason, RequestorRoles, UserIdentity};
use priorfetch_dimse::scp::{VERIFICATION, accept_next};
use priorfetch_dimse::storage_classes::STORAGE_SOP_CLASSES;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub(crate) const QR_MODELS: &[&str] = &[
    "1.2.840.10008.5.1.4.1.2.1.1",
    "1.2.840.10008.5.1.4.1.2.1.2",
    "1.2.840.10008.5.1.4.1.2.1.3",
    "1.2.840.10008.5.1.4.1.2.2.1",
    "1.2.840.10008.5.1.4.1.2.2.2",
    "1.2.840.10008.5.1.4.1.2.2.3",
];

/// An instance the storage SCP received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedInstance {
    pub calling_ae: String,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub study_instance_uid: String,
    pub transfer_syntax: String,
    pub size: usize,
    pub move_originator_ae: Option<String>,
    pub move_originator_message_id: Option<u16>,
    /// When the C-STORE was stored (readiness checks compare it with a deadline).
    pub received_at: chrono::DateTime<chrono::Utc>,
}

/// State shared by the accept loop, the associations and the handle.
pub(crate) struct Shared {
    pub config: SimConfig,
    pub synthetic: Option<SyntheticSpec>,
    pub faults: RwLock<Faults>,
    pub index: RwLock<Index>,
    pub received: Mutex<Vec<ReceivedInstance>>,
    pub counters: Counters,
    /// Retrieve attempts per study UID (`Faults::faults_first_attempts`).
    pub attempts: Mutex<HashMap<String, u32>>,
    pub active: AtomicU32,
    /// DICOMweb requests served so far (`Faults::web_busy`).
    pub web_requests: AtomicU32,
    /// Studies whose WADO-RS body was already cut once (`Faults::web_cut_after_parts`).
    pub web_cut: Mutex<std::collections::HashSet<String>>,
    /// Instances STOW-RS refused once already (`Faults::stow_refuse_every`).
    pub stow_refused: Mutex<std::collections::HashSet<String>>,
    /// Instances offered by STOW-RS so far (`Faults::stow_refuse_every`).
    pub stow_offered: std::sync::atomic::AtomicUsize,
}

impl Shared {
    pub fn faults(&self) -> Faults {
        self.faults.read().map(|f| f.clone()).unwrap_or_default()
    }
}

pub struct Sim;

/// A running simulator; dropping it does not stop it: call [`SimHandle::shutdown`].
pub struct SimHandle {
    shared: Arc<Shared>,
    address: SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Sim {
    /// Indexes the data, binds `bind` (e.g. `127.0.0.1:0`) and serves until shutdown.
    pub async fn start(config: SimConfig, bind: &str) -> Result<SimHandle, SimError> {
        if priorfetch_dimse::AeTitle::parse(&config.ae_title).is_err() {
            return Err(SimError::Config(format!("ae title '{}' is not a valid AE title", config.ae_title)));
        }
        let (index, synthetic) = match &config.data {
            DataSource::Synthetic(spec) => {
                let spec = spec.clone();
                let index = tokio::task::spawn_blocking({
                    let spec = spec.clone();
                    move || spec.build_index()
                })
                .await
                .map_err(|e| SimError::Config(e.to_string()))?;
                (index, Some(spec))
            }
            DataSource::Folder(dir) => {
                let d = dir.clone();
                let (index, skipped) = tokio::task::spawn_blocking(move || crate::index::index_folder(&d))
                    .await
                    .map_err(|e| SimError::Config(e.to_string()))?
                    .map_err(|e| SimError::Index { folder: dir.display().to_string(), reason: e.to_string() })?;
                if skipped > 0 {
                    warn!(folder = %dir.display(), skipped, "files that are not DICOM Part-10 were skipped");
                }
                (index, None)
            }
            DataSource::Empty => (Index::default(), None),
        };
        let listener = TcpListener::bind(bind)
            .await
            .map_err(|e| SimError::Bind { address: bind.to_string(), reason: e.to_string() })?;
        let address =
            listener.local_addr().map_err(|e| SimError::Bind { address: bind.to_string(), reason: e.to_string() })?;
        info!(ae = %config.ae_title, %address, studies = index.studies.len(), "pacs simulator listening");
        let shared = Arc::new(Shared {
            faults: RwLock::new(config.faults.clone()),
            config,
            synthetic,
            index: RwLock::new(index),
            received: Mutex::new(Vec::new()),
            counters: Counters::default(),
            attempts: Mutex::new(HashMap::new()),
            active: AtomicU32::new(0),
            web_requests: AtomicU32::new(0),
            web_cut: Mutex::new(Default::default()),
            stow_refused: Mutex::new(Default::default()),
            stow_offered: std::sync::atomic::AtomicUsize::new(0),
        });
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(accept_loop(listener, shared.clone(), shutdown.clone()));
        Ok(SimHandle { shared, address, shutdown, task })
    }
}

impl SimHandle {
    pub fn port(&self) -> u16 {
        self.address.port()
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn ae(&self) -> &str {
        &self.shared.config.ae_title
    }

    /// The indexed studies (received ones included).
    pub fn index(&self) -> Vec<StudySummary> {
        self.shared.index.read().map(|i| i.studies.iter().map(Study::summary).collect()).unwrap_or_default()
    }

    pub fn study(&self, uid: &str) -> Option<StudySummary> {
        self.shared.index.read().ok()?.study(uid).map(Study::summary)
    }

    /// Patient IDs, in index order, without repeats.
    pub fn patients(&self) -> Vec<String> {
        let mut ids: Vec<String> = Vec::new();
        for s in self.index() {
            if !ids.contains(&s.patient_id) {
                ids.push(s.patient_id);
            }
        }
        ids
    }

    pub fn stats(&self) -> SimStats {
        self.shared.counters.snapshot()
    }

    /// Also serves DICOMweb (QIDO-RS, WADO-RS at `/dicom-web`) from the same data on
    /// `bind` (e.g. `127.0.0.1:0`); returns its root URL.
    pub async fn serve_dicomweb(&self, bind: &str) -> Result<String, SimError> {
        let listener = TcpListener::bind(bind)
            .await
            .map_err(|e| SimError::Bind { address: bind.to_string(), reason: e.to_string() })?;
        let address =
            listener.local_addr().map_err(|e| SimError::Bind { address: bind.to_string(), reason: e.to_string() })?;
        tokio::spawn(crate::serve::serve_web(listener, self.shared.clone(), self.shutdown.clone()));
        Ok(format!("http://{address}/dicom-web"))
    }

    /// A handle that changes this simulator's faults from another task (an outage window).
    pub fn fault_switch(&self) -> FaultSwitch {
        FaultSwitch(self.shared.clone())
    }

    /// Replaces the faults; running operations keep the faults they started with.
    pub fn set_faults(&self, faults: Faults) {
        FaultSwitch(self.shared.clone()).set(faults)
    }
}

/// Changes a running simulator's faults (see [`SimHandle::fault_switch`]).
#[derive(Clone)]
pub struct FaultSwitch(Arc<Shared>);

impl FaultSwitch {
    /// As [`SimHandle::set_faults`].
    pub fn set(&self, faults: Faults) {
        if let Ok(mut f) = self.0.faults.write() {
            *f = faults;
        }
        if let Ok(mut a) = self.0.attempts.lock() {
            a.clear();
        }
        self.0.web_requests.store(0, Ordering::SeqCst);
        if let Ok(mut c) = self.0.web_cut.lock() {
            c.clear();
        }
        if let Ok(mut c) = self.0.stow_refused.lock() {
            c.clear();
        }
        self.0.stow_offered.store(0, Ordering::SeqCst);
    }
}

impl SimHandle {
    pub fn received(&self) -> Vec<ReceivedInstance> {
        self.shared.received.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Stops accepting, aborts running associations, waits for the tasks.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, shutdown: CancellationToken) {
    let options = Arc::new(server_options(&shared.config));
    let mut tasks = tokio::task::JoinSet::new();
    while let Some((socket, address)) = accept_next(&listener, &mut tasks, &shutdown).await {
        let (shared, options, shutdown) = (shared.clone(), options.clone(), shutdown.clone());
        tasks.spawn(async move {
            let faults = shared.faults();
            if faults.unreachable {
                Counters::add(&shared.counters.rejected, 1);
                drop(socket);
                return;
            }
            if let Some(reason) = faults.reject {
                Counters::add(&shared.counters.rejected, 1);
                reject(socket, reason).await;
                return;
            }
            // the cap counts associations being served; the guard gives the slot back
            let active = shared.active.fetch_add(1, Ordering::SeqCst) + 1;
            let _slot = Slot(&shared.active);
            if faults.max_associations.is_some_and(|max| active > max) {
                debug!(%address, active, "association cap reached: rejecting");
                Counters::add(&shared.counters.rejected, 1);
                reject(socket, RejectReason::LocalLimit).await;
                return;
            }
            if let Err(e) = crate::serve::serve(socket, &options, &shared, &shutdown).await {
                debug!(%address, error = %e, "association ended with an error");
            }
        });
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
}

struct Slot<'a>(&'a AtomicU32);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Reads the A-ASSOCIATE-RQ (bounded) and answers A-ASSOCIATE-RJ, then closes after the
/// peer has had the chance to read it (closing with unread input would send a reset).
pub(crate) async fn reject(mut socket: TcpStream, reason: RejectReason) {
    let read_request = async {
        let mut header = [0u8; 6];
        socket.read_exact(&mut header).await?;
        let length = u32::from_be_bytes([header[2], header[3], header[4], header[5]]) as u64;
        let mut sink = tokio::io::sink();
        tokio::io::copy(&mut (&mut socket).take(length.min(1 << 20)), &mut sink).await?;
        let (result, source, why) = reason.wire();
        socket.write_all(&[0x03, 0x00, 0, 0, 0, 4, 0x00, result, source, why]).await?;
        socket.flush().await?;
        socket.shutdown().await?;
        let mut rest = [0u8; 256];
        while socket.read(&mut rest).await? > 0 {}
        Ok::<(), std::io::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), read_request).await;
}

/// Called AE must be ours (a strict PACS); everyone may call.
#[derive(Debug, Clone)]
pub(crate) struct CalledAe;

impl AccessControl for CalledAe {
    fn check_access(
        &self,
        this_ae_title: &str,
        _calling_ae_title: &str,
        called_ae_title: &str,
        _user_identity: Option<&UserIdentity>,
    ) -> Result<(), AssociationRJServiceUserReason> {
        if called_ae_title.trim() == this_ae_title.trim() {
            Ok(())
        } else {
            Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized)
        }
    }
}

/// Grants the roles asked for (a C-GET requester takes the SCP role for storage classes).
#[derive(Debug, Clone)]
pub(crate) struct Roles;

impl Negotiation for Roles {
    fn negotiate_roles(&self, _sop_class_uid: &str, scu_role: bool, scp_role: bool) -> Option<RequestorRoles> {
        Some(RequestorRoles { scu: scu_role, scp: scp_role })
    }
}

pub(crate) type ServerOptions = ServerAssociationOptions<'static, CalledAe, Roles>;

fn server_options(config: &SimConfig) -> ServerOptions {
    let mut options = ServerAssociationOptions::new()
        .ae_access_control(CalledAe)
        .with_negotiation(Roles)
        .ae_title(config.ae_title.clone())
        .max_pdu_length(config.max_pdu)
        .read_timeout(config.idle_timeout)
        .write_timeout(config.idle_timeout)
        .with_abstract_syntax(VERIFICATION);
    for model in QR_MODELS {
        options = options.with_abstract_syntax(*model);
    }
    for class in STORAGE_SOP_CLASSES {
        options = options.with_abstract_syntax(*class);
    }
    for ts in [
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2",
        "1.2.840.10008.1.2.2",
        "1.2.840.10008.1.2.4.70",
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.4.91",
        "1.2.840.10008.1.2.5",
        "1.2.840.10008.1.2.4.80",
        "1.2.840.10008.1.2.4.81",
    ] {
        options = options.with_transfer_syntax(ts);
    }
    options
}
