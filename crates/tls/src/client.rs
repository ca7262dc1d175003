//! TLS for associations we open: to archives and to the destination.

use crate::reload::Reloading;
use crate::{TlsSetupError, files, metrics as expiry, profile};
use priorfetch_config::TlsConfig;
use rustls::ClientConfig;
use std::sync::Arc;

/// The TLS side of one peer: its configuration (reloaded when the files change) and the
/// name its certificate must carry.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<Reloading<ClientConfig>>,
    pub server_name: String,
    /// Whether we present a client certificate (mutual TLS).
    pub sends_client_cert: bool,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls").field("server_name", &self.server_name).finish_non_exhaustive()
    }
}

impl ClientTls {
    /// `who` names the peer in logs and in the expiry metric (`archive:pacs`);
    /// `host` is the default server name.
    pub fn load(settings: &TlsConfig, who: &str, host: &str) -> Result<ClientTls, TlsSetupError> {
        let files: Vec<_> = [&settings.ca, &settings.cert, &settings.key].into_iter().flatten().cloned().collect();
        let (settings_owned, who_owned) = (settings.clone(), who.to_string());
        let build = Box::new(move || build(&settings_owned, &who_owned));
        let config = Reloading::new(format!("{who} (client)"), files, build)?;
        let server_name = settings.server_name.clone().unwrap_or_else(|| host.to_string());
        rustls::pki_types::ServerName::try_from(server_name.clone())
            .map_err(|e| TlsSetupError::new(format!("server name '{server_name}'"), e))?;
        let sends_client_cert = settings.cert.is_some();
        Ok(ClientTls { config: Arc::new(config), server_name, sends_client_cert })
    }

    /// The configuration to connect with now.
    pub fn config(&self) -> Arc<ClientConfig> {
        self.config.current()
    }
}

fn build(settings: &TlsConfig, who: &str) -> Result<ClientConfig, TlsSetupError> {
    let builder = ClientConfig::builder_with_provider(profile::provider(settings.profile))
        .with_protocol_versions(profile::versions(settings.profile))
        .map_err(|e| TlsSetupError::new("TLS profile", e))?
        .with_root_certificates(files::roots(settings.ca.as_deref())?);
    match (&settings.cert, &settings.key) {
        (Some(cert), Some(key)) => {
            let chain = files::certificates(cert)?;
            let leaf = chain.first().cloned();
            let config = builder
                .with_client_auth_cert(chain, files::private_key(key)?)
                .map_err(|e| TlsSetupError::new(format!("key file {}", key.display()), e))?;
            // only a configuration that will be used sets the metric
            expiry::observe(who, "client", leaf.as_slice());
            Ok(config)
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// The TLS of `archives[i]`, if it has a `tls` block (DIMSE archives). An error names the
/// archive's block.
pub fn for_archive(archive: &priorfetch_config::ArchiveConfig) -> Result<Option<ClientTls>, TlsSetupError> {
    let key = || format!("archive '{}': tls", archive.name);
    archive
        .tls
        .as_ref()
        .map(|t| ClientTls::load(t, &format!("archive:{}", archive.name), &archive.host))
        .transpose()
        .map_err(|e| TlsSetupError::new(format!("{}: {}", key(), e.what), e.reason))
}

/// The TLS of the destination, if it has a `tls` block. An error names `destination.tls`.
pub fn for_destination(destination: &priorfetch_config::DestinationConfig) -> Result<Option<ClientTls>, TlsSetupError> {
    destination
        .tls
        .as_ref()
        .map(|t| ClientTls::load(t, "destination", &destination.host))
        .transpose()
        .map_err(|e| TlsSetupError::new(format!("destination.tls: {}", e.what), e.reason))
}
