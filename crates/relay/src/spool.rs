//! The spool's lifecycle: one folder per job under `mover.spool_dir`, one byte
//! budget for the whole process (all running C-GETs draw from it), and deletion of what
//! holds PHI once it is of no use:
//! - a job that ends (completed, failed, cancelled, lost, handed back) loses its folder,
//!   at once or, with `mover.spool_retention`, after that time (an `.ended` marker dates it);
//! - a job put back for a retry keeps its files: the next attempt here forwards them first;
//! - at start every folder without a marker is an orphan of a crashed predecessor: deleted;
//! - a periodic sweep deletes marked folders past retention, and retry leftovers nobody
//!   picked up within [`LEFTOVER_AGE`] (the retry ran on another replica).

use crate::metrics;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};
use tokio::sync::Notify;
use tracing::{info, warn};

/// Retry leftovers older than this, of a job not running here, are deleted by the sweep.
pub const LEFTOVER_AGE: Duration = Duration::from_secs(3600);

const ENDED_MARKER: &str = ".ended";

/// Bytes the running C-GETs of this process hold in the spool, against one limit.
#[derive(Debug)]
pub struct SpoolBudget {
    spooled: AtomicU64,
    limit: u64,
    /// Woken whenever bytes leave the spool: receivers paused for room look again.
    room: Notify,
}

impl SpoolBudget {
    pub fn new(limit_mb: u64) -> Arc<SpoolBudget> {
        Arc::new(SpoolBudget {
            spooled: AtomicU64::new(0),
            limit: limit_mb.saturating_mul(1 << 20),
            room: Notify::new(),
        })
    }

    pub fn spooled(&self) -> u64 {
        self.spooled.load(Ordering::Relaxed)
    }

    pub fn is_full(&self) -> bool {
        self.spooled() > self.limit
    }

    fn add(&self, n: u64) {
        let now = self.spooled.fetch_add(n, Ordering::Relaxed).saturating_add(n);
        metrics::SPOOL_BYTES.set(now.min(i64::MAX as u64) as i64);
    }

    /// Never below zero if sizes drifted (a file changed between two stats).
    fn release(&self, n: u64) {
        let before = self.spooled.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| Some(s.saturating_sub(n)));
        let now = before.unwrap_or(0).saturating_sub(n);
        metrics::SPOOL_BYTES.set(now.min(i64::MAX as u64) as i64);
        self.room.notify_waiters();
    }

    /// Waits until the spool has room or `give_up` says waiting is pointless, at most
    /// `longest`. Returns false when it gave up on time.
    pub async fn wait_for_room(&self, give_up: impl Fn() -> bool, longest: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + longest;
        loop {
            // Registered before the check, so a release in between is not missed.
            let released = self.room.notified();
            if !self.is_full() || give_up() {
                return true;
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                return false;
            }
        }
    }

    /// Wakes the waiters to look at their `give_up` again.
    pub(crate) fn wake(&self) {
        self.room.notify_waiters();
    }
}

/// One job's share of the spool: its folder and the bytes it holds in the budget. What
/// it still holds goes back to the budget when it is dropped (the attempt ended).
#[derive(Debug)]
pub struct JobSpool {
    pub dir: PathBuf,
    budget: Arc<SpoolBudget>,
    held: AtomicU64,
}

impl JobSpool {
    pub fn open(root: &Path, job_id: i64, budget: Arc<SpoolBudget>) -> std::io::Result<JobSpool> {
        let dir = job_dir(root, job_id);
        std::fs::create_dir_all(&dir)?;
        // A retry that runs here again reuses the folder: it is no longer ended.
        let _ = std::fs::remove_file(dir.join(ENDED_MARKER));
        Ok(JobSpool { dir, budget, held: AtomicU64::new(0) })
    }

    /// A file entered the spool.
    pub fn add(&self, size: u64) {
        self.held.fetch_add(size, Ordering::Relaxed);
        self.budget.add(size);
    }

    /// A file left the spool.
    pub fn release(&self, size: u64) {
        let _ = self.held.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |h| Some(h.saturating_sub(size)));
        self.budget.release(size);
    }

    pub fn budget(&self) -> &SpoolBudget {
        &self.budget
    }

    /// Bytes this job holds in the spool now.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// SOP Instance UIDs complete in the folder (`<uid>.dcm`), left by an earlier attempt:
    /// the relay sends them again, so a retry need not fetch them from the archive.
    pub fn spooled_instances(&self) -> std::collections::HashSet<String> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return Default::default() };
        entries
            .flatten()
            .filter_map(|e| {
                let path = e.path();
                (path.extension()? == "dcm").then(|| path.file_stem()?.to_str().map(str::to_string))?
            })
            .collect()
    }
}

impl Drop for JobSpool {
    fn drop(&mut self) {
        self.budget.release(self.held.swap(0, Ordering::Relaxed));
    }
}

pub fn job_dir(root: &Path, job_id: i64) -> PathBuf {
    root.join(format!("job-{job_id}"))
}

