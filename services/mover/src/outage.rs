//! Archives that went away. When an attempt loses its archive (no TCP path, or the
//! association dropped), the archive is held: its jobs are not claimed, for at most the
//! first retry delay at a time (each would fail the same way and use up an attempt), and
//! a C-ECHO probes it, 1 s later and then up to every [`PROBE_MAX`]. The first answer
//! (even a refusal) ends the hold. If a probe had failed before (a real outage, not a
//! blip), the jobs that failed during the outage are due at once instead of after their
//! retry backoff: work resumes seconds after the archive is back.
//!
//! The hold is bounded so that attempts still count: an archive that never comes back
//! fails its jobs after `retry.max_attempts`, as before, instead of parking them for good.
//! A blip (the first probe answers) wakes nothing: an archive that aborts every
//! association of ours (an AE table that lacks us) must not burn a job's attempts in
//! seconds.

use crate::Ctx;
use chrono::{DateTime, Utc};
use priorfetch_dimse::DimseError;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{info, warn};

const PROBE_FIRST: Duration = Duration::from_secs(1);
const PROBE_MAX: Duration = Duration::from_secs(5);
/// A probe is one C-ECHO on a fresh association; a silent peer must not stall it.
const PROBE_TIMEOUT: Duration = Duration::from_secs(4);

/// Errors that mean the archive itself went away, not that it answered no.
pub(crate) fn is_loss(error: &DimseError) -> bool {
    matches!(
        error,
        DimseError::Connect { .. } | DimseError::Io(_) | DimseError::Aborted { .. } | DimseError::Released { .. }
    )
}

#[derive(Default)]
pub(crate) struct Outages {
    held: Mutex<HashMap<String, Held>>,
}

struct Held {
    since: DateTime<Utc>,
    /// Claims resume at this instant even if no probe answered (the hold is bounded).
    until: Instant,
    /// A probe failed: the archive really was away.
    confirmed: bool,
}

impl Outages {
    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn is_held(&self, archive: &str) -> bool {
        self.held().get(archive).is_some_and(|h| h.until > Instant::now())
    }

    /// Holds the archive for `hold`; true when this starts an outage (the caller starts
    /// the probe), false when one is already being probed (the hold is renewed).
    fn begin(&self, archive: &str, hold: Duration) -> bool {
        let until = Instant::now() + hold;
        let mut held = self.held();
        if let Some(h) = held.get_mut(archive) {
            h.until = h.until.max(until);
            return false;
        }
        held.insert(archive.to_string(), Held { since: Utc::now(), until, confirmed: false });
        true
    }

    fn confirm(&self, archive: &str) {
        if let Some(h) = self.held().get_mut(archive) {
            h.confirmed = true;
        }
    }

    /// Ends the hold: when the archive had been away since, or None after a blip.
    fn end(&self, archive: &str) -> Option<DateTime<Utc>> {
        self.held().remove(archive).and_then(|h| h.confirmed.then_some(h.since))
    }
}

/// An attempt lost `archive`: hold it and probe until it answers (one probe per outage).
pub(crate) fn lost(ctx: &Arc<Ctx>, archive: &str, error: &DimseError) {
    priorfetch_telemetry::archive_health::record(archive, false);
    // The probe is a C-ECHO: a DICOMweb archive's jobs just wait out their backoff.
    let dicomweb = |a: &&priorfetch_config::ArchiveConfig| a.protocol == priorfetch_config::Protocol::Dicomweb;
    if ctx.config.archives.iter().filter(dicomweb).any(|a| a.name == archive) {
        return;
    }
    let hold = ctx.policy.initial.max(PROBE_FIRST);
    if !ctx.outages.begin(archive, hold) {
        return;
    }
    warn!(archive, error = %error, hint = %error.hint(),
          "archive lost: holding its jobs and probing it with C-ECHO until it answers");
    tokio::spawn(probe_until_back(ctx.clone(), archive.to_string()));
}

