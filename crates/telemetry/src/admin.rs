//! The admin HTTP server: `/metrics`, `/healthz` (the process answers), `/readyz`
//! (the database answers), and routes merged in by the services.

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use futures::future::BoxFuture;
use std::net::SocketAddr;
use std::sync::Arc;

/// Readiness probe: Ok when the service can do its work (database reachable).
pub type ReadyCheck = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

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
    match (state.ready)().await {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}\n")),
    }
}

/// Binds `listen` and serves until `shutdown` resolves. Returns the bound address
/// (port 0 picks one) once listening, and the server task.
pub async fn serve(
    listen: SocketAddr,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "admin http listening");
    let task = tokio::spawn(async move { axum::serve(listener, app).with_graceful_shutdown(shutdown).await });
    Ok((addr, task))
}
