//! C-GET against Orthanc and dcmqrscp: every instance of a multi-series study streamed to
//! disk with byte-identical pixel data; C-CANCEL stops a long C-GET.

use dicom_core::{Tag, VR};
use priorfetch_dimse::get::{COMMON_STORAGE_CLASSES, DirSink, get_contexts};
use priorfetch_dimse::{AeTitle, Association, Peer, QueryModel, ScuOptions, identifier};
use priorfetch_testkit::dicom::{Dcmqrscp, Orthanc, StudySpec, store_files, write_study};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

fn options() -> ScuOptions {
    let mut o = ScuOptions::new(AeTitle::parse("PRIORFETCH").unwrap());
    o.dimse_timeout = Duration::from_secs(20);
    o
}

fn pixels_by_uid(paths: &[std::path::PathBuf]) -> BTreeMap<String, Vec<u8>> {
    paths
        .iter()
        .map(|p| {
            let obj = dicom_object::open_file(p).unwrap();
            let uid = obj.element(Tag(0x0008, 0x0018)).unwrap().to_str().unwrap().trim_end_matches('\0').to_string();
            (uid, obj.element(Tag(0x7FE0, 0x0010)).unwrap().to_bytes().unwrap().to_vec())
        })
        .collect()
}

async fn get_into(
    peer: &Peer,
    study: &str,
    out: &Path,
) -> (priorfetch_dimse::RetrieveOutcome, Vec<std::path::PathBuf>, usize) {
    let mut assoc =
        Association::connect(peer, &options(), &get_contexts(QueryModel::StudyRoot, COMMON_STORAGE_CLASSES))
            .await
            .unwrap();
    let mut sink = DirSink::new(out).unwrap();
    let mut updates = 0;
    let query = identifier("STUDY", &[(Tag(0x0020, 0x000D), VR::UI, study)]);
    let outcome = assoc.retrieve_get(QueryModel::StudyRoot, &query, &mut sink, |_| updates += 1, None).await.unwrap();
    assoc.release().await;
    (outcome, sink.stored, updates)
}

#[tokio::test]
async fn c_get_streams_every_instance_byte_identical_from_orthanc_and_dcmqrscp() {
    let data = tempfile::tempdir().unwrap();
    let mut spec = StudySpec::small("G1", 31);
    spec.series = 3;
    spec.instances_per_series = 5;
    spec.rows = 256;
    spec.columns = 256;
    let sent = pixels_by_uid(&write_study(data.path(), &spec));
    let orthanc = Orthanc::start("ORTHANC1", "PRIORFETCH", &[], None);
    store_files(&orthanc.ae, orthanc.port, data.path());
    let dcmqrscp = Dcmqrscp::start("DCMQR", "PRIORFETCH", &[]);
    store_files(&dcmqrscp.ae, dcmqrscp.port, data.path());
    for peer in [
        Peer::new("ORTHANC1", "127.0.0.1", orthanc.port).unwrap(),
        Peer::new("DCMQR", "127.0.0.1", dcmqrscp.port).unwrap(),
    ] {
        let out = tempfile::tempdir().unwrap();
        let (outcome, stored, _) = get_into(&peer, &spec.study_uid, out.path()).await;
        assert_eq!(
            (outcome.status, outcome.counts.completed, outcome.counts.failed),
            (0, 15, 0),
            "{peer}: {outcome:?}"
        );
        assert_eq!(pixels_by_uid(&stored), sent, "{peer}: byte-identical pixel data");
        let leftovers: Vec<_> = std::fs::read_dir(out.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".part"))
            .collect();
        assert!(leftovers.is_empty(), "no temp files left");
    }
}

#[tokio::test]
async fn c_cancel_stops_a_long_c_get() {
    let data = tempfile::tempdir().unwrap();
    let mut spec = StudySpec::small("G2", 32);
    spec.series = 4;
    spec.instances_per_series = 50;
    spec.rows = 256;
    spec.columns = 256;
    write_study(data.path(), &spec);
    let dcmqrscp = Dcmqrscp::start("DCMQR", "PRIORFETCH", &[]);
    store_files(&dcmqrscp.ae, dcmqrscp.port, data.path());
    let peer = Peer::new("DCMQR", "127.0.0.1", dcmqrscp.port).unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut assoc =
        Association::connect(&peer, &options(), &get_contexts(QueryModel::StudyRoot, COMMON_STORAGE_CLASSES))
            .await
            .unwrap();
    let mut sink = DirSink::new(out.path()).unwrap();
    let (stop, cancel) = tokio::sync::watch::channel(false);
    let query = identifier("STUDY", &[(Tag(0x0020, 0x000D), VR::UI, spec.study_uid.as_str())]);
    let outcome = assoc
        .retrieve_get(
            QueryModel::StudyRoot,
            &query,
            &mut sink,
            |p| {
                if p.completed >= 5 {
                    let _ = stop.send(true);
                }
            },
            Some(cancel),
        )
        .await
        .unwrap();
    assoc.release().await;
    assert!(outcome.cancelled && outcome.status == 0xFE00, "{outcome:?}");
    assert!(sink.stored.len() < 200 && sink.stored.len() >= 5, "stopped early: {} of 200", sink.stored.len());
}
