//! The mover against archives that misbehave the ways archives do, injected by the
//! simulator (crates/pacs-sim). The destination is a simulator too: it counts what
//! arrived by SOP instance and answers the verification C-FIND.

mod common;

use common::*;
use pacs_sim::{DataSource, Faults, Sim, SimConfig, SimHandle, StudySummary, SyntheticSpec};
use priorfetch_store::{ExamStatus, JobState};
use std::collections::HashSet;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

struct Setup {
    archive: SimHandle,
    dest: SimHandle,
    study: StudySummary,
}

/// One synthetic archive (ARCH) whose biggest study is the one to fetch, a destination
/// simulator (DEST) it can move to.
async fn setup(faults: Faults, instances_per_series: usize) -> Setup {
    let dest = Sim::start(SimConfig::new("DEST", DataSource::Empty), "127.0.0.1:0").await.unwrap();
    let spec = SyntheticSpec {
        patients: 1,
        seed: 11,
        instances_per_series,
        studies_per_patient: (3, 3),
        series_per_study: (2, 3),
        ..Default::default()
    };
    let archive = Sim::start(
        SimConfig::new("ARCH", DataSource::Synthetic(spec))
            .with_destination("DEST", "127.0.0.1", dest.port())
            .with_faults(faults),
        "127.0.0.1:0",
    )
    .await
    .unwrap();
    let study = archive.index().into_iter().max_by_key(|s| s.instances).unwrap();
    Setup { archive, dest, study }
}

fn arrived(dest: &SimHandle, study: &str) -> HashSet<String> {
    dest.received().into_iter().filter(|r| r.study_instance_uid == study).map(|r| r.sop_instance_uid).collect()
}

