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

/// `priorfetch_worklist_polls_total{worklist, outcome}`: outcome is ok, incomplete (the
/// SCP or we stopped a C-FIND early: nothing was cancelled), unreachable (association or
/// C-FIND failed or timed out) or failed (database, or the time ran out while writing).
pub static WORKLIST_POLLS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let counter = IntCounterVec::new(
        Opts::new("priorfetch_worklist_polls_total", "Modality Worklist polls by worklist and outcome"),
        &["worklist", "outcome"],
    )
    .expect("valid metric");
    priorfetch_telemetry::metrics::register(&counter);
    counter
});

/// `priorfetch_worklist_steps{worklist}`: valid Scheduled Procedure Steps the last
/// successful poll returned.
pub static WORKLIST_STEPS: LazyLock<prometheus::IntGaugeVec> = LazyLock::new(|| {
    let gauge = prometheus::IntGaugeVec::new(
        Opts::new("priorfetch_worklist_steps", "Scheduled procedure steps in the last successful worklist poll"),
        &["worklist"],
    )
    .expect("valid metric");
    priorfetch_telemetry::metrics::register(&gauge);
    gauge
});

/// `priorfetch_worklist_changes_total{worklist, change}`: what polls did to exams: new,
/// updated (re-planned), reopened, cancelled, invalid (a step that cannot be an exam;
/// dead-lettered the first time this process sees it).
pub static WORKLIST_CHANGES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let counter = IntCounterVec::new(
        Opts::new("priorfetch_worklist_changes_total", "Exam changes made by worklist polls, by kind"),
        &["worklist", "change"],
    )
    .expect("valid metric");
    priorfetch_telemetry::metrics::register(&counter);
    counter
});

/// `priorfetch_worklist_last_success_timestamp_seconds{worklist}`: alert when it lags
/// several poll intervals behind.
pub static WORKLIST_LAST_SUCCESS: LazyLock<prometheus::IntGaugeVec> = LazyLock::new(|| {
    let gauge = prometheus::IntGaugeVec::new(
        Opts::new(
            "priorfetch_worklist_last_success_timestamp_seconds",
            "Unix time of the last successful worklist poll",
        ),
        &["worklist"],
    )
    .expect("valid metric");
    priorfetch_telemetry::metrics::register(&gauge);
    gauge
});
