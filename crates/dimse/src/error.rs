//! Failures, one variant per failing step, each classified retryable or permanent and
//! carrying a one-line hint that says what to fix.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum DimseError {
    #[error("no TCP path to {address}: {reason}")]
    Connect { address: String, reason: String },
    #[error("association with {peer} rejected: {reason}")]
    Rejected { peer: String, reason: String, permanent: bool, called_ae: String, calling_ae: String },
    #[error("{peer} accepted none of the proposed presentation contexts ({what})")]
    NoContext { peer: String, what: String },
    #[error("{peer} aborted the association{during}")]
    Aborted { peer: String, during: String },
    #[error("{peer} released the association in the middle of an operation")]
    Released { peer: String },
    #[error("timed out after {after:?} waiting for {what} from {peer}")]
    Timeout { peer: String, what: &'static str, after: Duration },
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("cannot encode: {0}")]
    Encode(String),
    #[error("{operation} failed with status 0x{status:04X} ({meaning}){comment}")]
    Status {
        operation: &'static str,
        status: u16,
        meaning: &'static str,
        comment: String,
        move_destination: Option<String>,
        peer: String,
    },
    #[error("network: {0}")]
    Io(String),
    /// The TLS handshake failed: permanent until someone fixes a certificate or a setting.
    #[error("TLS with {peer} failed: {problem}")]
    Tls { peer: String, problem: priorfetch_tls::TlsProblem },
    /// A failure of a step around the association (a DICOMweb leg, the spool) that carries
    /// its own classification and hint, so one judge decides every attempt.
    #[error("{message}")]
    Other { message: String, hint: String, retryable: bool, wait: Option<Duration> },
}

impl DimseError {
    /// Retrying later can help: the peer may come back, free resources, or was busy.
    pub fn is_retryable(&self) -> bool {
        match self {
            DimseError::Connect { .. } | DimseError::Timeout { .. } | DimseError::Aborted { .. } => true,
            DimseError::Released { .. } | DimseError::Io(_) => true,
            DimseError::Rejected { permanent, .. } => !permanent,
            DimseError::Status { status, .. } => matches!(status, 0xA700..=0xA7FF | 0xFE00),
            DimseError::NoContext { .. } | DimseError::Protocol(_) | DimseError::Encode(_) => false,
            DimseError::Tls { .. } => false,
            DimseError::Other { retryable, .. } => *retryable,
        }
    }

    /// One line an operator can act on.
    pub fn hint(&self) -> String {
        match self {
            DimseError::Connect { address, .. } => {
                format!("no TCP path to {address}: check the host and port, and that a firewall allows it")
            }
            DimseError::Rejected { reason, called_ae, calling_ae, peer, .. } => {
                if reason.contains("called") {
                    format!("{peer} does not answer to called AE '{called_ae}': check archives[].ae_title")
                } else if reason.contains("calling") {
                    format!(
                        "{peer} does not know our AE '{calling_ae}': add it to the archive's AE table (or fix service.ae_title)"
                    )
                } else {
                    format!(
                        "{peer} refused the association ({reason}): it may be at its association limit; lower max_associations"
                    )
                }
            }
            DimseError::NoContext { peer, what } => {
                format!("{peer} does not support {what}: use another retrieve method or query level for this archive")
            }
            DimseError::Aborted { peer, .. } => format!(
                "{peer} aborted: if this happens on the first request, our AE is probably not in the archive's \
                 allowed peers (Orthanc: DicomModalities with AllowFind/AllowMove/AllowGet)"
            ),
            DimseError::Released { peer } => format!("{peer} ended the association early: check its logs"),
            DimseError::Timeout { peer, what, .. } => {
                format!("{peer} is slow to send {what}: raise the timeout or check the archive's load")
            }
            DimseError::Status { operation, status, move_destination, peer, .. } => {
                status_hint(operation, *status, move_destination.as_deref(), peer)
            }
            DimseError::Protocol(_) | DimseError::Encode(_) => {
                "the peer sent something we cannot read: capture the traffic and report it".into()
            }
            DimseError::Io(_) => "the connection broke: the archive may have restarted".into(),
            DimseError::Other { hint, .. } => hint.clone(),
            DimseError::Tls { peer, problem } => format!("{peer}: {}", problem.hint("this peer's tls")),
        }
    }
}

