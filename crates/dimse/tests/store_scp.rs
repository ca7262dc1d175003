//! Our C-STORE SCP against real senders: DCMTK `storescu` (allowed and not allowed calling
//! AE) and Orthanc performing a C-MOVE to it (instances correlated with the C-MOVE by the
//! Move Originator fields).

use dicom_core::{Tag, VR};
use priorfetch_dimse::scu::query_contexts;
use priorfetch_dimse::{
    AeTitle, Association, Peer, QueryModel, ScuOptions, StoreScpOptions, StoredInstance, identifier, run_store_scp,
};
use priorfetch_testkit::dicom::{Destination, Orthanc, StudySpec, store_files, write_study};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

struct Scp {
    port: u16,
    out: tempfile::TempDir,
    stored: mpsc::Receiver<StoredInstance>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

async fn start_scp(ae: &str, allowed: &[&str]) -> Scp {
    let out = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut options = StoreScpOptions::new(AeTitle::parse(ae).unwrap(), out.path());
    options.allowed_calling = allowed.iter().map(|a| AeTitle::parse(a).unwrap()).collect();
    let (tx, stored) = mpsc::channel(1024);
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let task = tokio::spawn(async move {
        run_store_scp(listener, options, tx, token).await.unwrap();
    });
    Scp { port, out, stored, shutdown, task }
}

fn pixels_by_uid(paths: &[PathBuf]) -> BTreeMap<String, Vec<u8>> {
    paths
        .iter()
        .map(|p| {
            let obj = dicom_object::open_file(p).unwrap();
            let uid = obj.element(Tag(0x0008, 0x0018)).unwrap().to_str().unwrap().trim_end_matches('\0').to_string();
            (uid, obj.element(Tag(0x7FE0, 0x0010)).unwrap().to_bytes().unwrap().to_vec())
        })
        .collect()
}

fn dcm_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "dcm"))
        .collect();
    files.sort();
    files
}

async fn drain(rx: &mut mpsc::Receiver<StoredInstance>, n: usize) -> Vec<StoredInstance> {
    let mut got = Vec::new();
    while got.len() < n {
        match tokio::time::timeout(Duration::from_secs(20), rx.recv()).await {
            Ok(Some(s)) => got.push(s),
            _ => break,
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receives_from_storescu_and_rejects_an_unknown_calling_ae() {
    let data = tempfile::tempdir().unwrap();
    let mut spec = StudySpec::small("S1", 41);
    spec.rows = 128;
    spec.columns = 128;
    let sent = pixels_by_uid(&write_study(data.path(), &spec));
    let mut scp = start_scp("PFSTORE", &["STORESCU"]).await;

    // storescu calls itself STORESCU in store_files: allowed
    let dir = data.path().to_path_buf();
    let port = scp.port;
    tokio::task::spawn_blocking(move || store_files("PFSTORE", port, &dir)).await.unwrap();
    let stored = drain(&mut scp.stored, spec.instance_count()).await;
    assert_eq!(stored.len(), spec.instance_count());
    assert!(
        stored.iter().all(|s| s.calling_ae == "STORESCU" && s.size > 128 * 128 * 2 && s.move_originator_ae.is_none()),
        "{stored:?}"
    );
    assert_eq!(pixels_by_uid(&dcm_files(scp.out.path())), sent, "byte-identical pixel data");

    // another calling AE: A-ASSOCIATE-RJ, nothing stored
    let out = std::process::Command::new("storescu")
        .args([
            "-aet",
            "INTRUDER",
            "-aec",
            "PFSTORE",
            "+sd",
            "127.0.0.1",
            &scp.port.to_string(),
            data.path().to_str().unwrap(),
        ])
        .env("TCP_NODELAY", "1")
        .output()
        .expect("storescu: run the tests through scripts/test");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success() || text.contains("Rejected"), "{text}");
    assert!(text.contains("Calling AE Title Not Recognized"), "{text}");
    // the wrong called AE is refused too
    let out = std::process::Command::new("storescu")
        .args([
            "-aet",
            "STORESCU",
            "-aec",
            "SOMEONE",
            "+sd",
            "127.0.0.1",
            &scp.port.to_string(),
            data.path().to_str().unwrap(),
        ])
        .env("TCP_NODELAY", "1")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("Called AE Title Not Recognized"), "{text}");
    assert!(scp.stored.try_recv().is_err(), "nothing stored from rejected associations");

    scp.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), scp.task).await.expect("graceful shutdown").unwrap();
    let leftovers = std::fs::read_dir(scp.out.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".part"))
        .count();
    assert_eq!(leftovers, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_move_from_orthanc_to_our_scp_is_correlated_by_move_originator() {
    let data = tempfile::tempdir().unwrap();
    let mut spec = StudySpec::small("S2", 42);
    spec.series = 3;
    spec.instances_per_series = 4;
    spec.rows = 256;
    spec.columns = 256;
    let sent = pixels_by_uid(&write_study(data.path(), &spec));
    let mut scp = start_scp("PFDEST", &["ORTHANC1"]).await;
    let orthanc =
        Orthanc::start("ORTHANC1", "PRIORFETCH", &[Destination { ae: "PFDEST".into(), port: scp.port }], None);
    store_files(&orthanc.ae, orthanc.port, data.path());

    let mut options = ScuOptions::new(AeTitle::parse("PRIORFETCH").unwrap());
    options.dimse_timeout = Duration::from_secs(20);
    let peer = Peer::new("ORTHANC1", "127.0.0.1", orthanc.port).unwrap();
    let mut assoc = Association::connect(&peer, &options, &query_contexts(QueryModel::StudyRoot)).await.unwrap();
    let query = identifier("STUDY", &[(Tag(0x0020, 0x000D), VR::UI, spec.study_uid.as_str())]);
    let outcome = assoc
        .retrieve_move(QueryModel::StudyRoot, &query, &AeTitle::parse("PFDEST").unwrap(), |_| {}, None)
        .await
        .unwrap();
    assoc.release().await;
    assert_eq!((outcome.status, outcome.counts.completed, outcome.counts.failed), (0, 12, 0), "{outcome:?}");

    let stored = drain(&mut scp.stored, 12).await;
    assert_eq!(stored.len(), 12);
    for s in &stored {
        assert_eq!(s.calling_ae, "ORTHANC1");
        assert_eq!(s.move_originator_ae.as_deref(), Some("PRIORFETCH"), "{s:?}");
        assert_eq!(s.move_originator_message_id, Some(1), "the C-MOVE was our first message: {s:?}");
    }
    assert_eq!(pixels_by_uid(&dcm_files(scp.out.path())), sent, "byte-identical pixel data");
    scp.shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), scp.task).await;
}