/// The job ended here for good: delete its folder now, or mark it for the sweep when
/// `retention` keeps it for debugging.
pub fn end_job(root: &Path, job_id: i64, retention: Duration) {
    let dir = job_dir(root, job_id);
    if !dir.exists() {
        return;
    }
    let result = if retention.is_zero() || is_empty(&dir) {
        std::fs::remove_dir_all(&dir)
    } else {
        std::fs::write(dir.join(ENDED_MARKER), b"")
    };
    if let Err(e) = result {
        warn!(job = job_id, error = %e, "cannot clean the job's spool folder");
    }
}

/// At start: the predecessor's unmarked folders are orphans (it held every job it was
/// running; the queue hands those back). Returns how many were deleted.
pub fn remove_orphans(root: &Path) -> usize {
    let mut removed = 0;
    for (dir, _) in job_dirs(root) {
        if !dir.join(ENDED_MARKER).exists() && std::fs::remove_dir_all(&dir).is_ok() {
            removed += 1;
        }
    }
    if removed > 0 {
        info!(folders = removed, "removed orphaned spool folders of a previous run");
    }
    removed
}

/// Deletes ended folders past `retention` and retry leftovers older than
/// [`LEFTOVER_AGE`] whose job is not running here. Returns how many went.
pub fn sweep(root: &Path, retention: Duration, running: &HashSet<i64>) -> usize {
    let mut removed = 0;
    for (dir, job_id) in job_dirs(root) {
        let marker = dir.join(ENDED_MARKER);
        let expired = if marker.exists() {
            age(&marker).is_some_and(|a| a >= retention)
        } else {
            !running.contains(&job_id) && age(&dir).is_some_and(|a| a >= LEFTOVER_AGE)
        };
        if expired && std::fs::remove_dir_all(&dir).is_ok() {
            removed += 1;
        }
    }
    removed
}

fn job_dirs(root: &Path) -> Vec<(PathBuf, i64)> {
    let Ok(entries) = std::fs::read_dir(root) else { return Vec::new() };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| {
            let name = e.file_name();
            let id = name.to_str()?.strip_prefix("job-")?.parse::<i64>().ok()?;
            Some((e.path(), id))
        })
        .collect()
}

fn age(path: &Path) -> Option<Duration> {
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok()?;
    SystemTime::now().duration_since(modified).ok()
}

fn is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).map(|mut d| d.next().is_none()).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_paused_receiver_wakes_when_room_comes_back() {
        let root = tempfile::tempdir().unwrap();
        let budget = SpoolBudget::new(1);
        let job = Arc::new(JobSpool::open(root.path(), 7, budget.clone()).unwrap());
        job.add(2_000_000);
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.wait_for_room(|| false, Duration::from_secs(30)).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "a full spool pauses the receiver");
        let started = std::time::Instant::now();
        job.release(1_500_000);
        assert!(waiting.await.unwrap(), "woken by the release, not by the time limit");
        assert!(started.elapsed() < Duration::from_secs(1), "no polling delay: {:?}", started.elapsed());
        job.add(2_000_000);
        assert!(!budget.wait_for_room(|| false, Duration::from_millis(50)).await, "bounded when nothing frees");
    }

    #[test]
    fn jobs_draw_from_one_budget_and_give_back_on_drop() {
        let root = tempfile::tempdir().unwrap();
        let budget = SpoolBudget::new(1);
        let a = JobSpool::open(root.path(), 1, budget.clone()).unwrap();
        let b = JobSpool::open(root.path(), 2, budget.clone()).unwrap();
        a.add(700_000);
        assert!(!budget.is_full());
        b.add(700_000);
        assert!(budget.is_full(), "two jobs of 0.7 MB fill a 1 MB spool together");
        assert_eq!(metrics::SPOOL_BYTES.get(), 1_400_000);
        a.release(700_000);
        assert!(!budget.is_full());
        drop(b); // its attempt ended with a file still held
        assert_eq!((budget.spooled(), metrics::SPOOL_BYTES.get()), (0, 0));
    }

    #[test]
    fn orphans_go_at_start_and_ended_folders_after_retention() {
        let root = tempfile::tempdir().unwrap();
        for id in [1, 2, 3] {
            std::fs::create_dir_all(job_dir(root.path(), id)).unwrap();
            std::fs::write(job_dir(root.path(), id).join("x.dcm"), b"phi").unwrap();
        }
        end_job(root.path(), 2, Duration::from_secs(3600));
        std::fs::create_dir_all(root.path().join("not-a-job")).unwrap();
        assert_eq!(remove_orphans(root.path()), 2, "jobs 1 and 3 had no end marker");
        assert!(job_dir(root.path(), 2).exists(), "kept for its retention");
        assert_eq!(sweep(root.path(), Duration::from_secs(3600), &HashSet::new()), 0);
        assert_eq!(sweep(root.path(), Duration::ZERO, &HashSet::new()), 1);
        assert!(!job_dir(root.path(), 2).exists());
        assert!(root.path().join("not-a-job").exists(), "only job folders are touched");
    }
}
