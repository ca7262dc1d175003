//! Cron-scheduled queue maintenance: the rescuer of expired leases and the retention purge.

use crate::Store;
use chrono::Utc;
use std::time::Duration;
use tokio::sync::watch;

pub struct Housekeeping {
    /// When to rescue expired leases (cron with seconds).
    pub rescue: cron::Schedule,
    /// When to purge old finished rows.
    pub purge: cron::Schedule,
    pub retention: Duration,
}

impl Housekeeping {
    /// Runs until `shutdown` turns true. Failures are logged and the next tick tries again:
    /// housekeeping must never take a service down.
    pub async fn run(self, store: Store, mut shutdown: watch::Receiver<bool>) {
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
                match store.rescue_expired().await {
                    Ok(r) if r.retried + r.failed + r.slots_freed + r.exams_released > 0 => tracing::warn!(
                        retried = r.retried, failed = r.failed, slots_freed = r.slots_freed,
                        exams_released = r.exams_released, "rescued expired leases"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "rescuer failed"),
                }
            }
            if next_purge == Some(next) {
                match store.purge_finished(self.retention).await {
                    Ok(r) => tracing::info!(jobs = r.jobs, exams = r.exams, dead_letters = r.dead_letters, "retention purge"),
                    Err(e) => tracing::warn!(error = %e, "retention purge failed"),
                }
            }
        }
    }
}
