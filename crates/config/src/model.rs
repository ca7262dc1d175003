//! The settings types. Field names are the contract of docs/architecture.md; every
//! struct rejects unknown keys so a typo is an error, not a silent default.

pub use crate::intake::{IntakeSources, MllpConfig, ProcedureMapping, WorklistConfig};
use crate::secret::Secret;
pub use crate::tls::{ServerTlsConfig, TlsConfig, TlsProfile};
pub use priorfetch_domain::{AeTitle, Peer, PriorSelection, RetrieveMethod, RuleConfig, RuleMatch};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub service: ServiceConfig,
    pub database: DatabaseConfig,
    pub intake: IntakeConfig,
    #[serde(default)]
    pub archives: Vec<ArchiveConfig>,
    pub destination: DestinationConfig,
    pub prefetch: PrefetchConfig,
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// Procedure codes that fill a missing modality or body part.
    #[serde(default)]
    pub procedure_map: Vec<ProcedureMapping>,
    pub retry: RetryConfig,
    pub mover: MoverConfig,
    pub queue: QueueConfig,
    pub telemetry: TelemetryConfig,
    pub planner: PlannerConfig,
    /// Readiness and queue signals read from the database by every process.
    pub signals: crate::SignalsConfig,
    /// Who may use the admin API (`[[admin.tokens]]`).
    #[serde(default)]
    pub admin: crate::admin::AdminConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Our calling AE, and the AE of the C-STORE SCP that receives C-GET/relay traffic.
    pub ae_title: String,
    /// Admin HTTP: /metrics /healthz /readyz /api/...
    pub admin_listen: String,
    /// Graceful-stop budget: running work gets this long to finish before it is handed back.
    #[serde(with = "crate::duration")]
    pub shutdown_grace: Duration,
    /// TLS on our SCPs (the C-STORE SCP receiving C-MOVE sub-operations).
    #[serde(default)]
    pub tls: Option<ServerTlsConfig>,
    /// HTTPS on the admin listener; a client certificate signed by its `ca` admits an
    /// event sender (mutual TLS) as a `sender` token would.
    #[serde(default)]
    pub admin_tls: Option<ServerTlsConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://file.db?mode=rwc` or `postgres://user@host/db`.
    pub url: String,
    /// Postgres password, kept out of the URL so the URL can be logged.
    #[serde(default)]
    pub password: Secret,
    pub max_connections: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IntakeSource {
    Http,
    Rabbitmq,
    Kafka,
    Mllp,
    Worklist,
}

