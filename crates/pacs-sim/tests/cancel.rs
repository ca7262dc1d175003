//! C-CANCEL honoured mid-operation, as a real archive does: a C-MOVE stops starting
//! sub-operations and ends with 0xFE00 and the counts so far; a C-FIND stops sending matches.

mod common;

use common::*;
use dicom_core::{Tag, VR};
use pacs_sim::{DataSource, Faults, Sim, SimConfig};
use priorfetch_dimse::scu::query_contexts;
use priorfetch_dimse::{AeTitle, Association, Peer, QueryModel, ScuOptions, identifier};
use priorfetch_testkit::dicom::Storescp;
use std::ops::ControlFlow;
use std::time::Duration;

async fn connect(sim: &pacs_sim::SimHandle) -> Association {
    let peer = Peer::new(sim.ae(), "127.0.0.1", sim.port()).unwrap();
    Association::connect(&peer, &ScuOptions::new(AeTitle::parse("PF").unwrap()), &query_contexts(QueryModel::StudyRoot))
        .await
        .unwrap()
}

fn slow() -> Faults {
    Faults { response_delay: Some(Duration::from_millis(150)), ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_cancel_stops_a_running_c_move_with_the_counts_so_far() {
    let dest = Sim::start(SimConfig::new("DEST", DataSource::Empty), "127.0.0.1:0").await.unwrap();
    let mut config = SimConfig::new("SIM", DataSource::Synthetic(spec())).with_faults(slow()).with_destination(
        "DEST",
        "127.0.0.1",
        dest.port(),
    );
    // one sub-operation per progress response, so the cancel lands mid-retrieve
    config.store_window = 1;
    let sim = Sim::start(config, "127.0.0.1:0").await.unwrap();
    let study = sim.index().into_iter().max_by_key(|s| s.instances).unwrap();
    assert!(study.instances >= 3, "a study big enough to cancel in the middle");
    let (cancel, cancel_rx) = tokio::sync::watch::channel(false);
    let mut assoc = connect(&sim).await;
    let query = identifier("STUDY", &[(Tag(0x0020, 0x000D), VR::UI, &study.study_instance_uid)]);
    let dest_ae = AeTitle::parse("DEST").unwrap();
    let outcome = tokio::time::timeout(
        Duration::from_secs(30),
        assoc.retrieve_move(
            QueryModel::StudyRoot,
            &query,
            &dest_ae,
            |_| {
                let _ = cancel.send(true);
            },
            Some(cancel_rx),
        ),
    )
    .await
    .expect("the move ends promptly after C-CANCEL")
    .unwrap();
    assert_eq!(outcome.status, 0xFE00, "{outcome:?}");
    assert!(outcome.cancelled);
    let done = outcome.counts.completed as usize;
    assert!(done >= 1 && done < study.instances, "{done} of {}", study.instances);
    assert_eq!(outcome.counts.remaining.map(usize::from), Some(study.instances - done), "{outcome:?}");
    assert_eq!(dest.received().len(), done);
    assert_eq!(sim.stats().cancels, 1);
    assoc.release().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_cancel_stops_a_running_c_find() {
    let sim = start(spec(), None, slow()).await;
    let total = sim.index().len();
    assert!(total >= 3);
    let mut assoc = connect(&sim).await;
    let query = identifier("STUDY", &[(Tag(0x0020, 0x000D), VR::UI, "")]);
    let outcome = tokio::time::timeout(
        Duration::from_secs(30),
        assoc.find_with_cancel(QueryModel::StudyRoot, &query, Some(1), None, |_| ControlFlow::Continue(())),
    )
    .await
    .expect("the find ends promptly after C-CANCEL")
    .unwrap();
    assert_eq!(outcome.status, 0xFE00, "{outcome:?}");
    assert!(outcome.cancelled_by_us);
    assert!(outcome.matches < total, "{} of {total}", outcome.matches);
    let stats = sim.stats();
    assert!((stats.find_matches as usize) < total, "{stats:?}");
    assert_eq!(stats.cancels, 1);
    // the association stays usable: the next query gets every match
    let all =
        assoc.find_with_cancel(QueryModel::StudyRoot, &query, None, None, |_| ControlFlow::Continue(())).await.unwrap();
    assert_eq!((all.status, all.matches), (0x0000, total));
    assoc.release().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn movescu_cancel_stops_the_move_early() {
    let storescp = Storescp::start("DEST");
    let mut config = SimConfig::new("SIM", DataSource::Synthetic(spec())).with_faults(slow()).with_destination(
        "DEST",
        "127.0.0.1",
        storescp.port,
    );
    config.store_window = 1;
    let sim = Sim::start(config, "127.0.0.1:0").await.unwrap();
    let study = sim.index().into_iter().max_by_key(|s| s.instances).unwrap();
    let run = movescu_with(&sim, "DEST", &study.study_instance_uid, &["--cancel", "1"]).await;
    assert!(run.log.to_ascii_lowercase().contains("0xfe00"), "{}", run.log);
    let done: usize = run.last_value("Completed Suboperations").and_then(|v| v.parse().ok()).unwrap_or(usize::MAX);
    assert!(done >= 1 && done < study.instances, "{done} of {}: {}", study.instances, run.log);
    assert_eq!(wait_files(storescp.out.path(), done).await.len(), done);
    assert_eq!(sim.stats().cancels, 1);
}
