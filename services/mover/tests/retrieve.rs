//! The mover against real archives and destinations: Orthanc and DCMTK (dcmqrscp,
//! storescp). Jobs are enqueued directly; the planner has its own tests.

mod common;

use common::*;
use priorfetch_store::ExamStatus;
use priorfetch_store::JobState;
use priorfetch_testkit::dicom::{Dcmqrscp, Orthanc, Storescp, StudySpec, store_files, write_study};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

fn load(ae: &str, port: u16, spec: &StudySpec) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_study(dir.path(), spec);
    store_files(ae, port, dir.path());
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_move_from_orthanc_arrives_complete_at_storescp() {
    let (db, store) = postgres().await;
    let dest = Storescp::start("DEST");
    let orthanc = Orthanc::start("ARCH", "PRIORFETCH", &[dest.destination()], None);
    let spec = StudySpec::small("P1", 1);
    let _files = load("ARCH", orthanc.port, &spec);
    let spool = tempfile::tempdir().unwrap();
    let config = config(
        &db,
        spool.path(),
        &(archive_toml("main", "ARCH", orthanc.port, "move", "") + &destination_toml(dest.port, false)),
    );
    let exam = exam(&store, "e1").await;
    let job = job(&store, exam, "main", "move", &spec.study_uid, Some(spec.instance_count() as i32)).await;

    let mover = start_mover(&store, config, "w1");
    let done = finished(&store, job, WAIT).await;
    mover.stop().await;

    assert_eq!(done.state, JobState::Completed, "{done:?}");
    assert_eq!((done.counts.completed, done.counts.failed, done.counts.warning), (6, 0, 0));
    assert_eq!(dest.files().len(), 6, "every instance at the destination");
    assert_eq!(store.exam(exam).await.unwrap().unwrap().status, ExamStatus::Complete);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_get_from_orthanc_is_relayed_to_storescp_and_the_spool_emptied() {
    let (db, store) = postgres().await;
    let dest = Storescp::start("DEST");
    let orthanc = Orthanc::start("ARCH", "PRIORFETCH", &[], None);
    let mut spec = StudySpec::small("P2", 2);
    spec.instances_per_series = 10;
    let _files = load("ARCH", orthanc.port, &spec);
    let spool = tempfile::tempdir().unwrap();
    let config = config(
        &db,
        spool.path(),
        &(archive_toml("main", "ARCH", orthanc.port, "get", "") + &destination_toml(dest.port, false)),
    );
    let exam = exam(&store, "e2").await;
    let job = job(&store, exam, "main", "get", &spec.study_uid, Some(20)).await;

    let mover = start_mover(&store, config, "w1");
    let done = finished(&store, job, WAIT).await;
    mover.stop().await;

    assert_eq!(done.state, JobState::Completed, "{done:?}");
    assert_eq!(done.counts.completed, 20);
    assert_eq!(dest.files().len(), 20);
    let left: Vec<_> = walk(spool.path());
    assert!(left.is_empty(), "spool emptied, found {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_move_destination_fails_for_good_with_the_fix() {
    let (db, store) = postgres().await;
    // dcmqrscp knows no DEST: it answers 0xA801.
    let archive = Dcmqrscp::start("QRSCP", "PRIORFETCH", &[]);
    let spec = StudySpec::small("P3", 3);
    let _files = load("QRSCP", archive.port, &spec);
    let spool = tempfile::tempdir().unwrap();
    let config = config(
        &db,
        spool.path(),
        &(archive_toml("qr", "QRSCP", archive.port, "move", "") + &destination_toml(1, false)),
    );
    let exam = exam(&store, "e3").await;
    let job = job(&store, exam, "qr", "move", &spec.study_uid, Some(6)).await;

    let mover = start_mover(&store, config, "w1");
    let done = finished(&store, job, WAIT).await;
    mover.stop().await;

    assert_eq!(done.state, JobState::Failed);
    assert_eq!(done.attempt, 1, "not retried: retrying cannot help");
    assert_eq!(done.last_status, Some(0xA801));
    let error = done.last_error.unwrap_or_default();
    assert!(error.contains("does not know move destination 'DEST'") && error.contains("AE table"), "{error}");
    assert_eq!(store.exam(exam).await.unwrap().unwrap().status, ExamStatus::Failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_archive_is_retried_with_backoff_then_fails() {
    let (db, store) = postgres().await;
    let closed = priorfetch_testkit::ports::free_port();
    let spool = tempfile::tempdir().unwrap();
    let config =
        config(&db, spool.path(), &(archive_toml("gone", "GONE", closed, "move", "") + &destination_toml(1, false)));
    let exam = exam(&store, "e4").await;
    let job = job(&store, exam, "gone", "move", "1.2.3.4", Some(1)).await;

    let mover = start_mover(&store, config, "w1");
    let done = finished(&store, job, WAIT).await;
    mover.stop().await;

    assert_eq!(done.state, JobState::Failed);
    assert_eq!(done.attempt, 3, "max_attempts");
    let errors = errors_of(&done);
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(errors.iter().all(|e| e.contains("no TCP path")), "{errors:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_destination_confirms_what_arrived_when_check_existing_is_on() {
    let (db, store) = postgres().await;
    // Orthanc as the destination: it answers C-FIND, so the count can be verified.
    let dest = Orthanc::start("DEST", "PRIORFETCH", &[], None);
    let archive = Orthanc::start(
        "ARCH",
        "PRIORFETCH",
        &[priorfetch_testkit::dicom::Destination { ae: "DEST".into(), port: dest.port }],
        None,
    );
    let spec = StudySpec::small("P5", 5);
    let _files = load("ARCH", archive.port, &spec);
    let spool = tempfile::tempdir().unwrap();
    let config = config(
        &db,
        spool.path(),
        &(archive_toml("main", "ARCH", archive.port, "move", "") + &destination_toml(dest.port, true)),
    );
    let exam = exam(&store, "e5").await;
    let job = job(&store, exam, "main", "move", &spec.study_uid, Some(6)).await;

    let mover = start_mover(&store, config, "w1");
    let done = finished(&store, job, WAIT).await;
    mover.stop().await;

    assert_eq!(done.state, JobState::Completed, "{done:?}");
    assert_eq!(done.received, 6, "the destination's own count");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_wait_while_the_retrieve_window_is_closed() {
    let (db, store) = sqlite().await;
    let spool = tempfile::tempdir().unwrap();
    // A window on 1 January only: closed today (the test date is not 1 January).
    let window = "retrieve_windows = [{ start = \"0 0 0 1 1 *\", duration = \"1h\" }]";
    let config =
        config(&db, spool.path(), &(archive_toml("night", "NIGHT", 1, "move", window) + &destination_toml(1, false)));
    let exam = exam(&store, "e6").await;
    let job = job(&store, exam, "night", "move", "1.2.3.5", Some(1)).await;

    let mover = start_mover(&store, config, "w1");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    mover.stop().await;

    let job = store.job(job).await.unwrap().unwrap();
    assert_eq!((job.state.as_str(), job.attempt), ("available", 0), "never claimed: {job:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_move_on_sqlite_updates_counts_and_metrics() {
    let (db, store) = sqlite().await;
    let dest = Storescp::start("DEST");
    let orthanc = Orthanc::start("ARCH", "PRIORFETCH", &[dest.destination()], None);
    let spec = StudySpec::small("P7", 7);
    let _files = load("ARCH", orthanc.port, &spec);
    let spool = tempfile::tempdir().unwrap();
    let config = config(
        &db,
        spool.path(),
        &(archive_toml("sq", "ARCH", orthanc.port, "move", "") + &destination_toml(dest.port, false)),
    );
    let exam = exam(&store, "e7").await;
    let job = job(&store, exam, "sq", "move", &spec.study_uid, Some(6)).await;

    let mover = start_mover(&store, config, "w1");
    let done = finished(&store, job, WAIT).await;
    mover.stop().await;
    assert_eq!(done.state, JobState::Completed);
    let metrics = priorfetch_telemetry::metrics::render();
    for needle in [
        "priorfetch_job_attempts_total{archive=\"sq\",method=\"move\",outcome=\"completed\"} 1",
        "priorfetch_suboperations_total{archive=\"sq\",result=\"completed\"} 6",
        "priorfetch_archive_up{archive=\"sq\"} 1",
        "priorfetch_exams_ready_total{outcome=\"in_time\"}",
        "priorfetch_retrieve_duration_seconds_count{archive=\"sq\",method=\"move\"} 1",
    ] {
        assert!(metrics.contains(needle), "missing {needle} in\n{metrics}");
    }
}
