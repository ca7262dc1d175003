//! A retrieve with DICOM TLS on both legs, configured as an operator would: a C-GET from
//! Orthanc with `DicomTlsEnabled` (client certificate required; `archives[].tls`) relayed
//! by C-STORE to DCMTK's storescp `+tls` (`destination.tls`), and a C-MOVE from the same
//! Orthanc into that storescp over TLS (Orthanc's `UseDicomTls`). A destination whose CA
//! we do not trust fails the job at once with the TLS hint.

mod common;

use common::*;
use priorfetch_store::JobState;
use priorfetch_testkit::dicom::{Destination, Orthanc, OrthancTls, Storescp, StudySpec, store_files_with, write_study};
use priorfetch_testkit::tls::{Issued, TestPki};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

fn tls_toml(ca: &std::path::Path, ours: &Issued) -> String {
    format!(
        "tls = {{ ca = \"{}\", cert = \"{}\", key = \"{}\" }}\n",
        ca.display(),
        ours.cert.display(),
        ours.key.display()
    )
}

struct Site {
    pki: TestPki,
    ours: Issued,
    orthanc: Orthanc,
    dest: Storescp,
    spec: StudySpec,
}

fn site() -> Site {
    let pki = TestPki::new();
    let ours = pki.issue("priorfetch", &["priorfetch.test"]);
    let dest_id = pki.issue("dest", &["localhost", "127.0.0.1"]);
    let orthanc_id = pki.issue("orthanc", &["localhost", "127.0.0.1"]);
    let path = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let (key, cert, ca) = (path(&dest_id.key), path(&dest_id.cert), path(&pki.ca));
    let dest = Storescp::start_with("DEST", &["--accept-all", "+tls", &key, &cert, "-pw", "+cf", &ca, "-rc"]);
    let tls = OrthancTls {
        cert: orthanc_id.cert.clone(),
        key: orthanc_id.key,
        ca: pki.ca.clone(),
        require_client_cert: true,
    };
    let orthanc =
        Orthanc::start_tls("ARCHTLS", "PRIORFETCH", &[Destination { ae: "DEST".into(), port: dest.port }], &tls);
    let spec = StudySpec { series: 2, instances_per_series: 5, ..StudySpec::small("TLS-M", 81) };
    let data = tempfile::tempdir().unwrap();
    write_study(data.path(), &spec);
    let (key, cert) = (path(&ours.key), path(&ours.cert));
    store_files_with("ARCHTLS", orthanc.port, data.path(), &["+tls", &key, &cert, "-pw", "+cf", &ca]);
    Site { pki, ours, orthanc, dest, spec }
}

async fn run(site: &Site, retrieve: &str, destination_tls: &str, exam_key: &str) -> priorfetch_store::Job {
    let (db, store) = postgres().await;
    let spool = tempfile::tempdir().unwrap();
    let archive = archive_toml("vault", "ARCHTLS", site.orthanc.port, retrieve, &tls_toml(&site.pki.ca, &site.ours));
    let toml = format!("{archive}{}{destination_tls}", destination_toml(site.dest.port, false));
    let config = config(&db, spool.path(), &toml);
    let exam = exam(&store, exam_key).await;
    let id = job(&store, exam, "vault", retrieve, &site.spec.study_uid, Some(site.spec.instance_count() as i32)).await;
    let mover = start_mover(&store, config, "w1");
    let done = finished(&store, id, WAIT).await;
    mover.stop().await;
    done
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_get_and_c_move_over_tls_deliver_every_instance() {
    let site = site();
    let done = run(&site, "get", &tls_toml(&site.pki.ca, &site.ours), "tls-get").await;
    assert_eq!(done.state, JobState::Completed, "{done:?}");
    assert_eq!(done.counts.completed as usize, site.spec.instance_count());
    assert_eq!(site.dest.files().len(), site.spec.instance_count(), "relayed over TLS into storescp");

    for file in site.dest.files() {
        std::fs::remove_file(file).unwrap();
    }
    let done = run(&site, "move", "", "tls-move").await;
    assert_eq!(done.state, JobState::Completed, "{done:?}");
    assert_eq!(done.counts.completed as usize, site.spec.instance_count());
    assert_eq!(site.dest.files().len(), site.spec.instance_count(), "Orthanc moved over TLS into storescp");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_signed_by_an_unknown_ca_fails_the_job_with_the_fix() {
    let site = site();
    let stranger = TestPki::new();
    let done = run(&site, "get", &tls_toml(&stranger.ca, &site.ours), "tls-unknown-ca").await;
    assert_eq!(done.state, JobState::Failed, "{done:?}");
    assert_eq!(done.attempt, 1, "permanent: not retried: {done:?}");
    let error = done.last_error.unwrap_or_default();
    assert!(error.contains("unknown CA") || error.contains("tls.ca"), "{error}");
}
