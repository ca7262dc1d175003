//! `priorfetch_tls_cert_expiry_seconds{peer,role}`: when the certificate we present
//! expires (Unix time), set whenever a configuration is (re)built. The chart's alert
//! fires 14 days before.

use priorfetch_telemetry::metrics::register;
use prometheus::{GaugeVec, Opts};
use rustls::pki_types::CertificateDer;
use std::sync::LazyLock;

pub static CERT_EXPIRY: LazyLock<GaugeVec> = LazyLock::new(|| {
    let g = GaugeVec::new(
        Opts::new(
            "priorfetch_tls_cert_expiry_seconds",
            "Unix time at which the certificate we present expires, by peer and role (client or server)",
        ),
        &["peer", "role"],
    )
    .expect("valid metric");
    register(&g);
    g
});

/// The leaf certificate's notAfter, as Unix seconds.
pub fn not_after(cert: &CertificateDer<'_>) -> Option<i64> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    Some(parsed.validity().not_after.timestamp())
}

pub(crate) fn observe(peer: &str, role: &str, chain: &[CertificateDer<'_>]) {
    if let Some(at) = chain.first().and_then(not_after) {
        CERT_EXPIRY.with_label_values(&[peer, role]).set(at as f64);
    }
}