impl IntakeSource {
    pub fn as_str(self) -> &'static str {
        match self {
            IntakeSource::Http => "http",
            IntakeSource::Rabbitmq => "rabbitmq",
            IntakeSource::Kafka => "kafka",
            IntakeSource::Mllp => "mllp",
            IntakeSource::Worklist => "worklist",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntakeConfig {
    /// One source or a list of sources run at once.
    pub source: IntakeSources,
    pub rabbitmq: RabbitmqConfig,
    pub kafka: KafkaConfig,
    /// Site-specific HL7 v2 field positions (defaults fit common RIS styles).
    #[serde(default)]
    pub hl7: priorfetch_events::Hl7FieldMap,
    /// Most rows kept in `dead_letters`; the oldest beyond it are deleted (0: no bound).
    #[serde(default = "default_dead_letter_limit")]
    pub dead_letter_limit: u64,
    /// `POST /api/events`: body size and rate limits.
    #[serde(default)]
    pub http: HttpIntakeConfig,
    /// The HL7 MLLP listener (source `mllp`).
    #[serde(default)]
    pub mllp: MllpConfig,
    /// Modality Worklist polling (source `worklist`).
    #[serde(default)]
    pub worklist: WorklistConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpIntakeConfig {
    /// Largest event body in bytes; larger ones get 413.
    #[serde(default = "default_max_body")]
    pub max_body: usize,
    /// Events accepted per second by one process (a token bucket of one second's worth);
    /// above it, 429 with Retry-After. 0: no limit.
    #[serde(default = "default_rate_limit")]
    pub rate_limit: u32,
}

impl Default for HttpIntakeConfig {
    fn default() -> Self {
        HttpIntakeConfig { max_body: default_max_body(), rate_limit: default_rate_limit() }
    }
}

fn default_max_body() -> usize {
    1024 * 1024
}

fn default_rate_limit() -> u32 {
    1000
}

fn default_dead_letter_limit() -> u64 {
    100_000
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RabbitmqConfig {
    /// The password in this URL is redacted whenever the config is printed.
    pub url: String,
    pub queue: String,
    pub dead_letter_queue: String,
    /// Unacknowledged deliveries in flight; bounds memory and the commit batch.
    pub prefetch: u16,
    /// For `amqps://` URLs: `ca` (the CAs that sign the broker's certificate, in addition
    /// to the system's) and `cert`/`key` (a client certificate, for brokers that want one).
    /// The URL's host is the name verified; `server_name` and `profile` do not apply.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    pub brokers: String,
    pub topic: String,
    pub group_id: String,
    pub dead_letter_topic: String,
    /// SASL password, when the cluster wants one.
    #[serde(default)]
    pub password: Secret,
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl` (librdkafka's `security.protocol`).
    #[serde(default)]
    pub security_protocol: KafkaSecurity,
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`; required with `sasl_*`.
    #[serde(default)]
    pub sasl_mechanism: Option<String>,
    /// SASL user name; required with `sasl_*`.
    #[serde(default)]
    pub username: Option<String>,
    /// With `ssl`/`sasl_ssl`: `ca` (the CAs that sign the brokers' certificates; default the
    /// system's) and `cert`/`key` (a client certificate). Broker host names are verified.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KafkaSecurity {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl KafkaSecurity {
    /// librdkafka's `security.protocol` value.
    pub fn as_str(self) -> &'static str {
        match self {
            KafkaSecurity::Plaintext => "plaintext",
            KafkaSecurity::Ssl => "ssl",
            KafkaSecurity::SaslPlaintext => "sasl_plaintext",
            KafkaSecurity::SaslSsl => "sasl_ssl",
        }
    }

    pub fn uses_tls(self) -> bool {
        matches!(self, KafkaSecurity::Ssl | KafkaSecurity::SaslSsl)
    }

    pub fn uses_sasl(self) -> bool {
        matches!(self, KafkaSecurity::SaslPlaintext | KafkaSecurity::SaslSsl)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Dimse,
    Dicomweb,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveConfig {
    pub name: String,
    /// DIMSE address; not needed when `protocol = "dicomweb"`.
    #[serde(default)]
    pub ae_title: String,
    #[serde(default)]
    pub host: String,
    /// u32 so that 0 and 70000 reach validation and get a clear message.
    #[serde(default)]
    pub port: u32,
    /// Lower wins when a study is on several archives.
    #[serde(default = "default_priority")]
    pub priority: i32,
    #[serde(default = "default_protocol")]
    pub protocol: Protocol,
    /// Required when `protocol = "dicomweb"`: the DICOMweb root, e.g. `http://host:8042/dicom-web`.
    #[serde(default)]
    pub base_url: Option<String>,
    /// DICOMweb authentication: `"none"`, `{ basic = { user, password } }` or
    /// `{ bearer = { token } }`; secrets are never printed.
    #[serde(default)]
    pub auth: WebAuth,
    #[serde(default = "default_retrieve")]
    pub retrieve: RetrieveMethod,
    /// AE the archive knows for our destination; required for `retrieve = "move"`.
    #[serde(default)]
    pub move_destination: Option<String>,
    /// Cap on concurrent retrieve associations across all replicas.
    #[serde(default = "default_max_associations")]
    pub max_associations: u32,
    /// Known match cap; C-FIND date ranges are split to stay below it.
    #[serde(default)]
    pub max_matches: Option<u32>,
    /// When retrieves may run; empty means always.
    #[serde(default)]
    pub retrieve_windows: Vec<RetrieveWindow>,
    /// Send IssuerOfPatientID with the PatientID in C-FINDs (archives holding several
    /// patient-ID domains); off by default because many archives match it literally.
    #[serde(default)]
    pub query_issuer: bool,
    /// The assigning authority this archive files patients under: the planner queries it
    /// with the exam's identifier of that issuer, and skips it (saying so in the plan)
    /// when the exam has none. Unset: the exam's preferred (first) identifier.
    #[serde(default)]
    pub patient_id_issuer: Option<String>,
    /// DICOM TLS to the archive (DIMSE), or the CA and client certificate for HTTPS
    /// (DICOMweb).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum WebAuth {
    #[default]
    None,
    Basic {
        user: String,
        password: Secret,
    },
    Bearer {
        token: Secret,
    },
}

fn default_priority() -> i32 {
    1
}
fn default_protocol() -> Protocol {
    Protocol::Dimse
}
fn default_retrieve() -> RetrieveMethod {
    RetrieveMethod::Move
}
fn default_max_associations() -> u32 {
    2
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrieveWindow {
    /// Cron expression with seconds (`"0 0 19 * * *"`): when the window opens.
    pub start: String,
    #[serde(with = "crate::duration")]
    pub duration: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    /// DIMSE address; with `protocol = "dicomweb"` the AE title only names the destination
    /// in job rows (optional).
    #[serde(default)]
    pub ae_title: String,
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub port: u32,
    /// C-FIND (or QIDO-RS) the destination first and skip priors already complete there.
    #[serde(default)]
    pub check_existing: bool,
    /// `dimse` (C-STORE) or `dicomweb` (STOW-RS to `base_url`).
    #[serde(default = "default_protocol")]
    pub protocol: Protocol,
    #[serde(default)]
    pub base_url: Option<String>,
    #[serde(default)]
    pub auth: WebAuth,
    /// DICOM TLS to the destination (C-STORE relay, C-FIND check), or HTTPS settings.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

impl DestinationConfig {
    /// How job rows name this destination (part of their unique key).
    pub fn name(&self) -> &str {
        match (self.protocol, self.ae_title.trim().is_empty(), &self.base_url) {
            (Protocol::Dicomweb, true, Some(url)) => url,
            _ => &self.ae_title,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrefetchConfig {
    /// Retrieves start at `scheduled_at - lead_time`; STAT exams at once.
    #[serde(with = "crate::duration")]
    pub lead_time: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    pub max_attempts: u32,
    pub backoff: BackoffConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackoffConfig {
    #[serde(with = "crate::duration")]
    pub initial: Duration,
    pub factor: f64,
    #[serde(with = "crate::duration")]
    pub max: Duration,
    /// Fraction of the delay added or removed at random (0.1 = +-10%).
    pub jitter: f64,
}

/// The mover (an extension of the contract).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoverConfig {
    /// Retrieves one process runs at once; each archive's `max_associations` still caps
    /// them across all replicas.
    pub workers: u32,
    /// C-GET spool: received instances wait here until the destination confirmed them.
    pub spool_dir: String,
    /// Receiving pauses while the whole spool (all running C-GETs of the process) holds
    /// more than this many megabytes.
    pub spool_limit_mb: u64,
    /// How long the spool folder of a job that ended failed or cancelled is kept (for
    /// debugging; it holds PHI). `0s`: deleted at once.
    #[serde(with = "crate::duration")]
    pub spool_retention: Duration,
    /// How often a running retrieve persists its counts and extends its lease.
    #[serde(with = "crate::duration")]
    pub progress_interval: Duration,
    /// Longest wait for any single DIMSE response (pending ones included).
    #[serde(with = "crate::duration")]
    pub dimse_timeout: Duration,
    /// An attempt during which no instance completed, failed or was relayed for this long
    /// is cancelled and retried: whatever hangs (archive, destination, our relay) holds
    /// the job's slot no longer. At least `dimse_timeout`.
    #[serde(with = "crate::duration")]
    pub stall_timeout: Duration,
    /// A study of at least this many instances is retrieved over several associations
    /// at once (by series, or IMAGE-level batches of SOP Instance UIDs), when the archive's
    /// `max_associations` has free slots beyond the job's own. 0: never split.
    pub split_threshold: u32,
    /// At most this many associations for one split retrieve (the job's own included);
    /// each one beyond the first takes a free slot of the archive's `max_associations`,
    /// so the cap still holds across replicas. 1: never split.
    pub split_associations: u32,
}

/// Job-queue housekeeping (an extension of the contract).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// How long a claim holds a job before the rescuer may hand it to another worker;
    /// running workers extend it.
    #[serde(with = "crate::duration")]
    pub lease: Duration,
    /// Cron (with seconds) for the rescuer of expired leases and dead workers.
    pub rescue_schedule: String,
    /// This process's name in its claims (`NAME/mover`, `NAME/planner`); empty: the
    /// host name. Two processes of one role on one host need distinct names.
    pub instance: String,
    /// How often a worker process beats its heartbeat.
    #[serde(with = "crate::duration")]
    pub heartbeat: Duration,
    /// A worker whose last heartbeat is older than this is dead: the rescuer hands its
    /// claims back.
    #[serde(with = "crate::duration")]
    pub dead_after: Duration,
    /// Cron (with seconds) for the retention purge.
    pub purge_schedule: String,
    /// Finished jobs, exams and dead letters older than this are purged.
    #[serde(with = "crate::duration")]
    pub retention: Duration,
    /// Order of claims within the archive caps: `deadline` (priority, then nearest
    /// deadline; boosts and failovers below) or `fifo` (oldest job first, nothing else;
    /// a baseline for comparison).
    pub dispatch: Dispatch,
    /// `deadline` dispatch: a job whose exam is due within this is boosted to the top
    /// priority class, whatever the exam's priority.
    #[serde(with = "crate::duration")]
    pub boost_within: Duration,
    /// `deadline` dispatch: a job whose exam is due within this and that waits on an
    /// archive with no free slot, or fails there, moves to another archive holding the
    /// same study (next in archive preference). Zero: never.
    #[serde(with = "crate::duration")]
    pub failover_within: Duration,
}

/// How the mover picks the next jobs (see [`QueueConfig::dispatch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dispatch {
    #[default]
    Deadline,
    Fifo,
}

impl Dispatch {
    pub fn as_str(self) -> &'static str {
        match self {
            Dispatch::Deadline => "deadline",
            Dispatch::Fifo => "fifo",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Logging; OTLP export is switched on by the standard `OTEL_EXPORTER_OTLP_ENDPOINT`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    pub log_format: LogFormat,
    /// Default filter when `RUST_LOG` is unset.
    pub log_level: String,
    pub service_name: String,
}

/// The planner: exams -> C-FIND fan-out -> priors + retrieve jobs (an extension of the contract).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlannerConfig {
    /// Exams planned at once by one process.
    pub concurrency: u32,
    /// Bound on one whole C-FIND (all its matches); a slower archive counts as unreachable.
    #[serde(with = "crate::duration")]
    pub cfind_timeout: Duration,
    /// Pooled idle query associations are released after this: archives have few
    /// association threads (Orthanc: 4) and idle held ones starve other clients.
    #[serde(with = "crate::duration")]
    pub association_idle: Duration,
    /// Re-planning of exams an archive was unreachable for: backoff between attempts.
    pub replan_backoff: BackoffConfig,
    /// Re-plans after which the gap is left as it is (still visible in the exam's plan).
    pub max_replans: u32,
}

/// Addresses as the DIMSE code needs them, from the validated text. Services build them
/// once at start; an error here means the config was not validated (a test's own).
impl ServiceConfig {
    pub fn calling_ae(&self) -> Result<AeTitle, String> {
        AeTitle::parse(&self.ae_title).map_err(|e| format!("service.ae_title: {e}"))
    }
}

impl ArchiveConfig {
    pub fn peer(&self) -> Result<Peer, String> {
        peer_of(&format!("archive '{}'", self.name), &self.ae_title, &self.host, self.port)
    }
}

impl DestinationConfig {
    pub fn peer(&self) -> Result<Peer, String> {
        peer_of("destination", &self.ae_title, &self.host, self.port)
    }
}

/// A DIMSE address from its config fields; errors start with `who`.
pub(crate) fn peer_of(who: &str, ae_title: &str, host: &str, port: u32) -> Result<Peer, String> {
    let port = u16::try_from(port).map_err(|_| format!("{who}: port {port} is not 1..=65535"))?;
    Peer::new(ae_title, host, port).map_err(|e| format!("{who}: {e}"))
}
