//! The MLLP listener against HL7 clients nobody here wrote: python-hl7's `MLLPClient`
//! and `mllp_send` send, hl7apy parses our ACKs. Real Postgres.

use priorfetch_config::MllpConfig;
use priorfetch_listener::Intake;
use priorfetch_listener::mllp::MllpListener;
use priorfetch_store::Store;
use priorfetch_testkit::db::TestDb;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};
use tokio::sync::watch;

const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/hl7/mllp_client.py");

fn intake(store: &Store) -> Intake {
    let options =
        priorfetch_events::DecodeOptions { source: "mllp".into(), hl7: Default::default(), sender_in_key: true };
    Intake::new(store.clone(), options)
}

async fn listen(intake: Intake, config: MllpConfig) -> (SocketAddr, watch::Sender<bool>) {
    let listener = MllpListener::bind(&MllpConfig { listen: "127.0.0.1:0".into(), ..config }, intake).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, shutdown) = watch::channel(false);
    tokio::spawn(listener.run(shutdown));
    (addr, stop)
}

/// Runs the Python client off the runtime; returns stdout lines.
async fn client(args: Vec<String>) -> Vec<String> {
    let output = tokio::task::spawn_blocking(move || Command::new("python3").arg(CLIENT).args(&args).output())
        .await
        .unwrap()
        .expect("python3 runs (scripts/peers.sh installs hl7 and hl7apy)");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(output.status.success(), "client failed: {}\n{stdout}", String::from_utf8_lossy(&output.stderr));
    stdout.lines().map(str::to_string).collect()
}

const ORM: &str = "MSH|^~\\&|RIS|HOSP|PRIORFETCH|RAD|20261205083000||ORM^O01^ORM_O01|ORM-1|P|2.5.1
PID|1||E1234567^^^EPI^MR~998877^^^SSA^SS||DOE^JANE||19580214|F
ORC|NW|ORD1|ACC-1
TQ1|1||||||20261224140000-0500
OBR|1|ORD1|ACC-1|IMG123^CT CHEST||||||||||||||||||||CT";

const OMI: &str = "MSH|^~\\&|AGFA|RAD|PF|RAD|20261122100000+0100||OMI^O23^OMI_O23|OMI-1|P|2.5
PID|1||P778^^^AGFAHOSP^PI||MUELLER^HANS||19441231|M
ORC|NW|A1|B1||SC
TQ1|1||||||20261226083000+0100
OBR|1|A1|B1|MRKNEE^MR knee left
IPC|AGF-ACC-9|SPS1|1.2.276.0.7230010.3.1.2.8323329.1234.1|SPS1|MR";

const SIU: &str = "MSH|^~\\&|SCHED|CLINIC|PF|CLINIC|20261122110000||SIU^S12|SIU-1|P|2.4
SCH|APT1|APT-9001|||||ROUTINE^Routine||||^^30^20261227100000+0000^20261227103000+0000
PID|1||SIU-PAT-1^^^CLINIC^MR||LEE^ANN||19900505|F
AIS|1||USABD^US abdomen^LOCAL|20261227100000+0000";

/// No patient id in PID-3.
const NO_PATIENT: &str = "MSH|^~\\&|RIS|HOSP|PRIORFETCH|RAD|20261205083000||ORM^O01^ORM_O01|BAD-1|P|2.5.1
PID|1||||DOE^JANE||19580214|F
ORC|NW|ORD2|ACC-2
TQ1|1||||||20261224140000-0500
OBR|1|ORD2|ACC-2|IMG123^CT CHEST";

/// An ADT is not an order: AE with ERR on MSH-9, HL7 v2.3 style.
const ADT: &str = "MSH|^~\\&|ADT|HOSP|PF|RAD|20261205083000||ADT^A01|ADT-1|P|2.3
PID|1||X1^^^HOSP^MR||DOE^JANE";

