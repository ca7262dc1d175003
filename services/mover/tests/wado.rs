//! `retrieve = "wado"` jobs: Orthanc's DICOMweb plugin as the archive, DCMTK's storescp as
//! the destination (both written by others). The study streams into the spool and is
//! relayed by C-STORE; the job completes only when every instance was confirmed.

mod common;

use common::*;
use priorfetch_store::JobState;
use priorfetch_testkit::dicom::{Orthanc, Storescp, StudySpec, load_studies};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

fn web_archive(name: &str, url: &str) -> String {
    format!("[[archives]]\nname = \"{name}\"\nprotocol = \"dicomweb\"\nbase_url = \"{url}\"\nretrieve = \"wado\"\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wado_job_streams_the_study_into_the_destination() {
    let archive = Orthanc::start_dicomweb("WEBARCH", "PRIORFETCH", None);
    let spec = StudySpec { series: 2, instances_per_series: 6, ..StudySpec::small("WADO-M1", 61) };
    load_studies(&archive.ae, archive.port, std::slice::from_ref(&spec));
    let dest = Storescp::start("DEST");
    let (db, store) = postgres().await;
    let spool = tempfile::tempdir().unwrap();
    let config = config(
        &db,
        spool.path(),
        &format!("{}{}", web_archive("cloud", &archive.dicomweb_url()), destination_toml(dest.port, false)),
    );
    let exam = exam(&store, "wado-1").await;
    let id = job(&store, exam, "cloud", "wado", &spec.study_uid, Some(spec.instance_count() as i32)).await;
    let mover = start_mover(&store, config, "w1");
    let done = finished(&store, id, WAIT).await;
    mover.stop().await;

    assert_eq!(done.state, JobState::Completed, "{done:?}");
    assert_eq!(done.counts.completed as usize, spec.instance_count());
    assert_eq!(done.counts.failed, 0);
    assert_eq!(dest.files().len(), spec.instance_count(), "every instance at storescp");
    let left: Vec<_> = walk(spool.path());
    assert!(left.is_empty(), "the spool is emptied: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wado_job_against_a_wrong_url_fails_with_the_fix() {
    let archive = Orthanc::start_dicomweb("WEBARCH", "PRIORFETCH", None);
    let dest = Storescp::start("DEST");
    let (db, store) = postgres().await;
    let spool = tempfile::tempdir().unwrap();
    let wrong = format!("http://127.0.0.1:{}/not-dicom-web", archive.http_port);
    let config =
        config(&db, spool.path(), &format!("{}{}", web_archive("cloud", &wrong), destination_toml(dest.port, false)));
    let done = run_wado(&store, config, "wado-2", "1.2.3.4", Some(1)).await;
    assert_eq!(done.state, JobState::Failed, "{done:?}");
    let error = done.last_error.unwrap_or_default();
    assert!(error.contains("404") && error.contains("check base_url"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_cut_mid_transfer_is_finished_by_asking_for_the_rest() {
    let archive = Orthanc::start_dicomweb("WEBARCH", "PRIORFETCH", None);
    let spec = StudySpec { series: 2, instances_per_series: 10, ..StudySpec::small("WADO-M3", 63) };
    load_studies(&archive.ae, archive.port, std::slice::from_ref(&spec));
    let dest = Storescp::start("DEST");
    // the archive's first answer is cut after about 40% of the study's bytes
    let proxy = priorfetch_testkit::proxy::TcpProxy::start(&format!("127.0.0.1:{}", archive.http_port)).await.unwrap();
    let one = 64 * 64 * 2 + 1500;
    proxy.cut_next_after((spec.instance_count() * one * 2 / 5) as u64);
    let (db, store) = postgres().await;
    let spool = tempfile::tempdir().unwrap();
    let url = format!("http://{}/dicom-web", proxy.addr());
    let config =
        config(&db, spool.path(), &format!("{}{}", web_archive("cloud", &url), destination_toml(dest.port, false)));
    let exam = exam(&store, "wado-3").await;
    let id = job(&store, exam, "cloud", "wado", &spec.study_uid, Some(spec.instance_count() as i32)).await;
    let mover = start_mover(&store, config, "w1");
    let done = finished(&store, id, WAIT).await;
    mover.stop().await;

    assert_eq!(done.state, JobState::Completed, "{done:?}");
    assert_eq!(done.attempt, 2, "{done:?}");
    let errors = errors_of(&done);
    assert!(errors[0].contains("retrying the failed instances"), "{errors:?}");
    // no instance was relayed twice: the retry asked only for what the cut lost
    let relayed = priorfetch_mover::metrics::SUBOPERATIONS.with_label_values(&["cloud", "relayed"]).get();
    assert_eq!(relayed as usize, spec.instance_count());
    assert_eq!(dest.files().len(), spec.instance_count());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dicomweb_destination_receives_by_stow() {
    let archive = Orthanc::start_dicomweb("WEBARCH", "PRIORFETCH", None);
    let reading = Orthanc::start_dicomweb("READING", "PRIORFETCH", None);
    let spec = StudySpec { series: 3, instances_per_series: 9, ..StudySpec::small("WADO-M4", 64) };
    load_studies(&archive.ae, archive.port, std::slice::from_ref(&spec));
    let (db, store) = postgres().await;
    let spool = tempfile::tempdir().unwrap();
    let destination = format!(
        "[destination]\nprotocol = \"dicomweb\"\nbase_url = \"{}\"\nae_title = \"DEST\"\ncheck_existing = true\n",
        reading.dicomweb_url()
    );
    let config = config(&db, spool.path(), &format!("{}{destination}", web_archive("cloud", &archive.dicomweb_url())));
    let exam = exam(&store, "wado-4").await;
    let id = job(&store, exam, "cloud", "wado", &spec.study_uid, Some(spec.instance_count() as i32)).await;
    let mover = start_mover(&store, config, "w1");
    let done = finished(&store, id, WAIT).await;
    mover.stop().await;
    assert_eq!(done.state, JobState::Completed, "{done:?}");
    assert_eq!(done.counts.completed as usize, spec.instance_count());
    assert_eq!(done.received as usize, spec.instance_count(), "verified at the destination by QIDO-RS");
    // the reading PACS holds every instance (its own QIDO-RS)
    let client = priorfetch_dicomweb::DicomWebClient::new(
        &reading.dicomweb_url(),
        priorfetch_dicomweb::Auth::None,
        &Default::default(),
    )
    .unwrap();
    let query = priorfetch_dicomweb::Query {
        level: priorfetch_dicomweb::Level::Instances(spec.study_uid.clone()),
        keys: vec![],
    };
    assert_eq!(client.search_all(&query, 100, None).await.unwrap().matches.len(), spec.instance_count());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_fail_the_job_at_once_naming_the_auth_key() {
    let archive = Orthanc::start_dicomweb_with_user("WEBARCH", "PRIORFETCH", ("pf", "right"));
    let dest = Storescp::start("DEST");
    let (db, store) = postgres().await;
    let spool = tempfile::tempdir().unwrap();
    let auth = "auth = { basic = { user = \"pf\", password = \"wrong\" } }\n";
    let config = config(
        &db,
        spool.path(),
        &format!("{}{auth}{}", web_archive("cloud", &archive.dicomweb_url()), destination_toml(dest.port, false)),
    );
    let done = run_wado(&store, config, "wado-5", "1.2.3.4.5", Some(1)).await;
    assert_eq!((done.state, done.attempt), (JobState::Failed, 1), "permanent: not retried: {done:?}");
    let error = done.last_error.unwrap_or_default();
    assert!(error.contains("HTTP 401") && error.contains("archives[i].auth"), "{error}");
    assert!(!error.contains("wrong"), "the password is never in an error: {error}");
}

/// Runs one `wado` job of archive `cloud` with a mover until it ends.
async fn run_wado(
    store: &priorfetch_store::Store,
    config: std::sync::Arc<priorfetch_config::Config>,
    key: &str,
    study: &str,
    expected: Option<i32>,
) -> priorfetch_store::Job {
    let exam = exam(store, key).await;
    let id = job(store, exam, "cloud", "wado", study, expected).await;
    let mover = start_mover(store, config, "w1");
    let done = finished(store, id, WAIT).await;
    mover.stop().await;
    done
}
