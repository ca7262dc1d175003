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
    let intake =
        Intake::new(store, priorfetch_events::DecodeOptions { source: "http".into(), hl7: Default::default() });
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
