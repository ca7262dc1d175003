//! The admin server against a real database: /readyz follows the database.

use priorfetch_store::Store;
use priorfetch_telemetry::{admin, metrics};
use priorfetch_testkit::db::TestDb;
use std::sync::Arc;

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
    (status, body)
}

#[tokio::test]
async fn metrics_health_and_readiness() {
    let db = TestDb::postgres().await;
    let store = Store::connect(&db.url, "", 2).await.unwrap();
    let counter =
        prometheus::IntCounterVec::new(prometheus::Opts::new("priorfetch_test_total", "a test counter"), &["outcome"])
            .unwrap();
    metrics::register(&counter);
    metrics::register(&counter); // twice is fine
    counter.with_label_values(&["ok"]).inc();

    let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (probe_store, probe_down) = (store.clone(), down.clone());
    let ready: admin::ReadyCheck = Arc::new(move || {
        let store = probe_store.clone();
        let down = probe_down.load(std::sync::atomic::Ordering::SeqCst);
        Box::pin(async move {
            if down {
                return Err("database closed".into());
            }
            store.ping().await.map_err(|e| e.to_string())
        })
    });
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (addr, task) = admin::serve("127.0.0.1:0".parse().unwrap(), admin::router(ready, axum::Router::new()), async {
        rx.await.ok();
    })
    .await
    .unwrap();

    assert_eq!(get(addr, "/healthz").await.0, 200);
    assert_eq!(get(addr, "/readyz").await, (200, "ready\n".to_string()));
    let (status, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(body.contains("priorfetch_test_total{outcome=\"ok\"} 1"), "{body}");

    // the real database going away makes readiness fail, health stays up
    store.connection().clone().close().await.unwrap();
    let (status, body) = get(addr, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("not ready:"));
    down.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(get(addr, "/healthz").await.0, 200);
    tx.send(()).unwrap();
    task.await.unwrap().unwrap();
}
