//! A hostile peer: it accepts the association properly (dicom-ul server side), then answers
//! with garbage. Every case ends in an error within the timeouts, never a panic or a hang.
//! Plus a property test on the PDU reader and P-DATA reassembly with arbitrary bytes.

use dicom_ul::association::server::ServerAssociationOptions;
use dicom_ul::pdu::{PDataValue, PDataValueType, Pdu};
use priorfetch_dimse::command::{Command, field, tags};
use priorfetch_dimse::scu::query_contexts;
use priorfetch_dimse::{AeTitle, Association, Peer, QueryModel, ScuOptions, echo, identifier};
use proptest::prelude::*;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

#[derive(Clone, Copy, Debug)]
enum Misbehaviour {
    GarbageCommandSet,
    DataBeforeCommand,
    TruncatedPdu,
    HugePduLength,
    UnknownPduType,
    CloseMidMessage,
    Silence,
    GarbageIdentifier,
}

fn pdata(value_type: PDataValueType, is_last: bool, data: Vec<u8>) -> Pdu {
    Pdu::PData { data: vec![PDataValue { presentation_context_id: 1, value_type, is_last, data }] }
}

/// Accepts one association for Verification and the Study Root FIND, then misbehaves.
async fn hostile_peer(how: Misbehaviour) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let server = ServerAssociationOptions::new()
            .accept_any()
            .ae_title("HOSTILE")
            .with_abstract_syntax("1.2.840.10008.1.1")
            .with_abstract_syntax(QueryModel::StudyRoot.find_uid())
            .with_abstract_syntax(QueryModel::StudyRoot.move_uid());
        let Ok(mut assoc) = server.establish_async(socket).await else { return };
        let _ = assoc.receive().await; // the request (command, maybe identifier)
        let mut rsp = Command::new(field::C_FIND_RSP);
        rsp.put_u16(tags::MESSAGE_ID_BEING_RESPONDED_TO, 1).put_u16(tags::STATUS, 0xFF00).with_data_set();
        let good_command = rsp.encode().unwrap();
        match how {
            Misbehaviour::GarbageCommandSet => {
                let _ = assoc
                    .send(&pdata(PDataValueType::Command, true, b"\x00\x00\x00\x00\xff\xff\xff\x7fgarbage".to_vec()))
                    .await;
            }
            Misbehaviour::DataBeforeCommand => {
                let _ = assoc.send(&pdata(PDataValueType::Data, true, vec![1, 2, 3, 4])).await;
            }
            Misbehaviour::TruncatedPdu => {
                // a P-DATA header announcing 1000 bytes, then 10 and a close
                let _ = assoc
                    .inner_stream()
                    .write_all(&[0x04, 0, 0, 0, 0x03, 0xE8, 0, 0, 0x03, 0xE4, 1, 0x03, 9, 9, 9, 9])
                    .await;
            }
            Misbehaviour::HugePduLength => {
                let _ = assoc.inner_stream().write_all(&[0x04, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0]).await;
            }
            Misbehaviour::UnknownPduType => {
                let _ = assoc.inner_stream().write_all(&[0x4F, 0, 0, 0, 0, 4, 1, 2, 3, 4]).await;
            }
            Misbehaviour::CloseMidMessage => {
                let _ = assoc.send(&pdata(PDataValueType::Command, false, good_command[..10].to_vec())).await;
                return; // drop: the connection closes
            }
            Misbehaviour::Silence => {
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
            Misbehaviour::GarbageIdentifier => {
                let _ = assoc.send(&pdata(PDataValueType::Command, true, good_command)).await;
                let _ = assoc
                    .send(&pdata(
                        PDataValueType::Data,
                        true,
                        vec![0x08, 0x00, 0x52, 0x00, 0xFF, 0xFF, 0xFF, 0x00, b'S'],
                    ))
                    .await;
            }
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_after_association_is_an_error_not_a_panic_or_hang() {
    let mut options = ScuOptions::new(AeTitle::parse("PRIORFETCH").unwrap());
    options.dimse_timeout = Duration::from_secs(2);
    options.association_timeout = Duration::from_secs(2);
    use Misbehaviour::*;
    for how in [
        GarbageCommandSet,
        DataBeforeCommand,
        TruncatedPdu,
        HugePduLength,
        UnknownPduType,
        CloseMidMessage,
        Silence,
        GarbageIdentifier,
    ] {
        // C-ECHO ...
        let port = hostile_peer(how).await;
        let peer = Peer::new("HOSTILE", "127.0.0.1", port).unwrap();
        let result = tokio::time::timeout(Duration::from_secs(10), echo(&peer, &options)).await;
        let result = result.unwrap_or_else(|_| panic!("{how:?}: echo hung"));
        assert!(result.is_err(), "{how:?}: {result:?}");
        // ... and C-FIND (a data set expected after the command)
        let port = hostile_peer(how).await;
        let peer = Peer::new("HOSTILE", "127.0.0.1", port).unwrap();
        let run = async {
            let mut assoc = Association::connect(&peer, &options, &query_contexts(QueryModel::StudyRoot)).await?;
            let query = identifier("STUDY", &[]);
            assoc.find(QueryModel::StudyRoot, &query, None, |_| std::ops::ControlFlow::Continue(())).await
        };
        let result =
            tokio::time::timeout(Duration::from_secs(10), run).await.unwrap_or_else(|_| panic!("{how:?}: find hung"));
        let err = result.expect_err(&format!("{how:?}"));
        assert!(!err.hint().is_empty(), "{how:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Arbitrary bytes through dicom-ul's PDU reader, then whatever P-DATA came out through
    /// reassembly (command fragments joined until `is_last`) and the command-set decoder.
    #[test]
    fn pdu_reading_and_reassembly_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600), strict in any::<bool>()) {
        let mut buf: &[u8] = &bytes;
        let mut command = Vec::new();
        for _ in 0..8 {
            match dicom_ul::read_pdu(&mut buf, 1 << 16, strict) {
                Ok(Some(Pdu::PData { data })) => {
                    for v in data {
                        if v.value_type == PDataValueType::Command {
                            command.extend_from_slice(&v.data);
                            if v.is_last {
                                let _ = Command::decode(&command);
                                command.clear();
                            }
                        }
                    }
                }
                Ok(Some(_)) => {}
                _ => break,
            }
        }
    }

    /// A well-formed P-DATA PDU whose command fragments are arbitrary.
    #[test]
    fn arbitrary_command_fragments_never_panic(fragments in proptest::collection::vec((proptest::collection::vec(any::<u8>(), 0..80), any::<bool>()), 1..6)) {
        let mut command = Vec::new();
        for (data, is_last) in fragments {
            command.extend_from_slice(&data);
            if is_last {
                let _ = Command::decode(&command);
                command.clear();
            }
        }
        let _ = Command::decode(&command);
    }
}
