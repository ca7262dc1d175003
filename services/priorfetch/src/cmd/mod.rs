//! One module per subcommand; `serve.rs` wires the long-running roles (`run`, `listener`,
//! `planner`, `mover`).

pub mod bench;
pub mod config;
pub mod demo;
pub mod dicom;
pub mod doctor;
pub mod explain;
pub mod jobs;
pub mod migrate;
pub mod operator;
pub mod out;
pub mod serve;
pub mod sim;
mod split;
pub mod tls;
pub mod web;

use crate::Failure;
use priorfetch_config::{Config, Sources};
use std::path::Path;

/// Loads the configuration. The default path may be absent (the embedded defaults
/// apply); an explicitly named file must exist.
pub fn load_config(path: &Path) -> Result<Config, Failure> {
    let default = Path::new("config/priorfetch.toml");
    let file = if path == default && !path.exists() { None } else { Some(path) };
    Config::load(Sources { file, overlay: None, env: true }).map_err(Failure::Config)
}

/// Logging for commands: `RUST_LOG` or the configured level, on stderr.
pub fn init_logs(config: &Config) -> priorfetch_telemetry::TelemetryGuard {
    let format = match config.telemetry.log_format {
        priorfetch_config::LogFormat::Text => priorfetch_telemetry::LogFormat::Text,
        priorfetch_config::LogFormat::Json => priorfetch_telemetry::LogFormat::Json,
    };
    priorfetch_telemetry::init(priorfetch_telemetry::TelemetryOptions {
        format,
        default_filter: &config.telemetry.log_level,
        service_name: &config.telemetry.service_name,
    })
    .unwrap_or_else(|e| {
        eprintln!("warning: {e}; logging with defaults");
        priorfetch_telemetry::init(priorfetch_telemetry::TelemetryOptions {
            format,
            default_filter: "info",
            service_name: &config.telemetry.service_name,
        })
        .expect("default log filter parses")
    })
}

pub async fn connect(config: &Config) -> Result<priorfetch_store::Store, Failure> {
    let db = &config.database;
    let store = priorfetch_store::Store::connect(&db.url, db.password.expose(), db.max_connections)
        .await
        .map_err(|e| anyhow::anyhow!("{e} (database.url = {})", priorfetch_config::redact_url(&db.url)))?;
    Ok(store)
}

/// A watch that turns true on SIGTERM or Ctrl-C: services take it as their `shutdown`.
pub fn shutdown_signal() -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    let _ = ctrl_c.await;
                    let _ = tx.send(true);
                    return;
                }
            };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutting down");
        let _ = tx.send(true);
    });
    rx
}

/// Readiness for the admin server: the database answers, and the bus intake (when this
/// process runs one) is not stalled. The admin server bounds the wait.
pub fn ready_check(store: &priorfetch_store::Store) -> priorfetch_telemetry::admin::ReadyCheck {
    let store = store.clone();
    std::sync::Arc::new(move || {
        let store = store.clone();
        Box::pin(async move {
            store.ping().await.map_err(|e| format!("database: {e}"))?;
            priorfetch_listener::health::stalled().map_or(Ok(()), Err)
        })
    })
}

/// Housekeeping (rescuer, purge) on the configured cron schedules.
pub fn housekeeping(config: &Config) -> Result<priorfetch_store::housekeeping::Housekeeping, Failure> {
    let q = &config.queue;
    // Both expressions were validated at load; an error here would be a bug.
    priorfetch_store::housekeeping::Housekeeping::from_cron(&q.rescue_schedule, &q.purge_schedule, q.retention)
        .map_err(|e| Failure::Runtime(anyhow::anyhow!(e)))
}

/// The admin HTTP server (`/metrics`, `/healthz`, `/readyz` plus `routes`) on
/// `service.admin_listen`, until `shutdown`.
pub async fn serve_admin(
    config: &Config,
    store: &priorfetch_store::Store,
    routes: axum::Router,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(std::net::SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>), Failure> {
    use priorfetch_telemetry::admin;
    let listen: std::net::SocketAddr =
        config.service.admin_listen.parse().map_err(|e| anyhow::anyhow!("service.admin_listen: {e}"))?;
    let tls = match &config.service.admin_tls {
        Some(settings) => {
            let tls = priorfetch_tls::ServerTls::load(settings, "service.admin_tls")
                .map_err(|e| anyhow::anyhow!("service.admin_tls: {e}"))?;
            Some(std::sync::Arc::new(move || tls.config()) as admin::TlsSource)
        }
        None => None,
    };
    let mut app = admin::router(ready_check(store), routes);
    if !config.admin.open_probes {
        let access = priorfetch_api::access::Access::new(config);
        app = app.layer(axum::middleware::from_fn_with_state(access, priorfetch_api::access::probe_guard));
    }
    let served = admin::serve_tls(listen, app, tls, async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    })
    .await
    .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    Ok(served)
}
