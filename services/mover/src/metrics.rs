//! The mover's metrics (names from docs/architecture.md, "Metrics"). `archive_up` is
//! recorded through `priorfetch_telemetry::archive_health` (planners record it too);
//! the queue gauges (`jobs`) are every process's, from `priorfetch_signals`.

use priorfetch_telemetry::metrics::register;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts};
use std::sync::LazyLock;

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    register(&c);
    c
}

fn gauge(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    register(&g);
    g
}

/// `priorfetch_job_attempts_total{archive,method,outcome}`: outcome is completed,
/// partial, retry, failed, cancelled or handed_back.
pub static JOB_ATTEMPTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "priorfetch_job_attempts_total",
        "Retrieve attempts by archive, method and outcome",
        &["archive", "method", "outcome"],
    )
});

/// `priorfetch_suboperations_total{archive,result}`: completed, failed, warning as the
/// archive reported them, and relayed / relay_failed for the C-STORE leg of a C-GET.
pub static SUBOPERATIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter("priorfetch_suboperations_total", "Retrieve sub-operations by archive and result", &["archive", "result"])
});

pub static RETRIEVE_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    let h = HistogramVec::new(
        HistogramOpts::new("priorfetch_retrieve_duration_seconds", "Duration of one retrieve attempt")
            .buckets(vec![0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0]),
        &["archive", "method"],
    )
    .expect("valid metric");
    register(&h);
    h
});

/// Bytes received from the archive (C-GET; a C-MOVE's bytes never pass through us).
pub static RETRIEVE_BYTES: LazyLock<IntCounterVec> =
    LazyLock::new(|| counter("priorfetch_retrieve_bytes_total", "Bytes received from archives", &["archive"]));

pub static ASSOCIATIONS_ACTIVE: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge("priorfetch_associations_active", "Open retrieve associations of this process, by archive", &["archive"])
});

/// The SLO: `priorfetch_exams_ready_total{outcome=in_time|late|failed}`.
pub static EXAMS_READY: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter("priorfetch_exams_ready_total", "Exams whose priors all ended, against the scheduled time", &["outcome"])
});

/// `priorfetch_split_parts_total{archive,outcome}`: tries of the parts of retrieves split
/// over several associations: done, retried (went back to the queue alone), failed (tries
/// ran out), refused (the archive does not retrieve that way: the study went whole),
/// cancelled.
pub static SPLIT_PARTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter("priorfetch_split_parts_total", "Parts of split retrieves by archive and outcome", &["archive", "outcome"])
});

/// `priorfetch_split_retrieves_total{archive,mode}`: retrieves split over several
/// associations (`split`), and those that fell back to one whole-study request because
/// the archive refused the parts (`fallback`).
pub static SPLIT_RETRIEVES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter("priorfetch_split_retrieves_total", "Split retrieves by archive and mode", &["archive", "mode"])
});