fn json(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

#[tokio::test]
async fn orders_get_acks_bad_ones_ae_with_err_and_dead_letters_duplicates_aa_once() {
    let db = TestDb::postgres().await;
    let store = Store::connect(&db.url, "", 4).await.unwrap();
    store.migrate().await.unwrap();
    let (addr, _stop) = listen(intake(&store), MllpConfig::default()).await;

    let file = tempfile::NamedTempFile::new().unwrap();
    let messages = [ORM, OMI, SIU, NO_PATIENT, ORM, ADT];
    std::fs::write(file.path(), messages.join("\n---\n")).unwrap();
    let acks =
        client(vec!["send".into(), "127.0.0.1".into(), addr.port().to_string(), file.path().display().to_string()])
            .await;
    let acks: Vec<serde_json::Value> = acks.iter().map(|l| json(l)).collect();
    let codes: Vec<(&str, &str)> =
        acks.iter().map(|a| (a["msa1"].as_str().unwrap(), a["msa2"].as_str().unwrap())).collect();
    assert_eq!(
        codes,
        [("AA", "ORM-1"), ("AA", "OMI-1"), ("AA", "SIU-1"), ("AE", "BAD-1"), ("AA", "ORM-1"), ("AE", "ADT-1")]
    );
    // The parties swapped, the version and message type followed.
    assert_eq!(
        [&acks[0]["msh3"], &acks[0]["msh4"], &acks[0]["msh5"], &acks[0]["msh6"]],
        ["PRIORFETCH", "RAD", "RIS", "HOSP"]
    );
    assert_eq!((acks[0]["msh9"].as_str(), acks[0]["msh12"].as_str()), (Some("ACK^O01^ACK"), Some("2.5.1")));
    assert_eq!(acks[2]["msh9"], "ACK^S12^ACK");
    assert_eq!(acks[0]["err"], serde_json::Value::Null);
    // ERR names the field: ERR-2 location from v2.5, ERR-1 before.
    let err = acks[3]["err"].as_str().unwrap();
    assert!(err.starts_with("ERR||PID^1^3|101^Required field missing^HL70357|E"), "{err}");
    let err = acks[5]["err"].as_str().unwrap();
    assert!(err.starts_with("ERR|MSH^1^9^200&Unsupported message type&HL70357"), "{err}");

    assert_eq!(store.count_exams().await.unwrap(), 3, "the duplicate is not a second exam");
    assert!(store.exam_by_key("hl7:mllp:RIS^HOSP:ORM-1").await.unwrap().is_some(), "keys carry MSH-3/4");
    let dead = store.dead_letters().await.unwrap();
    assert_eq!(dead.len(), 2);
    assert!(dead.iter().any(|d| d.reason.contains("PID-3")), "{dead:?}");

    // The packaged command-line client of python-hl7 gets the same answer.
    let framed = format!("\x0b{}\r\x1c\r", ORM.replace('\n', "\r"));
    std::fs::write(file.path(), framed).unwrap();
    let out = tokio::task::spawn_blocking({
        let (path, port) = (file.path().to_owned(), addr.port().to_string());
        move || Command::new("mllp_send").args(["--file"]).arg(path).args(["--port", &port, "127.0.0.1"]).output()
    })
    .await
    .unwrap()
    .expect("mllp_send (python-hl7) is installed");
    let ack = String::from_utf8_lossy(&out.stdout).replace('\r', "\n");
    assert!(ack.contains("MSA|AA|ORM-1"), "{ack}");
}

fn raw_connect(addr: SocketAddr) -> std::net::TcpStream {
    let stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    stream
}

/// Reads until the peer closes (or a timeout, which fails the test).
fn read_to_close(mut stream: std::net::TcpStream, case: &str) -> Vec<u8> {
    let mut out = Vec::new();
    match stream.read_to_end(&mut out) {
        Ok(_) => out,
        // A close with unread input in the listener's buffer is a reset: closed all the same.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => out,
        Err(e) => panic!("{case}: the listener did not close the connection: {e}"),
    }
}

// Multi-thread: the test's own blocking socket reads must not stall the listener's runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_oversize_and_too_many_connections_are_closed_cleanly() {
    let db = TestDb::postgres().await;
    let store = Store::connect(&db.url, "", 4).await.unwrap();
    store.migrate().await.unwrap();
    let config = MllpConfig { max_message: 2048, max_connections: 2, ..MllpConfig::default() };
    let (addr, _stop) = listen(intake(&store), config).await;

    // An HTTP client on the MLLP port: closed, nothing answered.
    let mut stream = raw_connect(addr);
    stream.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    assert!(read_to_close(stream, "http").is_empty());

    // A frame that never ends and one that is too large: AE naming the limit, then closed.
    let mut stream = raw_connect(addr);
    let big = format!("\x0b{}\r{}\x1c\r", ORM.replace('\n', "\r"), "Z".repeat(4000));
    stream.write_all(big.as_bytes()).unwrap();
    let answer = String::from_utf8_lossy(&read_to_close(stream, "too large")).to_string();
    assert!(answer.contains("MSA|AE|ORM-1|message larger than intake.mllp.max_message"), "{answer}");

    // Random bytes, then a start block followed by binary noise and a close.
    for noise in [vec![0xffu8, 0x00, 0x13], [&[0x0b][..], &[0x9a; 300]].concat()] {
        let mut stream = raw_connect(addr);
        stream.write_all(&noise).unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let _ = read_to_close(stream, "noise");
    }

    // Two connections held open; the third is closed at once.
    let held = [raw_connect(addr), raw_connect(addr)];
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    assert!(read_to_close(raw_connect(addr), "over capacity").is_empty());
    assert!(started.elapsed() < Duration::from_secs(2));
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The listener is still serving.
    let mut stream = raw_connect(addr);
    stream.write_all(format!("\x0b{}\r\x1c\r", SIU.replace('\n', "\r")).as_bytes()).unwrap();
    let mut buffer = [0u8; 1024];
    let n = stream.read(&mut buffer).unwrap();
    let ack = String::from_utf8_lossy(&buffer[..n]);
    assert!(ack.contains("MSA|AA|SIU-1"), "{ack}");
    assert_eq!(store.count_exams().await.unwrap(), 1);
}

