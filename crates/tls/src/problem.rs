//! Why a TLS handshake failed, from whatever error carried it (rustls' own, wrapped in an
//! I/O error by tokio-rustls, wrapped again by dicom-ul), with the fix on one line.

use rustls::{AlertDescription, CertificateError, PeerIncompatible};
use std::error::Error;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsProblem {
    /// The peer's certificate is signed by a CA we do not trust.
    UnknownCa,
    /// The peer's certificate expired (or is not valid yet).
    Expired,
    /// The peer's certificate does not carry the name we expect.
    NameMismatch,
    /// The peer wants a client certificate and we sent none.
    ClientCertRequired,
    /// The peer refused the client certificate we sent.
    ClientCertRefused,
    /// A peer that connected to us sent no certificate, or one we do not trust.
    ClientCertMissing,
    /// No protocol version or cipher suite in common.
    NoCommonCipher,
    /// The peer closed the connection during the handshake.
    Closed,
    /// The same, and we had sent no client certificate: most often a peer that requires
    /// mutual TLS (OpenSSL-based peers close without an alert).
    ClosedWithoutClientCert,
    /// Anything else rustls reported.
    Other(String),
}

impl TlsProblem {
    /// One line that says what to fix; `key` is the settings block (`archives[2].tls`).
    pub fn hint(&self, key: &str) -> String {
        match self {
            TlsProblem::UnknownCa => {
                format!("the peer's certificate is signed by a CA we do not trust: put that CA in {key}.ca")
            }
            TlsProblem::Expired => {
                "the peer's certificate has expired (or is not valid yet): renew it on the peer, or check both clocks"
                    .into()
            }
            TlsProblem::NameMismatch => format!(
                "the peer's certificate does not name the host we connect to: set {key}.server_name to a name it carries"
            ),
            TlsProblem::ClientCertRequired => {
                format!("the peer requires a client certificate (mutual TLS): set {key}.cert and {key}.key")
            }
            TlsProblem::ClientCertRefused => format!(
                "the peer refused our client certificate ({key}.cert): have the peer trust the CA that signed it"
            ),
            TlsProblem::ClientCertMissing => {
                "the peer sent no client certificate signed by service.tls.ca, which require_client_cert demands".into()
            }
            TlsProblem::NoCommonCipher => format!(
                "no TLS version or cipher suite in common: the peer may offer only TLS_RSA or 3DES suites, which \
                 BCP 195 excludes and priorfetch does not speak; enable ECDHE with AES-GCM on the peer (a BCP 195 \
                 profile); {key}.profile = \"bcp195\" is the widest we offer"
            ),
            TlsProblem::Closed => format!(
                "the peer closed the connection during the TLS handshake: it may not speak TLS on this port, or \
                 it refused our certificate; check the port and {key}"
            ),
            TlsProblem::ClosedWithoutClientCert => format!(
                "the peer closed the connection during the TLS handshake and we sent no client certificate: if it \
                 requires mutual TLS, set {key}.cert and {key}.key; else check that it speaks TLS on this port"
            ),
            TlsProblem::Other(what) => format!("TLS failed ({what}): check {key} and the peer's TLS settings"),
        }
    }
}

impl std::fmt::Display for TlsProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = match self {
            TlsProblem::UnknownCa => "certificate signed by an unknown CA",
            TlsProblem::Expired => "certificate expired or not yet valid",
            TlsProblem::NameMismatch => "certificate not valid for the server name",
            TlsProblem::ClientCertRequired => "peer requires a client certificate",
            TlsProblem::ClientCertRefused => "peer refused our client certificate",
            TlsProblem::ClientCertMissing => "client sent no acceptable certificate",
            TlsProblem::NoCommonCipher => "no common TLS version or cipher suite",
            TlsProblem::Closed => "connection closed during the TLS handshake",
            TlsProblem::ClosedWithoutClientCert => {
                "connection closed during the TLS handshake (no client certificate sent)"
            }
            TlsProblem::Other(what) => what,
        };
        f.write_str(text)
    }
}

/// The TLS problem behind `error`, if any: walks the source chain, looking into I/O
/// errors for the rustls error they wrap.
pub fn diagnose(error: &(dyn Error + 'static)) -> Option<TlsProblem> {
    let mut next: Option<&(dyn Error + 'static)> = Some(error);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(classify(tls));
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(tls) = inner.downcast_ref::<rustls::Error>()
        {
            return Some(classify(tls));
        }
        next = e.source();
    }
    None
}

/// The same from an error's text (errors that were already turned into strings).
pub fn diagnose_text(text: &str) -> Option<TlsProblem> {
    let t = text.to_ascii_lowercase();
    let has = |s: &str| t.contains(s);
    Some(if has("unknownissuer") || has("unknown issuer") || has("alert received: unknownca") {
        TlsProblem::UnknownCa
    } else if has("expired") || has("notvalidyet") {
        TlsProblem::Expired
    } else if has("notvalidforname") || has("not valid for name") {
        TlsProblem::NameMismatch
    } else if has("certificaterequired") {
        TlsProblem::ClientCertRequired
    } else if has("nociphersuitesincommon") || has("handshakefailure") || has("protocolversion") {
        TlsProblem::NoCommonCipher
    } else {
        return None;
    })
}

fn classify(error: &rustls::Error) -> TlsProblem {
    use rustls::Error as E;
    match error {
        E::InvalidCertificate(c) => match c {
            // BadSignature: a CA of the same name that did not sign it
            CertificateError::UnknownIssuer | CertificateError::BadSignature => TlsProblem::UnknownCa,
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => TlsProblem::Expired,
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                TlsProblem::NameMismatch
            }
            other => TlsProblem::Other(format!("invalid certificate: {other:?}")),
        },
        E::NoCertificatesPresented => TlsProblem::ClientCertMissing,
        E::AlertReceived(alert) => match alert {
            AlertDescription::CertificateRequired => TlsProblem::ClientCertRequired,
            AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateExpired
            | AlertDescription::AccessDenied => TlsProblem::ClientCertRefused,
            AlertDescription::HandshakeFailure
            | AlertDescription::InsufficientSecurity
            | AlertDescription::ProtocolVersion => TlsProblem::NoCommonCipher,
            other => TlsProblem::Other(format!("the peer sent alert {other:?}")),
        },
        E::PeerIncompatible(
            PeerIncompatible::NoCipherSuitesInCommon
            | PeerIncompatible::NoKxGroupsInCommon
            | PeerIncompatible::Tls12NotOffered
            | PeerIncompatible::Tls12NotOfferedOrEnabled
            | PeerIncompatible::SupportedVersionsExtensionRequired,
        ) => TlsProblem::NoCommonCipher,
        other => TlsProblem::Other(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_errors_are_found_and_named() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        );
        assert_eq!(diagnose(&io), Some(TlsProblem::UnknownCa));
        assert!(TlsProblem::UnknownCa.hint("archives[0].tls").contains("archives[0].tls.ca"));
        let alert = rustls::Error::AlertReceived(AlertDescription::CertificateRequired);
        assert_eq!(diagnose(&alert), Some(TlsProblem::ClientCertRequired));
        assert_eq!(diagnose(&std::io::Error::other("plain")), None);
        assert_eq!(diagnose_text("invalid peer certificate: UnknownIssuer"), Some(TlsProblem::UnknownCa));
    }
}
