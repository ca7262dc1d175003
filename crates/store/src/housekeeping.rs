//! Cron-scheduled queue maintenance: the rescuer of expired leases and the retention purge.

use crate::{RescueScope, Store};
use chrono::Utc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// After its own database outage the rescuer waits this long before it judges workers by
/// their heartbeat: every heartbeat lapsed during the outage, and live workers (beating
/// every few seconds) must get the chance to beat again.
pub const HEARTBEAT_GRACE: Duration = Duration::from_secs(4);

pub struct Housekeeping {
    /// When to rescue expired leases (cron with seconds).
    pub rescue: cron::Schedule,
    /// When to purge old finished rows.
    pub purge: cron::Schedule,
    pub retention: Duration,
}

impl Housekeeping {
    /// From the configured cron expressions (`queue.rescue_schedule`, `queue.purge_schedule`).
    pub fn from_cron(rescue: &str, purge: &str, retention: Duration) -> Result<Housekeeping, String> {
        use std::str::FromStr;
        let parse = |expr: &str| cron::Schedule::from_str(expr).map_err(|e| format!("cron '{expr}': {e}"));
        Ok(Housekeeping { rescue: parse(rescue)?, purge: parse(purge)?, retention })
    }

    /// Runs until `shutdown` turns true. Failures are logged and the next tick tries again:
    /// housekeeping must never take a service down.
    pub async fn run(self, store: Store, mut shutdown: watch::Receiver<bool>) {
        // Since when the rescuer has reached the database without a failure.
        let mut reachable_since: Option<Instant> = None;
        loop {
            let now = Utc::now();
            let next_rescue = self.rescue.after(&now).next();
            let next_purge = self.purge.after(&now).next();
            let Some(next) = [next_rescue, next_purge].into_iter().flatten().min() else { return };
            let wait = (next - now).to_std().unwrap_or(Duration::ZERO);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
            if next_rescue == Some(next) {
                let dead_workers = reachable_since.is_some_and(|t| t.elapsed() >= HEARTBEAT_GRACE);
                let result = store.rescue(RescueScope::Expired { dead_workers }).await;
                reachable_since = match &result {
                    Ok(_) => reachable_since.or(Some(Instant::now())),
                    Err(_) => None,
                };
                match result {
                    Ok(r) if r.retried + r.failed + r.slots_freed + r.exams_released > 0 => tracing::warn!(
                        retried = r.retried,
                        failed = r.failed,
                        slots_freed = r.slots_freed,
                        exams_released = r.exams_released,
                        "rescued expired leases"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "rescuer failed"),
                }
            }
            if next_purge == Some(next) {
                match store.purge_finished(self.retention).await {
                    Ok(r) => {
                        tracing::info!(jobs = r.jobs, exams = r.exams, dead_letters = r.dead_letters, "retention purge")
                    }
                    Err(e) => tracing::warn!(error = %e, "retention purge failed"),
                }
            }
        }
    }
}
