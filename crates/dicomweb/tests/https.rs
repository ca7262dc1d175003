//! HTTPS to Orthanc's DICOMweb with a CA of our own (TLS terminated by socat/OpenSSL in
//! front of Orthanc's HTTP port): trusted through the `tls.ca` of the archive's block,
//! QIDO-RS and WADO-RS work; without it, the error is a permanent TLS error whose hint
//! names `tls.ca`.

use priorfetch_config::TlsConfig;
use priorfetch_dicomweb::{Auth, ClientOptions, DicomWebClient, DicomWebError, DirSink, Level, Query, Target};
use priorfetch_testkit::dicom::{Orthanc, StudySpec, TlsTerminator, load_studies};
use priorfetch_testkit::tls::TestPki;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_our_own_ca_serves_qido_and_wado_and_an_untrusted_one_says_the_fix() {
    let pki = TestPki::new();
    let id = pki.issue("orthanc-https", &["localhost", "127.0.0.1"]);
    let orthanc = Orthanc::start_dicomweb("HTTPSARCH", "PRIORFETCH", None);
    let spec = StudySpec { series: 1, instances_per_series: 4, ..StudySpec::small("HTTPS-1", 31) };
    load_studies(&orthanc.ae, orthanc.port, std::slice::from_ref(&spec));
    let https = TlsTerminator::start(&id.cert, &id.key, orthanc.http_port);
    let url = format!("https://localhost:{}/dicom-web", https.port);

    let trusted =
        ClientOptions { tls: Some(TlsConfig { ca: Some(pki.ca.clone()), ..Default::default() }), ..Default::default() };
    let client = DicomWebClient::new(&url, Auth::None, &trusted).unwrap();
    let query = Query { level: Level::Studies, keys: vec![("PatientID".into(), "HTTPS-1".into())] };
    assert_eq!(client.search_all(&query, 100, None).await.unwrap().matches.len(), 1);
    let out = tempfile::tempdir().unwrap();
    let mut sink = DirSink::new(out.path()).unwrap();
    let got = client.retrieve(&Target::Study(spec.study_uid.clone()), "*", &mut sink).await.unwrap();
    assert_eq!(got.instances, spec.instance_count());

    let stranger = TestPki::new();
    let untrusted = ClientOptions {
        tls: Some(TlsConfig { ca: Some(stranger.ca.clone()), ..Default::default() }),
        ..Default::default()
    };
    let client = DicomWebClient::new(&url, Auth::None, &untrusted).unwrap();
    let error = client.search_all(&query, 100, None).await.unwrap_err();
    assert!(matches!(error, DicomWebError::Tls { .. }), "{error}");
    assert!(!error.is_transient(), "a TLS failure is permanent: {error}");
    assert!(error.hint().contains("tls.ca"), "{}", error.hint());
}
