//! The signals' metrics (names from docs/architecture.md, "Metrics"). Every process reads
//! the same database, so every replica exports the same values: alerts take `max()`.

use priorfetch_telemetry::metrics::register;
use prometheus::{GaugeVec, IntGaugeVec, Opts};
use std::sync::LazyLock;

fn gauge(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    register(&g);
    g
}

/// `priorfetch_exams_upcoming{state=ready|fetching|at_risk|failed}`: exams scheduled
/// within `signals.upcoming`.
pub static EXAMS_UPCOMING: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge(
        "priorfetch_exams_upcoming",
        "Exams scheduled within signals.upcoming, by readiness of their priors",
        &["state"],
    )
});

/// `priorfetch_jobs{state,archive}`: open jobs (scheduled, available, running, retryable)
/// and `due` (claimable now, not claimed; overlaps the waiting states).
pub static JOBS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge("priorfetch_jobs", "Open retrieve jobs by state and archive; due = claimable now", &["state", "archive"])
});

/// `priorfetch_oldest_due_job_age_seconds{archive}`: how long the oldest due job has
/// waited since its `not_before`; 0 when none is due.
pub static OLDEST_DUE_JOB_AGE: LazyLock<GaugeVec> = LazyLock::new(|| {
    let g = GaugeVec::new(
        Opts::new("priorfetch_oldest_due_job_age_seconds", "Seconds since the oldest due, unclaimed job became due"),
        &["archive"],
    )
    .expect("valid metric");
    register(&g);
    g
});

/// `priorfetch_workers_alive{role=listener|planner|mover}`: processes whose heartbeat in
/// the database has not expired.
pub static WORKERS_ALIVE: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge("priorfetch_workers_alive", "Processes with a live heartbeat in the database, by role", &["role"])
});

/// `priorfetch_exams_readiness{outcome=in_time|late|failed}`: exams scheduled in the last
/// 24 hours by whether their priors were ready at the scheduled time.
pub static EXAMS_READINESS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge(
        "priorfetch_exams_readiness",
        "Exams scheduled in the last 24 hours: priors ready in time, late (or still missing), failed",
        &["outcome"],
    )
});

/// `priorfetch_build_info{version,role}` = 1.
pub static BUILD_INFO: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge("priorfetch_build_info", "Version of this process and the roles it runs; always 1", &["version", "role"])
});
