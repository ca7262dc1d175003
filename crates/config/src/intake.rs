//! Intake settings beyond the bus sources: the list of sources that run at once, the
//! HL7 MLLP listener (`[intake.mllp]`) and Modality Worklist polling (`[intake.worklist]`).

use crate::model::IntakeSource;
use crate::tls::{ServerTlsConfig, TlsConfig};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `source = "rabbitmq"` or `source = ["rabbitmq", "mllp"]`: the sources that run at once.
/// The HTTP intake (`POST /api/events`) is served by the admin server whatever this says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntakeSources(pub Vec<IntakeSource>);

impl IntakeSources {
    pub fn contains(&self, source: IntakeSource) -> bool {
        self.0.contains(&source)
    }

    pub fn iter(&self) -> impl Iterator<Item = IntakeSource> + '_ {
        self.0.iter().copied()
    }
}

impl From<IntakeSource> for IntakeSources {
    fn from(source: IntakeSource) -> Self {
        IntakeSources(vec![source])
    }
}

impl Serialize for IntakeSources {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => one.serialize(serializer),
            many => many.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for IntakeSources {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(IntakeSource),
            Many(Vec<IntakeSource>),
        }
        match OneOrMany::deserialize(deserializer) {
            Ok(OneOrMany::One(one)) => Ok(IntakeSources(vec![one])),
            Ok(OneOrMany::Many(many)) => Ok(IntakeSources(many)),
            Err(_) => Err(serde::de::Error::custom(
                "expected one of http, rabbitmq, kafka, mllp, worklist, or a list of them",
            )),
        }
    }
}

/// The HL7 v2 MLLP listener: one message at a time per connection, each committed to the
/// database before its ACK is written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MllpConfig {
    /// Address to listen on, e.g. `0.0.0.0:2575`.
    #[serde(default = "default_mllp_listen")]
    pub listen: String,
    /// Concurrent connections; those above it are closed at once.
    #[serde(default = "default_mllp_max_connections")]
    pub max_connections: u32,
    /// Largest message in bytes (framing excluded); a larger one is refused with AE and
    /// the connection closed (its end cannot be trusted).
    #[serde(default = "default_mllp_max_message")]
    pub max_message: usize,
    /// A connection silent this long between messages is closed.
    #[serde(with = "crate::duration", default = "default_mllp_idle")]
    pub idle_timeout: Duration,
    /// Longest time one message may take to arrive once it started.
    #[serde(with = "crate::duration", default = "default_mllp_read")]
    pub read_timeout: Duration,
    /// TLS on the listener (MLLP over TLS); `require_client_cert` for mutual TLS.
    #[serde(default)]
    pub tls: Option<ServerTlsConfig>,
}

impl Default for MllpConfig {
    fn default() -> Self {
        MllpConfig {
            listen: default_mllp_listen(),
            max_connections: default_mllp_max_connections(),
            max_message: default_mllp_max_message(),
            idle_timeout: default_mllp_idle(),
            read_timeout: default_mllp_read(),
            tls: None,
        }
    }
}

fn default_mllp_listen() -> String {
    "0.0.0.0:2575".into()
}
fn default_mllp_max_connections() -> u32 {
    64
}
fn default_mllp_max_message() -> usize {
    1024 * 1024
}
fn default_mllp_idle() -> Duration {
    Duration::from_secs(300)
}
fn default_mllp_read() -> Duration {
    Duration::from_secs(30)
}

/// Modality Worklist polling: a C-FIND on the MWL information model on a schedule; every
/// Scheduled Procedure Step within the look-ahead becomes an exam.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorklistConfig {
    /// Names this worklist in exam keys (`mwl:<name>:...`) and metrics.
    #[serde(default = "default_worklist_name")]
    pub name: String,
    /// The MWL SCP.
    #[serde(default)]
    pub ae_title: String,
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub port: u32,
    /// Cron with seconds: when to poll.
    #[serde(default = "default_worklist_schedule")]
    pub schedule: String,
    /// Steps scheduled from now to now + this are asked for.
    #[serde(with = "crate::duration", default = "default_look_ahead")]
    pub look_ahead: Duration,
    /// Scheduled Station AE Titles to ask for (one query each); empty: any.
    #[serde(default)]
    pub station_ae: Vec<String>,
    /// Modalities to ask for (one query each); empty: any.
    #[serde(default)]
    pub modalities: Vec<String>,
    /// Longest a whole poll may take.
    #[serde(with = "crate::duration", default = "default_worklist_timeout")]
    pub timeout: Duration,
    /// DICOM TLS to the MWL SCP.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

impl Default for WorklistConfig {
    fn default() -> Self {
        WorklistConfig {
            name: default_worklist_name(),
            ae_title: String::new(),
            host: String::new(),
            port: 0,
            schedule: default_worklist_schedule(),
            look_ahead: default_look_ahead(),
            station_ae: Vec::new(),
            modalities: Vec::new(),
            timeout: default_worklist_timeout(),
            tls: None,
        }
    }
}

impl WorklistConfig {
    pub fn peer(&self) -> Result<crate::Peer, String> {
        crate::model::peer_of("intake.worklist", &self.ae_title, &self.host, self.port)
    }
}

fn default_worklist_name() -> String {
    "worklist".into()
}
fn default_worklist_schedule() -> String {
    "0 */5 * * * *".into()
}
fn default_look_ahead() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_worklist_timeout() -> Duration {
    Duration::from_secs(60)
}