/// The hint for a failure status: it depends on the operation, since only a C-MOVE
/// involves the archive's own path (its AE table entry) to the destination.
fn status_hint(operation: &str, status: u16, move_destination: Option<&str>, peer: &str) -> String {
    let is_move = operation == "C-MOVE";
    let dest = move_destination.unwrap_or("?");
    match status {
        0xA801 if is_move => format!(
            "archive {peer} does not know move destination '{dest}': add '{dest}' with the destination's host:port \
             to the archive's AE table, or set archives[].move_destination to the AE title it has for the destination"
        ),
        0xA702 if is_move => format!(
            "archive {peer} could not perform the sub-operations to move destination '{dest}': check the host:port \
             its AE table has for '{dest}' (archives[].move_destination), that the destination is up and accepts \
             the archive's calling AE, then retry"
        ),
        0xA702 if operation == "C-GET" => format!(
            "archive {peer} could not perform the C-GET sub-operations on our association: retry later, and check \
             that it accepts our storage contexts (SCP role selection)"
        ),
        0xA700..=0xA7FF => {
            format!("archive {peer} is out of resources (or hit a match limit): retry later or narrow the query")
        }
        0xA900..=0xA9FF => {
            "the identifier does not match the SOP class or query level: check the query level and keys".into()
        }
        0xC000..=0xCFFF if is_move => format!(
            "archive {peer} could not process the request; for a C-MOVE this is often an unknown destination \
             '{dest}' (Orthanc): check the archive's AE table and archives[].move_destination"
        ),
        0xC000..=0xCFFF => format!("archive {peer} could not process the {operation}: check its logs"),
        0xFE00 => "the operation was cancelled (or the archive stopped at its match limit)".into(),
        0x0122 => format!("archive {peer} does not support this SOP class"),
        _ => format!("archive {peer} answered 0x{status:04X} to a {operation}: check its logs"),
    }
}

/// The meaning of a DIMSE status code (PS3.7 Annex C, PS3.4 C.4).
pub fn status_meaning(status: u16) -> &'static str {
    match status {
        0x0000 => "success",
        0x0001 | 0x0107 | 0x0116 | 0xB000..=0xBFFF => "warning",
        0xFF00 => "pending",
        0xFF01 => "pending, optional keys not supported",
        0xFE00 => "cancelled",
        0x0122 => "SOP class not supported",
        0x0124 => "not authorized",
        0x0210 => "duplicate invocation",
        0x0211 => "unrecognized operation",
        0x0212 => "mistyped argument",
        0xA700 => "out of resources",
        0xA701 => "out of resources: unable to calculate number of matches",
        0xA702 => "out of resources: unable to perform sub-operations",
        0xA801 => "move destination unknown",
        0xA900 => "identifier does not match SOP class",
        0xC000..=0xCFFF => "unable to process",
        _ => "failure",
    }
}

pub fn is_pending(status: u16) -> bool {
    matches!(status, 0xFF00 | 0xFF01)
}

#[cfg(test)]
mod tests {
    use super::DimseError;

    fn failed(operation: &'static str, status: u16, move_destination: Option<&str>) -> String {
        DimseError::Status {
            operation,
            status,
            meaning: super::status_meaning(status),
            comment: String::new(),
            move_destination: move_destination.map(String::from),
            peer: "ARCH@127.0.0.1:104".into(),
        }
        .hint()
    }

    #[test]
    fn hints_fit_the_operation() {
        let get = failed("C-GET", 0xA702, None);
        assert!(!get.contains("move") && get.contains("C-GET"), "{get}");
        let unknown = failed("C-MOVE", 0xA801, Some("DEST"));
        assert!(unknown.contains("'DEST'") && unknown.contains("archives[].move_destination"), "{unknown}");
        let unreachable = failed("C-MOVE", 0xA702, Some("DEST"));
        assert!(unreachable.contains("AE table has for 'DEST'"), "{unreachable}");
        let find = failed("C-FIND", 0xA700, None);
        assert!(find.contains("narrow the query") && !find.contains("move"), "{find}");
        let orthanc = failed("C-GET", 0xC000, None);
        assert!(!orthanc.contains("move"), "{orthanc}");
    }
}
