//! What to diagnose: a configured archive, the destination, or an ad-hoc `AET@host:port`,
//! plus the settings the checks compare against.

use priorfetch_config::{ArchiveConfig, DestinationConfig, Protocol, RetrieveMethod};
use priorfetch_dimse::{AeTitle, Peer};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum DoctorError {
    /// A setting the doctor needs is unusable (validation normally catches it first).
    #[error("{key}: {message}")]
    InvalidTarget { key: String, message: String },
}

#[derive(Debug, Clone)]
pub enum Role {
    Archive {
        protocol: Protocol,
        retrieve: RetrieveMethod,
        move_destination: Option<AeTitle>,
        max_matches: Option<u32>,
    },
    Destination {
        check_existing: bool,
    },
}

#[derive(Debug, Clone)]
pub struct Target {
    /// Printed in every finding: the archive name, `destination`, or `AET@host:port`.
    pub name: String,
    /// Config key prefix the fixes name: `archives[0]`, `destination`, `archives[]` (ad hoc).
    pub key: String,
    pub peer: Peer,
    pub role: Role,
    /// The peer's `tls` block (DICOM TLS), if any.
    pub tls: Option<priorfetch_config::TlsConfig>,
}

impl Target {
    pub fn archive(index: usize, archive: &ArchiveConfig) -> Result<Target, DoctorError> {
        let key = format!("archives[{index}]");
        let invalid =
            |field: &str, message: String| DoctorError::InvalidTarget { key: format!("{key}.{field}"), message };
        let port = u16::try_from(archive.port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| invalid("port", "must be 1..=65535".into()))?;
        let peer = Peer::new(&archive.ae_title, &archive.host, port).map_err(|e| invalid("ae_title", e))?;
        let move_destination = match &archive.move_destination {
            Some(ae) => Some(AeTitle::parse(ae).map_err(|e| invalid("move_destination", e))?),
            None => None,
        };
        Ok(Target {
            name: archive.name.clone(),
            key,
            peer,
            role: Role::Archive {
                protocol: archive.protocol,
                retrieve: archive.retrieve,
                move_destination,
                max_matches: archive.max_matches,
            },
            tls: archive.tls.clone(),
        })
    }

    /// An `AET@host:port` peer given on the command line, checked as a C-MOVE archive.
    pub fn ad_hoc(peer: Peer, move_destination: Option<AeTitle>) -> Target {
        Target {
            name: peer.to_string(),
            key: "archives[]".into(),
            peer,
            role: Role::Archive {
                protocol: Protocol::Dimse,
                retrieve: RetrieveMethod::Move,
                move_destination,
                max_matches: None,
            },
            tls: None,
        }
    }

    pub fn destination(dest: &DestinationConfig) -> Result<Target, DoctorError> {
        let invalid =
            |field: &str, message: String| DoctorError::InvalidTarget { key: format!("destination.{field}"), message };
        let port = u16::try_from(dest.port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| invalid("port", "must be 1..=65535".into()))?;
        let peer = Peer::new(&dest.ae_title, &dest.host, port).map_err(|e| invalid("ae_title", e))?;
        Ok(Target {
            name: "destination".into(),
            key: "destination".into(),
            peer,
            role: Role::Destination { check_existing: dest.check_existing },
            tls: dest.tls.clone(),
        })
    }
}

/// How the doctor talks to peers.
#[derive(Debug, Clone)]
pub struct DoctorContext {
    /// Our calling AE (`service.ae_title`).
    pub calling_ae: AeTitle,
    /// DNS and TCP connect, each.
    pub connect_timeout: Duration,
    /// Waiting for A-ASSOCIATE-AC/RJ once TCP is up: a port that accepts TCP but never
    /// speaks DICOM shows up here.
    pub association_timeout: Duration,
    /// Longest silence between two DIMSE messages.
    pub dimse_timeout: Duration,
    /// The broad match-cap C-FIND sends C-CANCEL after this many matches.
    pub cap_probe_limit: usize,
    /// Verify the move destination by moving ONE instance of a study the archive holds to
    /// it. Off by default: it writes to the destination. Without it, archives that look up
    /// the study before the destination (Orthanc, dcmqrscp) leave the check inconclusive.
    pub move_probe: bool,
}

impl DoctorContext {
    pub fn new(calling_ae: AeTitle) -> DoctorContext {
        DoctorContext {
            calling_ae,
            connect_timeout: Duration::from_secs(5),
            association_timeout: Duration::from_secs(10),
            dimse_timeout: Duration::from_secs(30),
            cap_probe_limit: 5000,
            move_probe: false,
        }
    }
}
