//! WADO-RS faults, injected by the simulator's DICOMweb side (the happy paths run against
//! Orthanc in `wado.rs`): 429 and 503 with Retry-After, a body cut mid-part, bad credentials.
//! The destination is DCMTK's storescp.

mod common;

use common::*;
use pacs_sim::{DataSource, Faults, Sim, SimConfig, SimHandle, StudySummary, SyntheticSpec, WebBusy};
use priorfetch_store::JobState;
use priorfetch_testkit::dicom::Storescp;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);

async fn archive(faults: Faults, user: Option<(&str, &str)>) -> (SimHandle, String, StudySummary) {
    let spec = SyntheticSpec {
        patients: 1,
        seed: 9,
        studies_per_patient: (1, 1),
        series_per_study: (2, 2),
        instances_per_series: 5,
        ..Default::default()
    };
    let mut config = SimConfig::new("WEBSIM", DataSource::Synthetic(spec)).with_faults(faults);
    config.web_user = user.map(|(u, p)| (u.to_string(), p.to_string()));
    let sim = Sim::start(config, "127.0.0.1:0").await.unwrap();
    let url = sim.serve_dicomweb("127.0.0.1:0").await.unwrap();
    let study = sim.index().remove(0);
    (sim, url, study)
}

/// Runs one wado job against `url`; returns it finished and how long it took.
async fn run(url: &str, study: &StudySummary, auth: &str) -> (priorfetch_store::Job, Duration, Storescp) {
    let dest = Storescp::start("DEST");
    let (db, store) = postgres().await;
    let spool = tempfile::tempdir().unwrap();
    let archive = format!(
        "[[archives]]\nname = \"cloud\"\nprotocol = \"dicomweb\"\nbase_url = \"{url}\"\nretrieve = \"wado\"\n{auth}\n"
    );
    let config = config(&db, spool.path(), &format!("{archive}{}", destination_toml(dest.port, false)));
    let exam = exam(&store, "sim-wado").await;
    let id = job(&store, exam, "cloud", "wado", &study.study_instance_uid, Some(study.instances as i32)).await;
    let started = Instant::now();
    let mover = start_mover(&store, config, "w1");
    let done = finished(&store, id, WAIT).await;
    mover.stop().await;
    (done, started.elapsed(), dest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_retry_after_is_waited_out_then_retried() {
    let busy = WebBusy { status: 429, retry_after_secs: 3, times: 1 };
    let (sim, url, study) = archive(Faults { web_busy: Some(busy), ..Default::default() }, None).await;
    let (done, took, dest) = run(&url, &study, "").await;
    assert_eq!((done.state, done.attempt), (JobState::Completed, 2), "{done:?}");
    assert!(errors_of(&done)[0].contains("HTTP 429"), "{:?}", errors_of(&done));
    // the configured backoff is 200 ms: the archive's Retry-After decided
    assert!(took >= Duration::from_secs(3), "retried after {took:?}");
    assert_eq!(dest.files().len(), study.instances);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_is_retried_until_the_archive_answers() {
    let busy = WebBusy { status: 503, retry_after_secs: 1, times: 2 };
    let (sim, url, study) = archive(Faults { web_busy: Some(busy), ..Default::default() }, None).await;
    let (done, _, dest) = run(&url, &study, "").await;
    assert_eq!((done.state, done.attempt), (JobState::Completed, 3), "{done:?}");
    assert!(errors_of(&done).iter().all(|e| e.contains("HTTP 503")), "{:?}", errors_of(&done));
    assert_eq!(dest.files().len(), study.instances);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_cut_mid_part_is_finished_with_the_missing_instances_only() {
    let (sim, url, study) = archive(Faults { web_cut_after_parts: Some(4), ..Default::default() }, None).await;
    let (done, _, dest) = run(&url, &study, "").await;
    assert_eq!((done.state, done.attempt), (JobState::Completed, 2), "{done:?}");
    assert!(errors_of(&done)[0].contains("retrying the failed instances"), "{:?}", errors_of(&done));
    let relayed = priorfetch_mover::metrics::SUBOPERATIONS.with_label_values(&["cloud", "relayed"]).get();
    assert_eq!(relayed as usize, study.instances, "4 in the cut attempt, the other 6 in the retry");
    assert_eq!(dest.files().len(), study.instances);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_are_a_permanent_error_naming_the_auth_key() {
    let (sim, url, study) = archive(Faults::default(), Some(("pf", "right"))).await;
    let auth = "auth = { basic = { user = \"pf\", password = \"wrong\" } }";
    let (done, _, _) = run(&url, &study, auth).await;
    assert_eq!((done.state, done.attempt), (JobState::Failed, 1), "{done:?}");
    let error = done.last_error.clone().unwrap_or_default();
    assert!(error.contains("HTTP 401") && error.contains("archives[i].auth"), "{error}");
    let (ok, _, _) = run(&url, &study, "auth = { basic = { user = \"pf\", password = \"right\" } }").await;
    assert_eq!(ok.state, JobState::Completed, "{ok:?}");
    sim.shutdown().await;
}

/// STOW-RS to a DICOMweb reading PACS that refuses some instances (a 202 whose
/// FailedSOPSequence names them): the rest counts as delivered, the refused ones are
/// offered again alone, and the job completes only when every instance was stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_a_stow_destination_refuses_are_offered_again_alone() {
    let (archive, url, study) = archive(Faults::default(), None).await;
    let reading = Sim::start(
        SimConfig::new("READING", DataSource::Empty)
            .with_faults(Faults { stow_refuse_every: Some(3), ..Default::default() }),
        "127.0.0.1:0",
    )
    .await
    .unwrap();
    let reading_url = reading.serve_dicomweb("127.0.0.1:0").await.unwrap();
    let (db, store) = postgres().await;
    let spool = tempfile::tempdir().unwrap();
    let toml = format!(
        "[[archives]]\nname = \"cloud\"\nprotocol = \"dicomweb\"\nbase_url = \"{url}\"\nretrieve = \"wado\"\n\
         [destination]\nprotocol = \"dicomweb\"\nbase_url = \"{reading_url}\"\nae_title = \"READING\"\n"
    );
    let config = config(&db, spool.path(), &toml);
    let exam = exam(&store, "sim-stow").await;
    let id = job(&store, exam, "cloud", "wado", &study.study_instance_uid, Some(study.instances as i32)).await;
    let mover = start_mover(&store, config, "w1");
    let done = finished(&store, id, WAIT).await;
    mover.stop().await;

    assert_eq!((done.state, done.attempt), (JobState::Completed, 2), "{done:?}");
    assert_eq!(done.counts.completed as usize, study.instances, "{done:?}");
    let refused = reading.stats().failed_subops as usize;
    assert_eq!(refused, study.instances / 3, "the destination refused every third instance once");
    // every instance stored exactly once, and the archive was asked for the study once
    // plus only the refused instances (or nothing, when they stayed in the spool)
    let received = reading.received();
    let distinct: std::collections::HashSet<_> = received.iter().map(|r| &r.sop_instance_uid).collect();
    assert_eq!((received.len(), distinct.len()), (study.instances, study.instances));
    assert!(archive.stats().gets as usize <= 1 + refused, "{:?}", archive.stats());
    let left: Vec<_> = walk(spool.path());
    assert!(left.is_empty(), "the spool is emptied: {left:?}");
    reading.shutdown().await;
    archive.shutdown().await;
}
