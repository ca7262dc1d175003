//! TLS settings: `archives[].tls` and `destination.tls` (we connect), `[service.tls]`
//! (peers connect to our SCPs). Files only: keys are mounted (Kubernetes secrets), never
//! inlined, so they never appear in a printed configuration.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The DICOM TLS profiles of PS3.15 Annex B (BCP 195).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum TlsProfile {
    /// BCP 195 TLS Secure Transport Connection Profile: TLS 1.2 or 1.3.
    #[default]
    #[serde(rename = "bcp195")]
    Bcp195,
    /// Non-Downgrading BCP 195: TLS 1.2 or 1.3, never lower (rustls never goes lower).
    #[serde(rename = "bcp195-nd")]
    Bcp195Nd,
    /// Extended BCP 195: TLS 1.3, or TLS 1.2 with ECDHE and AES-256-GCM or ChaCha20 only.
    #[serde(rename = "bcp195-extended")]
    Bcp195Extended,
}

/// TLS towards a peer (an archive, the destination).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of the CA certificates that sign the peer's certificate; none: the
    /// system's roots.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// PEM certificate chain and key for mutual TLS (both or neither).
    #[serde(default)]
    pub cert: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// The name the peer's certificate must carry; default: the peer's host.
    #[serde(default)]
    pub server_name: Option<String>,
    #[serde(default)]
    pub profile: TlsProfile,
}

/// TLS on our own SCPs (the C-STORE SCP; `priorfetch sim`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// PEM file of the CAs whose client certificates are accepted.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Refuse peers without a certificate signed by `ca`.
    #[serde(default)]
    pub require_client_cert: bool,
    #[serde(default)]
    pub profile: TlsProfile,
}

// Files are not opened here: a configuration is often checked where its secrets are not
// mounted (a rendered Helm chart). The services load them at start and `doctor` reports a
// file that cannot be used, naming the key.

/// Problems with one TLS block, as (field, message).
pub(crate) fn check_client(tls: &TlsConfig) -> Vec<(&'static str, String)> {
    let mut issues = Vec::new();
    if tls.cert.is_some() != tls.key.is_some() {
        issues.push(("cert", "cert and key go together (mutual TLS): set both or neither".to_string()));
    }
    if tls.server_name.as_deref().is_some_and(|n| n.trim().is_empty()) {
        issues.push(("server_name", "must not be empty when set".to_string()));
    }
    issues
}

pub(crate) fn check_server(tls: &ServerTlsConfig) -> Vec<(&'static str, String)> {
    let mut issues = Vec::new();
    if tls.require_client_cert && tls.ca.is_none() {
        issues.push(("ca", "require_client_cert needs ca: the CAs whose client certificates are accepted".into()));
    }
    issues
}
