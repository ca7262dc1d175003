//! PEM files: certificate chains, private keys, CA bundles.

use crate::TlsSetupError;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;

pub(crate) fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let what = || format!("certificate file {}", path.display());
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsSetupError::new(what(), e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsSetupError::new(what(), e))?;
    if certs.is_empty() {
        return Err(TlsSetupError::new(what(), "holds no PEM CERTIFICATE"));
    }
    Ok(certs)
}

pub(crate) fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsSetupError> {
    // the key's content never goes into an error
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        TlsSetupError::new(format!("key file {}", path.display()), format!("no usable PEM private key ({e})"))
    })
}

/// The CAs to trust: the bundle given, or the system's roots.
pub(crate) fn roots(ca: Option<&Path>) -> Result<RootCertStore, TlsSetupError> {
    let mut store = RootCertStore::empty();
    match ca {
        Some(path) => {
            for cert in certificates(path)? {
                store.add(cert).map_err(|e| TlsSetupError::new(format!("CA file {}", path.display()), e))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(TlsSetupError::new("system CA store", "no CA certificates found: set tls.ca"));
            }
        }
    }
    Ok(store)
}
