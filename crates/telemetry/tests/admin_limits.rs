//! The admin server cannot be held by its clients: idle and half-sent requests are
//! closed after the header timeout, connections beyond the cap are closed at once, a slow
//! body gets 408, and `/readyz` answers 503 in bounded time when its check hangs.

use priorfetch_telemetry::admin::{self, Limits, ReadyCheck};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn request(addr: SocketAddr, raw: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(raw.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut response))
        .await
        .expect("the server answers in bounded time")
        .unwrap();
    response
}

async fn get(addr: SocketAddr, path: &str) -> String {
    request(addr, &format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")).await
}

/// True when the server closed the socket (EOF or reset) within `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 256];
    let deadline = Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline.into(), stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue, // a 408 response before the close
        }
    }
}

fn always_ready() -> ReadyCheck {
    Arc::new(|| Box::pin(async { Ok(()) }))
}

async fn start(limits: Limits, ready: ReadyCheck) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let routes = axum::Router::new()
        .route("/echo", axum::routing::post(|body: axum::body::Bytes| async move { body.len().to_string() }));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (addr, _task) =
        admin::serve_with("127.0.0.1:0".parse().unwrap(), admin::router(ready, routes), limits, async {
            rx.await.ok();
        })
        .await
        .unwrap();
    (addr, tx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_half_sent_requests_are_closed_and_do_not_block_others() {
    let limits = Limits {
        max_connections: 1_000,
        header_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(5),
    };
    let (addr, _stop) = start(limits, always_ready()).await;
    let mut sockets = Vec::new();
    for i in 0..300 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        if i % 2 == 0 {
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.unwrap(); // half a request
        }
        sockets.push(s);
    }
    assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"), "served while 300 sockets hang");
    let start = Instant::now();
    for s in &mut sockets {
        assert!(closed_within(s, Duration::from_secs(5)).await, "idle socket closed after the header timeout");
    }
    println!("300 idle/half-sent sockets closed within {:?}", start.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_are_closed_at_once() {
    let limits =
        Limits { max_connections: 8, header_timeout: Duration::from_secs(2), request_timeout: Duration::from_secs(5) };
    let (addr, _stop) = start(limits, always_ready()).await;
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = TcpStream::connect(addr).await.unwrap();
    assert!(closed_within(&mut extra, Duration::from_millis(500)).await, "the ninth connection is refused");
    assert!(admin_metric_refused() >= 1);
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"), "served once the holders left");
}

fn admin_metric_refused() -> u64 {
    priorfetch_telemetry::metrics::ADMIN_CONNECTIONS_REFUSED.get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_completes_gets_408() {
    let limits =
        Limits { max_connections: 16, header_timeout: Duration::from_secs(5), request_timeout: Duration::from_secs(1) };
    let (addr, _stop) = start(limits, always_ready()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly ten b").await.unwrap();
    let mut response = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut response)).await.expect("answered").unwrap();
    let response = String::from_utf8_lossy(&response[..n]);
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(
        request(addr, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc")
            .await
            .ends_with("3")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_answers_503_in_bounded_time_when_its_check_hangs() {
    let hangs: ReadyCheck = Arc::new(|| Box::pin(futures::future::pending()));
    let (addr, _stop) = start(Limits::default(), hangs).await;
    let start = Instant::now();
    let response = get(addr, "/readyz").await;
    assert!(response.starts_with("HTTP/1.1 503"), "{response}");
    assert!(response.contains("no answer within"), "{response}");
    assert!(start.elapsed() < admin::READY_TIMEOUT + Duration::from_secs(2), "{:?}", start.elapsed());
}
