//! The process-wide Prometheus registry. Crates define their metrics in their own
//! `metrics.rs` and register them here once (`register`), so `/metrics` shows all.

use prometheus::core::Collector;
use prometheus::{Encoder, Registry, TextEncoder};
use std::sync::OnceLock;

static REGISTRY: OnceLock<Registry> = OnceLock::new();

pub fn registry() -> &'static Registry {
    REGISTRY.get_or_init(|| {
        let registry = Registry::new();
        // process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds, ...
        #[cfg(target_os = "linux")]
        if let Err(e) = registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self())) {
            tracing::error!(error = %e, "process metrics registration failed");
        }
        registry
    })
}

/// Registers a collector; registering the same metric twice (a second service in the
/// same process) is not an error.
pub fn register<C: Collector + Clone + 'static>(collector: &C) {
    match registry().register(Box::new(collector.clone())) {
        Ok(()) | Err(prometheus::Error::AlreadyReg) => {}
        Err(e) => tracing::error!(error = %e, "metric registration failed"),
    }
}

/// The text exposition format of everything registered.
pub fn render() -> String {
    let mut buffer = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&registry().gather(), &mut buffer) {
        return format!("# encoding failed: {e}\n");
    }
    String::from_utf8(buffer).unwrap_or_default()
}

/// `priorfetch_admin_connections_refused_total`: connections closed at once because the
/// admin server already had its maximum open.
pub static ADMIN_CONNECTIONS_REFUSED: std::sync::LazyLock<prometheus::IntCounter> = std::sync::LazyLock::new(|| {
    let counter = prometheus::IntCounter::new(
        "priorfetch_admin_connections_refused_total",
        "Admin HTTP connections closed at once because the connection cap was reached",
    )
    .expect("valid metric");
    register(&counter);
    counter
});

/// `priorfetch_archive_up{archive}`, kept by [`crate::archive_health`] (which removes the
/// series of archives nothing talked to recently).
pub(crate) fn archive_up_gauge() -> prometheus::IntGaugeVec {
    prometheus::IntGaugeVec::new(
        prometheus::Opts::new(
            "priorfetch_archive_up",
            "Whether the archive answered our last C-FIND, C-ECHO or retrieve (1) or could not be reached or refused us (0)",
        ),
        &["archive"],
    )
    .expect("valid metric")
}
