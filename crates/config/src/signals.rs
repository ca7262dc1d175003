//! `[signals]`: the readiness and queue signals every process reads from the database
//! (`crates/signals`), so they exist whichever processes are up.

use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalsConfig {
    /// `priorfetch_exams_upcoming` counts exams scheduled within this from now.
    #[serde(with = "crate::duration")]
    pub upcoming: Duration,
    /// An exam not ready and scheduled within this is `at_risk`.
    #[serde(with = "crate::duration")]
    pub at_risk: Duration,
    /// How often each process reads the signals (one short query per signal).
    #[serde(with = "crate::duration")]
    pub every: Duration,
    /// `priorfetch_archive_up` of an archive no C-FIND, C-ECHO or retrieve touched for this
    /// long is removed: an old verdict must not keep an alert firing, or quiet.
    #[serde(with = "crate::duration")]
    pub archive_stale: Duration,
}

/// Problems as (field, message).
pub(crate) fn check(signals: &SignalsConfig) -> Vec<(&'static str, &'static str)> {
    let mut issues = Vec::new();
    // A week bounds the scan of exams; a zero window would export nothing useful.
    if signals.upcoming.is_zero() || signals.upcoming > Duration::from_secs(7 * 86_400) {
        issues.push(("upcoming", "must be positive and at most 7d"));
    }
    if signals.at_risk.is_zero() || signals.at_risk > signals.upcoming {
        issues.push(("at_risk", "must be positive and at most signals.upcoming"));
    }
    if signals.every < Duration::from_secs(1) || signals.every > Duration::from_secs(300) {
        issues.push(("every", "must be between 1s and 5m"));
    }
    if signals.archive_stale < Duration::from_secs(10) {
        issues.push(("archive_stale", "must be at least 10s"));
    }
    issues
}
