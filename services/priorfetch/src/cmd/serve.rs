//! One wiring for every long-running role: `run` (all of them, migrating first),
//! `listener`, `planner` and `mover` load the config, start logs, connect the store, serve
//! the admin HTTP (`/metrics`, `/healthz`, `/readyz` and the roles' routes) and run
//! housekeeping (rescuer, purge) and the signals collector (`priorfetch_signals`) the same way. Services stop on SIGTERM; if one stops on
//! its own or fails, the others are stopped too and the process exits 1, so a supervisor
//! restarts a whole, not a half-working, process.

use crate::Failure;
use priorfetch_mover::{Mover, MoverOptions};
use priorfetch_planner::Planner;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;

/// The services one process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    pub listener: bool,
    pub planner: bool,
    pub mover: bool,
}

impl Roles {
    pub const ALL: Roles = Roles { listener: true, planner: true, mover: true };
    pub const LISTENER: Roles = Roles { listener: true, planner: false, mover: false };
    pub const PLANNER: Roles = Roles { listener: false, planner: true, mover: false };
    pub const MOVER: Roles = Roles { listener: false, planner: false, mover: true };

    fn name(self) -> &'static str {
        match self {
            Roles::LISTENER => "listener",
            Roles::PLANNER => "planner",
            Roles::MOVER => "mover",
            _ => "priorfetch run",
        }
    }

    /// The `role` label of `priorfetch_build_info`.
    fn label(self) -> &'static str {
        if self == Roles::ALL { "all" } else { self.name() }
    }
}

type Ended = (&'static str, Result<(), String>);

pub async fn serve(path: &Path, roles: Roles) -> Result<ExitCode, Failure> {
    let config = Arc::new(super::load_config(path)?);
    let _logs = super::init_logs(&config);
    let store = super::connect(&config).await?;
    // One process with every role owns its schema; split roles leave it to `migrate`.
    if roles == Roles::ALL {
        store.migrate().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let signal = super::shutdown_signal();
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let stop_on_signal = stop.clone();
    let mut sigterm = signal.clone();
    tokio::spawn(async move {
        let _ = sigterm.wait_for(|s| *s).await;
        let _ = stop_on_signal.send(true);
    });

    let mut routes = axum::Router::new();
    if roles.listener {
        routes = routes.merge(priorfetch_listener::http::routes_with(
            priorfetch_listener::http_intake(&config, store.clone()),
            priorfetch_listener::access::Access::new(&config),
        ));
    }
    // The operator API (exams, jobs, dead letters) reads and acts through the database:
    // every role's process serves it, behind its tokens (`priorfetch_api::access`).
    routes = routes.merge(priorfetch_api::routes(store.clone(), config.clone()));
    routes = routes.merge(priorfetch_console::routes(store.clone(), config.clone()));
    let (addr, admin_task) = super::serve_admin(&config, &store, routes, shutdown.clone()).await?;
    tracing::info!(%addr, role = roles.name(), source = ?config.intake.source, archives = config.archives.len(),
                   "{} started", roles.name());

    let mut services: JoinSet<Ended> = JoinSet::new();
    if roles.listener {
        let (config, store, shutdown) = (config.clone(), store.clone(), shutdown.clone());
        services.spawn(async move {
            ("listener", priorfetch_listener::run(&config, store, shutdown).await.map_err(|e| e.to_string()))
        });
    }
    if roles.planner {
        let planner = Planner::new(store.clone(), config.clone());
        let shutdown = shutdown.clone();
        services.spawn(async move {
            planner.run(shutdown).await;
            ("planner", Ok(()))
        });
    }
    if roles.mover {
        let mover = Mover::new(store.clone(), config.clone(), MoverOptions::default());
        let shutdown = shutdown.clone();
        services.spawn(async move { ("mover", mover.run(shutdown).await.map_err(|e| e.to_string())) });
    }
    // Every role process reads the signals (once in `run`), so they exist whichever
    // processes are up: a planner alone still shows that no mover is alive.
    priorfetch_signals::set_build_info(roles.label());
    {
        let collector = priorfetch_signals::Collector::new(store.clone(), &config);
        let shutdown = shutdown.clone();
        services.spawn(async move {
            collector.run(shutdown).await;
            ("signals", Ok(()))
        });
    }
    let housekeeping = super::housekeeping(&config)?;
    {
        let (store, shutdown) = (store.clone(), shutdown.clone());
        services.spawn(async move {
            housekeeping.run(store, shutdown).await;
            ("housekeeping", Ok(()))
        });
    }

    let failed = supervise(&mut services, &stop, &shutdown).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), admin_task).await;
    tracing::info!(role = roles.name(), "{} stopped", roles.name());
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// Waits for every service; the first to end stops the others. True when one failed or
/// stopped without being asked to.
async fn supervise(
    services: &mut JoinSet<Ended>,
    stop: &tokio::sync::watch::Sender<bool>,
    shutdown: &tokio::sync::watch::Receiver<bool>,
) -> bool {
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
    failed
}
