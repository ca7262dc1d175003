//! Signals read from the database, so they exist whichever processes are up: every role
//! process (listener, planner, mover; `priorfetch run` once) runs a [`Collector`] that
//! reads them every `signals.every` and sets its gauges. Every replica exports the same
//! values; alerts take `max()`.
//!
//! - `priorfetch_exams_upcoming{state}`: exams scheduled within `signals.upcoming` by
//!   readiness; with no mover alive every exam not ready is `at_risk`.
//! - `priorfetch_jobs{state,archive}`, `priorfetch_oldest_due_job_age_seconds{archive}`.
//! - `priorfetch_workers_alive{role}` from the heartbeats, so a planner or listener shows
//!   that no mover is alive.
//! - `priorfetch_exams_readiness{outcome}` over the last 24 hours.
//! - `priorfetch_build_info{version,role}`.
//!
//! The queries live in the store (`crates/store/src/signals.rs`); this crate only schedules
//! them and turns rows into gauges.

pub mod metrics;

use chrono::{TimeDelta, Utc};
use priorfetch_config::windows::Window;
use priorfetch_config::{Config, SignalsConfig};
use priorfetch_store::{OpenJobs, Store, StoreError};
use std::collections::BTreeSet;
use std::time::Duration;
use tokio::sync::watch;

/// Roles always exported by `workers_alive`, 0 when none beats.
pub const ROLES: [&str; 3] = ["listener", "planner", "mover"];
/// The window of `exams_readiness`.
pub const READINESS_WINDOW: TimeDelta = TimeDelta::hours(24);
const JOB_STATES: [&str; 5] = ["scheduled", "available", "running", "retryable", "due"];

/// Reads the signals from the database and sets the gauges.
pub struct Collector {
    store: Store,
    settings: SignalsConfig,
    /// Configured archives with their retrieve windows: exported with zeros even before
    /// their first job; while a window is closed nothing of the archive is due.
    archives: Vec<(String, priorfetch_config::windows::Windows)>,
    /// Label values set by the previous read, so series of archives and roles that are
    /// gone are removed rather than left at their last value.
    exported_archives: BTreeSet<String>,
    exported_roles: BTreeSet<String>,
}

/// Sets `priorfetch_build_info{version,role}`; `role` names what this process runs
/// (`listener`, `planner`, `mover`, `all`).
pub fn set_build_info(role: &str) {
    metrics::BUILD_INFO.with_label_values(&[env!("CARGO_PKG_VERSION"), role]).set(1);
}

impl Collector {
    /// Also applies `signals.archive_stale` to `priorfetch_archive_up`.
    pub fn new(store: Store, config: &Config) -> Collector {
        priorfetch_telemetry::archive_health::set_stale_after(config.signals.archive_stale);
        Collector {
            store,
            settings: config.signals.clone(),
            archives: config
                .archives
                .iter()
                .map(|a| (a.name.clone(), priorfetch_config::windows::Windows::parse(&a.retrieve_windows)))
                .collect(),
            exported_archives: BTreeSet::new(),
            exported_roles: BTreeSet::new(),
        }
    }

