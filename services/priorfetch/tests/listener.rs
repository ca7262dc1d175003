//! `priorfetch listener` as a process: HTTP intake answers 202 after the commit, 400 with
//! the reason for invalid input, and the process stops cleanly on SIGTERM.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn post(port: u16, body: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "POST /api/events HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    (response[9..12].parse().unwrap(), response.split("\r\n\r\n").nth(1).unwrap_or_default().to_string())
}

#[tokio::test]
async fn http_intake_accepts_rejects_and_stops_on_sigterm() {
    let db = priorfetch_testkit::db::TestDb::postgres().await;
    let store = priorfetch_store::Store::connect(&db.url, "", 2).await.unwrap();
    store.migrate().await.unwrap();
    let port = priorfetch_testkit::ports::free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_priorfetch"))
        .arg("listener")
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .env("PRIORFETCH__DATABASE__URL", &db.url)
        .env("PRIORFETCH__SERVICE__ADMIN_LISTEN", format!("127.0.0.1:{port}"))
        .env("PRIORFETCH__INTAKE__SOURCE", "http")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(20), "listener did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let event = r#"{"event_id":"http-1","type":"exam.scheduled","patient":{"id":"MRN9","name":"DOE^JANE"},
        "accession_number":"A9","scheduled_at":"2026-11-23T09:30:00+01:00","modality":"CT"}"#;
    let (status, body) = post(port, event);
    assert_eq!(status, 202, "{body}");
    assert!(body.contains("\"accepted\""), "{body}");
    let (status, body) = post(port, event);
    assert_eq!((status, body.contains("\"duplicate\"")), (202, true), "{body}");
    let (status, body) = post(port, r#"{"event_id":"http-2","type":"exam.scheduled","patient":{}}"#);
    assert_eq!(status, 400);
    assert!(body.contains("patient.id"), "{body}");
    assert_eq!(store.count_exams().await.unwrap(), 1);
    assert_eq!(store.dead_letters().await.unwrap().len(), 1);

    // SIGTERM: a clean stop with exit 0
    unsafe_kill_term(child.id());
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(status.success(), "{stderr}");
    assert!(!stderr.contains("MRN9") && !stderr.contains("DOE"), "no PHI in logs: {stderr}");
}

fn unsafe_kill_term(pid: u32) {
    let status = Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    assert!(status.success());
}