async fn probe_until_back(ctx: Arc<Ctx>, archive: String) {
    let mut wait = PROBE_FIRST;
    let mut probes = 0u32;
    loop {
        tokio::time::sleep(wait).await;
        probes += 1;
        match echo(&ctx, &archive).await {
            Ok(()) => break,
            // It answered, if only to refuse or abort: it is there (what it refuses is
            // for the jobs' own errors and backoff to tell).
            Err(e) if !matches!(e, DimseError::Connect { .. } | DimseError::Io(_)) => break,
            Err(e) => {
                // every probe renews the verdict, so a long outage does not expire it
                priorfetch_telemetry::archive_health::record(&archive, false);
                if probes == 1 {
                    warn!(archive = %archive, error = %e, "archive still unreachable; probing until it answers");
                }
                ctx.outages.confirm(&archive);
                wait = (wait * 2).min(PROBE_MAX);
            }
        }
    }
    priorfetch_telemetry::archive_health::record(&archive, true);
    let Some(since) = ctx.outages.end(&archive) else {
        info!(archive = %archive, "archive answered the first probe; its jobs go on as scheduled");
        return;
    };
    let away = (Utc::now() - since).to_std().unwrap_or_default();
    let woken = crate::record::until_written("wake", 0, || ctx.store.wake_archive_jobs(&archive, since)).await;
    match woken {
        Ok(n) => info!(archive = %archive, away_s = away.as_secs_f64(), probes, jobs_resumed = n,
                       "archive reachable again: jobs that failed during the outage are due now"),
        Err(e) => warn!(archive = %archive, error = %e, "archive is back, but its failed jobs wait out their backoff"),
    }
}

async fn echo(ctx: &Ctx, archive: &str) -> Result<(), DimseError> {
    let peer = ctx.peers.archive(archive)?;
    let mut options = ctx.peers.scu_options(archive)?;
    options.connect_timeout = PROBE_TIMEOUT;
    options.association_timeout = PROBE_TIMEOUT;
    options.dimse_timeout = PROBE_TIMEOUT;
    tokio::time::timeout(PROBE_TIMEOUT * 3, priorfetch_dimse::echo(&peer, &options))
        .await
        .map_err(|_| DimseError::Io("C-ECHO probe timed out".into()))?
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blip_wakes_nothing_and_a_confirmed_outage_wakes_since_it_began() {
        let o = Outages::default();
        let hold = Duration::from_secs(60);
        assert!(o.begin("north", hold));
        assert!(!o.begin("north", hold), "one probe per outage");
        assert!(o.is_held("north") && !o.is_held("south"));
        assert_eq!(o.end("north"), None, "the first probe answered: a blip");
        assert!(!o.is_held("north"));
        assert!(o.begin("north", hold));
        o.confirm("north");
        assert!(o.end("north").is_some_and(|since| since <= Utc::now()));
    }

    #[test]
    fn a_hold_lapses_so_attempts_still_count_and_a_new_loss_renews_it() {
        let o = Outages::default();
        assert!(o.begin("north", Duration::ZERO));
        assert!(!o.is_held("north"), "lapsed: due jobs are claimed and fail as before");
        assert!(!o.begin("north", Duration::from_secs(60)), "still the same outage, still probed");
        assert!(o.is_held("north"), "renewed");
    }

    #[test]
    fn only_a_lost_archive_is_held() {
        assert!(is_loss(&DimseError::Connect { address: "a:1".into(), reason: "refused".into() }));
        assert!(is_loss(&DimseError::Io("reset".into())));
        let rejected = DimseError::Rejected {
            peer: "p".into(),
            reason: "busy".into(),
            permanent: false,
            called_ae: "A".into(),
            calling_ae: "B".into(),
        };
        assert!(!is_loss(&rejected));
        assert!(!is_loss(&DimseError::Timeout { peer: "p".into(), what: "C-MOVE-RSP", after: Duration::from_secs(1) }));
    }
}
