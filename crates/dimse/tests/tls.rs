//! DICOM TLS against peers written by others: DCMTK's storescp/storescu with `+tls` and
//! Orthanc with `DicomTlsEnabled` (and `DicomTlsRemoteCertificateRequired`). Certificates
//! are made by the test (`TestPki`). Each failure mode is a typed, permanent error with
//! its hint: no client certificate, an unknown CA, an expired certificate, a wrong name.

use dicom_core::{Tag, VR};
use priorfetch_dimse::get::{COMMON_STORAGE_CLASSES, DirSink, get_contexts};
use priorfetch_dimse::scu::query_contexts;
use priorfetch_dimse::{
    AeTitle, Association, DimseError, Part10, Peer, QueryModel, ScuOptions, StoreScpOptions, identifier, run_store_scp,
    storage_contexts,
};
use priorfetch_testkit::dicom::{Destination, Orthanc, OrthancTls, Storescp, StudySpec, store_files_with, write_study};
use priorfetch_testkit::tls::{Issued, TestPki};
use priorfetch_tls::{ClientTls, ServerTls, ServerTlsConfig, TlsConfig, TlsProblem};
use std::ops::ControlFlow;
use std::time::Duration;

fn options(tls: Option<ClientTls>) -> ScuOptions {
    let mut o = ScuOptions::new(AeTitle::parse("PRIORFETCH").unwrap());
    o.dimse_timeout = Duration::from_secs(20);
    o.tls = tls;
    o
}

/// Our TLS towards 127.0.0.1: trusting `ca`, with a client certificate when given.
fn client(ca: &std::path::Path, identity: Option<&Issued>, server_name: Option<&str>) -> ClientTls {
    let settings = TlsConfig {
        ca: Some(ca.to_path_buf()),
        cert: identity.map(|i| i.cert.clone()),
        key: identity.map(|i| i.key.clone()),
        server_name: server_name.map(str::to_string),
        ..Default::default()
    };
    ClientTls::load(&settings, "test", "127.0.0.1").unwrap()
}

/// DCMTK's storescp with TLS: `require_client` is `-rc` (the default), else `-ic`.
fn storescp_tls(server: &Issued, ca: &std::path::Path, require_client: bool) -> Storescp {
    let (key, cert, ca) = (server.key.to_str().unwrap(), server.cert.to_str().unwrap(), ca.to_str().unwrap());
    let peer_cert = if require_client { "-rc" } else { "-ic" };
    Storescp::start_with("TLSDEST", &["--accept-all", "+tls", key, cert, "-pw", "+cf", ca, peer_cert])
}

fn peer(ae: &str, port: u16) -> Peer {
    Peer::new(ae, "127.0.0.1", port).unwrap()
}

async fn store_one(peer: &Peer, options: &ScuOptions) -> Result<usize, DimseError> {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_study(dir.path(), &StudySpec::small("TLS-S", 3));
    let files: Vec<Part10> = paths.iter().map(|p| Part10::open(p).unwrap()).collect();
    let contexts = storage_contexts(files.iter().map(|f| (f.sop_class_uid.clone(), f.transfer_syntax.clone())));
    let mut assoc = Association::connect(peer, options, &contexts).await?;
    for f in &files {
        assoc.store_file(f, None).await?;
    }
    assoc.release().await;
    Ok(files.len())
}