    /// Reads every `signals.every` until `shutdown`. A failed read keeps the previous
    /// values (logged once until a read succeeds again): the database being away is
    /// `/readyz`'s to report.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.settings.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Bounded, so a hung connection cannot stop the signals for good.
        let bound = self.settings.every.max(Duration::from_secs(10));
        let mut failing = false;
        loop {
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => return,
                _ = tick.tick() => {}
            }
            match tokio::time::timeout(bound, self.collect_once()).await {
                Ok(Ok(())) if failing => {
                    tracing::info!("signals read again");
                    failing = false;
                }
                Ok(Ok(())) => {}
                Ok(Err(e)) if !failing => {
                    tracing::warn!(error = %e, "cannot read the signals; keeping the last values");
                    failing = true;
                }
                Err(_) if !failing => {
                    tracing::warn!(after_s = bound.as_secs(), "reading the signals timed out; keeping the last values");
                    failing = true;
                }
                _ => {}
            }
        }
    }

    /// One read of every signal.
    pub async fn collect_once(&mut self) -> Result<(), StoreError> {
        let now = Utc::now();
        let movers = self.workers(now).await?;
        let window = |d: Duration| TimeDelta::from_std(d).unwrap_or(TimeDelta::days(7));
        let mut upcoming = self
            .store
            .upcoming_exams(now, now + window(self.settings.upcoming), now + window(self.settings.at_risk))
            .await?;
        if movers == 0 {
            // Nothing will fetch them: every exam not ready is at risk.
            upcoming.at_risk += upcoming.fetching;
            upcoming.fetching = 0;
        }
        for (state, n) in [
            ("ready", upcoming.ready),
            ("fetching", upcoming.fetching),
            ("at_risk", upcoming.at_risk),
            ("failed", upcoming.failed),
        ] {
            metrics::EXAMS_UPCOMING.with_label_values(&[state]).set(n);
        }
        let readiness = self.store.exam_readiness(now - READINESS_WINDOW, now).await?;
        for (outcome, n) in [("in_time", readiness.in_time), ("late", readiness.late), ("failed", readiness.failed)] {
            metrics::EXAMS_READINESS.with_label_values(&[outcome]).set(n);
        }
        let jobs = self.store.open_jobs(now).await?;
        self.set_jobs(&jobs, now);
        Ok(())
    }

    /// `workers_alive{role}`; returns the live movers.
    async fn workers(&mut self, now: chrono::DateTime<Utc>) -> Result<i64, StoreError> {
        let names = self.store.live_workers(now).await?;
        let mut alive: std::collections::BTreeMap<String, i64> = ROLES.iter().map(|r| (r.to_string(), 0)).collect();
        for role in names.iter().filter_map(|n| priorfetch_store::role_of_identity(n)) {
            *alive.entry(role.to_string()).or_default() += 1;
        }
        for gone in self.exported_roles.iter().filter(|r| !alive.contains_key(*r)) {
            let _ = metrics::WORKERS_ALIVE.remove_label_values(&[gone.as_str()]);
        }
        for (role, n) in &alive {
            metrics::WORKERS_ALIVE.with_label_values(&[role.as_str()]).set(*n);
        }
        self.exported_roles = alive.keys().cloned().collect();
        Ok(alive.get("mover").copied().unwrap_or(0))
    }

    /// `jobs{state,archive}` and `oldest_due_job_age_seconds{archive}` for every configured
    /// archive and every archive that has open jobs. Due means claimable: not while the
    /// archive's retrieve window is closed, and waiting only since it opened.
    fn set_jobs(&mut self, jobs: &[OpenJobs], now: chrono::DateTime<Utc>) {
        let mut archives: BTreeSet<String> = self.archives.iter().map(|(name, _)| name.clone()).collect();
        archives.extend(jobs.iter().map(|j| j.archive.clone()));
        for gone in self.exported_archives.difference(&archives) {
            for state in JOB_STATES {
                let _ = metrics::JOBS.remove_label_values(&[state, gone.as_str()]);
            }
            let _ = metrics::OLDEST_DUE_JOB_AGE.remove_label_values(&[gone.as_str()]);
        }
        let none = OpenJobs::default();
        for archive in &archives {
            let j = jobs.iter().find(|j| &j.archive == archive).unwrap_or(&none);
            let window = self.archives.iter().find(|(name, _)| name == archive).map(|(_, w)| w.at(now));
            let (due, since) = match window {
                Some(Window::Closed) => (0, None),
                Some(Window::OpenSince(opened)) => (j.due, j.oldest_due.map(|t| t.max(opened))),
                Some(Window::Always) | None => (j.due, j.oldest_due),
            };
            let counts = [j.scheduled, j.available, j.running, j.retryable, due];
            for (state, n) in JOB_STATES.iter().zip(counts) {
                metrics::JOBS.with_label_values(&[state, archive.as_str()]).set(n);
            }
            let age = since.map(|t| (now - t).num_milliseconds().max(0) as f64 / 1000.0).unwrap_or(0.0);
            metrics::OLDEST_DUE_JOB_AGE.with_label_values(&[archive.as_str()]).set(age);
        }
        self.exported_archives = archives;
    }
}
