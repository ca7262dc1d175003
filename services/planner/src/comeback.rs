//! An archive answering again after it was away: the exams planned without it (a gap in
//! their plan, a re-plan pending with backoff) are re-planned at once, so a prior only that
//! archive holds is queued while there is still time before the exam.

use priorfetch_store::Store;
use std::collections::HashMap;

/// The last verdict seen per archive (C-FIND here, C-ECHO and retrieves in a mover of the
/// same process), kept after it goes stale so a later "up" is still a comeback.
#[derive(Default)]
pub(crate) struct Comebacks {
    seen: HashMap<String, bool>,
}

impl Comebacks {
    /// Archives that were down at the last look and are up now.
    pub(crate) fn poll(&mut self) -> Vec<String> {
        let mut back = Vec::new();
        for (archive, up) in priorfetch_telemetry::archive_health::snapshot() {
            if up && self.seen.get(&archive) == Some(&false) {
                back.push(archive.clone());
            }
            self.seen.insert(archive, up);
        }
        back
    }

    /// Moves the pending re-plans of the archives that came back to now.
    pub(crate) async fn wake_replans(&mut self, store: &Store) {
        for archive in self.poll() {
            match store.replan_gaps_now(&archive).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(%archive, exams = n, "archive answers again: re-planning the exams that missed it")
                }
                Err(e) => tracing::warn!(%archive, error = %e, "cannot bring re-plans forward"),
            }
        }
    }
}