fn tls_problem(result: Result<impl std::fmt::Debug, DimseError>) -> (TlsProblem, String) {
    match result {
        Err(e @ DimseError::Tls { .. }) => {
            assert!(!e.is_retryable(), "a TLS failure is permanent: {e}");
            let hint = e.hint();
            let DimseError::Tls { problem, .. } = e else { unreachable!() };
            (problem, hint)
        }
        other => panic!("expected a TLS error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_store_to_storescp_over_mutual_tls_and_the_failures_with_their_hints() {
    let pki = TestPki::new();
    let server = pki.issue("storescp", &["localhost", "127.0.0.1"]);
    let ours = pki.issue("priorfetch", &["priorfetch.test"]);
    let scp = storescp_tls(&server, &pki.ca, true);
    let to = peer("TLSDEST", scp.port);

    // C-ECHO and C-STOREs with our client certificate
    priorfetch_dimse::echo(&to, &options(Some(client(&pki.ca, Some(&ours), None)))).await.unwrap();
    let sent = store_one(&to, &options(Some(client(&pki.ca, Some(&ours), None)))).await.unwrap();
    for _ in 0..100 {
        if scp.files().len() >= sent {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(scp.files().len(), sent, "every instance arrived over TLS");

    // storescp requires a client certificate (-rc): without one, the fix names tls.cert
    let (problem, hint) = tls_problem(store_one(&to, &options(Some(client(&pki.ca, None, None)))).await);
    assert_eq!(problem, TlsProblem::ClosedWithoutClientCert);
    assert!(hint.contains("tls.cert and this peer's tls.key"), "{hint}");

    // a CA we do not trust
    let stranger = TestPki::new();
    let (problem, hint) =
        tls_problem(priorfetch_dimse::echo(&to, &options(Some(client(&stranger.ca, Some(&ours), None)))).await);
    assert_eq!(problem, TlsProblem::UnknownCa);
    assert!(hint.contains("tls.ca"), "{hint}");

    // plain TCP to a TLS port: an error that suggests TLS, still retryable (the same
    // symptom is a peer restarting mid-negotiation)
    let plain = priorfetch_dimse::echo(&to, &options(None)).await.unwrap_err();
    assert!(plain.is_retryable(), "{plain}");
    assert!(plain.hint().contains("DICOM TLS"), "{}", plain.hint());
}

/// A peer that closes the connection before answering the A-ASSOCIATE-RQ (an archive
/// restarting) is a retryable failure, not a TLS one: dicom-ul built with TLS support
/// reports it as "TLS not supported" (seen as a job failed for good in the chaos suite).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_closing_during_negotiation_is_retryable() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        for _ in 0..4 {
            let Ok((socket, _)) = listener.accept().await else { return };
            drop(socket);
        }
    });
    let error = priorfetch_dimse::echo(&peer("RESTARTING", port), &options(None)).await.unwrap_err();
    assert!(error.is_retryable(), "{error:?}");
    assert!(!matches!(error, DimseError::Tls { .. }), "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_a_wrong_name_and_legacy_suites_are_named() {
    let pki = TestPki::new();
    let expired = pki.expired("expired");
    let scp = storescp_tls(&expired, &pki.ca, false);
    let (problem, hint) = tls_problem(
        priorfetch_dimse::echo(&peer("TLSDEST", scp.port), &options(Some(client(&pki.ca, None, None)))).await,
    );
    assert_eq!(problem, TlsProblem::Expired);
    assert!(hint.contains("expired"), "{hint}");

    let elsewhere = pki.issue("elsewhere", &["archive.example.org"]);
    let scp = storescp_tls(&elsewhere, &pki.ca, false);
    let to = peer("TLSDEST", scp.port);
    let (problem, hint) = tls_problem(priorfetch_dimse::echo(&to, &options(Some(client(&pki.ca, None, None)))).await);
    assert_eq!(problem, TlsProblem::NameMismatch);
    assert!(hint.contains("server_name"), "{hint}");
    // the name the certificate carries, given as server_name, is accepted
    let named = client(&pki.ca, None, Some("archive.example.org"));
    priorfetch_dimse::echo(&to, &options(Some(named))).await.unwrap();

    // an archive offering only TLS_RSA suites (DCMTK's retired AES profile, +pa)
    let server = pki.issue("legacy", &["localhost", "127.0.0.1"]);
    let (key, cert) = (server.key.to_str().unwrap(), server.cert.to_str().unwrap());
    let legacy = Storescp::start_with("TLSDEST", &["--accept-all", "+tls", key, cert, "-pw", "+pa", "-ic"]);
    let (problem, hint) = tls_problem(
        priorfetch_dimse::echo(&peer("TLSDEST", legacy.port), &options(Some(client(&pki.ca, None, None)))).await,
    );
    assert_eq!(problem, TlsProblem::NoCommonCipher);
    assert!(hint.contains("TLS_RSA"), "{hint}");
}

/// Orthanc with DICOM TLS and client certificates required: C-ECHO, C-FIND, C-GET, and a
/// C-MOVE into DCMTK's storescp over TLS (Orthanc's `UseDicomTls`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orthanc_over_tls_answers_echo_find_get_and_moves_to_a_tls_destination() {
    let pki = TestPki::new();
    let orthanc_id = pki.issue("orthanc", &["localhost", "127.0.0.1"]);
    let dest_id = pki.issue("dest", &["localhost", "127.0.0.1"]);
    let ours = pki.issue("priorfetch", &["priorfetch.test"]);
    let dest = storescp_tls(&dest_id, &pki.ca, true);
    let tls = OrthancTls {
        cert: orthanc_id.cert.clone(),
        key: orthanc_id.key.clone(),
        ca: pki.ca.clone(),
        require_client_cert: true,
    };
    let orthanc =
        Orthanc::start_tls("ORTHANCTLS", "PRIORFETCH", &[Destination { ae: "TLSDEST".into(), port: dest.port }], &tls);
    let data = tempfile::tempdir().unwrap();
    let spec = StudySpec { series: 2, instances_per_series: 4, ..StudySpec::small("TLS-O", 71) };
    write_study(data.path(), &spec);
    let (key, cert, ca) = (ours.key.to_str().unwrap(), ours.cert.to_str().unwrap(), pki.ca.to_str().unwrap());
    store_files_with(&orthanc.ae, orthanc.port, data.path(), &["+tls", key, cert, "-pw", "+cf", ca]);

    let to = peer("ORTHANCTLS", orthanc.port);
    let with_cert = || options(Some(client(&pki.ca, Some(&ours), None)));
    priorfetch_dimse::echo(&to, &with_cert()).await.unwrap();

    let mut assoc = Association::connect(&to, &with_cert(), &query_contexts(QueryModel::StudyRoot)).await.unwrap();
    let query = identifier("STUDY", &[(Tag(0x0010, 0x0020), VR::LO, "TLS-O"), (Tag(0x0020, 0x000D), VR::UI, "")]);
    let mut matches = 0;
    assoc
        .find(QueryModel::StudyRoot, &query, None, |_| {
            matches += 1;
            ControlFlow::Continue(())
        })
        .await
        .unwrap();
    assoc.release().await;
    assert_eq!(matches, 1, "the study found over TLS");

    let out = tempfile::tempdir().unwrap();
    let contexts = get_contexts(QueryModel::StudyRoot, COMMON_STORAGE_CLASSES);
    let mut assoc = Association::connect(&to, &with_cert(), &contexts).await.unwrap();
    let mut sink = DirSink::new(out.path()).unwrap();
    let study = identifier("STUDY", &[(Tag(0x0020, 0x000D), VR::UI, spec.study_uid.as_str())]);
    let got = assoc.retrieve_get(QueryModel::StudyRoot, &study, &mut sink, |_| {}, None).await.unwrap();
    assoc.release().await;
    assert_eq!((got.counts.completed as usize, sink.stored.len()), (spec.instance_count(), spec.instance_count()));

    let mut assoc = Association::connect(
        &to,
        &with_cert(),
        &[priorfetch_dimse::ContextRequest::new(QueryModel::StudyRoot.move_uid())],
    )
    .await
    .unwrap();
    let moved = assoc
        .retrieve_move(QueryModel::StudyRoot, &study, &AeTitle::parse("TLSDEST").unwrap(), |_| {}, None)
        .await
        .unwrap();
    assoc.release().await;
    assert_eq!(moved.counts.completed as usize, spec.instance_count(), "{moved:?}");
    assert_eq!(dest.files().len(), spec.instance_count(), "moved into storescp over TLS");

    // Orthanc requires a client certificate
    let (problem, _) = tls_problem(priorfetch_dimse::echo(&to, &options(Some(client(&pki.ca, None, None)))).await);
    assert_eq!(problem, TlsProblem::ClosedWithoutClientCert);
}

