//! The C-STORE SCP against a hostile tester: idle sockets, association cap, garbage and
//! mismatched data sets, colliding UIDs, C-ECHO on contexts never negotiated, calling AE
//! defaults. DCMTK `storescu`/`echoscu` are the real peers; raw sockets and our own SCU
//! send what no well-behaved peer would.

use priorfetch_dimse::command::{Command, field, tags};
use priorfetch_dimse::store_scu::Part10;
use priorfetch_dimse::{AeTitle, Association, ContextRequest, Peer, ScuOptions, StoreScpOptions, run_store_scp};
use priorfetch_testkit::dicom::{CT_IMAGE_STORAGE, StudySpec, run_tool, write_study};
use rand::RngExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const OUR_AE: &str = "PFSTORE";

struct Scp {
    port: u16,
    out: tempfile::TempDir,
    stored: mpsc::Receiver<priorfetch_dimse::StoredInstance>,
    shutdown: CancellationToken,
}

impl Drop for Scp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start(configure: impl FnOnce(&mut StoreScpOptions)) -> Scp {
    let out = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut options = StoreScpOptions::new(AeTitle::parse(OUR_AE).unwrap(), out.path());
    options.allowed_calling = vec![AeTitle::parse("STORESCU").unwrap(), AeTitle::parse("ECHOSCU").unwrap()];
    configure(&mut options);
    let (tx, stored) = mpsc::channel(64);
    let shutdown = CancellationToken::new();
    tokio::spawn(run_store_scp(listener, options, tx, shutdown.clone()));
    Scp { port, out, stored, shutdown }
}

/// Every entry of the output folder (stored files and any temporary leftovers).
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into())
        .collect();
    names.sort();
    names
}

fn one_file() -> (tempfile::TempDir, PathBuf, Part10) {
    let data = tempfile::tempdir().unwrap();
    let mut spec = StudySpec::small("H1", 51);
    (spec.series, spec.instances_per_series) = (1, 1);
    let path = write_study(data.path(), &spec).remove(0);
    let part10 = Part10::open(&path).unwrap();
    (data, path, part10)
}

async fn echoscu(calling: &str, port: u16) -> priorfetch_testkit::dicom::ToolRun {
    let args = ["-aet", calling, "-aec", OUR_AE, "127.0.0.1", &port.to_string()].map(String::from);
    run_tool("echoscu", &args, Duration::from_secs(30)).await
}

