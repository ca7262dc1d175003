//! Faults through priorfetch's own SCU: deterministic failed sub-operations that a retry of
//! only the failed instances recovers (`faults_first_attempts`), a simulator as the C-MOVE
//! destination of another (it answers C-FIND on what it received), bad identifiers.

mod common;

use common::*;
use dicom_core::{Tag, VR};
use pacs_sim::{DataSource, Faults, Sim, SimConfig};
use priorfetch_dimse::scu::query_contexts;
use priorfetch_dimse::{AeTitle, Association, DimseError, Peer, QueryModel, ScuOptions, identifier};
use std::ops::ControlFlow;

async fn connect(sim: &pacs_sim::SimHandle) -> Association {
    let peer = Peer::new(sim.ae(), "127.0.0.1", sim.port()).unwrap();
    Association::connect(&peer, &ScuOptions::new(AeTitle::parse("PF").unwrap()), &query_contexts(QueryModel::StudyRoot))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_suboperations_are_deterministic_and_a_retry_of_them_recovers() {
    let dest = Sim::start(SimConfig::new("DEST", DataSource::Empty), "127.0.0.1:0").await.unwrap();
    let faults = Faults { failed_suboperation_ratio: 0.4, faults_first_attempts: Some(1), ..Default::default() };
    let sim = start(spec(), Some(("DEST", dest.port())), faults).await;
    let study = sim.index().into_iter().max_by_key(|s| s.instances).unwrap();
    let dest_ae = AeTitle::parse("DEST").unwrap();
    let mut assoc = connect(&sim).await;
    let query = identifier("STUDY", &[(Tag(0x0020, 0x000D), VR::UI, &study.study_instance_uid)]);
    let first = assoc.retrieve_move(QueryModel::StudyRoot, &query, &dest_ae, |_| {}, None).await.unwrap();
    assert_eq!(first.status, 0xB000);
    assert!(first.counts.failed > 0, "ratio 0.4 of {} instances", study.instances);
    assert_eq!(first.counts.completed as usize + first.counts.failed as usize, study.instances);
    assert_eq!(first.failed_instances.len(), first.counts.failed as usize);
    assert_eq!(dest.received().len(), first.counts.completed as usize);
    // the same instances fail on another simulator with the same seed
    let twin =
        start(spec(), Some(("DEST", dest.port())), Faults { failed_suboperation_ratio: 0.4, ..Default::default() })
            .await;
    let mut twin_assoc = connect(&twin).await;
    let again = twin_assoc.retrieve_move(QueryModel::StudyRoot, &query, &dest_ae, |_| {}, None).await.unwrap();
    assert_eq!(again.failed_instances, first.failed_instances);
    twin_assoc.release().await;
    twin.shutdown().await;

    // retry only the failed ones: the second attempt of the study has no faults
    let list = first.failed_instances.join("\\");
    let retry = identifier(
        "IMAGE",
        &[(Tag(0x0020, 0x000D), VR::UI, &study.study_instance_uid), (Tag(0x0008, 0x0018), VR::UI, &list)],
    );
    let second = assoc.retrieve_move(QueryModel::StudyRoot, &retry, &dest_ae, |_| {}, None).await.unwrap();
    assert_eq!(second.status, 0x0000);
    assert_eq!(second.counts.completed, first.counts.failed);
    assoc.release().await;

    // the destination has the whole study, and answers C-FIND about it
    // (the twin's C-MOVE above sent some of them a second time)
    let received = dest.received();
    let distinct: std::collections::BTreeSet<_> = received.iter().map(|r| r.sop_instance_uid.clone()).collect();
    assert_eq!(distinct.len(), study.instances);
    assert_eq!(received.len(), study.instances + again.counts.completed as usize);
    assert!(received.iter().all(|r| r.move_originator_ae.as_deref() == Some("PF")));
    let mut dest_assoc = connect(&dest).await;
    let mut found = Vec::new();
    let q = identifier(
        "STUDY",
        &[(Tag(0x0020, 0x000D), VR::UI, &study.study_instance_uid), (Tag(0x0020, 0x1208), VR::IS, "")],
    );
    dest_assoc
        .find(QueryModel::StudyRoot, &q, None, |m| {
            found.push(m.element(Tag(0x0020, 0x1208)).unwrap().to_str().unwrap().trim().to_string());
            ControlFlow::Continue(())
        })
        .await
        .unwrap();
    assert_eq!(found, vec![study.instances.to_string()]);
    dest_assoc.release().await;
    assert_eq!(dest.study(&study.study_instance_uid).unwrap().instances, study.instances);
    sim.shutdown().await;
    dest.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_identifiers_get_error_statuses_not_a_crash() {
    let sim = start(spec(), None, Faults::default()).await;
    let mut assoc = connect(&sim).await;
    // no level
    let q = identifier("", &[(Tag(0x0010, 0x0020), VR::LO, "")]);
    let err = assoc.find(QueryModel::StudyRoot, &q, None, |_| ControlFlow::Continue(())).await.unwrap_err();
    assert!(matches!(err, DimseError::Status { status: 0xA900, .. }), "{err}");
    // PATIENT level in the Study Root model
    let q = identifier("PATIENT", &[(Tag(0x0010, 0x0020), VR::LO, "")]);
    let err = assoc.find(QueryModel::StudyRoot, &q, None, |_| ControlFlow::Continue(())).await.unwrap_err();
    assert!(matches!(err, DimseError::Status { status: 0xA900, .. }), "{err}");
    // a C-MOVE without any unique key would move the archive: refused
    let q = identifier("STUDY", &[(Tag(0x0020, 0x000D), VR::UI, "")]);
    let err =
        assoc.retrieve_move(QueryModel::StudyRoot, &q, &AeTitle::parse("X").unwrap(), |_| {}, None).await.unwrap_err();
    assert!(matches!(err, DimseError::Status { status: 0xA900, .. }), "{err}");
    // the association still works
    let q = identifier("STUDY", &[(Tag(0x0020, 0x000D), VR::UI, "")]);
    let outcome = assoc.find(QueryModel::StudyRoot, &q, None, |_| ControlFlow::Continue(())).await.unwrap();
    assert_eq!(outcome.matches, sim.index().len());
    assoc.release().await;
    sim.shutdown().await;
}

#[test]
fn synthetic_data_is_deterministic_and_spread_over_ten_years() {
    let a = spec().studies();
    let b = spec().studies();
    assert_eq!(a, b);
    let mut other = spec();
    other.seed = 8;
    assert_ne!(a, other.studies());
    assert!(a.iter().all(|s| s.study_date.as_str() > "20161101" && s.study_date.as_str() <= "20261101"));
    let modalities: std::collections::BTreeSet<_> = a.iter().flat_map(|s| s.modalities.clone()).collect();
    assert!(modalities.len() >= 3, "{modalities:?}");
    assert!(a.iter().all(|s| (1..=3).contains(&s.series) && s.instances == s.series * 3));
    assert_eq!(spec().studies_for("SIM-P0002").iter().filter(|s| s.patient_id != "SIM-P0002").count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_the_network_does_not_stop_the_simulator() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sim = start(spec(), None, Faults::default()).await;
    let inputs: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        vec![0x01, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0x00],
        vec![0x04, 0x00, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x04, 0x01, 0x03, 0x00, 0x00],
        (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect(),
    ];
    for input in inputs {
        let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", sim.port())).await.unwrap();
        let _ = socket.write_all(&input).await;
        let mut buf = [0u8; 1024];
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), socket.read(&mut buf)).await;
    }
    // a P-DATA with a garbage command set inside an established association
    let mut assoc = connect(&sim).await;
    let mut bogus = priorfetch_dimse::command::Command::new(0x0020);
    bogus.put_u16(priorfetch_dimse::command::tags::MESSAGE_ID, 1).with_data_set();
    let (pc, _) = assoc.context_for(QueryModel::StudyRoot.find_uid()).unwrap();
    let _ = assoc.send(pc, &bogus, Some(&[0x08, 0x00, 0x52, 0x00, 0xFF, 0xFF, 0xFF, 0x7F, 1, 2])).await;
    let answer = assoc.receive().await;
    assert!(matches!(answer, Ok(ref m) if m.command.status() == Some(0xA900)), "garbage identifier: an error status");
    assoc.release().await;
    let peer = Peer::new(sim.ae(), "127.0.0.1", sim.port()).unwrap();
    priorfetch_dimse::echo(&peer, &ScuOptions::new(AeTitle::parse("PF").unwrap())).await.unwrap();
    sim.shutdown().await;
}
