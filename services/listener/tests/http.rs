//! `POST /api/events` against real Postgres: every poison input is a permanent 400 naming
//! the field (and one dead letter), never a 503 that makes the sender retry forever; a
//! database that does not answer gets 503 within a bounded time.

mod common;

use priorfetch_listener::{Intake, http};
use priorfetch_store::Store;
use priorfetch_telemetry::admin;
use priorfetch_testkit::db::TestDb;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn post(addr: SocketAddr, body: &[u8]) -> (u16, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /api/events HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_string(&mut response))
        .await
        .expect("answered")
        .unwrap();
    let status = response[9..12].parse().unwrap();
    let json = response.split("\r\n\r\n").nth(1).and_then(|b| serde_json::from_str(b).ok()).unwrap_or_default();
    (status, json)
}

async fn serve(store: Store) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let intake = Intake::new(
        store,
        priorfetch_events::DecodeOptions { source: "http".into(), hl7: Default::default(), sender_in_key: false },
    );
    let ready: admin::ReadyCheck = Arc::new(|| Box::pin(async { Ok(()) }));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (addr, _task) =
        admin::serve("127.0.0.1:0".parse().unwrap(), admin::router(ready, http::routes(intake)), async {
            rx.await.ok();
        })
        .await
        .unwrap();
    (addr, tx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_inputs_get_400_naming_the_field() {
    let db = TestDb::postgres().await;
    let store = Store::connect(&db.url, "", 4).await.unwrap();
    store.migrate().await.unwrap();
    let (addr, _stop) = serve(store.clone()).await;
    let cases = common::poison_events();
    for (name, payload, field) in &cases {
        let (status, body) = post(addr, payload).await;
        assert_eq!(status, 400, "{name}: {body}");
        let named = body["field"].as_str().unwrap_or_default();
        assert!(named.starts_with(field), "{name}: field {named:?} in {body}");
        assert!(body["error"].as_str().unwrap().chars().count() <= 600, "{name}: clipped reason");
    }
    let (status, body) = post(addr, &common::json_event(1)).await;
    assert_eq!((status, body["outcome"].as_str()), (202, Some("accepted")), "{body}");
    assert_eq!(store.count_exams().await.unwrap(), 1, "no poison became an exam");
    assert_eq!(store.dead_letters().await.unwrap().len(), cases.len(), "one dead letter each");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_gets_503_in_bounded_time() {
    let db = TestDb::postgres().await;
    // host:port of the database, behind a proxy the test can cut
    let upstream = db.url.split('@').nth(1).and_then(|rest| rest.split('/').next()).unwrap().to_string();
    let proxy = priorfetch_testkit::proxy::TcpProxy::start(&upstream).await.unwrap();
    let store = Store::connect(&db.url.replacen(&upstream, &proxy.addr().to_string(), 1), "", 2).await.unwrap();
    store.migrate().await.unwrap();
    let (addr, _stop) = serve(store.clone()).await;
    assert_eq!(post(addr, &common::json_event(1)).await.0, 202);

    proxy.cut();
    let start = Instant::now();
    let (status, body) = post(addr, &common::json_event(2)).await;
    let took = start.elapsed();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "unavailable", "{body}");
    assert!(!body.to_string().contains("postgres"), "no raw database error to the sender: {body}");
    assert!(took <= http::INTAKE_TIMEOUT + Duration::from_secs(2), "answered in {took:?}");

    // a sender retries 503s: accepted once the pool has reconnected (bounded)
    proxy.restore();
    let start = Instant::now();
    let (status, body) = loop {
        let (status, body) = post(addr, &common::json_event(2)).await;
        if status != 503 || start.elapsed() > Duration::from_secs(20) {
            break (status, body);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(status, 202, "accepted once the database is back: {body}");
}

async fn post_as(addr: SocketAddr, body: &[u8], token: Option<&str>) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = token.map(|t| format!("authorization: Bearer {t}\r\n")).unwrap_or_default();
    let head = format!(
        "POST /api/events HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n{auth}content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let _ = stream.write_all(body).await; // a refused sender may be cut off mid-body
    let mut response = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), stream.read_to_string(&mut response)).await;
    (response.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0), response)
}

/// `[[admin.tokens]]` configured: a sender needs a token of role sender or operator; a body
/// above `intake.http.max_body` gets 413; above `intake.http.rate_limit`, 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tokens_only_authenticated_senders_get_in_and_limits_hold() {
    let db = TestDb::postgres().await;
    let store = Store::connect(&db.url, "", 4).await.unwrap();
    store.migrate().await.unwrap();
    let toml = "[intake.http]\nmax_body = 4096\nrate_limit = 5\n\
        [[admin.tokens]]\nname = \"ris\"\nrole = \"sender\"\ntoken = \"ris-0123456789abcdef\"\n\
        [[admin.tokens]]\nname = \"dashboard\"\nrole = \"viewer\"\n\
        token_sha256 = \"5a0dd64d4bc5fb3a1b8d81e1dd40ce8c0b56f2a8d0a36e1e5f0e2e8c1f3c3b3c\"\n\
        [[admin.tokens]]\nname = \"ops\"\nrole = \"viewer\"\ntoken = \"viewer-0123456789abcdef\"\n";
    let config =
        priorfetch_config::Config::load(priorfetch_config::Sources { file: None, overlay: Some(toml), env: false })
            .unwrap();
    let intake = Intake::new(
        store.clone(),
        priorfetch_events::DecodeOptions { source: "http".into(), hl7: Default::default(), sender_in_key: false },
    );
    let ready: admin::ReadyCheck = Arc::new(|| Box::pin(async { Ok(()) }));
    let routes = http::routes_with(intake, priorfetch_listener::access::Access::new(&config));
    let (addr, _task) =
        admin::serve("127.0.0.1:0".parse().unwrap(), admin::router(ready, routes), std::future::pending())
            .await
            .unwrap();

    let event = common::json_event(1);
    let (status, text) = post_as(addr, &event, None).await;
    assert_eq!(status, 401, "{text}");
    assert!(text.to_ascii_lowercase().contains("www-authenticate: bearer"), "{text}");
    assert_eq!(post_as(addr, &event, Some("not-a-known-token")).await.0, 401);
    assert_eq!(post_as(addr, &event, Some("viewer-0123456789abcdef")).await.0, 403, "a viewer may not send");
    let (status, text) = post_as(addr, &event, Some("ris-0123456789abcdef")).await;
    assert_eq!(status, 202, "{text}");
    assert_eq!(store.count_exams().await.unwrap(), 1);

    let oversize = vec![b' '; 8192];
    assert_eq!(post_as(addr, &oversize, Some("ris-0123456789abcdef")).await.0, 413);

    // 5 per second: a burst of 12 gets some 429s, each with Retry-After
    let mut limited = 0;
    for i in 0..12 {
        let (status, text) = post_as(addr, &common::json_event(100 + i), Some("ris-0123456789abcdef")).await;
        if status == 429 {
            assert!(text.to_ascii_lowercase().contains("retry-after: 1"), "{text}");
            limited += 1;
        } else {
            assert_eq!(status, 202, "{text}");
        }
    }
    assert!(limited >= 5, "{limited} of 12 rate-limited");
}
