//! `priorfetch listener` with the MLLP source, killed with SIGKILL in the middle of
//! 10,000 messages over 4 connections and started again: the senders (python-hl7's
//! MLLPClient) resend whatever was not ACKed, and every message is one exam, once.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/hl7/mllp_client.py");

fn start_listener(db_url: &str, admin: u16, mllp: u16) -> Child {
    let child = Command::new(env!("CARGO_BIN_EXE_priorfetch"))
        .arg("listener")
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .env("PRIORFETCH__DATABASE__URL", db_url)
        .env("PRIORFETCH__SERVICE__ADMIN_LISTEN", format!("127.0.0.1:{admin}"))
        .env("PRIORFETCH__INTAKE__SOURCE", "mllp")
        .env("PRIORFETCH__INTAKE__MLLP__LISTEN", format!("127.0.0.1:{mllp}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", mllp)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(20), "listener did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

#[tokio::test]
async fn sigkill_mid_stream_loses_nothing_and_duplicates_nothing() {
    let db = priorfetch_testkit::db::TestDb::postgres().await;
    let store = priorfetch_store::Store::connect(&db.url, "", 2).await.unwrap();
    store.migrate().await.unwrap();
    let (admin, mllp) = (priorfetch_testkit::ports::free_port(), priorfetch_testkit::ports::free_port());
    let mut listener = start_listener(&db.url, admin, mllp);

    let count: u64 = 10_000;
    let sender = Command::new("python3")
        .arg(CLIENT)
        .args(["flood", "127.0.0.1", &mllp.to_string(), "--connections", "4", "--count", &count.to_string()])
        .args(["--prefix", "KILL", "--deadline", "240"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 with hl7 and hl7apy (scripts/peers.sh)");

    // Kill once a good part went in, while the senders are mid-stream.
    let start = Instant::now();
    let mut at_kill = 0;
    while at_kill < 2_000 {
        assert!(start.elapsed() < Duration::from_secs(120), "no progress: {at_kill} exams");
        tokio::time::sleep(Duration::from_millis(20)).await;
        at_kill = store.count_exams().await.unwrap();
    }
    listener.kill().unwrap();
    listener.wait().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut listener = start_listener(&db.url, admin, mllp);

    let output = tokio::task::spawn_blocking(move || sender.wait_with_output()).await.unwrap().unwrap();
    let stats: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    listener.kill().unwrap();
    let _ = listener.wait();
    assert!(at_kill < count, "killed mid-stream");
    assert_eq!(stats["acked"], count, "every message ACKed AA in the end: {stats}");
    assert!(stats["resent"].as_u64().unwrap() > 0, "the kill cut some messages: {stats}");
    assert_eq!(store.count_exams().await.unwrap(), count, "none lost, none twice");
}