async fn our_scu(port: u16, contexts: &[ContextRequest]) -> Association {
    let mut options = ScuOptions::new(AeTitle::parse("STORESCU").unwrap());
    options.dimse_timeout = Duration::from_secs(10);
    let peer = Peer::new(OUR_AE, "127.0.0.1", port).unwrap();
    Association::connect(&peer, &options, contexts).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_idle_sockets_do_not_stop_storescu() {
    let (_data, file, part10) = one_file();
    let mut scp = start(|_| {}).await;
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(TcpStream::connect(("127.0.0.1", scp.port)).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    let args = ["-aet", "STORESCU", "-aec", OUR_AE, "127.0.0.1", &scp.port.to_string(), file.to_str().unwrap()]
        .map(String::from);
    let run = run_tool("storescu", &args, Duration::from_secs(30)).await;
    let took = started.elapsed();
    assert!(run.success, "{}", run.log);
    assert!(took < Duration::from_secs(5), "storescu took {took:?} with 300 idle sockets open");
    let stored = tokio::time::timeout(Duration::from_secs(5), scp.stored.recv()).await.unwrap().unwrap();
    assert_eq!(stored.sop_instance_uid, part10.sop_instance_uid);
    let expected = format!("{}.dcm", part10.sop_instance_uid);
    assert_eq!(entries(scp.out.path()), vec![expected.clone()]);
    let received = Part10::open(&scp.out.path().join(&expected)).unwrap();
    assert!(received.read_dataset().unwrap() == part10.read_dataset().unwrap(), "data set byte-identical");
    println!("storescu with 300 idle sockets open: {took:?}");
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_socket_is_closed_after_the_request_timeout() {
    let scp = start(|o| o.association_request_timeout = Duration::from_millis(700)).await;
    let mut socket = TcpStream::connect(("127.0.0.1", scp.port)).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buf)).await.expect("closed by the SCP");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(started.elapsed() >= Duration::from_millis(600), "closed too early: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_capacity_is_rejected_transient_local_limit_and_idle_sockets_do_not_count() {
    let scp = start(|o| o.max_associations = 1).await;
    let idle: Vec<TcpStream> = connect_idle(scp.port, 5).await;
    // idle sockets hold no slot: a real association gets it
    assert!(echoscu("ECHOSCU", scp.port).await.success);
    let held = our_scu(scp.port, &[ContextRequest::new("1.2.840.10008.1.1")]).await;
    let run = echoscu("ECHOSCU", scp.port).await;
    assert!(!run.success, "{}", run.log);
    assert!(run.log.contains("Rejected Transient") && run.log.contains("Local Limit Exceeded"), "{}", run.log);
    assert!(!run.log.contains("Calling AE Title Not Recognized"), "{}", run.log);
    held.release().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(echoscu("ECHOSCU", scp.port).await.success, "the slot is given back");
    drop(idle);
}

async fn connect_idle(port: u16, n: usize) -> Vec<TcpStream> {
    let mut sockets = Vec::new();
    for _ in 0..n {
        sockets.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    sockets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_calling_ae_is_refused_by_default_and_allow_any_opens_it() {
    let strict = start(|o| o.allowed_calling.clear()).await;
    let run = echoscu("ECHOSCU", strict.port).await;
    assert!(!run.success && run.log.contains("Calling AE Title Not Recognized"), "{}", run.log);
    assert!(run.log.contains("Rejected Permanent"), "{}", run.log);
    let listed = start(|_| {}).await;
    let run = echoscu("STRANGER", listed.port).await;
    assert!(run.log.contains("Calling AE Title Not Recognized"), "{}", run.log);
    let open = start(|o| o.allow_any_calling = true).await;
    let run = echoscu("STRANGER", open.port).await;
    assert!(run.success, "{}", run.log);
}

/// Sends one C-STORE of `data` claiming `class`/`instance`; returns the status.
async fn store(assoc: &mut Association, class: &str, instance: &str, ts: &str, data: &[u8]) -> u16 {
    assoc.store_bytes(class, instance, ts, data, None).await.unwrap().status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_mismatched_data_sets_are_refused_and_leave_no_file() {
    let (_data, _file, part10) = one_file();
    let dataset = part10.read_dataset().unwrap();
    let ts = part10.transfer_syntax.clone();
    let mut scp = start(|_| {}).await;
    let class = part10.sop_class_uid.clone();
    let contexts = [ContextRequest::new(&class), ContextRequest::new(CT_IMAGE_STORAGE)];
    let mut assoc = our_scu(scp.port, &contexts).await;
    let mut rng = rand::rng();
    let random: Vec<u8> = (0..5000).map(|_| rng.random()).collect();
    let uid = part10.sop_instance_uid.as_str();

    let garbage = store(&mut assoc, &class, uid, &ts, &random).await;
    let empty = store(&mut assoc, &class, uid, &ts, &[]).await;
    let other_instance = store(&mut assoc, &class, "1.2.3.4.5", &ts, &dataset).await;
    let bad_uid_a = store(&mut assoc, &class, "1.2.3abc", &ts, &dataset).await;
    let bad_uid_b = store(&mut assoc, &class, "1.2.3xyz", &ts, &dataset).await;
    let truncated = store(&mut assoc, &class, uid, &ts, &dataset[..30]).await;
    assert_ne!(class, CT_IMAGE_STORAGE, "the file is MR");
    let other_class = store(&mut assoc, CT_IMAGE_STORAGE, uid, &ts, &dataset).await;
    assert_eq!(garbage, 0xC000, "random 5,000 bytes");
    assert_eq!(empty, 0xC000, "empty data set");
    assert_eq!(other_instance, 0xA900, "data set of another instance");
    assert_eq!((bad_uid_a, bad_uid_b), (0xC000, 0xC000), "invalid UIDs");
    assert_eq!(truncated, 0xC000, "head cut before the SOP Instance UID");
    assert_eq!(other_class, 0xA900, "data set of another SOP class");
    assert!(entries(scp.out.path()).is_empty(), "nothing written: {:?}", entries(scp.out.path()));
    assert!(scp.stored.try_recv().is_err());

    // the association is still usable, and a sound data set is stored
    assert_eq!(store(&mut assoc, &class, uid, &ts, &dataset).await, 0x0000);
    assert_eq!(entries(scp.out.path()), vec![format!("{uid}.dcm")]);
    assoc.release().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_uid_with_other_content_never_overwrites() {
    let (_data, _file, part10) = one_file();
    let dataset = part10.read_dataset().unwrap();
    let ts = part10.transfer_syntax.clone();
    let uid = part10.sop_instance_uid.clone();
    let scp = start(|_| {}).await;
    let class = part10.sop_class_uid.clone();
    let contexts = [ContextRequest::new(&class), ContextRequest::new(CT_IMAGE_STORAGE)];
    let mut assoc = our_scu(scp.port, &contexts).await;
    assert_eq!(store(&mut assoc, &class, &uid, &ts, &dataset).await, 0x0000);
    let first = std::fs::read(scp.out.path().join(format!("{uid}.dcm"))).unwrap();
    assert_eq!(store(&mut assoc, &class, &uid, &ts, &dataset).await, 0x0000, "identical re-send");
    let mut changed = dataset.clone();
    let last = changed.len() - 1;
    changed[last] ^= 0xFF; // a pixel differs
    assert_eq!(store(&mut assoc, &class, &uid, &ts, &changed).await, 0x0111, "different content");
    assoc.release().await;
    assert_eq!(std::fs::read(scp.out.path().join(format!("{uid}.dcm"))).unwrap(), first, "first file kept");
    assert_eq!(entries(scp.out.path()), vec![format!("{uid}.dcm")], "no temporary file left");
}

fn echo_rq() -> Command {
    let mut rq = Command::new(field::C_ECHO_RQ);
    rq.put_u16(tags::MESSAGE_ID, 1).put_uid(tags::AFFECTED_SOP_CLASS_UID, "1.2.840.10008.1.1");
    rq
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_echo_only_on_an_accepted_verification_context() {
    let scp = start(|_| {}).await;
    let contexts = [ContextRequest::new("1.2.840.10008.1.1"), ContextRequest::new(CT_IMAGE_STORAGE)];
    let mut assoc = our_scu(scp.port, &contexts).await;
    let (verification, _) = assoc.context_for("1.2.840.10008.1.1").unwrap();
    let (storage, _) = assoc.context_for(CT_IMAGE_STORAGE).unwrap();
    assoc.send(verification, &echo_rq(), None).await.unwrap();
    assert_eq!(assoc.receive().await.unwrap().command.status(), Some(0x0000));
    assoc.send(storage, &echo_rq(), None).await.unwrap();
    assert_eq!(assoc.receive().await.unwrap().command.status(), Some(0x0122), "C-ECHO on a storage context");
    // context 99 was never proposed: the SCP aborts
    assoc.send(99, &echo_rq(), None).await.unwrap();
    let answer = assoc.receive().await;
    assert!(
        matches!(answer, Err(priorfetch_dimse::DimseError::Aborted { .. })),
        "expected an A-ABORT: {:?}",
        answer.map(|m| m.command)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_pdus_are_dropped_and_the_scp_keeps_serving() {
    use tokio::io::AsyncWriteExt;
    let scp = start(|o| o.association_request_timeout = Duration::from_secs(1)).await;
    let mut rng = rand::rng();
    let mut head = [0x01u8, 0, 0, 0, 0, 200];
    let mut fake_rq = head.to_vec();
    fake_rq.extend(std::iter::repeat_n(0x41, 200));
    let mut payloads: Vec<Vec<u8>> =
        vec![fake_rq, vec![0x07, 0, 0, 0, 0, 4, 0, 0, 0, 0], vec![0x01, 0, 0xFF, 0xFF, 0xFF, 0xFF]];
    for _ in 0..20 {
        let bytes: Vec<u8> = (0..rng.random_range(1..3000)).map(|_| rng.random()).collect();
        payloads.push(bytes);
    }
    head[0] = 0x04; // P-DATA before any association
    payloads.push(head.to_vec());
    for bytes in payloads {
        let mut socket = TcpStream::connect(("127.0.0.1", scp.port)).await.unwrap();
        let _ = socket.write_all(&bytes).await;
        let mut buf = vec![0u8; 1024];
        let _ = tokio::time::timeout(Duration::from_secs(3), socket.read(&mut buf)).await;
    }
    assert!(echoscu("ECHOSCU", scp.port).await.success, "still serving after garbage");
}

/// Random and structured garbage through the head reader: an answer (value or error)
/// every time, no panic.
#[test]
fn the_head_reader_survives_garbage() {
    use priorfetch_dimse::dataset_guard::leading_uids;
    let mut rng = rand::rng();
    let vrs: [&[u8; 2]; 6] = [b"SQ", b"UN", b"UI", b"OB", b"CS", b"XX"];
    for round in 0..20000 {
        let ts = if round % 2 == 0 { "1.2.840.10008.1.2.1" } else { "1.2.840.10008.1.2" };
        let mut bytes: Vec<u8> = Vec::new();
        for _ in 0..rng.random_range(0..6) {
            let (group, element): (u16, u16) = if rng.random_bool(0.3) {
                (0xFFFE, [0xE000, 0xE00D, 0xE0DD][rng.random_range(0..3)])
            } else {
                (8, rng.random_range(0..0x20))
            };
            bytes.extend_from_slice(&group.to_le_bytes());
            bytes.extend_from_slice(&element.to_le_bytes());
            bytes.extend_from_slice(vrs[rng.random_range(0..vrs.len())]);
            let length: u32 = if rng.random_bool(0.3) { u32::MAX } else { rng.random_range(0..40) };
            bytes.extend_from_slice(&length.to_le_bytes());
            bytes.extend((0..rng.random_range(0..40)).map(|_| rng.random::<u8>()));
        }
        let _ = leading_uids(&bytes, ts, rng.random_bool(0.5));
    }
}
