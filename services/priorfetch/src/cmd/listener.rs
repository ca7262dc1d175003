//! `priorfetch listener`: the intake source, the admin server with `POST /api/events`,
//! and queue housekeeping, until SIGTERM.

use crate::Failure;
use priorfetch_listener::http;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

pub async fn run(path: &Path) -> Result<ExitCode, Failure> {
    let config = super::load_config(path)?;
    let _logs = super::init_logs(&config);
    let store = super::connect(&config).await?;
    let shutdown = super::shutdown_signal();

    let routes = http::routes(priorfetch_listener::http_intake(&config, store.clone()));
    let (addr, admin_task) = super::serve_admin(&config, &store, routes, shutdown.clone()).await?;
    tracing::info!(%addr, source = ?config.intake.source, "listener started");

    let housekeeping = tokio::spawn(super::housekeeping(&config)?.run(store.clone(), shutdown.clone()));
    priorfetch_listener::run(&config, store, shutdown.clone()).await?;
    // the source returned: either shutdown, or a fatal setup error above
    let _ = tokio::time::timeout(Duration::from_secs(5), admin_task).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), housekeeping).await;
    tracing::info!("listener stopped");
    Ok(ExitCode::SUCCESS)
}
