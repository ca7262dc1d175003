//! The admin HTTP server: `/metrics`, `/healthz` (the process answers), `/readyz`
//! (the service can work: database reachable, intake not stalled), and routes merged in
//! by the services.
//!
//! It may face a hospital network, so no client can hold it: at most
//! [`Limits::max_connections`] connections (more are closed at once), request headers
//! must arrive within [`Limits::header_timeout`] (a socket that sends nothing or half a
//! request is closed), and a whole request, body included, must be served within
//! [`Limits::request_timeout`] (408 otherwise).

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::future::BoxFuture;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, watch};

/// Readiness probe: Ok when the service can do its work (database reachable).
pub type ReadyCheck = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// Longest `/readyz` waits for its check: a probe must answer, and a database that does
/// not answer within this is not ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(3);

/// Bounds on what clients may hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 256,
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Clone)]
struct AdminState {
    ready: ReadyCheck,
}

/// The admin router; `extra` carries service routes (e.g. `POST /api/events`).
pub fn router(ready: ReadyCheck, extra: Router) -> Router {
    let admin = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(AdminState { ready });
    admin.merge(extra)
}

async fn metrics() -> impl IntoResponse {
    ([("content-type", "text/plain; version=0.0.4")], crate::metrics::render())
}

async fn readyz(axum::extract::State(state): axum::extract::State<AdminState>) -> impl IntoResponse {
    match tokio::time::timeout(READY_TIMEOUT, (state.ready)()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready\n".to_string()),
        Ok(Err(reason)) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}\n")),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: no answer within {READY_TIMEOUT:?}\n")),
    }
}

/// Where an HTTPS admin listener gets its TLS configuration, per connection (so that
/// rotated certificate files apply to the next connection).
pub type TlsSource = Arc<dyn Fn() -> Arc<rustls::ServerConfig> + Send + Sync>;

/// A client certificate the TLS handshake verified against the listener's CA (mutual
/// TLS), as a request extension for routes that admit by it: the SHA-256 of its DER, hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    pub sha256: String,
}

/// Binds `listen` and serves until `shutdown` resolves, with the default [`Limits`].
/// Returns the bound address (port 0 picks one) once listening, and the server task.
pub async fn serve(
    listen: SocketAddr,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    serve_tls(listen, app, None, shutdown).await
}

/// As [`serve`], over HTTPS when `tls` is given (HTTPS only: a plain request is refused by
/// the handshake).
pub async fn serve_tls(
    listen: SocketAddr,
    app: Router,
    tls: Option<TlsSource>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    serve_inner(listen, app, Limits::default(), tls, shutdown).await
}

pub async fn serve_with(
    listen: SocketAddr,
    app: Router,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    serve_inner(listen, app, limits, None, shutdown).await
}

async fn serve_inner(
    listen: SocketAddr,
    app: Router,
    limits: Limits,
    tls: Option<TlsSource>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, max_connections = limits.max_connections, https = tls.is_some(), "admin http listening");
    let request_timeout = limits.request_timeout;
    let app = app.layer(axum::middleware::from_fn(move |req: Request, next: Next| bounded(req, next, request_timeout)));
    let task = tokio::spawn(accept_loop(listener, app, limits, tls, shutdown));
    Ok((addr, task))
}

/// A request (its body included) that is not served in time gets 408.
async fn bounded(req: Request, next: Next, limit: Duration) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => (StatusCode::REQUEST_TIMEOUT, "request not completed in time\n").into_response(),
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: Limits,
    tls: Option<TlsSource>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                // Out of file descriptors and the like: pause instead of spinning.
                Err(e) => {
                    tracing::warn!(error = %e, "admin http accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            crate::metrics::ADMIN_CONNECTIONS_REFUSED.inc();
            continue; // dropped: closed at once
        };
        let _ = stream.set_nodelay(true);
        // the sender's address, for routes that admit by it (`ConnectInfo<SocketAddr>`)
        let app = app.clone().layer(axum::Extension(axum::extract::ConnectInfo(peer)));
        let (stop, tls) = (stop_rx.clone(), tls.clone());
        tokio::spawn(async move {
            match tls {
                None => serve_connection(TokioIo::new(stream), app, limits, stop).await,
                Some(source) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(source());
                    match tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let app = match client_certificate(stream.get_ref().1) {
                                Some(certificate) => app.layer(axum::Extension(certificate)),
                                None => app,
                            };
                            serve_connection(TokioIo::new(stream), app, limits, stop).await
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "admin https handshake failed"),
                        Err(_) => tracing::debug!(%peer, "admin https handshake timed out"),
                    }
                }
            }
            drop(permit);
        });
    }
    let _ = stop_tx.send(true);
    // In-flight requests get a moment to finish, as axum's graceful shutdown did.
    let all = limits.max_connections as u32;
    let _ = tokio::time::timeout(Duration::from_secs(5), permits.acquire_many(all)).await;
    Ok(())
}

fn client_certificate(connection: &rustls::ServerConnection) -> Option<ClientCertificate> {
    use sha2::Digest;
    let der = connection.peer_certificates()?.first()?;
    let digest = sha2::Sha256::digest(der.as_ref());
    Some(ClientCertificate { sha256: digest.iter().map(|b| format!("{b:02x}")).collect() })
}

/// Serves one connection until it ends or the server stops (then gracefully, for 5 s).
async fn serve_connection<I>(io: TokioIo<I>, app: Router, limits: Limits, mut stop: watch::Receiver<bool>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .serve_connection(io, TowerToHyperService::new(app));
    tokio::pin!(connection);
    // The watch guard is dropped inside this block: it must not live across an await.
    let stopping = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    tokio::select! {
        _ = connection.as_mut() => {}
        _ = stopping => {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), connection).await;
        }
    }
}
