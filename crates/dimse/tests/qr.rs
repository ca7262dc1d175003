//! The SCU against real archives written by others: Orthanc (two instances, one with
//! LimitFindResults) and DCMTK dcmqrscp, with DCMTK storescp as the move destination and
//! DCMTK findscu as the reference for C-FIND results.

use dicom_core::{Tag, VR};
use dicom_object::InMemDicomObject;
use priorfetch_dimse::scu::query_contexts;
use priorfetch_dimse::{AeTitle, Association, DimseError, Peer, QueryModel, ScuOptions, echo, identifier};
use priorfetch_testkit::dicom::{Dcmqrscp, Orthanc, Storescp, StudySpec, store_files, write_study};
use std::collections::BTreeSet;
use std::ops::ControlFlow;
use std::path::Path;
use std::time::Duration;

const OUR_AE: &str = "PRIORFETCH";
const STUDY_UID: Tag = Tag(0x0020, 0x000D);
const PIXEL_DATA: Tag = Tag(0x7FE0, 0x0010);

fn options() -> ScuOptions {
    let mut o = ScuOptions::new(AeTitle::parse(OUR_AE).unwrap());
    o.dimse_timeout = Duration::from_secs(20);
    o
}

/// Three studies of patient P1 and one of P2.
fn load_studies(dir: &Path) -> Vec<StudySpec> {
    let specs = vec![
        StudySpec::small("P1", 1),
        StudySpec::small("P1", 2),
        StudySpec::small("P1", 3),
        StudySpec::small("P2", 4),
    ];
    for s in &specs {
        write_study(&dir.join(&s.study_uid), s);
    }
    specs
}

fn study_query(patient: &str) -> InMemDicomObject {
    identifier(
        "STUDY",
        &[
            (Tag(0x0010, 0x0020), VR::LO, patient),
            (STUDY_UID, VR::UI, ""),
            (Tag(0x0008, 0x0020), VR::DA, ""),
            (Tag(0x0008, 0x0050), VR::SH, ""),
        ],
    )
}

fn str_of(obj: &InMemDicomObject, tag: Tag) -> String {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
        .unwrap_or_default()
}

/// (StudyInstanceUID, StudyDate, AccessionNumber) of each match, from our SCU.
async fn our_find(peer: &Peer, patient: &str) -> BTreeSet<(String, String, String)> {
    let mut assoc = Association::connect(peer, &options(), &query_contexts(QueryModel::StudyRoot)).await.unwrap();
    let mut found = BTreeSet::new();
    let outcome = assoc
        .find(QueryModel::StudyRoot, &study_query(patient), None, |m| {
            found.insert((str_of(&m, STUDY_UID), str_of(&m, Tag(0x0008, 0x0020)), str_of(&m, Tag(0x0008, 0x0050))));
            ControlFlow::Continue(())
        })
        .await
        .unwrap();
    assert_eq!(outcome.status, 0);
    assert!(!outcome.truncated);
    assert_eq!(outcome.matches, found.len());
    // the association is reused for a second query
    let again =
        assoc.find(QueryModel::StudyRoot, &study_query(patient), None, |_| ControlFlow::Continue(())).await.unwrap();
    assert_eq!(again.matches, found.len());
    assoc.release().await;
    found
}

/// The same query with DCMTK findscu, responses extracted to files.
fn findscu(peer: &Peer, patient: &str) -> BTreeSet<(String, String, String)> {
    let out = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("findscu")
        .args(["-S", "-aet", OUR_AE, "-aec", peer.ae_title.as_str(), "-k", "QueryRetrieveLevel=STUDY"])
        .args([
            "-k",
            &format!("PatientID={patient}"),
            "-k",
            "StudyInstanceUID",
            "-k",
            "StudyDate",
            "-k",
            "AccessionNumber",
        ])
        .args(["-X", "-od", out.path().to_str().unwrap(), "127.0.0.1", &peer.port.to_string()])
        .env("TCP_NODELAY", "1")
        .output()
        .expect("findscu: run the tests through scripts/test");
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let mut found = BTreeSet::new();
    for entry in std::fs::read_dir(out.path()).unwrap() {
        let obj = dicom_object::open_file(entry.unwrap().path()).expect("findscu response file");
        found.insert((str_of(&obj, STUDY_UID), str_of(&obj, Tag(0x0008, 0x0020)), str_of(&obj, Tag(0x0008, 0x0050))));
    }
    found
}

