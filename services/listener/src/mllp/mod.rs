//! The HL7 v2 MLLP listener: interface engines (Mirth, Rhapsody, Cloverleaf, Epic
//! Bridges) connect and send orders; each message gets an ACK once what it means is
//! committed to the database.
//!
//! - `frame.rs`: MLLP framing with size, idle and read limits;
//! - `ack.rs`: the HL7 acknowledgement (AA, AE with ERR, AR);
//! - `commit.rs`: messages of all connections committed together (group commit).
//!
//! One message at a time per connection, in order: the ACK of a message is written before
//! the next one is read. AA also for a duplicate (the sender resent what we had), AE for a
//! message that can never be processed (dead-lettered with its reason), AR when the
//! database cannot take it now (the sender resends; the resend is idempotent).

pub mod ack;
mod commit;
pub mod frame;
pub mod metrics;

use crate::intake::{Intake, Verdict};
use ack::{AckCode, AckError, Header};
use commit::Committer;
use frame::{FrameError, FrameReader, Limits};
use priorfetch_config::MllpConfig;
use priorfetch_tls::ServerTls;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

#[derive(Debug, thiserror::Error)]
pub enum MllpError {
    #[error("intake.mllp.listen {addr}: cannot listen: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("intake.mllp.tls: {0}")]
    Tls(#[from] priorfetch_tls::TlsSetupError),
}

/// Longest wait for the database before a message is answered AR (the sender resends).
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct MllpListener {
    listener: TcpListener,
    limits: Limits,
    slots: Arc<Semaphore>,
    tls: Option<ServerTls>,
    committer: Committer,
}

impl MllpListener {
    pub async fn bind(config: &MllpConfig, intake: Intake) -> Result<MllpListener, MllpError> {
        let listener = TcpListener::bind(&config.listen)
            .await
            .map_err(|source| MllpError::Bind { addr: config.listen.clone(), source })?;
        let tls = config.tls.as_ref().map(|tls| ServerTls::load(tls, "intake.mllp")).transpose()?;
        Ok(MllpListener {
            listener,
            limits: Limits { max_message: config.max_message, idle: config.idle_timeout, read: config.read_timeout },
            slots: Arc::new(Semaphore::new(config.max_connections as usize)),
            tls,
            committer: Committer::start(intake, COMMIT_TIMEOUT),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts connections until `shutdown`; each connection then finishes the message it
    /// is on and closes.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> Result<(), MllpError> {
        let addr = self.listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
        tracing::info!(%addr, tls = self.tls.is_some(), "MLLP listener accepting HL7 v2");
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let (stream, peer) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: pause rather than spin.
                        tracing::warn!(error = %e, "MLLP accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = stopped(&mut shutdown) => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            };
            let Ok(slot) = self.slots.clone().try_acquire_owned() else {
                metrics::CLOSED.with_label_values(&["over_capacity"]).inc();
                tracing::warn!(%peer, "MLLP connection refused: intake.mllp.max_connections reached");
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (limits, committer, tls, shutdown) =
                (self.limits, self.committer.clone(), self.tls.clone(), shutdown.clone());
            connections.spawn(async move {
                let _open = committer.connection();
                metrics::CONNECTIONS.inc();
                serve(stream, peer, limits, committer, tls, shutdown).await;
                metrics::CONNECTIONS.dec();
                drop(slot);
            });
        }
        while connections.join_next().await.is_some() {}
        Ok(())
    }
}

async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    limits: Limits,
    committer: Committer,
    tls: Option<ServerTls>,
    shutdown: watch::Receiver<bool>,
) {
    tracing::debug!(%peer, "MLLP connection open");
    let Some(tls) = tls else {
        return converse(stream, peer, limits, committer, shutdown).await;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
    match tokio::time::timeout(limits.read, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => converse(stream, peer, limits, committer, shutdown).await,
        Ok(Err(e)) => {
            metrics::CLOSED.with_label_values(&["tls"]).inc();
            tracing::warn!(%peer, error = %e, "MLLP TLS handshake failed");
        }
        Err(_) => {
            metrics::CLOSED.with_label_values(&["tls"]).inc();
            tracing::warn!(%peer, "MLLP TLS handshake timed out");
        }
    }
}

/// Reads, commits and acknowledges messages one at a time until the peer closes, a limit
/// is broken, or the listener stops.
async fn converse<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    peer: SocketAddr,
    limits: Limits,
    committer: Committer,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut reader = FrameReader::new(stream, limits);
    loop {
        let next = tokio::select! {
            next = reader.next() => next,
            _ = stopped(&mut shutdown) => return,
        };
        let text = match next {
            Ok(Some(message)) => {
                let header = Header::parse(&message);
                let (code, error) = answer(committer.submit(message).await);
                ack::build(&header, code, error.as_ref())
            }
            Ok(None) => return,
            Err(FrameError::TooLarge(max)) => {
                // Acknowledge what we can, then close: the rest of the frame is unread.
                let header = Header::parse(reader.head());
                let error = AckError {
                    field: None,
                    code: 207,
                    text: format!("message larger than intake.mllp.max_message ({max} bytes)"),
                };
                let _ =
                    frame::write_frame(reader.get_mut(), ack::build(&header, AckCode::Error, Some(&error)).as_bytes())
                        .await;
                metrics::ACKS.with_label_values(&["AE"]).inc();
                close_on(peer, &FrameError::TooLarge(max));
                return;
            }
            Err(e) => {
                close_on(peer, &e);
                return;
            }
        };
        if let Err(e) = frame::write_frame(reader.get_mut(), text.as_bytes()).await {
            metrics::CLOSED.with_label_values(&["io"]).inc();
            tracing::warn!(%peer, error = %e, "MLLP ACK could not be written; the sender will resend");
            return;
        }
    }
}

/// Resolves once `shutdown` says stop (the guard `wait_for` returns is not `Send`).
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

fn close_on(peer: SocketAddr, error: &FrameError) {
    metrics::CLOSED.with_label_values(&[error.reason()]).inc();
    match error {
        FrameError::Idle => tracing::debug!(%peer, "MLLP connection idle; closed"),
        _ => tracing::warn!(%peer, reason = error.reason(), "MLLP connection closed: {error}"),
    }
}

/// The ACK code for what became of a message.
fn answer(outcome: Option<Verdict>) -> (AckCode, Option<AckError>) {
    let (code, error) = match outcome {
        None => (
            AckCode::Reject,
            Some(AckError { field: None, code: 207, text: "database unavailable; resend later".into() }),
        ),
        Some(Verdict::Invalid { code, field, reason }) => {
            (AckCode::Error, Some(AckError { field, code: AckError::code_for(code), text: reason }))
        }
        Some(_) => (AckCode::Accept, None),
    };
    metrics::ACKS.with_label_values(&[code.as_str()]).inc();
    (code, error)
}
