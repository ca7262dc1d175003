//! How the mover reaches its peers: our calling AE and timeouts, each archive's address
//! and the destination's, built once from the config when the mover starts.

use priorfetch_config::{Config, Protocol};
use priorfetch_dicomweb::{ClientOptions, DicomWebClient};
use priorfetch_dimse::{DimseError, Peer, ScuOptions};
use std::collections::HashMap;

/// Built once; an entry that did not parse fails the jobs that need it with the reason.
pub(crate) struct Peers {
    options: Result<ScuOptions, String>,
    archives: HashMap<String, Result<Peer, String>>,
    /// Each DIMSE archive's TLS (None: plain TCP); a TLS block that cannot be used fails
    /// that archive's jobs with the reason.
    tls: HashMap<String, Result<Option<priorfetch_tls::ClientTls>, String>>,
    /// The destination as the relay reaches it (C-STORE or STOW-RS).
    relay_to: Result<priorfetch_relay::Destination, String>,
    /// DICOMweb archives' clients (connection reuse across jobs).
    web: HashMap<String, Result<DicomWebClient, String>>,
}

impl Peers {
    pub(crate) fn new(config: &Config) -> Peers {
        let options = config.service.calling_ae().map(|ae| {
            let mut options = ScuOptions::new(ae);
            options.dimse_timeout = config.mover.dimse_timeout;
            options
        });
        let archives = config.archives.iter().map(|a| (a.name.clone(), a.peer())).collect();
        let tls = config
            .archives
            .iter()
            .filter(|a| a.protocol == Protocol::Dimse)
            .map(|a| (a.name.clone(), priorfetch_tls::for_archive(a).map_err(|e| e.to_string())))
            .collect();
        let web = config
            .archives
            .iter()
            .filter(|a| a.protocol == Protocol::Dicomweb)
            .map(|a| {
                let options = ClientOptions { read_timeout: config.mover.dimse_timeout, ..Default::default() };
                (a.name.clone(), DicomWebClient::for_archive(a, &options).map_err(|e| e.to_string()))
            })
            .collect();
        let d = &config.destination;
        let relay_to = match d.protocol {
            Protocol::Dimse => match (d.peer(), &options, priorfetch_tls::for_destination(d)) {
                (Ok(peer), Ok(options), Ok(tls)) => {
                    let options = ScuOptions { tls, ..options.clone() };
                    Ok(priorfetch_relay::Destination::Dimse { peer, options })
                }
                (Err(e), _, _) => Err(e),
                (_, Err(e), _) => Err(e.clone()),
                (_, _, Err(e)) => Err(e.to_string()),
            },
            Protocol::Dicomweb => {
                let options = ClientOptions { read_timeout: config.mover.dimse_timeout, ..Default::default() };
                DicomWebClient::for_destination(d, &options)
                    .map(priorfetch_relay::Destination::Web)
                    .map_err(|e| format!("destination: {e}"))
            }
        };
        Peers { options, archives, tls, relay_to, web }
    }

    /// Our association options towards a DIMSE archive (its TLS included).
    pub(crate) fn scu_options(&self, archive: &str) -> Result<ScuOptions, DimseError> {
        let options = self.options.clone().map_err(DimseError::Encode)?;
        let tls = match self.tls.get(archive) {
            Some(tls) => tls.clone().map_err(DimseError::Encode)?,
            None => None,
        };
        Ok(ScuOptions { tls, ..options })
    }

    pub(crate) fn archive(&self, name: &str) -> Result<Peer, DimseError> {
        match self.archives.get(name) {
            Some(peer) => peer.clone().map_err(DimseError::Encode),
            None => Err(DimseError::Encode(format!("archive '{name}' is not configured"))),
        }
    }

    pub(crate) fn web(&self, name: &str) -> Result<DicomWebClient, DimseError> {
        match self.web.get(name) {
            Some(client) => client.clone().map_err(DimseError::Encode),
            None => Err(DimseError::Encode(format!("archive '{name}' is not a configured DICOMweb archive"))),
        }
    }

    pub(crate) fn relay_destination(&self) -> Result<priorfetch_relay::Destination, DimseError> {
        self.relay_to.clone().map_err(DimseError::Encode)
    }
}
