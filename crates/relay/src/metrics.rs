//! The relay's metric.

use std::sync::LazyLock;

/// `priorfetch_spool_bytes`: bytes the running retrieves of this process hold in the
/// spool (received, not yet confirmed by the destination), against `mover.spool_limit_mb`.
pub static SPOOL_BYTES: LazyLock<prometheus::IntGauge> = LazyLock::new(|| {
    let g = prometheus::IntGauge::new("priorfetch_spool_bytes", "Bytes held in the C-GET spool by running retrieves")
        .expect("valid metric");
    priorfetch_telemetry::metrics::register(&g);
    g
});
