//! Whether the bus intake is making progress, for `/readyz`: a source that cannot reach
//! its broker, or whose batches keep failing on the database, is *stalled* once that has
//! lasted [`STALLED_AFTER`], and the process reports itself unready, so an orchestrator
//! or a load balancer sees the problem instead of a green probe over a frozen queue.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a source may fail without interruption before the intake counts as stalled
/// (a broker restart or a short database blip stays below it).
pub const STALLED_AFTER: Duration = Duration::from_secs(15);

/// The first failure of the current run of failures, and what it was.
static FAILING: Mutex<Option<(Instant, String)>> = Mutex::new(None);

/// The source works: connected and committing (or idle with nothing to do).
pub fn healthy() {
    if let Ok(mut failing) = FAILING.lock() {
        *failing = None;
    }
}

/// The source failed (broker unreachable, batch not committed); the first failure of a
/// run starts the clock.
pub fn failing(reason: &str) {
    if let Ok(mut failing) = FAILING.lock()
        && failing.is_none()
    {
        *failing = Some((Instant::now(), reason.chars().take(200).collect()));
    }
}

/// `Some(reason)` when the intake has been failing for longer than [`STALLED_AFTER`].
pub fn stalled() -> Option<String> {
    stalled_after(STALLED_AFTER)
}

fn stalled_after(limit: Duration) -> Option<String> {
    let failing = FAILING.lock().ok()?;
    let (since, reason) = failing.as_ref()?;
    (since.elapsed() >= limit).then(|| format!("intake stalled for {}s: {reason}", since.elapsed().as_secs()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stalls_only_after_an_uninterrupted_run_of_failures() {
        healthy();
        assert_eq!(stalled_after(Duration::ZERO), None);
        failing("broker unreachable");
        std::thread::sleep(Duration::from_millis(20));
        failing("still unreachable"); // does not restart the clock
        let reason = stalled_after(Duration::from_millis(10)).expect("stalled");
        assert!(reason.contains("broker unreachable"), "{reason}");
        assert_eq!(stalled_after(Duration::from_secs(60)), None);
        healthy();
        assert_eq!(stalled_after(Duration::ZERO), None);
    }
}
