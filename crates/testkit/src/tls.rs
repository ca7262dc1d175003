//! Certificates made for a test, never committed: a CA, certificates it signs (for
//! `localhost` and 127.0.0.1 by default), an expired one, one for another name, and a
//! second CA nobody trusts. RSA keys come from `openssl genpkey` (DCMTK's BCP 195 suites
//! are RSA ones; ring cannot generate RSA keys); rcgen signs.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A test PKI in a temporary folder.
pub struct TestPki {
    pub dir: tempfile::TempDir,
    /// The CA's certificate (PEM): what `tls.ca` points at.
    pub ca: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

fn rsa_key(path: &Path) -> KeyPair {
    let status = Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out"])
        .arg(path)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl (apt-get install openssl)");
    assert!(status.success(), "openssl genpkey");
    let pem = std::fs::read_to_string(path).expect("key file");
    KeyPair::from_pem(&pem).expect("RSA key")
}

impl TestPki {
    pub fn new() -> TestPki {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = rsa_key(&dir.path().join("ca.key"));
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        // a name of its own, so another TestPki's CA is a stranger (unknown issuer)
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        params.distinguished_name.push(DnType::CommonName, format!("priorfetch test CA {nanos:x}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("CA");
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, cert.pem()).expect("write CA");
        let issuer = Issuer::new(params, key);
        TestPki { dir, ca, issuer }
    }

    /// A certificate for `names` (DNS names or IP addresses), valid now.
    pub fn issue(&self, file: &str, names: &[&str]) -> Issued {
        self.issue_valid(file, names, (2020, 1, 1), (2099, 1, 1))
    }

    /// A certificate for localhost and 127.0.0.1 that expired in 2021.
    pub fn expired(&self, file: &str) -> Issued {
        self.issue_valid(file, &["localhost", "127.0.0.1"], (2020, 1, 1), (2021, 1, 1))
    }

    /// A certificate valid from `from` to `until` (year, month, day).
    pub fn issue_valid(&self, file: &str, names: &[&str], from: (i32, u8, u8), until: (i32, u8, u8)) -> Issued {
        let key_path = self.dir.path().join(format!("{file}.key"));
        let key = rsa_key(&key_path);
        let sans: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(sans).expect("params");
        params.distinguished_name.push(DnType::CommonName, names.first().copied().unwrap_or(file));
        params.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
        params.not_after = rcgen::date_time_ymd(until.0, until.1, until.2);
        params.extended_key_usages =
            vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        let cert_path = self.dir.path().join(format!("{file}.pem"));
        std::fs::write(&cert_path, cert.pem()).expect("write cert");
        Issued { cert: cert_path, key: key_path }
    }
}

impl Default for TestPki {
    fn default() -> Self {
        TestPki::new()
    }
}
