//! `--tls*` flags shared by the DICOM commands: towards a peer (`echo`, `find`,
//! `retrieve`, `doctor`) they override the archive's configured `tls` block; on our SCPs
//! (`store-scp`, `sim`) they override `[service.tls]`.

use super::dicom::usage;
use crate::Failure;
use clap::Args;
use priorfetch_config::{ServerTlsConfig, TlsConfig};
use priorfetch_tls::{ClientTls, ServerTls};
use std::path::PathBuf;

#[derive(Args, Clone, Default)]
pub struct ClientTlsArgs {
    /// DICOM TLS, trusting the system's CAs unless --tls-ca is given.
    #[arg(long)]
    tls: bool,
    /// PEM file of the CAs that sign the peer's certificate (implies --tls).
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// PEM certificate for mutual TLS (with --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for mutual TLS (with --tls-cert).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The name the peer's certificate must carry (default: the host).
    #[arg(long)]
    tls_server_name: Option<String>,
}

impl ClientTlsArgs {
    fn given(&self) -> bool {
        self.tls || self.tls_ca.is_some() || self.tls_cert.is_some() || self.tls_server_name.is_some()
    }

    /// The TLS settings: the flags when given (on top of the configured block), else the
    /// configured block, else none.
    pub fn settings(&self, configured: Option<&TlsConfig>) -> Option<TlsConfig> {
        if !self.given() {
            return configured.cloned();
        }
        let base = configured.cloned().unwrap_or_default();
        Some(TlsConfig {
            ca: self.tls_ca.clone().or(base.ca),
            cert: self.tls_cert.clone().or(base.cert),
            key: self.tls_key.clone().or(base.key),
            server_name: self.tls_server_name.clone().or(base.server_name),
            profile: base.profile,
        })
    }

    /// The TLS to use towards `host` (see [`ClientTlsArgs::settings`]).
    pub fn client(&self, configured: Option<&TlsConfig>, host: &str) -> Result<Option<ClientTls>, Failure> {
        self.settings(configured)
            .map(|s| ClientTls::load(&s, "cli", host).map_err(|e| usage(format!("--tls: {e}"))))
            .transpose()
    }
}

#[derive(Args, Clone, Default)]
pub struct ServerTlsArgs {
    /// PEM certificate our SCP presents (with --tls-key): DICOM TLS on every association.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// PEM file of the CAs whose client certificates are accepted.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// Refuse peers without a client certificate signed by --tls-ca.
    #[arg(long, requires = "tls_ca")]
    tls_require_client_cert: bool,
}

impl ServerTlsArgs {
    /// The flags when given, else `[service.tls]`, else none.
    pub fn server(&self, configured: Option<&ServerTlsConfig>, who: &str) -> Result<Option<ServerTls>, Failure> {
        let settings = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(ServerTlsConfig {
                cert: cert.clone(),
                key: key.clone(),
                ca: self.tls_ca.clone(),
                require_client_cert: self.tls_require_client_cert,
                profile: Default::default(),
            }),
            _ => configured.cloned(),
        };
        settings.map(|s| ServerTls::load(&s, who).map_err(|e| usage(format!("--tls: {e}")))).transpose()
    }
}