#[tokio::test]
async fn echo_and_find_match_findscu_on_orthanc_and_dcmqrscp() {
    let data = tempfile::tempdir().unwrap();
    let specs = load_studies(data.path());
    let orthanc = Orthanc::start("ORTHANC1", OUR_AE, &[], None);
    store_files(&orthanc.ae, orthanc.port, data.path());
    let dcmqrscp = Dcmqrscp::start("DCMQR", OUR_AE, &[]);
    store_files(&dcmqrscp.ae, dcmqrscp.port, data.path());
    for peer in [
        Peer::new("ORTHANC1", "127.0.0.1", orthanc.port).unwrap(),
        Peer::new("DCMQR", "127.0.0.1", dcmqrscp.port).unwrap(),
    ] {
        echo(&peer, &options()).await.unwrap();
        let ours = our_find(&peer, "P1").await;
        let theirs = findscu(&peer, "P1");
        assert_eq!(ours, theirs, "{peer}: our C-FIND equals findscu's");
        let expected: BTreeSet<String> =
            specs.iter().filter(|s| s.patient_id == "P1").map(|s| s.study_uid.clone()).collect();
        assert_eq!(ours.iter().map(|m| m.0.clone()).collect::<BTreeSet<_>>(), expected, "{peer}");
    }
}

#[tokio::test]
async fn match_cap_is_reported_as_truncation_and_cancel_after_n_stops_a_find() {
    let data = tempfile::tempdir().unwrap();
    load_studies(data.path());
    let capped = Orthanc::start("CAPPED", OUR_AE, &[], Some(2));
    store_files(&capped.ae, capped.port, data.path());
    let peer = Peer::new("CAPPED", "127.0.0.1", capped.port).unwrap();
    let mut assoc = Association::connect(&peer, &options(), &query_contexts(QueryModel::StudyRoot)).await.unwrap();
    let outcome =
        assoc.find(QueryModel::StudyRoot, &study_query("P1"), None, |_| ControlFlow::Continue(())).await.unwrap();
    assert_eq!((outcome.matches, outcome.status, outcome.truncated), (2, 0xFE00, true), "{outcome:?}");
    assoc.release().await;

    let uncapped = Dcmqrscp::start("DCMQR", OUR_AE, &[]);
    store_files(&uncapped.ae, uncapped.port, data.path());
    let peer = Peer::new("DCMQR", "127.0.0.1", uncapped.port).unwrap();
    let mut assoc = Association::connect(&peer, &options(), &query_contexts(QueryModel::StudyRoot)).await.unwrap();
    let wildcard = identifier("STUDY", &[(Tag(0x0010, 0x0020), VR::LO, "*"), (STUDY_UID, VR::UI, "")]);
    let outcome = assoc.find(QueryModel::StudyRoot, &wildcard, Some(1), |_| ControlFlow::Continue(())).await.unwrap();
    assert!(outcome.cancelled_by_us && !outcome.truncated, "{outcome:?}");
    assert_eq!(outcome.matches, 1);
    // the association still works after a cancel
    let all = assoc.find(QueryModel::StudyRoot, &wildcard, None, |_| ControlFlow::Continue(())).await.unwrap();
    assert_eq!(all.matches, 4);
    assoc.release().await;
}

fn pixel_data(path: &Path) -> (String, Vec<u8>) {
    let obj = dicom_object::open_file(path).unwrap();
    let uid = str_of(&obj, Tag(0x0008, 0x0018));
    let pixels = obj.element(PIXEL_DATA).unwrap().to_bytes().unwrap().to_vec();
    (uid, pixels)
}

#[tokio::test]
async fn c_move_to_storescp_brings_every_instance_byte_identical() {
    let data = tempfile::tempdir().unwrap();
    let mut spec = StudySpec::small("P9", 9);
    spec.series = 3;
    spec.instances_per_series = 4;
    let sent = write_study(&data.path().join("study"), &spec);
    for (name, archive_kind) in [("orthanc", 0), ("dcmqrscp", 1)] {
        let dest = Storescp::start("DEST");
        let (ae, port, _o, _d);
        if archive_kind == 0 {
            let o = Orthanc::start("ORTHANC1", OUR_AE, &[dest.destination()], None);
            store_files(&o.ae, o.port, data.path());
            (ae, port) = (o.ae.clone(), o.port);
            _o = Some(o);
            _d = None;
        } else {
            let d = Dcmqrscp::start("DCMQR", OUR_AE, &[dest.destination()]);
            store_files(&d.ae, d.port, data.path());
            (ae, port) = (d.ae.clone(), d.port);
            _o = None;
            _d = Some(d);
        }
        let peer = Peer::new(&ae, "127.0.0.1", port).unwrap();
        let mut assoc = Association::connect(&peer, &options(), &query_contexts(QueryModel::StudyRoot)).await.unwrap();
        let mut progress = Vec::new();
        let query = identifier("STUDY", &[(STUDY_UID, VR::UI, &spec.study_uid)]);
        let outcome = assoc
            .retrieve_move(QueryModel::StudyRoot, &query, &AeTitle::parse("DEST").unwrap(), |p| progress.push(*p), None)
            .await
            .unwrap();
        assoc.release().await;
        assert_eq!(outcome.status, 0, "{name}: {outcome:?}");
        assert_eq!((outcome.counts.completed, outcome.counts.failed), (12, 0), "{name}: {outcome:?}");
        assert!(!progress.is_empty(), "{name}: pending responses surfaced");
        let received: std::collections::BTreeMap<String, Vec<u8>> =
            dest.files().iter().map(|p| pixel_data(p)).collect();
        assert_eq!(received.len(), 12, "{name}");
        for path in &sent {
            let (uid, pixels) = pixel_data(path);
            assert_eq!(received.get(&uid), Some(&pixels), "{name}: pixel data of {uid}");
        }
    }
}

