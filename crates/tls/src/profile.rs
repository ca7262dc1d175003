//! PS3.15 Annex B profiles. rustls speaks only TLS 1.2 and 1.3 with AEAD suites, so the
//! BCP 195 and Non-Downgrading profiles are the same set here; the Extended profile keeps
//! TLS 1.3 and the strongest TLS 1.2 suites. Archives that offer only TLS_RSA or 3DES
//! suites fail the handshake with a hint (`problem.rs`).

use priorfetch_config::TlsProfile;
use rustls::SupportedProtocolVersion;
use rustls::crypto::CryptoProvider;
use rustls::crypto::ring::{cipher_suite, default_provider};
use std::sync::Arc;

pub(crate) fn provider(profile: TlsProfile) -> Arc<CryptoProvider> {
    let mut provider = default_provider();
    if profile == TlsProfile::Bcp195Extended {
        provider.cipher_suites = vec![
            cipher_suite::TLS13_AES_256_GCM_SHA384,
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
            cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            cipher_suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ];
    }
    Arc::new(provider)
}

static VERSIONS: [&SupportedProtocolVersion; 2] = [&rustls::version::TLS13, &rustls::version::TLS12];

pub(crate) fn versions(_profile: TlsProfile) -> &'static [&'static SupportedProtocolVersion] {
    &VERSIONS
}
