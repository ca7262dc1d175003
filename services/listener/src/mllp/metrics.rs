//! The MLLP listener's metrics.

use prometheus::{IntCounterVec, IntGauge, Opts};
use std::sync::LazyLock;

/// `priorfetch_mllp_acks_total{code}`: acknowledgements sent, by MSA-1 (AA, AE, AR).
pub static ACKS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let counter = IntCounterVec::new(
        Opts::new("priorfetch_mllp_acks_total", "HL7 acknowledgements sent by the MLLP listener, by MSA-1 code"),
        &["code"],
    )
    .expect("valid metric");
    priorfetch_telemetry::metrics::register(&counter);
    counter
});

/// `priorfetch_mllp_connections`: open MLLP connections.
pub static CONNECTIONS: LazyLock<IntGauge> = LazyLock::new(|| {
    let gauge = IntGauge::new("priorfetch_mllp_connections", "Open MLLP connections").expect("valid metric");
    priorfetch_telemetry::metrics::register(&gauge);
    gauge
});

/// `priorfetch_mllp_closed_total{reason}`: connections the listener closed on a problem:
/// framing, too_large, idle, read_timeout, truncated, io, over_capacity, tls.
pub static CLOSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let counter = IntCounterVec::new(
        Opts::new("priorfetch_mllp_closed_total", "MLLP connections closed by the listener, by reason"),
        &["reason"],
    )
    .expect("valid metric");
    priorfetch_telemetry::metrics::register(&counter);
    counter
});
