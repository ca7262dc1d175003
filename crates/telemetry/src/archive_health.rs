//! `priorfetch_archive_up{archive}`: whether an archive answered the last C-FIND (planner),
//! C-ECHO (the mover's outage probe) or retrieve (mover) of this process.
//!
//! A verdict is only as good as its age: an archive nothing talked to for
//! [`set_stale_after`] (`signals.archive_stale`) loses its series, so an outage seen an hour
//! ago neither keeps `PriorfetchArchiveDown` firing nor does an old success hide one.
//! Stale series are removed when `/metrics` is gathered, so the expiry needs no timer.

use prometheus::IntGaugeVec;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex, Once};
use std::time::{Duration, Instant};

/// Until configured: the default of `signals.archive_stale`.
const DEFAULT_STALE_MS: u64 = 5 * 60 * 1000;

struct Health {
    gauge: IntGaugeVec,
    /// When each archive's verdict was last recorded.
    seen: Mutex<HashMap<String, Instant>>,
    stale_after_ms: AtomicU64,
}

static HEALTH: LazyLock<Health> = LazyLock::new(|| Health {
    gauge: crate::metrics::archive_up_gauge(),
    seen: Mutex::new(HashMap::new()),
    stale_after_ms: AtomicU64::new(DEFAULT_STALE_MS),
});
static REGISTERED: Once = Once::new();

/// The state, registered on first use (not inside the LazyLock: registering reads the
/// gauge's description, which would re-enter its initialisation).
fn health() -> &'static Health {
    let health = &*HEALTH;
    REGISTERED.call_once(|| crate::metrics::register(&Exporter));
    health
}

/// Records what the last contact with `archive` said: `up` when it answered (also with
/// an error status: it is there), false when it could not be reached or refused us.
pub fn record(archive: &str, up: bool) {
    let health = health();
    let mut seen = health.seen.lock().unwrap_or_else(|e| e.into_inner());
    health.gauge.with_label_values(&[archive]).set(i64::from(up));
    seen.insert(archive.to_string(), Instant::now());
}

/// How long a verdict stands without a new contact (`signals.archive_stale`).
pub fn set_stale_after(after: Duration) {
    health().stale_after_ms.store(after.as_millis().min(u64::MAX as u128) as u64, Ordering::Relaxed);
}

/// The current verdicts (tests, diagnostics), stale ones removed.
pub fn snapshot() -> Vec<(String, bool)> {
    let health = health();
    health.sweep();
    let seen = health.seen.lock().unwrap_or_else(|e| e.into_inner());
    let mut out: Vec<(String, bool)> =
        seen.keys().map(|a| (a.clone(), health.gauge.with_label_values(&[a.as_str()]).get() == 1)).collect();
    out.sort();
    out
}

impl Health {
    fn sweep(&self) {
        let stale = Duration::from_millis(self.stale_after_ms.load(Ordering::Relaxed));
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.retain(|archive, at| {
            let keep = at.elapsed() < stale;
            if !keep {
                let _ = self.gauge.remove_label_values(&[archive.as_str()]);
            }
            keep
        });
    }
}

/// Registered once; gathers the gauge after dropping stale series.
#[derive(Clone)]
struct Exporter;

impl Collector for Exporter {
    fn desc(&self) -> Vec<&Desc> {
        HEALTH.gauge.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        HEALTH.sweep();
        HEALTH.gauge.collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_are_recorded_and_expire() {
        record("north", true);
        record("south", false);
        assert_eq!(snapshot(), vec![("north".to_string(), true), ("south".to_string(), false)]);
        let text = crate::metrics::render();
        assert!(text.contains("priorfetch_archive_up{archive=\"south\"} 0"), "{text}");
        set_stale_after(Duration::from_millis(50));
        std::thread::sleep(Duration::from_millis(80));
        record("south", true);
        assert_eq!(snapshot(), vec![("south".to_string(), true)]);
        let text = crate::metrics::render();
        assert!(!text.contains("archive=\"north\""), "a stale verdict is removed: {text}");
        set_stale_after(Duration::from_millis(DEFAULT_STALE_MS));
    }
}
