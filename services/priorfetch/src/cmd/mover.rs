//! `priorfetch mover`: retrieve jobs to images at the destination, with the admin
//! server and queue housekeeping, until SIGTERM (then running retrieves get
//! `service.shutdown_grace` and the rest go back to the queue).

use crate::Failure;
use priorfetch_mover::{Mover, MoverOptions};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

pub async fn run(path: &Path) -> Result<ExitCode, Failure> {
    let config = Arc::new(super::load_config(path)?);
    let _logs = super::init_logs(&config);
    let store = super::connect(&config).await?;
    let shutdown = super::shutdown_signal();

    let (addr, admin_task) = super::serve_admin(&config, &store, axum::Router::new(), shutdown.clone()).await?;
    tracing::info!(%addr, "mover admin server started");

    let housekeeping = tokio::spawn(super::housekeeping(&config)?.run(store.clone(), shutdown.clone()));
    Mover::new(store, config.clone(), MoverOptions::default()).run(shutdown.clone()).await?;
    let _ = tokio::time::timeout(Duration::from_secs(5), admin_task).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), housekeeping).await;
    Ok(ExitCode::SUCCESS)
}
