//! The listener's metrics.

use prometheus::{IntCounter, IntCounterVec, Opts};
use std::sync::LazyLock;

/// `priorfetch_events_total{source, outcome}`: outcome is accepted, duplicate, updated,
/// cancelled, unmatched (an update/cancel for an unknown order) or invalid.
pub static EVENTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let counter = IntCounterVec::new(
        Opts::new("priorfetch_events_total", "Scheduled-exam events by source and outcome"),
        &["source", "outcome"],
    )
    .expect("valid metric");
    priorfetch_telemetry::metrics::register(&counter);
    counter
});

/// `priorfetch_dead_letters_total{source, reason}`.
pub static DEAD_LETTERS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let counter = IntCounterVec::new(
        Opts::new("priorfetch_dead_letters_total", "Invalid messages sent to the dead-letter queue/topic, by reason"),
        &["source", "reason"],
    )
    .expect("valid metric");
    priorfetch_telemetry::metrics::register(&counter);
    counter
});

/// `priorfetch_dead_letters_trimmed_total`: oldest dead letters deleted to keep the table
/// within `intake.dead_letter_limit` (they stay on the dead-letter queue/topic).
pub static DEAD_LETTERS_TRIMMED: LazyLock<IntCounter> = LazyLock::new(|| {
    let counter = IntCounter::new(
        "priorfetch_dead_letters_trimmed_total",
        "Oldest dead-letter rows deleted to keep the table within its limit",
    )
    .expect("valid metric");
    priorfetch_telemetry::metrics::register(&counter);
    counter
});

/// `priorfetch_http_intake_refused_total{status}`: HTTP senders refused before their event
/// was read: 401 (no or unknown token), 403 (role, or not loopback without tokens), 429.
pub static HTTP_REFUSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let counter = IntCounterVec::new(
        Opts::new("priorfetch_http_intake_refused_total", "HTTP intake requests refused before reading, by status"),
        &["status"],
    )
    .expect("valid metric");
    priorfetch_telemetry::metrics::register(&counter);
    counter
});
