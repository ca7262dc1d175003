//! A large study over several associations at once (services/mover/src/split/): against
//! Orthanc (C-GET relayed to storescp, C-MOVE to storescp, WADO-RS) and DCMTK dcmqrscp
//! (C-MOVE), a part cut mid-way by a TCP proxy and retried alone, and the fallback to one
//! association against an archive that refuses IMAGE-level retrieves (the simulator's
//! fault injection).
//!
//! storescp runs with `+uf` (unique file names): an instance stored twice would be two
//! files, so "every instance exactly once" is a file count.

mod common;

use common::*;
use pacs_sim::{DataSource, Faults, Sim, SimConfig, SyntheticSpec};
use priorfetch_store::JobState;
use priorfetch_testkit::dicom::{Orthanc, Storescp, StudySpec, store_files, write_study};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(120);

/// Four associations allowed, splits from 100 instances (the defaults).
fn archive(name: &str, ae: &str, port: u16, retrieve: &str) -> String {
    format!(
        "[[archives]]\nname = \"{name}\"\nae_title = \"{ae}\"\nhost = \"127.0.0.1\"\nport = {port}\nretrieve = \"{retrieve}\"\n\
         move_destination = \"DEST\"\nmax_associations = 4\n"
    )
}

/// The data set of a Part-10 file: what follows the file meta group.
fn data_set(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[128..132], b"DICM", "{}", path.display());
    let group = u32::from_le_bytes(bytes[140..144].try_into().unwrap()) as usize;
    bytes[144 + group..].to_vec()
}

fn sop_of(path: &Path) -> String {
    dicom_object::open_file(path).unwrap().meta().media_storage_sop_instance_uid().trim_end_matches('\0').to_string()
}

/// Every instance of the study at the destination exactly once, its data set
/// byte-identical to the file the archive was loaded with.
fn assert_exactly_once_and_identical(originals: &[PathBuf], received: &[PathBuf]) {
    let expected: HashMap<String, &PathBuf> =
        originals.iter().map(|p| (p.file_stem().unwrap().to_string_lossy().into_owned(), p)).collect();
    assert_eq!(received.len(), expected.len(), "one file per instance, none twice");
    let mut seen = std::collections::HashSet::new();
    for file in received {
        let sop = sop_of(file);
        assert!(seen.insert(sop.clone()), "{sop} arrived twice");
        let original = expected.get(&sop).unwrap_or_else(|| panic!("{sop} is not of the study"));
        assert!(data_set(file) == data_set(original), "{sop}: data set differs from the archive's");
    }
}

fn metric(name_and_labels: &str) -> Option<u64> {
    let text = priorfetch_telemetry::metrics::render();
    text.lines().find_map(|l| l.strip_prefix(name_and_labels).and_then(|v| v.trim().parse().ok()))
}