#[tokio::test]
async fn wrong_called_ae_unknown_destination_and_closed_port_say_the_fix() {
    let data = tempfile::tempdir().unwrap();
    load_studies(data.path());
    let orthanc = Orthanc::start("ORTHANC1", OUR_AE, &[], None);
    store_files(&orthanc.ae, orthanc.port, data.path());
    let dcmqrscp = Dcmqrscp::start("DCMQR", OUR_AE, &[]);
    store_files(&dcmqrscp.ae, dcmqrscp.port, data.path());

    // wrong called AE (Orthanc checks it)
    let wrong = Peer::new("NOTORTHANC", "127.0.0.1", orthanc.port).unwrap();
    let err = echo(&wrong, &options()).await.unwrap_err();
    assert!(matches!(err, DimseError::Rejected { .. }), "{err:?}");
    assert!(err.hint().contains("archives[].ae_title") && err.hint().contains("NOTORTHANC"), "{}", err.hint());

    // closed port
    let closed = Peer::new("X", "127.0.0.1", priorfetch_testkit::ports::free_port()).unwrap();
    let err = echo(&closed, &options()).await.unwrap_err();
    assert!(matches!(err, DimseError::Connect { .. }) && err.is_retryable(), "{err:?}");
    assert!(err.hint().starts_with("no TCP path to 127.0.0.1:"), "{}", err.hint());

    // unknown move destination: dcmqrscp answers 0xA801, Orthanc a 0xC000-range failure
    let query = identifier("STUDY", &[(STUDY_UID, VR::UI, "1.2.826.0.1.3680043.10.543.1")]);
    let nowhere = AeTitle::parse("NOWHERE").unwrap();
    let peer = Peer::new("DCMQR", "127.0.0.1", dcmqrscp.port).unwrap();
    let mut assoc = Association::connect(&peer, &options(), &query_contexts(QueryModel::StudyRoot)).await.unwrap();
    let err = assoc.retrieve_move(QueryModel::StudyRoot, &query, &nowhere, |_| {}, None).await.unwrap_err();
    assert!(matches!(err, DimseError::Status { status: 0xA801, .. }) && !err.is_retryable(), "{err:?}");
    assert!(err.hint().contains("does not know move destination 'NOWHERE'"), "{}", err.hint());
    assoc.release().await;
    let peer = Peer::new("ORTHANC1", "127.0.0.1", orthanc.port).unwrap();
    let mut assoc = Association::connect(&peer, &options(), &query_contexts(QueryModel::StudyRoot)).await.unwrap();
    let err = assoc.retrieve_move(QueryModel::StudyRoot, &query, &nowhere, |_| {}, None).await.unwrap_err();
    let DimseError::Status { status, .. } = &err else { panic!("{err:?}") };
    assert!((0xA800..=0xCFFF).contains(status), "{err:?}");
    assert!(err.hint().contains("NOWHERE"), "{}", err.hint());
    assoc.release().await;

    // our AE unknown to Orthanc: accepted, then aborted on the first request
    let mut stranger = options();
    stranger.calling_ae = AeTitle::parse("STRANGER").unwrap();
    let peer = Peer::new("ORTHANC1", "127.0.0.1", orthanc.port).unwrap();
    let result = async {
        let mut assoc = Association::connect(&peer, &stranger, &query_contexts(QueryModel::StudyRoot)).await?;
        assoc.find(QueryModel::StudyRoot, &study_query("P1"), None, |_| ControlFlow::Continue(())).await
    }
    .await;
    let err = result.unwrap_err();
    assert!(err.hint().contains("DicomModalities") || err.hint().contains("AE table"), "{err:?}: {}", err.hint());
}

/// A peer that accepts TCP and then sends garbage, or a truncated PDU, or nothing:
/// each ends in an error within the timeouts, never a panic or a hang.
#[tokio::test]
async fn garbage_and_truncated_pdus_are_errors() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let replies: Vec<Vec<u8>> = vec![
        b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec(),
        vec![0x02, 0x00, 0x00, 0x00, 0x10, 0x00], // A-ASSOCIATE-AC header announcing more than it sends
        vec![0x02, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x01],
        vec![0x07, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x02, 0x00], // A-ABORT
        vec![],
    ];
    for reply in replies {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let _ = socket.read(&mut buf).await;
            let _ = socket.write_all(&reply).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        });
        let mut opts = options();
        opts.association_timeout = Duration::from_secs(2);
        opts.dimse_timeout = Duration::from_secs(2);
        let peer = Peer::new("GARBAGE", "127.0.0.1", port).unwrap();
        let result =
            tokio::time::timeout(Duration::from_secs(15), echo(&peer, &opts)).await.expect("bounded by the timeouts");
        assert!(result.is_err());
        server.abort();
    }
}
