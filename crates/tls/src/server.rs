//! TLS on our SCPs: the certificate we present and, for mutual TLS, the CAs whose client
//! certificates we accept.

use crate::reload::Reloading;
use crate::{TlsSetupError, files, metrics as expiry, profile};
use priorfetch_config::ServerTlsConfig;
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use std::sync::Arc;

#[derive(Clone)]
pub struct ServerTls {
    config: Arc<Reloading<ServerConfig>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

impl ServerTls {
    pub fn load(settings: &ServerTlsConfig, who: &str) -> Result<ServerTls, TlsSetupError> {
        let files: Vec<_> =
            [Some(&settings.cert), Some(&settings.key), settings.ca.as_ref()].into_iter().flatten().cloned().collect();
        let (settings_owned, who_owned) = (settings.clone(), who.to_string());
        let build = Box::new(move || build(&settings_owned, &who_owned));
        Ok(ServerTls { config: Arc::new(Reloading::new(format!("{who} (server)"), files, build)?) })
    }

    /// The configuration for the next connection.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.config.current()
    }
}

fn build(settings: &ServerTlsConfig, who: &str) -> Result<ServerConfig, TlsSetupError> {
    let provider = profile::provider(settings.profile);
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(profile::versions(settings.profile))
        .map_err(|e| TlsSetupError::new("TLS profile", e))?;
    let builder = match &settings.ca {
        Some(ca) => {
            let roots = Arc::new(files::roots(Some(ca))?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider);
            let verifier = if settings.require_client_cert { verifier } else { verifier.allow_unauthenticated() };
            builder.with_client_cert_verifier(
                verifier.build().map_err(|e| TlsSetupError::new(format!("CA file {}", ca.display()), e))?,
            )
        }
        None => builder.with_no_client_auth(),
    };
    let chain = files::certificates(&settings.cert)?;
    let leaf = chain.first().cloned();
    let config = builder
        .with_single_cert(chain, files::private_key(&settings.key)?)
        .map_err(|e| TlsSetupError::new(format!("key file {}", settings.key.display()), e))?;
    // only a configuration that will be used sets the metric
    expiry::observe(who, "server", leaf.as_slice());
    Ok(config)
}
