//! `doctor` against a DICOM TLS destination (DCMTK storescp `+tls`): the right CA passes
//! every check; a CA we do not trust, and a missing client certificate, each fail the
//! association check with the fix naming the `tls` key.

use priorfetch_config::{DestinationConfig, TlsConfig};
use priorfetch_dimse::AeTitle;
use priorfetch_doctor::{Check, DoctorContext, Finding, Severity, diagnose_destination};
use priorfetch_testkit::dicom::Storescp;
use priorfetch_testkit::tls::TestPki;
use std::time::Duration;

fn ctx() -> DoctorContext {
    let mut ctx = DoctorContext::new(AeTitle::parse("PRIORFETCH").unwrap());
    ctx.connect_timeout = Duration::from_secs(3);
    ctx.association_timeout = Duration::from_secs(3);
    ctx
}

fn show(findings: &[Finding]) -> String {
    findings.iter().map(|f| f.to_string()).collect::<Vec<_>>().join("\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_problems_fail_the_association_check_naming_the_key() {
    let pki = TestPki::new();
    let server = pki.issue("dest", &["localhost", "127.0.0.1"]);
    let ours = pki.issue("priorfetch", &["priorfetch.test"]);
    let path = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let (key, cert, ca) = (path(&server.key), path(&server.cert), path(&pki.ca));
    let dest = Storescp::start_with("DEST", &["--accept-all", "+tls", &key, &cert, "-pw", "+cf", &ca, "-rc"]);
    let config = |tls: TlsConfig| DestinationConfig {
        ae_title: "DEST".into(),
        host: "127.0.0.1".into(),
        port: dest.port.into(),
        check_existing: false,
        protocol: priorfetch_config::Protocol::Dimse,
        base_url: None,
        auth: Default::default(),
        tls: Some(tls),
    };
    let good = TlsConfig {
        ca: Some(pki.ca.clone()),
        cert: Some(ours.cert.clone()),
        key: Some(ours.key.clone()),
        ..Default::default()
    };
    let findings = diagnose_destination(&config(good.clone()), &ctx()).await;
    assert!(findings.iter().all(|f| f.severity == Severity::Ok), "{}", show(&findings));

    let stranger = TestPki::new();
    let findings =
        diagnose_destination(&config(TlsConfig { ca: Some(stranger.ca.clone()), ..good.clone() }), &ctx()).await;
    let fail = findings.iter().find(|f| f.check == Check::Association && f.severity == Severity::Fail);
    let fail = fail.unwrap_or_else(|| panic!("{}", show(&findings)));
    assert!(fail.message.contains("unknown CA"), "{}", show(&findings));
    assert!(fail.fix.as_deref().unwrap_or_default().contains("destination.tls.ca"), "{}", show(&findings));

    let findings = diagnose_destination(&config(TlsConfig { cert: None, key: None, ..good }), &ctx()).await;
    let fail = findings.iter().find(|f| f.check == Check::Association && f.severity == Severity::Fail);
    let fail = fail.unwrap_or_else(|| panic!("{}", show(&findings)));
    assert!(fail.fix.as_deref().unwrap_or_default().contains("destination.tls.cert"), "{}", show(&findings));
}
