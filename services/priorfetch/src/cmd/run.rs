//! `priorfetch run`: every service in one process for a single machine: migrations, the
//! listener (configured source plus `POST /api/events`), the planner, the mover, the
//! admin server (`/metrics`, `/healthz`, `/readyz`, `/api/...`) and housekeeping. If one
//! service stops on its own, the others are stopped too and the process exits 1, so a
//! supervisor restarts a whole, not a half-working, process.

use crate::Failure;
use priorfetch_listener::http;
use priorfetch_mover::{Mover, MoverOptions};
use priorfetch_planner::Planner;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;

pub async fn run(path: &Path) -> Result<ExitCode, Failure> {
    let config = Arc::new(super::load_config(path)?);
    let _logs = super::init_logs(&config);
    let store = super::connect(&config).await?;
    store.migrate().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let signal = super::shutdown_signal();
    // Services stop on SIGTERM or when a sibling stops on its own.
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let mut sigterm = signal.clone();
    let stop_on_signal = stop.clone();
    tokio::spawn(async move {
        let _ = sigterm.wait_for(|s| *s).await;
        let _ = stop_on_signal.send(true);
    });

    let routes = http::routes(priorfetch_listener::http_intake(&config, store.clone()))
        .merge(priorfetch_planner::api::routes(store.clone()));
    let (addr, admin_task) = super::serve_admin(&config, &store, routes, shutdown.clone()).await?;
    tracing::info!(%addr, source = ?config.intake.source, archives = config.archives.len(), "priorfetch run started");

    let mut services: JoinSet<(&'static str, Result<(), String>)> = JoinSet::new();
    {
        let (config, store, shutdown) = (config.clone(), store.clone(), shutdown.clone());
        services.spawn(async move {
            ("listener", priorfetch_listener::run(&config, store, shutdown).await.map_err(|e| e.to_string()))
        });
    }
    {
        let planner = Planner::new(store.clone(), config.clone());
        let shutdown = shutdown.clone();
        services.spawn(async move {
            planner.run(shutdown).await;
            ("planner", Ok(()))
        });
    }
    {
        let mover = Mover::new(store.clone(), config.clone(), MoverOptions::default());
        let shutdown = shutdown.clone();
        services.spawn(async move { ("mover", mover.run(shutdown).await.map_err(|e| e.to_string())) });
    }
    {
        let housekeeping = super::housekeeping(&config)?;
        let (store, shutdown) = (store.clone(), shutdown.clone());
        services.spawn(async move {
            housekeeping.run(store, shutdown).await;
            ("housekeeping", Ok(()))
        });
    }

    let mut failed = false;
    while let Some(ended) = services.join_next().await {
        let stopping = *shutdown.borrow();
        match ended {
            Ok((name, Err(e))) => {
                tracing::error!(service = name, error = %e, "service failed; stopping the others");
                failed = true;
            }
            Ok((name, Ok(()))) if !stopping => {
                tracing::error!(service = name, "service stopped on its own; stopping the others");
                failed = true;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "service task panicked; stopping the others");
                failed = true;
            }
        }
        let _ = stop.send(true);
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), admin_task).await;
    tracing::info!("priorfetch run stopped");
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
