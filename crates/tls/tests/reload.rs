//! Certificate rotation without a restart: files replaced on disk (as Kubernetes does when a
//! mounted Secret changes) are used for the next connections within seconds, the expiry
//! metric follows them, and a half-written file keeps the previous configuration.

use priorfetch_testkit::tls::TestPki;
use priorfetch_tls::metrics::CERT_EXPIRY;
use priorfetch_tls::{ServerTls, ServerTlsConfig};
use std::sync::Arc;
use std::time::Duration;

/// 2099-01-01 and 2098-01-01 (UTC), the notAfter of the two certificates.
const UNTIL_2099: f64 = 4_070_908_800.0;
const UNTIL_2098: f64 = 4_039_372_800.0;

#[test]
fn a_rotated_certificate_is_used_without_a_restart() {
    let pki = TestPki::new();
    let first = pki.issue("first", &["localhost"]);
    let mounted = tempfile::tempdir().unwrap();
    let (cert, key) = (mounted.path().join("tls.crt"), mounted.path().join("tls.key"));
    std::fs::copy(&first.cert, &cert).unwrap();
    std::fs::copy(&first.key, &key).unwrap();
    let settings = ServerTlsConfig { cert: cert.clone(), key: key.clone(), ..Default::default() };
    let server = ServerTls::load(&settings, "rotation").unwrap();
    let expiry = || CERT_EXPIRY.with_label_values(&["rotation", "server"]).get();
    let before = server.config();
    assert!(Arc::ptr_eq(&before, &server.config()), "unchanged files: the same configuration");
    assert_eq!(expiry(), UNTIL_2099);

    let second = pki.issue_valid("second", &["localhost"], (2020, 1, 1), (2098, 1, 1));
    std::thread::sleep(Duration::from_millis(50));
    std::fs::copy(&second.cert, &cert).unwrap();
    std::fs::copy(&second.key, &key).unwrap();
    std::thread::sleep(Duration::from_millis(2100));
    let after = server.config();
    assert!(!Arc::ptr_eq(&before, &after), "the rotated files were loaded");
    assert_eq!(expiry(), UNTIL_2098, "the metric follows the certificate in use");

    // a certificate file caught half-written: the previous configuration stays
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nMIIB").unwrap();
    std::thread::sleep(Duration::from_millis(2100));
    assert!(Arc::ptr_eq(&after, &server.config()), "an unusable file does not replace a working configuration");
}
