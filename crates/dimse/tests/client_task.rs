//! The association task ([`Client`]): matches streamed from another task, association reuse,
//! C-CANCEL sent mid-operation for a long C-FIND (many studies) and a long C-GET.

use dicom_core::{Tag, VR};
use priorfetch_dimse::get::{COMMON_STORAGE_CLASSES, get_contexts};
use priorfetch_dimse::scu::query_contexts;
use priorfetch_dimse::{AeTitle, Client, DirSink, Peer, QueryModel, ScuOptions, identifier};
use priorfetch_testkit::dicom::{Dcmqrscp, Orthanc, StudySpec, store_files, write_study};
use std::time::Duration;

fn options() -> ScuOptions {
    let mut o = ScuOptions::new(AeTitle::parse("PRIORFETCH").unwrap());
    o.dimse_timeout = Duration::from_secs(20);
    o
}

/// `n` one-instance studies of patient `patient`, tiny images: a long match list.
fn many_studies(dir: &std::path::Path, patient: &str, n: u32) {
    for i in 0..n {
        let mut s = StudySpec::small(patient, 1000 + i);
        s.series = 1;
        s.instances_per_series = 1;
        s.rows = 8;
        s.columns = 8;
        write_study(dir, &s);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_cancel_stops_a_long_c_find_and_the_association_is_reused() {
    let data = tempfile::tempdir().unwrap();
    many_studies(data.path(), "MANY", 300);
    let archive = Dcmqrscp::start("DCMQR", "PRIORFETCH", &[]);
    store_files(&archive.ae, archive.port, data.path());
    let orthanc = Orthanc::start("ORTHANC1", "PRIORFETCH", &[], None);
    store_files(&orthanc.ae, orthanc.port, data.path());
    for peer in [
        Peer::new("DCMQR", "127.0.0.1", archive.port).unwrap(),
        Peer::new("ORTHANC1", "127.0.0.1", orthanc.port).unwrap(),
    ] {
        let client = Client::connect(&peer, &options(), &query_contexts(QueryModel::StudyRoot)).await.unwrap();
        let query = identifier("STUDY", &[(Tag(0x0010, 0x0020), VR::LO, "MANY"), (Tag(0x0020, 0x000D), VR::UI, "")]);

        // the whole list first, on the same association as what follows
        let mut all = client.find(QueryModel::StudyRoot, query.clone(), None).await.unwrap();
        let mut n = 0;
        while all.matches.recv().await.is_some() {
            n += 1;
        }
        let outcome = all.finish().await.unwrap();
        assert_eq!((n, outcome.status), (300, 0), "{peer}: {outcome:?}");

        // C-CANCEL sent by the association task on the 5th match
        let mut stream = client.find(QueryModel::StudyRoot, query.clone(), Some(5)).await.unwrap();
        let mut received = 0;
        while stream.matches.recv().await.is_some() {
            received += 1;
        }
        let outcome = stream.finish().await.unwrap();
        // 0xFE00, or success when the archive had already sent every match before it read
        // the C-CANCEL (dcmqrscp is that fast); either way we stop at 5.
        assert_eq!((received, outcome.matches), (5, 5), "{peer}: {outcome:?}");
        assert!(matches!(outcome.status, 0xFE00 | 0x0000), "{peer}: {outcome:?}");
        assert!(outcome.cancelled_by_us && !outcome.truncated, "{peer}: {outcome:?}");

        // cancel from the consumer after 5 matches (it may read them late, when the archive
        // has already sent everything: then the final status is success)
        let mut stream = client.find(QueryModel::StudyRoot, query.clone(), None).await.unwrap();
        let mut received = 0;
        while let Some(_m) = stream.matches.recv().await {
            received += 1;
            if received == 5 {
                stream.cancel();
            }
        }
        let outcome = stream.finish().await.unwrap();
        assert!(outcome.cancelled_by_us && !outcome.truncated, "{peer}: {outcome:?}");
        assert!(received < 300, "{peer}: ended early ({received} of 300)");
        assert!(matches!(outcome.status, 0xFE00 | 0x0000), "{peer}: {outcome:?}");

        // and still usable
        let again = client.find(QueryModel::StudyRoot, query, Some(3)).await.unwrap();
        let outcome = again.finish().await.unwrap();
        assert_eq!(outcome.matches, 3, "{peer}: {outcome:?}");
        client.release().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_cancel_stops_a_long_c_get_through_the_task() {
    let data = tempfile::tempdir().unwrap();
    let mut spec = StudySpec::small("LONG", 77);
    spec.series = 2;
    spec.instances_per_series = 100;
    spec.rows = 256;
    spec.columns = 256;
    write_study(data.path(), &spec);
    let orthanc = Orthanc::start("ORTHANC1", "PRIORFETCH", &[], None);
    store_files(&orthanc.ae, orthanc.port, data.path());
    let peer = Peer::new("ORTHANC1", "127.0.0.1", orthanc.port).unwrap();
    let client =
        Client::connect(&peer, &options(), &get_contexts(QueryModel::StudyRoot, COMMON_STORAGE_CLASSES)).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let query = identifier("STUDY", &[(Tag(0x0020, 0x000D), VR::UI, spec.study_uid.as_str())]);
    let mut get =
        client.retrieve_get(QueryModel::StudyRoot, query, Box::new(DirSink::new(out.path()).unwrap())).await.unwrap();
    while let Some(p) = get.progress.recv().await {
        if p.completed >= 5 {
            get.cancel();
        }
    }
    let (outcome, _sink) = get.finish().await.unwrap();
    let files = std::fs::read_dir(out.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".dcm"))
        .count();
    assert!(outcome.cancelled && outcome.status == 0xFE00, "{outcome:?}");
    assert!((5..200).contains(&files), "stopped early: {files} of 200");
    client.release().await;
}