async fn run_one(s: &Setup, method: &str, check_existing: bool) -> priorfetch_store::Job {
    let (db, store) = postgres().await;
    let spool = tempfile::tempdir().unwrap();
    let config = config(
        &db,
        spool.path(),
        &(archive_toml("arch", "ARCH", s.archive.port(), method, "")
            + &destination_toml(s.dest.port(), check_existing)),
    );
    let exam = exam(&store, "f1").await;
    let job = job(&store, exam, "arch", method, &s.study.study_instance_uid, Some(s.study.instances as i32)).await;
    let mover = start_mover(&store, config, "w1");
    let done = finished(&store, job, WAIT).await;
    mover.stop().await;
    drop(db);
    done
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_with_nothing_sent_is_partial_then_recovers_by_retry() {
    let s = setup(Faults { empty_success: true, faults_first_attempts: Some(1), ..Default::default() }, 2).await;
    let done = run_one(&s, "move", true).await;
    assert_eq!(done.state, JobState::Completed, "{done:?}");
    assert_eq!(done.attempt, 2);
    let errors = errors_of(&done);
    assert!(
        errors[0].contains("destination received nothing") && errors[0].contains("maps DEST to host:port"),
        "{errors:?}"
    );
    assert_eq!(arrived(&s.dest, &s.study.study_instance_uid).len(), s.study.instances);
    assert_eq!(done.received as usize, s.study.instances, "verified at the destination");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_sub_operations_are_retried_by_instance_only() {
    let s = setup(Faults { failed_suboperation_ratio: 0.3, faults_first_attempts: Some(1), ..Default::default() }, 10)
        .await;
    let total = s.study.instances;
    let done = run_one(&s, "move", true).await;
    assert_eq!(done.state, JobState::Completed, "{done:?}");
    assert_eq!(done.attempt, 2);
    assert_eq!((done.counts.completed as usize, done.counts.failed), (total, 0), "counts add up over both attempts");
    let errors = errors_of(&done);
    assert!(errors[0].contains("retrying the failed instances"), "{errors:?}");
    assert_eq!(arrived(&s.dest, &s.study.study_instance_uid).len(), total);
    // Only the failed instances were sent again: total sub-operations = instances.
    let stats = s.archive.stats();
    assert_eq!(stats.stores_sent as usize, total, "{stats:?}");
    assert!(stats.failed_subops > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_get_with_failed_sub_operations_is_relayed_and_completed_by_retry() {
    let s = setup(Faults { failed_suboperation_ratio: 0.3, faults_first_attempts: Some(1), ..Default::default() }, 10)
        .await;
    let done = run_one(&s, "get", false).await;
    assert_eq!(done.state, JobState::Completed, "{done:?}");
    assert_eq!(done.counts.completed as usize, s.study.instances);
    assert_eq!(arrived(&s.dest, &s.study.study_instance_uid).len(), s.study.instances);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_resources_and_aborts_are_retried() {
    for faults in [
        Faults { out_of_resources: true, faults_first_attempts: Some(1), ..Default::default() },
        Faults { abort_after_suboperations: Some(3), faults_first_attempts: Some(1), ..Default::default() },
    ] {
        let s = setup(faults.clone(), 4).await;
        let done = run_one(&s, "move", false).await;
        assert_eq!(done.state, JobState::Completed, "{faults:?}: {done:?}");
        assert_eq!(done.attempt, 2, "{faults:?}");
        let errors = errors_of(&done);
        assert!(errors[0].contains("0xA702") || errors[0].contains("abort"), "{errors:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_hands_a_running_retrieve_back_to_the_queue() {
    let s = setup(Faults { response_delay: Some(Duration::from_millis(500)), ..Default::default() }, 40).await;
    let (db, store) = postgres().await;
    let spool = tempfile::tempdir().unwrap();
    let config = config(
        &db,
        spool.path(),
        &(archive_toml("arch", "ARCH", s.archive.port(), "move", "") + &destination_toml(s.dest.port(), false)),
    );
    let exam = exam(&store, "f5").await;
    let job = job(&store, exam, "arch", "move", &s.study.study_instance_uid, Some(s.study.instances as i32)).await;
    let mover = start_mover(&store, config, "w1");
    until(WAIT, "job running", async || store.job(job).await.unwrap().is_some_and(|j| j.state == JobState::Running))
        .await;
    mover.stop().await; // grace 2 s, then C-CANCEL and hand back
    let j = store.job(job).await.unwrap().unwrap();
    assert_eq!((j.state.as_str(), j.attempt, j.worker.as_deref()), ("available", 0, None), "{j:?}");
    assert_eq!(store.running_jobs("arch").await.unwrap(), 0);
    assert!(arrived(&s.dest, &s.study.study_instance_uid).len() < s.study.instances, "stopped before the end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_the_exam_stops_a_running_retrieve_with_c_cancel() {
    let s = setup(Faults { response_delay: Some(Duration::from_millis(300)), ..Default::default() }, 10).await;
    let (db, store) = postgres().await;
    let spool = tempfile::tempdir().unwrap();
    let config = config(
        &db,
        spool.path(),
        &(archive_toml("arch", "ARCH", s.archive.port(), "move", "") + &destination_toml(s.dest.port(), false)),
    );
    let exam = exam(&store, "f6").await;
    let job = job(&store, exam, "arch", "move", &s.study.study_instance_uid, Some(s.study.instances as i32)).await;
    let mover = start_mover(&store, config, "w1");
    until(WAIT, "job running with progress", async || {
        store.job(job).await.unwrap().is_some_and(|j| j.state == JobState::Running && j.counts.completed > 0)
    })
    .await;
    store.cancel_exam(exam).await.unwrap();
    until(Duration::from_secs(10), "slot freed after C-CANCEL", async || {
        store.running_jobs("arch").await.unwrap() == 0
    })
    .await;
    // The archive stopped sending: a few more at most, never the whole study.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let sent = s.archive.stats().stores_sent as usize;
    mover.stop().await;
    assert!(sent < s.study.instances, "sent {sent} of {}", s.study.instances);
    assert_eq!(store.job(job).await.unwrap().unwrap().state, JobState::Cancelled);
    assert_eq!(store.exam(exam).await.unwrap().unwrap().status, ExamStatus::Cancelled);
}

/// An archive that stops sending while its association stays alive (pending responses
/// with the same counts, so no DIMSE timeout fires) does not hold the job: after
/// `mover.stall_timeout` without a finished instance the attempt is cancelled and retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_retrieve_is_cancelled_and_retried() {
    let s =
        setup(Faults { stall_after_suboperations: Some(3), faults_first_attempts: Some(1), ..Default::default() }, 8)
            .await;
    let (db, store) = postgres().await;
    let spool = tempfile::tempdir().unwrap();
    let config = config_with_mover(
        &db,
        spool.path(),
        "stall_timeout = \"20s\"",
        &(archive_toml("arch", "ARCH", s.archive.port(), "move", "") + &destination_toml(s.dest.port(), false)),
    );
    let exam = exam(&store, "stall").await;
    let job = job(&store, exam, "arch", "move", &s.study.study_instance_uid, Some(s.study.instances as i32)).await;
    let mover = start_mover(&store, config, "w1");
    let done = finished(&store, job, Duration::from_secs(90)).await;
    mover.stop().await;
    assert_eq!(done.state, JobState::Completed, "{done:?}");
    assert_eq!(done.attempt, 2, "{done:?}");
    let errors = errors_of(&done);
    assert!(errors[0].contains("no instance done for 20s"), "{errors:?}");
    assert_eq!(arrived(&s.dest, &s.study.study_instance_uid).len(), s.study.instances);
    assert_eq!(store.running_jobs("arch").await.unwrap(), 0, "the slot is free");
}
