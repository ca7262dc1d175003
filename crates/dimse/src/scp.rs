//! Servers: the C-STORE SCP, and what every SCP here shares (the pacs-sim archive uses
//! it too): accepting connections, wrapping an accepted association, waiting for the next
//! command until shutdown, and answering C-ECHO.
pub mod handshake;
mod receive;
pub mod store;

use crate::association::{Association, ScuOptions};
use crate::command::{Command, field, tags};
use crate::error::DimseError;
use crate::link::{Link, ServerLink};
use crate::peer::{AeTitle, Peer};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// The Verification SOP class (C-ECHO).
pub const VERIFICATION: &str = "1.2.840.10008.1.1";

/// An association we accepted.
pub type ServerAssociation = Association<ServerLink>;

/// The next connection (TCP_NODELAY set), or None once `shutdown` is cancelled. Reaps
/// finished association tasks while it waits; an accept error (out of file descriptors,
/// say) is logged and retried after 50 ms rather than ending the server.
pub async fn accept_next<T: 'static>(
    listener: &TcpListener,
    tasks: &mut JoinSet<T>,
    shutdown: &CancellationToken,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            accepted = listener.accept() => match accepted {
                Ok((socket, address)) => {
                    let _ = socket.set_nodelay(true);
                    return Some((socket, address));
                }
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
}

/// Wraps an association dicom-ul accepted; the peer is named by its calling AE title,
/// returned as well (trimmed).
pub fn accepted(established: ServerLink, our_ae: AeTitle, dimse_timeout: Duration) -> (ServerAssociation, String) {
    let calling_ae = established.peer_ae_title().trim().to_string();
    let peer =
        Peer { ae_title: AeTitle::parse(&calling_ae).unwrap_or_else(|_| our_ae.clone()), host: "peer".into(), port: 0 };
    let mut options = ScuOptions::new(our_ae);
    options.dimse_timeout = dimse_timeout;
    (Association::from_established(established, peer, options), calling_ae)
}

/// The next command and its presentation context, or None when the peer released the
/// association or `shutdown` was cancelled; then the association is aborted between two
/// messages, so nothing is half-written. A command on a presentation context that was not
/// accepted is a protocol error (PS3.8 9.3.5): the association is aborted.
pub async fn next_command(
    assoc: &mut ServerAssociation,
    shutdown: &CancellationToken,
) -> Result<Option<(u8, Command)>, DimseError> {
    let next = tokio::select! {
        _ = shutdown.cancelled() => {
            assoc.abort().await;
            return Ok(None);
        }
        next = assoc.receive_command() => next,
    };
    match next {
        Ok((context_id, _)) if !assoc.accepted_contexts().iter().any(|(id, _, _)| *id == context_id) => {
            assoc.abort().await;
            Err(DimseError::Protocol(format!("command on presentation context {context_id}, which was not accepted")))
        }
        Ok(c) => Ok(Some(c)),
        // The peer's A-RELEASE ends the association normally.
        Err(DimseError::Released { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The success C-ECHO-RSP to a C-ECHO-RQ.
pub fn echo_response(request: &Command) -> Command {
    let mut rsp = Command::new(field::C_ECHO_RSP);
    rsp.put_u16(tags::MESSAGE_ID_BEING_RESPONDED_TO, request.u16(tags::MESSAGE_ID).unwrap_or(0))
        .put_uid(tags::AFFECTED_SOP_CLASS_UID, VERIFICATION)
        .put_u16(tags::STATUS, 0);
    rsp
}

/// The answer to a C-ECHO-RQ received on an accepted context of `abstract_syntax`:
/// success on the Verification context, "SOP class not supported" (0x0122) on any other.
pub fn echo_on_context(request: &Command, abstract_syntax: &str) -> Command {
    let mut rsp = echo_response(request);
    if abstract_syntax != VERIFICATION {
        rsp.put_u16(tags::STATUS, 0x0122);
    }
    rsp
}

/// A short stable digest of a UID for logs: lines can be correlated without writing the
/// UID itself (it can identify a patient's study).
pub fn uid_digest(uid: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    uid.hash(&mut h);
    format!("{:012x}", h.finish() & 0xFFFF_FFFF_FFFF)
}
