//! `[service.admin_tls]`: the admin listener (HTTP intake included) over HTTPS, where a
//! client certificate signed by `ca` authenticates an event sender as a token would. curl is
//! the client.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const EVENT: &str = r#"{"event_id":"mtls-1","type":"exam.scheduled","patient":{"id":"MRN9"},
    "accession_number":"A9","scheduled_at":"2026-12-23T09:30:00+01:00","modality":"CT"}"#;

/// `curl` to the admin port: (status, body); status 0 when the TLS handshake failed.
fn curl(port: u16, path: &str, extra: &[String], body: Option<&str>) -> (u16, String) {
    let mut command = Command::new("curl");
    command.args(["-s", "-o", "-", "-w", "\n%{http_code}", "--max-time", "10"]).args(extra);
    if let Some(body) = body {
        command.args(["-H", "content-type: application/json", "--data-binary", body]);
    }
    let output = command.arg(format!("https://localhost:{port}{path}")).output().expect("curl");
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (status.trim().parse().unwrap_or(0), body.to_string())
}

#[tokio::test]
async fn client_certificates_admit_senders_over_https_and_tokens_still_work() {
    let db = priorfetch_testkit::db::TestDb::postgres().await;
    let store = priorfetch_store::Store::connect(&db.url, "", 2).await.unwrap();
    store.migrate().await.unwrap();
    let pki = priorfetch_testkit::tls::TestPki::new();
    let server = pki.issue("admin", &["localhost"]);
    let engine = pki.issue("engine", &["interface-engine"]);
    let stranger = priorfetch_testkit::tls::TestPki::new().issue("stranger", &["stranger"]);
    let port = priorfetch_testkit::ports::free_port();

    let mut config = tempfile::NamedTempFile::new().unwrap();
    write!(
        config,
        "[service]\nae_title = 'PRIORFETCH'\nadmin_listen = '127.0.0.1:{port}'\nshutdown_grace = '5s'\n\
         [service.admin_tls]\ncert = '{}'\nkey = '{}'\nca = '{}'\nrequire_client_cert = false\n\
         [[admin.tokens]]\nname = 'ris'\nrole = 'sender'\ntoken = 's3cret-token-for-the-ris'\n",
        server.cert.display(),
        server.key.display(),
        pki.ca.display()
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_priorfetch"))
        .args(["--config"])
        .arg(config.path())
        .arg("listener")
        .env("PRIORFETCH__DATABASE__URL", &db.url)
        .env("PRIORFETCH__INTAKE__SOURCE", "http")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(20), "listener did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let ca = vec!["--cacert".to_string(), pki.ca.display().to_string()];
    let with = |issued: &priorfetch_testkit::tls::Issued| {
        let mut args = ca.clone();
        args.extend([
            "--cert".into(),
            issued.cert.display().to_string(),
            "--key".into(),
            issued.key.display().to_string(),
        ]);
        args
    };

    // Probes and Prometheus need no certificate.
    assert_eq!(curl(port, "/healthz", &ca, None).0, 200);
    // A sender with a certificate from our CA is admitted without a token.
    let (status, body) = curl(port, "/api/events", &with(&engine), Some(EVENT));
    assert_eq!(status, 202, "{body}");
    // Neither a certificate nor a token: 401.
    assert_eq!(curl(port, "/api/events", &ca, Some(EVENT)).0, 401);
    // A certificate from another CA does not get through the handshake.
    assert_eq!(curl(port, "/api/events", &with(&stranger), Some(EVENT)).0, 0);
    // A token still works over HTTPS.
    let mut token = ca.clone();
    token.extend(["-H".into(), "authorization: Bearer s3cret-token-for-the-ris".into()]);
    let (status, body) = curl(port, "/api/events", &token, Some(EVENT));
    assert_eq!((status, body.contains("duplicate")), (202, true), "{body}");
    // Plain HTTP on the HTTPS port is refused.
    let plain = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5"])
        .arg(format!("http://127.0.0.1:{port}/healthz"))
        .output()
        .unwrap();
    assert_ne!(String::from_utf8_lossy(&plain.stdout), "200");
    assert_eq!(store.count_exams().await.unwrap(), 1);
    child.kill().unwrap();
    let _ = child.wait();
}