fn single_series(patient: &str, n: u32, instances: usize, size: u16) -> StudySpec {
    let mut spec = StudySpec::small(patient, n);
    spec.series = 1;
    spec.instances_per_series = instances;
    (spec.rows, spec.columns) = (size, size);
    spec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_c_get_from_orthanc_brings_every_instance_once_byte_identical() {
    let (db, store) = postgres().await;
    let dest = Storescp::start_with("DEST", &["--accept-all", "+uf"]);
    let orthanc = Orthanc::start("ARCH", "PRIORFETCH", &[], None);
    let spec = single_series("S1", 41, 120, 64);
    let files = tempfile::tempdir().unwrap();
    let originals = write_study(files.path(), &spec);
    store_files("ARCH", orthanc.port, files.path());
    let spool = tempfile::tempdir().unwrap();
    let config = config(
        &db,
        spool.path(),
        &(archive("split-get", "ARCH", orthanc.port, "get") + &destination_toml(dest.port, false)),
    );
    let exam = exam(&store, "s1").await;
    let job = job(&store, exam, "split-get", "get", &spec.study_uid, Some(120)).await;

    let mover = start_mover(&store, config, "w1");
    let done = finished(&store, job, WAIT).await;
    mover.stop().await;

    assert_eq!(done.state, JobState::Completed, "{done:?}");
    assert_eq!((done.attempt, done.counts.completed, done.counts.failed), (1, 120, 0));
    assert_exactly_once_and_identical(&originals, &dest.files());
    // 120 instances over 4 associations: 15 IMAGE-level batches of 8, each done once
    assert_eq!(metric("priorfetch_split_retrieves_total{archive=\"split-get\",mode=\"split\"}"), Some(1));
    assert_eq!(metric("priorfetch_split_parts_total{archive=\"split-get\",outcome=\"done\"}"), Some(15));
    assert_eq!(metric("priorfetch_split_parts_total{archive=\"split-get\",outcome=\"retried\"}"), None);
    assert_eq!(store.slots_held(job).await.unwrap(), 0, "every slot given back");
    assert!(walk(spool.path()).is_empty(), "spool emptied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_c_move_of_a_multi_series_study_counts_every_instance_once() {
    let (db, store) = postgres().await;
    let dest = Storescp::start_with("DEST", &["--accept-all", "+uf"]);
    let orthanc = Orthanc::start("ARCH", "PRIORFETCH", &[dest.destination()], None);
    let mut spec = StudySpec::small("S2", 42);
    (spec.series, spec.instances_per_series) = (4, 30);
    let files = tempfile::tempdir().unwrap();
    let originals = write_study(files.path(), &spec);
    store_files("ARCH", orthanc.port, files.path());
    let spool = tempfile::tempdir().unwrap();
    let config = config(
        &db,
        spool.path(),
        &(archive("split-move", "ARCH", orthanc.port, "move") + &destination_toml(dest.port, false)),
    );
    let exam = exam(&store, "s2").await;
    // unknown expected count (as from dcmqrscp): the split's C-FIND decides
    let job = job(&store, exam, "split-move", "move", &spec.study_uid, None).await;

    let mover = start_mover(&store, config, "w1");
    let done = finished(&store, job, WAIT).await;
    mover.stop().await;

    assert_eq!(done.state, JobState::Completed, "{done:?}");
    assert_eq!((done.attempt, done.counts.completed, done.counts.failed), (1, 120, 0));
    assert_exactly_once_and_identical(&originals, &dest.files());
    // 4 series of 30, batches of 8: each series is cut (larger than two batches)
    assert_eq!(metric("priorfetch_split_parts_total{archive=\"split-move\",outcome=\"done\"}"), Some(16));
    assert_eq!(store.slots_held(job).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_cut_mid_transfer_is_retried_alone_and_nothing_arrives_twice() {
    let (db, store) = postgres().await;
    let dest = Storescp::start_with("DEST", &["--accept-all", "+uf"]);
    let orthanc = Orthanc::start("ARCH", "PRIORFETCH", &[], None);
    // 128 KiB instances: the C-FIND answers fit well inside the first 400 kB
    let spec = single_series("S3", 43, 120, 256);
    let files = tempfile::tempdir().unwrap();
    let originals = write_study(files.path(), &spec);
    store_files("ARCH", orthanc.port, files.path());
    let proxy = priorfetch_testkit::proxy::TcpProxy::start(&format!("127.0.0.1:{}", orthanc.port)).await.unwrap();
    // the first association (C-FIND, then its first batch of 8) is cut in that batch
    proxy.cut_next_after(400_000);
    let spool = tempfile::tempdir().unwrap();
    let config = config(
        &db,
        spool.path(),
        &(archive("split-cut", "ARCH", proxy.addr().port(), "get") + &destination_toml(dest.port, false)),
    );
    let exam = exam(&store, "s3").await;
    let job = job(&store, exam, "split-cut", "get", &spec.study_uid, Some(120)).await;

    let mover = start_mover(&store, config, "w1");
    let done = finished(&store, job, WAIT).await;
    mover.stop().await;

    assert_eq!(done.state, JobState::Completed, "{done:?}");
    assert_eq!(done.attempt, 1, "the job itself was not retried: {:?}", errors_of(&done));
    assert_eq!((done.counts.completed, done.counts.failed), (120, 0));
    assert_exactly_once_and_identical(&originals, &dest.files());
    // one part went back to the queue, the 15 parts were each done once
    assert_eq!(metric("priorfetch_split_parts_total{archive=\"split-cut\",outcome=\"retried\"}"), Some(1));
    assert_eq!(metric("priorfetch_split_parts_total{archive=\"split-cut\",outcome=\"done\"}"), Some(15));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_refusing_image_level_gets_one_association_and_is_remembered() {
    let (db, store) = postgres().await;
    let dest = Sim::start(SimConfig::new("DEST", DataSource::Empty), "127.0.0.1:0").await.unwrap();
    let spec = SyntheticSpec {
        patients: 1,
        seed: 5,
        instances_per_series: 12,
        studies_per_patient: (2, 2),
        series_per_study: (1, 1),
        ..Default::default()
    };
    let sim = Sim::start(
        SimConfig::new("ARCH", DataSource::Synthetic(spec))
            .with_destination("DEST", "127.0.0.1", dest.port())
            .with_faults(Faults { refuse_image_level: true, ..Default::default() }),
        "127.0.0.1:0",
    )
    .await
    .unwrap();
    let studies = sim.index();
    let spool = tempfile::tempdir().unwrap();
    let overlay = archive("refuse-move", "ARCH", sim.port(), "move")
        + &archive("refuse-get", "ARCH", sim.port(), "get")
        + &destination_toml(dest.port(), false);
    let config = config_with_mover(&db, spool.path(), "split_threshold = 10", &overlay);
    let exam = exam(&store, "s4").await;
    let (first, second) = (&studies[0], &studies[1]);
    let moved = job(&store, exam, "refuse-move", "move", &first.study_instance_uid, Some(12)).await;
    let got = job(&store, exam, "refuse-get", "get", &second.study_instance_uid, Some(12)).await;

    let mover = start_mover(&store, config.clone(), "w1");
    let moved = finished(&store, moved, WAIT).await;
    let got = finished(&store, got, WAIT).await;
    mover.stop().await;

    for done in [&moved, &got] {
        assert_eq!(done.state, JobState::Completed, "{done:?}");
        assert_eq!((done.attempt, done.counts.completed, done.counts.failed), (1, 12, 0), "{done:?}");
    }
    for study in [first, second] {
        let arrived: Vec<String> = dest
            .received()
            .into_iter()
            .filter(|r| r.study_instance_uid == study.study_instance_uid)
            .map(|r| r.sop_instance_uid)
            .collect();
        let unique: std::collections::HashSet<&String> = arrived.iter().collect();
        assert_eq!((arrived.len(), unique.len()), (12, 12), "each instance once: {arrived:?}");
    }
    for name in ["refuse-move", "refuse-get"] {
        assert_eq!(
            metric(&format!("priorfetch_split_retrieves_total{{archive=\"{name}\",mode=\"fallback\"}}")),
            Some(1)
        );
        assert!(priorfetch_mover::split::refuses(name), "{name} remembered");
    }

    // remembered: the next job of that archive is one whole-study C-MOVE, no C-FIND first
    let before = sim.stats();
    let exam = common::exam(&store, "s4b").await;
    let again = job(&store, exam, "refuse-move", "move", &second.study_instance_uid, Some(12)).await;
    let mover = start_mover(&store, config, "w1");
    let again = finished(&store, again, WAIT).await;
    mover.stop().await;
    assert_eq!(again.state, JobState::Completed, "{again:?}");
    let after = sim.stats();
    assert_eq!((after.moves - before.moves, after.finds - before.finds), (1, 0), "{before:?} -> {after:?}");
    assert_eq!(metric("priorfetch_split_retrieves_total{archive=\"refuse-move\",mode=\"split\"}"), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_wado_retrieve_brings_every_instance_once_byte_identical() {
    let (db, store) = postgres().await;
    let dest = Storescp::start_with("DEST", &["--accept-all", "+uf"]);
    let web = Orthanc::start_dicomweb("WEBARCH", "PRIORFETCH", None);
    // a single series: one request per instance; three series: one per series
    let single = single_series("S5", 45, 120, 64);
    let mut multi = StudySpec::small("S6", 46);
    (multi.series, multi.instances_per_series) = (3, 40);
    let files = tempfile::tempdir().unwrap();
    let single_files = write_study(&files.path().join("single"), &single);
    let multi_files = write_study(&files.path().join("multi"), &multi);
    store_files("WEBARCH", web.port, files.path());
    let spool = tempfile::tempdir().unwrap();
    let web_archive = |name: &str| {
        format!(
            "[[archives]]\nname = \"{name}\"\nprotocol = \"dicomweb\"\nbase_url = \"{}\"\nretrieve = \"wado\"\nmax_associations = 4\n",
            web.dicomweb_url()
        )
    };
    let overlay = web_archive("split-wado-1") + &web_archive("split-wado-3") + &destination_toml(dest.port, false);
    let config = config(&db, spool.path(), &overlay);
    let exam = exam(&store, "s5").await;
    let first = job(&store, exam, "split-wado-1", "wado", &single.study_uid, Some(120)).await;

    let mover = start_mover(&store, config.clone(), "w1");
    let done = finished(&store, first, WAIT).await;
    assert_eq!(done.state, JobState::Completed, "{done:?}");
    assert_eq!((done.attempt, done.counts.completed, done.counts.failed), (1, 120, 0));
    assert_exactly_once_and_identical(&single_files, &dest.files());
    assert_eq!(metric("priorfetch_split_parts_total{archive=\"split-wado-1\",outcome=\"done\"}"), Some(120));

    let before: Vec<PathBuf> = dest.files();
    let second = job(&store, exam, "split-wado-3", "wado", &multi.study_uid, None).await;
    let done = finished(&store, second, WAIT).await;
    mover.stop().await;
    assert_eq!(done.state, JobState::Completed, "{done:?}");
    assert_eq!((done.attempt, done.counts.completed, done.counts.failed), (1, 120, 0));
    let new: Vec<PathBuf> = dest.files().into_iter().filter(|f| !before.contains(f)).collect();
    assert_exactly_once_and_identical(&multi_files, &new);
    assert_eq!(metric("priorfetch_split_parts_total{archive=\"split-wado-3\",outcome=\"done\"}"), Some(3));
    assert!(walk(spool.path()).is_empty(), "spool emptied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_c_move_from_dcmqrscp_counts_every_instance_once() {
    let (db, store) = postgres().await;
    let dest = Storescp::start_with("DEST", &["--accept-all", "+uf", "--fork"]);
    let qr = priorfetch_testkit::dicom::Dcmqrscp::start("QRSCP", "PRIORFETCH", &[dest.destination()]);
    let spec = single_series("S7", 47, 120, 64);
    let files = tempfile::tempdir().unwrap();
    let originals = write_study(files.path(), &spec);
    store_files("QRSCP", qr.port, files.path());
    let spool = tempfile::tempdir().unwrap();
    let overlay = archive("split-qr", "QRSCP", qr.port, "move") + &destination_toml(dest.port, false);
    let config = config(&db, spool.path(), &overlay);
    let exam = exam(&store, "s7").await;
    let job = job(&store, exam, "split-qr", "move", &spec.study_uid, Some(120)).await;

    let mover = start_mover(&store, config, "w1");
    let done = finished(&store, job, WAIT).await;
    mover.stop().await;

    assert_eq!(done.state, JobState::Completed, "{done:?}");
    assert_eq!((done.attempt, done.counts.completed, done.counts.failed), (1, 120, 0));
    assert_exactly_once_and_identical(&originals, &dest.files());
    assert_eq!(metric("priorfetch_split_parts_total{archive=\"split-qr\",outcome=\"done\"}"), Some(15));
}
