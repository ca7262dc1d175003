//! The client against Orthanc's DICOMweb plugin (a peer written by others): QIDO agrees
//! with DCMTK's findscu over DIMSE on the same data, WADO-RS brings every instance with the
//! same data set as a C-GET, and a clipped search (`LimitFindResults`) is recognised as
//! truncated rather than taken as complete.

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::{InMemDicomObject, open_file};
use priorfetch_dicomweb::{Auth, ClientOptions, DicomWebClient, DirSink, Level, Query, Target};
use priorfetch_testkit::dicom::{Orthanc, StudySpec, load_studies, run_tool};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

fn client(orthanc: &Orthanc) -> DicomWebClient {
    DicomWebClient::new(&orthanc.dicomweb_url(), Auth::None, &ClientOptions::default()).unwrap()
}

fn text(obj: &InMemDicomObject, tag: Tag) -> String {
    obj.element(tag)
        .ok()
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches('\0').trim().to_string())
        .unwrap_or_default()
}

fn studies(patient: &str, first: u32, n: u32) -> Vec<StudySpec> {
    (first..first + n).map(|i| StudySpec { patient_id: patient.into(), ..StudySpec::small(patient, i) }).collect()
}

/// Study UIDs findscu finds for the patient (DIMSE, DCMTK as the reference client).
async fn findscu_studies(orthanc: &Orthanc, patient: &str) -> BTreeSet<String> {
    let out = tempfile::tempdir().unwrap();
    let args: Vec<String> = [
        "-S",
        "-aet",
        "PRIORFETCH",
        "-aec",
        &orthanc.ae,
        "-X",
        "-od",
        out.path().to_str().unwrap(),
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        &format!("PatientID={patient}"),
        "-k",
        "StudyInstanceUID",
        "127.0.0.1",
        &orthanc.port.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let run = run_tool("findscu", &args, Duration::from_secs(60)).await;
    assert!(run.success, "{}", run.log);
    std::fs::read_dir(out.path())
        .unwrap()
        .flatten()
        .map(|f| text(&open_file(f.path()).unwrap(), tags::STUDY_INSTANCE_UID))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qido_agrees_with_findscu() {
    let orthanc = Orthanc::start_dicomweb("QIDOARCH", "PRIORFETCH", None);
    load_studies(&orthanc.ae, orthanc.port, &studies("QIDO-1", 10, 4));
    load_studies(&orthanc.ae, orthanc.port, &studies("QIDO-2", 20, 2));
    let query = Query {
        level: Level::Studies,
        keys: vec![("PatientID".into(), "QIDO-1".into()), ("StudyInstanceUID".into(), String::new())],
    };
    let found = client(&orthanc).search_all(&query, 100, None).await.unwrap();
    assert!(found.truncated.is_none(), "{:?}", found.truncated);
    let by_qido: BTreeSet<String> = found.matches.iter().map(|m| text(m, tags::STUDY_INSTANCE_UID)).collect();
    let by_findscu = findscu_studies(&orthanc, "QIDO-1").await;
    assert_eq!(by_qido.len(), 4);
    assert_eq!(by_qido, by_findscu, "QIDO-RS and C-FIND see the same studies");
    // series level, with paging of one result per page
    let uid = by_qido.iter().next().unwrap().clone();
    let series = Query { level: Level::Series(uid), keys: vec![("SeriesInstanceUID".into(), String::new())] };
    let found = client(&orthanc).search_all(&series, 1, None).await.unwrap();
    assert_eq!(found.matches.len(), 2, "two series, one page each: {:?}", found.urls);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clipped_search_is_truncation_not_a_complete_answer() {
    // Orthanc clips at LimitFindResults without a Warning header, and applies `offset`
    // inside the clipped set: paging alone would report 3 of 5 studies as complete.
    let orthanc = Orthanc::start_dicomweb("CAPARCH", "PRIORFETCH", Some(2));
    load_studies(&orthanc.ae, orthanc.port, &studies("CAP-1", 30, 5));
    let query = Query { level: Level::Studies, keys: vec![("PatientID".into(), "CAP-1".into())] };
    let found = client(&orthanc).search_all(&query, 100, Some(2)).await.unwrap();
    assert!(found.matches.len() < 5, "Orthanc clipped: {}", found.matches.len());
    let why = found.truncated.expect("recognised as truncated");
    assert!(why.contains("match cap"), "{why}");
    // without a known cap, a page smaller than asked for looks complete: that is why
    // archives[].max_matches exists (the planner then splits the date range)
    let unknown = client(&orthanc).search_all(&query, 100, None).await.unwrap();
    assert!(unknown.truncated.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wado_brings_every_instance_as_a_c_get_would() {
    let orthanc = Orthanc::start_dicomweb("WADOARCH", "PRIORFETCH", None);
    let spec = StudySpec { series: 3, instances_per_series: 7, ..StudySpec::small("WADO-1", 40) };
    load_studies(&orthanc.ae, orthanc.port, std::slice::from_ref(&spec));
    let by_wado = tempfile::tempdir().unwrap();
    let mut sink = DirSink::new(by_wado.path()).unwrap();
    let got = client(&orthanc).retrieve(&Target::Study(spec.study_uid.clone()), "*", &mut sink).await.unwrap();
    assert_eq!(got.instances, spec.instance_count());
    assert_eq!(sink.stored.len(), spec.instance_count());

    // the reference: DCMTK getscu (C-GET) of the same study
    let by_get = tempfile::tempdir().unwrap();
    let args: Vec<String> = [
        "-S",
        "-aet",
        "PRIORFETCH",
        "-aec",
        &orthanc.ae,
        "-od",
        by_get.path().to_str().unwrap(),
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        &format!("StudyInstanceUID={}", spec.study_uid),
        "127.0.0.1",
        &orthanc.port.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let run = run_tool("getscu", &args, Duration::from_secs(120)).await;
    assert!(run.success, "{}", run.log);
    assert_same_instances(by_wado.path(), by_get.path(), spec.instance_count());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stow_delivers_every_instance_into_a_second_orthanc() {
    let target = Orthanc::start_dicomweb("STOWDEST", "PRIORFETCH", None);
    let spec = StudySpec { series: 2, instances_per_series: 9, ..StudySpec::small("STOW-1", 50) };
    let dir = tempfile::tempdir().unwrap();
    let files = priorfetch_testkit::dicom::write_study(dir.path(), &spec);
    let outgoing: Vec<priorfetch_dicomweb::Outgoing> = files
        .iter()
        .map(|path| priorfetch_dicomweb::Outgoing {
            path: path.clone(),
            sop_instance_uid: priorfetch_dicomweb::sop_instance_uid(path).unwrap(),
        })
        .collect();
    let stored = client(&target).store(&outgoing[..10]).await.unwrap();
    assert_eq!((stored.stored.len(), stored.failed.len(), stored.status), (10, 0, 200));
    let stored = client(&target).store(&outgoing[10..]).await.unwrap();
    assert_eq!(stored.stored.len(), 8);
    // the archive holds them: its own QIDO-RS instance list
    let query = Query { level: Level::Instances(spec.study_uid.clone()), keys: vec![] };
    let found = client(&target).search_all(&query, 100, None).await.unwrap();
    let held: BTreeSet<String> = found.matches.iter().map(|m| text(m, tags::SOP_INSTANCE_UID)).collect();
    let sent: BTreeSet<String> = outgoing.iter().map(|o| o.sop_instance_uid.clone()).collect();
    assert_eq!(held, sent);
}

/// Same SOP instances, and each instance's data set equal element by element.
fn assert_same_instances(a: &Path, b: &Path, count: usize) {
    let read = |dir: &Path| {
        let mut by_uid = std::collections::BTreeMap::new();
        for f in std::fs::read_dir(dir).unwrap().flatten() {
            let obj = open_file(f.path()).unwrap();
            let uid = text(&obj, tags::SOP_INSTANCE_UID);
            by_uid.insert(uid, obj.into_inner());
        }
        by_uid
    };
    let (a, b) = (read(a), read(b));
    assert_eq!(a.len(), count);
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (uid, obj) in &a {
        assert_eq!(Some(obj), b.get(uid), "instance {uid} differs");
    }
}