/// Fills an exam's missing modality or body part from its procedure code
/// (`[[procedure_map]]`): an ORM without a modality can still match rules that need one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcedureMapping {
    /// Procedure codes (OBR-4.1, JSON `procedure.code`, worklist Requested Procedure
    /// Code), compared without regard to case.
    pub codes: Vec<String>,
    #[serde(default)]
    pub modality: Option<String>,
    #[serde(default)]
    pub body_part: Option<String>,
}

/// Checks of the intake sources, MLLP, worklist and procedure map: `(key, message)`.
pub(crate) fn check(config: &crate::Config) -> Vec<(String, String)> {
    let mut issues = Vec::new();
    let intake = &config.intake;
    if intake.source.0.is_empty() {
        issues.push(("intake.source".into(), "name at least one source".into()));
    }
    let mut seen = Vec::new();
    for s in intake.source.iter() {
        if seen.contains(&s) {
            issues.push(("intake.source".into(), format!("{} is listed twice", s.as_str())));
        }
        seen.push(s);
    }
    if intake.source.contains(IntakeSource::Mllp) {
        let m = &intake.mllp;
        if m.listen.parse::<std::net::SocketAddr>().is_err() {
            issues
                .push(("intake.mllp.listen".into(), "must be host:port with an IP address, e.g. 0.0.0.0:2575".into()));
        }
        if m.max_connections == 0 {
            issues.push(("intake.mllp.max_connections".into(), "must be at least 1".into()));
        }
        if m.max_message < 1024 {
            issues.push(("intake.mllp.max_message".into(), "must be at least 1024 bytes".into()));
        }
        for (field, message) in m.tls.as_ref().map(crate::tls::check_server).unwrap_or_default() {
            issues.push((format!("intake.mllp.tls.{field}"), message));
        }
    }
    if intake.source.contains(IntakeSource::Worklist) {
        let w = &intake.worklist;
        let key = |field: &str| format!("intake.worklist.{field}");
        if w.name.trim().is_empty() || w.name.contains(':') {
            issues.push((key("name"), "must be non-empty and without ':'".into()));
        }
        if let Err(why) = crate::validate::check_ae_title(&w.ae_title) {
            issues.push((key("ae_title"), why));
        }
        if w.host.trim().is_empty() {
            issues.push((key("host"), "must not be empty".into()));
        }
        if !(1..=65535).contains(&w.port) {
            issues.push((key("port"), "must be 1..=65535".into()));
        }
        if let Err(e) = <cron::Schedule as std::str::FromStr>::from_str(&w.schedule) {
            issues.push((key("schedule"), format!("bad cron expression: {e}")));
        }
        if w.look_ahead.is_zero() {
            issues.push((key("look_ahead"), "must be positive".into()));
        }
        for (i, ae) in w.station_ae.iter().enumerate() {
            if let Err(why) = crate::validate::check_ae_title(ae) {
                issues.push((format!("intake.worklist.station_ae[{i}]"), why));
            }
        }
        for (field, message) in w.tls.as_ref().map(crate::tls::check_client).unwrap_or_default() {
            issues.push((key(&format!("tls.{field}")), message));
        }
    }
    if let Some(tls) = &intake.rabbitmq.tls {
        let key = |field: &str| format!("intake.rabbitmq.tls.{field}");
        for (field, message) in crate::tls::check_client(tls) {
            issues.push((key(field), message));
        }
        if tls.server_name.is_some() {
            issues.push((key("server_name"), "not used for AMQP: the URL's host is verified".into()));
        }
        if tls.profile != crate::tls::TlsProfile::default() {
            issues.push((key("profile"), "not used for AMQP (TLS 1.2 or 1.3 with rustls' suites)".into()));
        }
        if !intake.rabbitmq.url.starts_with("amqps://") {
            issues.push((key("ca"), "set, but intake.rabbitmq.url is not amqps://".into()));
        }
    }
    issues.extend(check_kafka(&intake.kafka));
    for (i, m) in config.procedure_map.iter().enumerate() {
        if m.codes.iter().all(|c| c.trim().is_empty()) {
            issues.push((format!("procedure_map[{i}].codes"), "name at least one procedure code".into()));
        }
        if m.modality.is_none() && m.body_part.is_none() {
            issues.push((format!("procedure_map[{i}]"), "set modality, body_part or both".into()));
        }
    }
    issues
}

fn check_kafka(kafka: &crate::KafkaConfig) -> Vec<(String, String)> {
    let mut issues = Vec::new();
    let key = |field: &str| format!("intake.kafka.{field}");
    let protocol = kafka.security_protocol;
    if protocol.uses_sasl() {
        match kafka.sasl_mechanism.as_deref() {
            Some("PLAIN" | "SCRAM-SHA-256" | "SCRAM-SHA-512") => {}
            Some(other) => {
                issues.push((key("sasl_mechanism"), format!("'{other}' is not PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")))
            }
            None => issues
                .push((key("sasl_mechanism"), format!("required with security_protocol = \"{}\"", protocol.as_str()))),
        }
        if kafka.username.as_deref().is_none_or(|u| u.is_empty()) {
            issues.push((key("username"), format!("required with security_protocol = \"{}\"", protocol.as_str())));
        }
    }
    if let Some(tls) = &kafka.tls {
        if !protocol.uses_tls() {
            issues.push((key("tls"), "set, but security_protocol is not ssl or sasl_ssl".into()));
        }
        for (field, message) in crate::tls::check_client(tls) {
            issues.push((key(&format!("tls.{field}")), message));
        }
        if tls.server_name.is_some() || tls.profile != crate::tls::TlsProfile::default() {
            issues
                .push((key("tls"), "server_name and profile do not apply to Kafka (broker names are verified)".into()));
        }
    }
    issues
}
