//! Our C-STORE SCU against DCMTK `storescp`: files arrive with the same content (pipelined
//! too), a receiver that takes only Implicit VR LE gets transcoded data, and a SOP class or
//! transfer syntax the peer refuses is a typed error.

use dicom_core::Tag;
use priorfetch_dimse::store_scu::StoreStatusKind;
use priorfetch_dimse::{AeTitle, Association, DimseError, Part10, Peer, ScuOptions, storage_contexts};
use priorfetch_testkit::dicom::{Storescp, StudySpec, write_study};
use std::collections::BTreeMap;
use std::path::PathBuf;

fn peer(scp: &Storescp) -> Peer {
    Peer { ae_title: AeTitle::parse(&scp.ae).unwrap(), host: "127.0.0.1".into(), port: scp.port }
}

fn options() -> ScuOptions {
    ScuOptions::new(AeTitle::parse("PFSCU").unwrap())
}

/// SOP instance UID -> (transfer syntax, pixel data) of Part-10 files.
fn contents(paths: &[PathBuf]) -> BTreeMap<String, (String, Vec<u8>)> {
    paths
        .iter()
        .map(|p| {
            let obj = dicom_object::open_file(p).unwrap();
            let uid = obj.element(Tag(0x0008, 0x0018)).unwrap().to_str().unwrap().trim_end_matches('\0').to_string();
            let ts = obj.meta().transfer_syntax().trim_end_matches('\0').to_string();
            (uid, (ts, obj.element(Tag(0x7FE0, 0x0010)).unwrap().to_bytes().unwrap().to_vec()))
        })
        .collect()
}

async fn wait_files(scp: &Storescp, n: usize) -> Vec<PathBuf> {
    for _ in 0..100 {
        if scp.files().len() >= n {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    scp.files()
}

fn study(n: u32) -> (tempfile::TempDir, Vec<Part10>) {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_study(dir.path(), &StudySpec::small("STORE1", n));
    let files = paths.iter().map(|p| Part10::open(p).unwrap()).collect();
    (dir, files)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_files_unchanged_one_by_one_and_pipelined() {
    let (dir, files) = study(61);
    let scp = Storescp::start("STORESCP");
    let contexts = storage_contexts(files.iter().map(|f| (f.sop_class_uid.clone(), f.transfer_syntax.clone())));
    assert_eq!(contexts.len(), 1, "one context per SOP class");
    let mut assoc = Association::connect(&peer(&scp), &options(), &contexts).await.unwrap();
    let (first, rest) = files.split_first().unwrap();
    let status = assoc.store_file(first, Some((&AeTitle::parse("MOVER").unwrap(), 7))).await.unwrap();
    assert_eq!(status.kind, StoreStatusKind::Success);
    // pipelined: send every other one, then collect the responses in order
    let mut pending = Vec::new();
    for f in rest {
        let data = f.read_dataset().unwrap();
        pending.push(
            assoc.send_store(&f.sop_class_uid, &f.sop_instance_uid, &f.transfer_syntax, &data, None).await.unwrap(),
        );
    }
    for p in &pending {
        let (id, status) = assoc.receive_store_response().await.unwrap();
        assert_eq!(id, p.message_id);
        assert!(status.is_success(), "{status:?}");
    }
    assoc.release().await;
    let received = contents(&wait_files(&scp, files.len()).await);
    let sent = contents(&files.iter().map(|f| f.path.clone()).collect::<Vec<_>>());
    assert_eq!(received, sent, "same instances, syntax and pixel data");
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcodes_for_a_receiver_that_accepts_only_implicit_vr() {
    let (_dir, files) = study(62);
    let scp = Storescp::start_with("IMPLONLY", &["+xi"]);
    let contexts = storage_contexts(files.iter().map(|f| (f.sop_class_uid.clone(), f.transfer_syntax.clone())));
    let mut assoc = Association::connect(&peer(&scp), &options(), &contexts).await.unwrap();
    let (_, ts) = assoc.context_for(&files[0].sop_class_uid).unwrap();
    assert_eq!(ts, "1.2.840.10008.1.2", "storescp +xi accepts implicit VR LE only");
    for f in &files {
        assert!(assoc.store_file(f, None).await.unwrap().is_success());
    }
    assoc.release().await;
    let received = contents(&wait_files(&scp, files.len()).await);
    let sent = contents(&files.iter().map(|f| f.path.clone()).collect::<Vec<_>>());
    assert_eq!(received.len(), sent.len());
    for (uid, (ts, pixels)) in &received {
        assert_eq!(ts, "1.2.840.10008.1.2", "{uid} arrived in implicit VR LE");
        assert_eq!(pixels, &sent[uid].1, "{uid}: same pixel data after transcoding");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_class_or_compressed_syntax_is_a_typed_error() {
    let (_dir, files) = study(63);
    let scp = Storescp::start_with("STRICT", &["+xi"]);
    let mut contexts = storage_contexts(files.iter().map(|f| (f.sop_class_uid.clone(), f.transfer_syntax.clone())));
    contexts.extend(storage_contexts([("1.2.3.4.5.6.7".to_string(), "1.2.840.10008.1.2.1".to_string())]));
    let mut assoc = Association::connect(&peer(&scp), &options(), &contexts).await.unwrap();
    let data = files[0].read_dataset().unwrap();
    let err =
        assoc.store_bytes("1.2.3.4.5.6.7", "1.2.3.4.5.6.7.8", "1.2.840.10008.1.2.1", &data, None).await.unwrap_err();
    assert!(matches!(&err, DimseError::NoContext { what, .. } if what.contains("1.2.3.4.5.6.7")), "{err}");
    // a JPEG data set cannot be transcoded to the implicit VR the peer wants
    let jpeg = "1.2.840.10008.1.2.4.50";
    let err = assoc.store_bytes(&files[0].sop_class_uid, "1.2.3.9", jpeg, &data, None).await.unwrap_err();
    assert!(matches!(&err, DimseError::NoContext { what, .. } if what.contains(jpeg)), "{err}");
    assert!(!err.is_retryable());
    // the association is still usable
    assert!(assoc.store_file(&files[0], None).await.unwrap().is_success());
    assoc.release().await;
}

#[test]
fn part10_header_errors_are_typed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.dcm");
    std::fs::write(&path, b"not dicom").unwrap();
    assert!(matches!(Part10::open(&path), Err(DimseError::Protocol(_))));
    let mut bytes = vec![0u8; 128];
    bytes.extend_from_slice(b"DICM");
    bytes.extend_from_slice(&[0x02, 0x00, 0x02, 0x00, b'U', b'I', 0xFF, 0x7F]);
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(Part10::open(&path), Err(DimseError::Protocol(_))));
}
