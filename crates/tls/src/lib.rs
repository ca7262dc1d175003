//! DICOM TLS for priorfetch, on rustls with the ring provider:
//! - `profile.rs`: the PS3.15 BCP 195 profiles as protocol versions and cipher suites;
//! - `files.rs`: PEM certificates, keys and CA bundles from files;
//! - `client.rs` / `server.rs`: configurations for our associations and our SCPs,
//!   rebuilt when their files change (certificate rotation without a restart);
//! - `metrics.rs`: `priorfetch_tls_cert_expiry_seconds`, from the certificates in use;
//! - `problem.rs`: a failed handshake as a typed problem with a one-line fix.

pub mod client;
mod files;
pub mod metrics;
pub mod problem;
mod profile;
mod reload;
pub mod server;

pub use client::{ClientTls, for_archive, for_destination};
pub use priorfetch_config::{ServerTlsConfig, TlsConfig, TlsProfile};
pub use problem::{TlsProblem, diagnose};
pub use server::ServerTls;

/// A TLS setting that cannot be used: a missing file, a PEM without a certificate, a key
/// that does not match. Names the file, never its content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {reason}")]
pub struct TlsSetupError {
    pub what: String,
    pub reason: String,
}

impl TlsSetupError {
    pub(crate) fn new(what: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        TlsSetupError { what: what.into(), reason: reason.to_string() }
    }
}
