//! The relay between two peers written by others: Orthanc as the archive (C-GET) and
//! DCMTK's storescp as the destination (C-STORE). With a spool budget of zero bytes every
//! instance must wait for the forwarder to confirm the one before: receiving pauses by
//! awaiting (no thread blocked, no polling), nothing is lost, and the spool ends empty.

use dicom_dictionary_std::tags;
use priorfetch_dimse::get::{COMMON_STORAGE_CLASSES, get_contexts};
use priorfetch_dimse::scu::identifier;
use priorfetch_dimse::{AeTitle, Association, Peer, QueryModel, ScuOptions};
use priorfetch_relay::{JobSpool, Relay, SpoolBudget};
use priorfetch_testkit::dicom::{Orthanc, Storescp, StudySpec, load_studies};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

// A current-thread runtime: a sink that blocked its thread instead of awaiting would
// starve the forwarder and never finish.
#[tokio::test(flavor = "current_thread")]
async fn a_full_spool_pauses_the_archive_until_the_destination_confirmed() {
    let archive = Orthanc::start("ARCHIVE", "PRIORFETCH", &[], None);
    let spec = StudySpec { series: 2, instances_per_series: 10, ..StudySpec::small("RELAY-1", 1) };
    load_studies(&archive.ae, archive.port, std::slice::from_ref(&spec));
    let destination = Storescp::start("DEST");

    let root = tempfile::tempdir().unwrap();
    let budget = SpoolBudget::new(0); // full as soon as one byte is held
    let spool = JobSpool::open(root.path(), 1, budget.clone()).unwrap();
    let options = ScuOptions::new(AeTitle::parse("PRIORFETCH").unwrap());
    let confirmed = Arc::new(AtomicU32::new(0));
    let on_confirmed = {
        let confirmed = confirmed.clone();
        Arc::new(move |n: u32| confirmed.store(n, Ordering::Relaxed))
    };
    let dest_peer = Peer::new(&destination.ae, "127.0.0.1", destination.port).unwrap();
    let to = priorfetch_relay::Destination::Dimse { peer: dest_peer, options: options.clone() };
    let (relay, mut sink) = Relay::start(spool, to, on_confirmed).unwrap();

    // the most the spool ever held, sampled while the C-GET runs
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = tokio::spawn({
        let (budget, peak) = (budget.clone(), peak.clone());
        async move {
            loop {
                peak.fetch_max(budget.spooled(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    });
    let archive_peer = Peer::new(&archive.ae, "127.0.0.1", archive.port).unwrap();
    let contexts = get_contexts(QueryModel::StudyRoot, COMMON_STORAGE_CLASSES);
    let mut assoc = Association::connect(&archive_peer, &options, &contexts).await.unwrap();
    let query = identifier("STUDY", &[(tags::STUDY_INSTANCE_UID, dicom_core::VR::UI, &spec.study_uid)]);
    let outcome = tokio::time::timeout(
        Duration::from_secs(60),
        assoc.retrieve_get(QueryModel::StudyRoot, &query, &mut sink, |_| {}, None),
    )
    .await
    .expect("the C-GET finishes: the paused receiver was woken each time")
    .unwrap();
    assoc.release().await;
    let forwarded = relay.finish(sink).await;
    sampler.abort();

    assert_eq!(outcome.counts.completed as usize, spec.instance_count(), "{outcome:?}");
    assert!(forwarded.error.is_none(), "{:?}", forwarded.error);
    assert_eq!((forwarded.confirmed.len(), forwarded.refused), (spec.instance_count(), 0));
    assert_eq!(confirmed.load(Ordering::Relaxed) as usize, spec.instance_count(), "progress reported");
    assert_eq!(destination.files().len(), spec.instance_count(), "every instance at storescp");
    assert_eq!(budget.spooled(), 0, "nothing held after the last confirmation");
    let one = forwarded.bytes_received / spec.instance_count() as u64;
    let peak = peak.load(Ordering::Relaxed);
    assert!(peak <= 2 * one + 1024, "a zero budget holds about one instance at a time: peak {peak} B, one {one} B");
    let left: Vec<_> = std::fs::read_dir(root.path().join("job-1")).unwrap().flatten().collect();
    assert!(left.is_empty(), "spool folder emptied: {left:?}");
}
