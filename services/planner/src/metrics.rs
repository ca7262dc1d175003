//! The planner's metrics.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts};
use std::sync::LazyLock;

/// `priorfetch_cfind_duration_seconds{archive, outcome}`: outcome is ok, capped (the
/// archive hit its match cap; the range is split), failed.
pub static CFIND_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    let h = HistogramVec::new(
        HistogramOpts::new("priorfetch_cfind_duration_seconds", "C-FIND round trips by archive and outcome")
            .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
        &["archive", "outcome"],
    )
    .expect("valid metric");
    priorfetch_telemetry::metrics::register(&h);
    h
});

/// `priorfetch_cfind_matches_total{archive}`.
pub static CFIND_MATCHES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let c = IntCounterVec::new(
        Opts::new("priorfetch_cfind_matches_total", "C-FIND matches received, by archive"),
        &["archive"],
    )
    .expect("valid metric");
    priorfetch_telemetry::metrics::register(&c);
    c
});

/// `priorfetch_priors_selected_total{rule}`.
pub static PRIORS_SELECTED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let c = IntCounterVec::new(
        Opts::new("priorfetch_priors_selected_total", "Priors selected for retrieval, by rule"),
        &["rule"],
    )
    .expect("valid metric");
    priorfetch_telemetry::metrics::register(&c);
    c
});

/// `priorfetch_foreign_matches_total{archive}`: C-FIND matches discarded because their
/// PatientID (or IssuerOfPatientID) is not the one queried: another patient's study.
pub static FOREIGN_MATCHES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let c = IntCounterVec::new(
        Opts::new("priorfetch_foreign_matches_total", "C-FIND matches of another patient discarded, by archive"),
        &["archive"],
    )
    .expect("valid metric");
    priorfetch_telemetry::metrics::register(&c);
    c
});
