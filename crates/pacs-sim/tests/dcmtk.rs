//! DCMTK's findscu, movescu (to storescp) and getscu against the simulator: expected
//! results, and each fault mode as a DCMTK client sees it.

mod common;

use common::*;
use dicom_core::Tag;
use pacs_sim::{CapBehaviour, Faults, MatchCap, RejectReason};
use priorfetch_testkit::dicom::{Storescp, run_tool};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn findscu_gets_the_priors_with_study_level_attributes() {
    let spec = spec();
    let sim = start(spec.clone(), None, Faults::default()).await;
    let patient = &sim.patients()[1];
    let expected = spec.studies_for(patient);
    assert!(expected.len() >= 3);
    let out = tempfile::tempdir().unwrap();
    let run = findscu(
        &sim,
        out.path(),
        &[
            "QueryRetrieveLevel=STUDY",
            &format!("PatientID={patient}"),
            "StudyInstanceUID",
            "StudyDate",
            "ModalitiesInStudy",
            "NumberOfStudyRelatedInstances",
            "NumberOfStudyRelatedSeries",
            "AccessionNumber",
            "StudyDescription",
            "IssuerOfPatientID",
        ],
    )
    .await;
    assert!(run.success, "{}", run.log);
    let responses = files(out.path());
    assert_eq!(responses.len(), expected.len(), "{}", run.log);
    for path in responses {
        let obj = dicom_object::open_file(&path).unwrap();
        let uid = text(&obj, Tag(0x0020, 0x000D));
        let study = expected.iter().find(|s| s.study_instance_uid == uid).expect("a known study");
        assert_eq!(text(&obj, Tag(0x0008, 0x0020)), study.study_date);
        assert_eq!(text(&obj, Tag(0x0008, 0x0061)), study.modalities.join("\\"));
        assert_eq!(text(&obj, Tag(0x0020, 0x1208)), study.instances.to_string());
        assert_eq!(text(&obj, Tag(0x0020, 0x1206)), study.series.to_string());
        assert_eq!(text(&obj, Tag(0x0008, 0x0050)), study.accession);
        assert_eq!(text(&obj, Tag(0x0008, 0x1030)), study.description);
        assert_eq!(text(&obj, Tag(0x0010, 0x0021)), "SIM");
        // only the keys asked for (+ the level)
        assert!(obj.element_opt(Tag(0x0010, 0x0010)).unwrap().is_none(), "PatientName was not asked for");
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn movescu_to_storescp_and_getscu_receive_every_instance() {
    let storescp = Storescp::start("DEST");
    let sim = start(spec(), Some(("DEST", storescp.port)), Faults::default()).await;
    let study = sim.index().into_iter().max_by_key(|s| s.instances).unwrap();
    let run = movescu(&sim, "DEST", &study.study_instance_uid).await;
    assert!(run.success, "{}", run.log);
    assert_eq!(
        run.last_value("Completed Suboperations").as_deref(),
        Some(study.instances.to_string().as_str()),
        "{}",
        run.log
    );
    assert_eq!(wait_files(storescp.out.path(), study.instances).await.len(), study.instances);

    let out = tempfile::tempdir().unwrap();
    let run = getscu(&sim, out.path(), &study.study_instance_uid, &[]).await;
    assert!(run.success, "{}", run.log);
    let got = files(out.path());
    assert_eq!(got.len(), study.instances, "{}", run.log);
    let obj = dicom_object::open_file(&got[0]).unwrap();
    assert_eq!(text(&obj, Tag(0x0020, 0x000D)), study.study_instance_uid);
    assert_eq!(obj.element(Tag(0x7FE0, 0x0010)).unwrap().to_bytes().unwrap().len(), 64 * 64 * 2, "real pixel data");
    // a destination that takes only Implicit VR LE gets instances encoded that way
    let implicit = Storescp::start_with("IMPL", &["+xi"]);
    sim.shutdown().await;
    let sim = start(spec(), Some(("IMPL", implicit.port)), Faults::default()).await;
    let run = movescu(&sim, "IMPL", &study.study_instance_uid).await;
    assert!(run.success, "{}", run.log);
    let got = wait_files(implicit.out.path(), study.instances).await;
    assert_eq!(got.len(), study.instances);
    let obj = dicom_object::open_file(&got[0]).unwrap();
    assert_eq!(obj.meta().transfer_syntax().trim_end_matches('\0'), "1.2.840.10008.1.2");
    assert_eq!(obj.element(Tag(0x7FE0, 0x0010)).unwrap().to_bytes().unwrap().len(), 64 * 64 * 2);
    assert_eq!(sim.stats().stores_sent as usize, study.instances);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn match_cap_behaviours_as_findscu_sees_them() {
    let sim = start(spec(), None, Faults::default()).await;
    let total = sim.index().len();
    let query = ["QueryRetrieveLevel=STUDY", "StudyInstanceUID"];
    for (behaviour, expected_matches, status) in [
        (CapBehaviour::Refuse, 0, "0xa700"),
        (CapBehaviour::Truncate, 3, "0x0000"),
        (CapBehaviour::Cancel, 3, "0xfe00"),
    ] {
        sim.set_faults(Faults { match_cap: Some(MatchCap { limit: 3, behaviour }), ..Default::default() });
        let out = tempfile::tempdir().unwrap();
        let run = findscu(&sim, out.path(), &query).await;
        assert_eq!(files(out.path()).len(), expected_matches, "{behaviour:?} of {total}: {}", run.log);
        assert!(
            run.log.to_lowercase().contains(&format!("status                     : {status}"))
                || run.log.to_lowercase().contains(status),
            "{behaviour:?}: {}",
            run.log
        );
    }
    sim.set_faults(Faults::default());
    let out = tempfile::tempdir().unwrap();
    findscu(&sim, out.path(), &query).await;
    assert_eq!(files(out.path()).len(), total, "no cap: every study");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejections_and_the_association_cap() {
    let sim = start(spec(), None, Faults { reject: Some(RejectReason::CallingAe), ..Default::default() }).await;
    let echo = |ae: &str| {
        let args: Vec<String> =
            ["-aet", "PF", "-aec", ae, "127.0.0.1", &sim.port().to_string()].iter().map(|s| s.to_string()).collect();
        async move { run_tool("echoscu", &args, Duration::from_secs(20)).await }
    };
    let run = echo("SIM").await;
    assert!(!run.success);
    assert!(run.log.contains("Calling AE Title Not Recognized"), "{}", run.log);
    sim.set_faults(Faults { reject: Some(RejectReason::Congestion), ..Default::default() });
    let run = echo("SIM").await;
    assert!(run.log.contains("Transient") && run.log.to_lowercase().contains("congestion"), "{}", run.log);
    sim.set_faults(Faults::default());
    let run = echo("WRONG").await;
    assert!(run.log.contains("Called AE Title Not Recognized"), "{}", run.log);
    assert!(echo("SIM").await.success);

    // one association held open: the next is rejected (transient, local limit)
    sim.set_faults(Faults { max_associations: Some(1), ..Default::default() });
    let peer = priorfetch_dimse::Peer::new("SIM", "127.0.0.1", sim.port()).unwrap();
    let options = priorfetch_dimse::ScuOptions::new(priorfetch_dimse::AeTitle::parse("HOLDER").unwrap());
    let held = priorfetch_dimse::Association::connect(
        &peer,
        &options,
        &[priorfetch_dimse::ContextRequest::new("1.2.840.10008.1.1")],
    )
    .await
    .unwrap();
    let run = echo("SIM").await;
    assert!(run.log.to_lowercase().contains("local limit exceeded"), "{}", run.log);
    held.release().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(echo("SIM").await.success, "a slot is free again");
    assert_eq!(sim.stats().rejected, 4);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrieve_faults_as_movescu_and_getscu_see_them() {
    let storescp = Storescp::start("DEST");
    let sim = start(spec(), Some(("DEST", storescp.port)), Faults::default()).await;
    let study = sim.index().into_iter().max_by_key(|s| s.instances).unwrap();
    let uid = study.study_instance_uid.clone();

    // unknown destination
    let run = movescu(&sim, "NOPE", &uid).await;
    assert!(run.log.contains("0xa801") || run.log.contains("A801"), "{}", run.log);

    // out of resources
    sim.set_faults(Faults { out_of_resources: true, ..Default::default() });
    let run = movescu(&sim, "DEST", &uid).await;
    assert!(run.log.contains("0xa702") || run.log.contains("A702"), "{}", run.log);

    // success with nothing sent
    sim.set_faults(Faults { empty_success: true, ..Default::default() });
    let run = movescu(&sim, "DEST", &uid).await;
    assert_eq!(run.last_value("Completed Suboperations").as_deref(), Some("0"), "{}", run.log);
    assert!(storescp.files().is_empty());

    // a share of failed sub-operations, with the failed instance list
    sim.set_faults(Faults { failed_suboperation_ratio: 0.5, ..Default::default() });
    let run = movescu(&sim, "DEST", &uid).await;
    let completed: usize = run.last_value("Completed Suboperations").unwrap().parse().unwrap();
    let failed: usize = run.last_value("Failed Suboperations").unwrap().parse().unwrap();
    assert_eq!(completed + failed, study.instances, "{}", run.log);
    assert!(failed > 0 && completed > 0, "ratio 0.5 over {} instances: {failed} failed", study.instances);
    assert!(run.log.contains("0xb000") || run.log.contains("B000"), "{}", run.log);
    assert!(run.log.contains("FailedSOPInstanceUIDList"), "{}", run.log);
    assert_eq!(wait_files(storescp.out.path(), completed).await.len(), completed);

    // abort after 2 sub-operations
    sim.set_faults(Faults { abort_after_suboperations: Some(2), ..Default::default() });
    let out = tempfile::tempdir().unwrap();
    let run = getscu(&sim, out.path(), &uid, &[]).await;
    assert!(run.log.to_lowercase().contains("abort"), "{}", run.log);
    assert_eq!(files(out.path()).len(), 2);

    // a delay per response
    sim.set_faults(Faults { response_delay: Some(Duration::from_millis(100)), ..Default::default() });
    let out = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let run = findscu(&sim, out.path(), &["QueryRetrieveLevel=STUDY", &format!("StudyInstanceUID={uid}")]).await;
    assert!(run.success);
    assert_eq!(files(out.path()).len(), 1);
    assert!(started.elapsed() >= Duration::from_millis(200), "two responses delayed 100 ms each");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patient_root_find_and_get() {
    let spec = spec();
    let sim = start(spec.clone(), None, Faults::default()).await;
    let port = sim.port().to_string();
    let out = tempfile::tempdir().unwrap();
    let args: Vec<String> = [
        "-P",
        "-aet",
        "PF",
        "-aec",
        "SIM",
        "-X",
        "-od",
        out.path().to_str().unwrap(),
        "-k",
        "QueryRetrieveLevel=PATIENT",
        "-k",
        "PatientID",
        "-k",
        "NumberOfPatientRelatedStudies",
        "127.0.0.1",
        &port,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let run = run_tool("findscu", &args, Duration::from_secs(30)).await;
    assert!(run.success, "{}", run.log);
    let responses = files(out.path());
    assert_eq!(responses.len(), spec.patients);
    for path in responses {
        let obj = dicom_object::open_file(&path).unwrap();
        let patient = text(&obj, Tag(0x0010, 0x0020));
        assert_eq!(text(&obj, Tag(0x0020, 0x1200)), spec.studies_for(&patient).len().to_string());
    }
    // every instance of one patient with a Patient Root C-GET
    let patient = sim.patients()[0].clone();
    let expected: usize = spec.studies_for(&patient).iter().map(|s| s.instances).sum();
    let out = tempfile::tempdir().unwrap();
    let args: Vec<String> = [
        "-P",
        "-aet",
        "PF",
        "-aec",
        "SIM",
        "-od",
        out.path().to_str().unwrap(),
        "-k",
        "QueryRetrieveLevel=PATIENT",
        "-k",
        &format!("PatientID={patient}"),
        "127.0.0.1",
        &port,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let run = run_tool("getscu", &args, Duration::from_secs(60)).await;
    assert!(run.success, "{}", run.log);
    assert_eq!(files(out.path()).len(), expected);
    sim.shutdown().await;
}