#[tokio::test]
async fn while_postgres_is_down_messages_get_ar_and_none_is_lost() {
    let mut pg = priorfetch_testkit::pg_instance::PgInstance::start();
    let store = Store::connect(&pg.url(), "", 4).await.unwrap();
    store.migrate().await.unwrap();
    let (addr, _stop) = listen(intake(&store), MllpConfig::default()).await;

    let count = 400;
    let sender = tokio::spawn(client(vec![
        "flood".into(),
        "127.0.0.1".into(),
        addr.port().to_string(),
        "--connections".into(),
        "4".into(),
        "--count".into(),
        count.to_string(),
        "--prefix".into(),
        "PGDOWN".into(),
        "--deadline".into(),
        "120".into(),
    ]));
    let started = Instant::now();
    while store.count_exams().await.unwrap_or(0) < 50 {
        assert!(started.elapsed() < Duration::from_secs(30), "no progress before the stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    pg.stop(priorfetch_testkit::pg_instance::StopMode::Immediate);
    tokio::time::sleep(Duration::from_secs(3)).await;
    pg.start_server();
    let stats = json(&sender.await.unwrap()[0]);
    assert_eq!(stats["acked"], count, "{stats}");
    assert!(stats["ar"].as_u64().unwrap() + stats["resent"].as_u64().unwrap() > 0, "the outage was seen: {stats}");
    assert_eq!(store.count_exams().await.unwrap(), count, "every message once");
}

/// socat as the sender's TLS side: plain MLLP in on `port`, OpenSSL out to the listener.
struct TlsBridge {
    port: u16,
    child: std::process::Child,
}

impl TlsBridge {
    fn start(target: SocketAddr, ca: &std::path::Path, client: Option<&priorfetch_testkit::tls::Issued>) -> TlsBridge {
        let port = priorfetch_testkit::ports::free_port();
        let mut out = format!("OPENSSL:{target},cafile={},commonname=localhost,verify=1", ca.display());
        if let Some(client) = client {
            out.push_str(&format!(",cert={},key={}", client.cert.display(), client.key.display()));
        }
        let child = Command::new("socat")
            .args([format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork"), out])
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("socat (scripts/peers.sh installs it)");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(10), "socat did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        TlsBridge { port, child }
    }
}

impl Drop for TlsBridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mllp_over_mutual_tls_accepts_only_senders_with_a_certificate() {
    let db = TestDb::postgres().await;
    let store = Store::connect(&db.url, "", 4).await.unwrap();
    store.migrate().await.unwrap();
    let pki = priorfetch_testkit::tls::TestPki::new();
    let server = pki.issue("mllp", &["localhost", "127.0.0.1"]);
    let sender = pki.issue("engine", &["engine.example"]);
    let tls = priorfetch_config::ServerTlsConfig {
        cert: server.cert.clone(),
        key: server.key.clone(),
        ca: Some(pki.ca.clone()),
        require_client_cert: true,
        profile: Default::default(),
    };
    let (addr, _stop) = listen(intake(&store), MllpConfig { tls: Some(tls), ..MllpConfig::default() }).await;

    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), ORM).unwrap();
    let with_cert = TlsBridge::start(addr, &pki.ca, Some(&sender));
    let acks =
        client(vec!["send".into(), "127.0.0.1".into(), with_cert.port.to_string(), file.path().display().to_string()])
            .await;
    assert_eq!(json(&acks[0])["msa1"], "AA", "{acks:?}");
    assert_eq!(store.count_exams().await.unwrap(), 1);

    // Without a client certificate the handshake fails: no ACK, nothing stored.
    let without = TlsBridge::start(addr, &pki.ca, None);
    let mut stream = raw_connect(([127, 0, 0, 1], without.port).into());
    stream.write_all(format!("\x0b{}\r\x1c\r", SIU.replace('\n', "\r")).as_bytes()).unwrap();
    let answer = read_to_close(stream, "no client certificate");
    assert!(!String::from_utf8_lossy(&answer).contains("MSA"), "no ACK without a certificate");
    assert_eq!(store.count_exams().await.unwrap(), 1);
}
