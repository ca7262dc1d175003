//! `priorfetch planner`: the planner, the admin server with `GET /api/exams/{id}`, and
//! queue housekeeping, until SIGTERM. Migrations are `priorfetch migrate`'s job.

use crate::Failure;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

pub async fn run(path: &Path) -> Result<ExitCode, Failure> {
    let config = Arc::new(super::load_config(path)?);
    let _logs = super::init_logs(&config);
    let store = super::connect(&config).await?;
    let shutdown = super::shutdown_signal();

    let routes = priorfetch_planner::api::routes(store.clone());
    let (addr, admin_task) = super::serve_admin(&config, &store, routes, shutdown.clone()).await?;
    tracing::info!(%addr, archives = config.archives.len(), "planner service started");

    let housekeeping = tokio::spawn(super::housekeeping(&config)?.run(store.clone(), shutdown.clone()));
    priorfetch_planner::Planner::new(store, config.clone()).run(shutdown).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), admin_task).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), housekeeping).await;
    Ok(ExitCode::SUCCESS)
}
