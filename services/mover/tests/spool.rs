//! The C-GET spool holds PHI: a job that ends failed or cancelled leaves nothing behind,
//! orphans of a crashed predecessor go at start, and `priorfetch_spool_bytes` shows what
//! the running retrieves hold. The archive is the simulator; the destination is a closed
//! port, so every received instance stays in the spool (the worst case for leftovers).

mod common;

use common::*;
use pacs_sim::{DataSource, Faults, Sim, SimConfig, SimHandle, StudySummary, SyntheticSpec};
use priorfetch_relay::metrics::SPOOL_BYTES;
use priorfetch_store::JobState;
use std::path::Path;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

async fn archive(delay: Duration) -> (SimHandle, StudySummary) {
    let spec = SyntheticSpec {
        patients: 1,
        seed: 5,
        instances_per_series: 6,
        studies_per_patient: (2, 2),
        series_per_study: (2, 2),
        ..Default::default()
    };
    let faults = Faults { response_delay: Some(delay), ..Default::default() };
    let sim = Sim::start(SimConfig::new("ARCH", DataSource::Synthetic(spec)).with_faults(faults), "127.0.0.1:0")
        .await
        .unwrap();
    let study = sim.index().into_iter().max_by_key(|s| s.instances).unwrap();
    (sim, study)
}

/// (files, bytes) of complete instances anywhere under the spool.
fn spooled(root: &Path) -> (usize, u64) {
    let mut found = (0, 0);
    for dir in std::fs::read_dir(root).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(dir.path()).into_iter().flatten().flatten() {
            if f.path().extension().is_some_and(|e| e == "dcm") {
                found.0 += 1;
                found.1 += f.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    found
}

fn entries(root: &Path) -> Vec<String> {
    std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_c_get_job_leaves_nothing_in_the_spool() {
    let (sim, study) = archive(Duration::from_millis(20)).await;
    let (db, store) = postgres().await;
    let spool = tempfile::tempdir().unwrap();
    let closed = priorfetch_testkit::ports::free_port();
    let config = config(
        &db,
        spool.path(),
        &(archive_toml("arch", "ARCH", sim.port(), "get", "") + &destination_toml(closed, false)),
    );
    let exam = exam(&store, "s1").await;
    let job = job(&store, exam, "arch", "get", &study.study_instance_uid, Some(study.instances as i32)).await;
    let mover = start_mover(&store, config, "w1");
    // The attempts spool instances they cannot forward...
    let mut most = 0;
    let start = std::time::Instant::now();
    let done = loop {
        most = most.max(spooled(spool.path()).0);
        let j = store.job(job).await.unwrap().unwrap();
        if j.finished_at.is_some() {
            break j;
        }
        assert!(start.elapsed() < WAIT, "not finished: {j:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    mover.stop().await;
    assert_eq!((done.state.as_str(), done.attempt), ("failed", 3), "{done:?}");
    assert!(most > 0, "instances were spooled while the destination was down");
    // ... and the job that failed for good deletes them.
    assert_eq!(entries(spool.path()), Vec::<String>::new());
    assert_eq!(SPOOL_BYTES.get(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_c_get_job_leaves_nothing_and_the_gauge_tracks_the_spool() {
    let (sim, study) = archive(Duration::from_millis(150)).await;
    let (db, store) = postgres().await;
    let spool = tempfile::tempdir().unwrap();
    let closed = priorfetch_testkit::ports::free_port();
    let config = config(
        &db,
        spool.path(),
        &(archive_toml("arch", "ARCH", sim.port(), "get", "") + &destination_toml(closed, false)),
    );
    let exam = exam(&store, "s2").await;
    let job = job(&store, exam, "arch", "get", &study.study_instance_uid, Some(study.instances as i32)).await;
    let mover = start_mover(&store, config, "w1");
    until(WAIT, "instances spooled and counted by the gauge", async || {
        let (files, bytes) = spooled(spool.path());
        files >= 2 && SPOOL_BYTES.get() == bytes as i64
    })
    .await;
    assert!(SPOOL_BYTES.get() > 0);
    assert!(store.cancel_job(job).await.unwrap());
    until(Duration::from_secs(15), "cancelled job's spool deleted", async || entries(spool.path()).is_empty()).await;
    mover.stop().await;
    assert_eq!(store.job(job).await.unwrap().unwrap().state, JobState::Cancelled);
    assert_eq!(SPOOL_BYTES.get(), 0, "nothing held any more");
    assert_eq!(store.running_jobs("arch").await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphaned_spool_folders_are_removed_at_start() {
    let (db, store) = postgres().await;
    let spool = tempfile::tempdir().unwrap();
    for (dir, file) in [("job-77", "1.2.3.dcm"), ("job-78", "1.2.4.dcm.part")] {
        std::fs::create_dir_all(spool.path().join(dir)).unwrap();
        std::fs::write(spool.path().join(dir).join(file), b"PHI of a crashed run").unwrap();
    }
    std::fs::write(spool.path().join("README"), b"not ours").unwrap();
    let config =
        config(&db, spool.path(), &(archive_toml("arch", "ARCH", 104, "get", "") + &destination_toml(104, false)));
    let mover = start_mover(&store, config, "w1");
    until(Duration::from_secs(15), "orphans removed", async || {
        !spool.path().join("job-77").exists() && !spool.path().join("job-78").exists()
    })
    .await;
    mover.stop().await;
    assert_eq!(entries(spool.path()), vec!["README".to_string()], "only job folders are touched");
}