/// Our C-STORE SCP with TLS receiving from DCMTK's storescu: with a client certificate
/// when required, and refusing one without.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_store_scp_over_tls_takes_storescu_with_a_certificate_and_refuses_it_without() {
    let pki = TestPki::new();
    let scp_id = pki.issue("scp", &["localhost", "127.0.0.1"]);
    let sender = pki.issue("storescu", &["storescu.test"]);
    let out = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut scp = StoreScpOptions::new(AeTitle::parse("PFSCP").unwrap(), out.path());
    scp.allow_any_calling = true;
    let settings = ServerTlsConfig {
        cert: scp_id.cert.clone(),
        key: scp_id.key.clone(),
        ca: Some(pki.ca.clone()),
        require_client_cert: true,
        profile: Default::default(),
    };
    scp.tls = Some(ServerTls::load(&settings, "test").unwrap());
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(run_store_scp(listener, scp, tx, shutdown.clone()));

    let data = tempfile::tempdir().unwrap();
    let spec = StudySpec::small("TLS-R", 5);
    write_study(data.path(), &spec);
    let owned = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let (key, cert, ca) = (owned(&sender.key), owned(&sender.cert), owned(&pki.ca));
    let dir = data.path().to_path_buf();
    let ca2 = ca.clone();
    tokio::task::spawn_blocking(move || {
        store_files_with("PFSCP", port, &dir, &["+tls", &key, &cert, "-pw", "+cf", &ca2]);
    })
    .await
    .unwrap();
    let mut received = 0;
    while received < spec.instance_count() {
        tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
        received += 1;
    }

    // storescu without a certificate (+tla, anonymous TLS) is refused
    let storescu = which("storescu");
    let dir = data.path().to_path_buf();
    let refused = tokio::task::spawn_blocking(move || {
        std::process::Command::new(storescu)
            .args(["+tla", "+cf", ca.as_str(), "-aec", "PFSCP", "+sd", "127.0.0.1", &port.to_string()])
            .arg(&dir)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(!refused.status.success(), "a sender without a client certificate must be refused");
    assert!(rx.try_recv().is_err(), "nothing stored from it");
    shutdown.cancel();
    let _ = server.await;
}

fn which(tool: &str) -> String {
    let out = std::process::Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
