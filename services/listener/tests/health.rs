//! `/readyz` goes unready when the bus intake stalls: a RabbitMQ source that cannot reach
//! its broker is reported after `health::STALLED_AFTER`, and ready again once it consumes.

use priorfetch_config::RabbitmqConfig;
use priorfetch_listener::rabbitmq::RabbitSource;
use priorfetch_listener::{Batching, Intake, health};
use priorfetch_store::Store;
use priorfetch_testkit::db::TestDb;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_stalls_the_intake_and_a_reachable_one_clears_it() {
    let db = TestDb::postgres().await;
    let store = Store::connect(&db.url, "", 2).await.unwrap();
    store.migrate().await.unwrap();
    let closed_port = priorfetch_testkit::ports::free_port();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let config = |url: String| RabbitmqConfig {
        url,
        queue: format!("pf-test-{id}"),
        dead_letter_queue: format!("pf-test-{id}.dead"),
        prefetch: 10,
        tls: None,
    };
    let source = |url: String| RabbitSource {
        config: config(url),
        intake: Intake::new(
            store.clone(),
            priorfetch_events::DecodeOptions {
                source: "rabbitmq".into(),
                hl7: Default::default(),
                sender_in_key: false,
            },
        ),
        batching: Batching { max: 10, wait: Duration::from_millis(20) },
    };
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let down = tokio::spawn(source(format!("amqp://guest:guest@127.0.0.1:{closed_port}/%2f")).run(shutdown.clone()));
    let start = Instant::now();
    while health::stalled().is_none() && start.elapsed() < health::STALLED_AFTER + Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let reason = health::stalled().expect("stalled after the limit");
    assert!(start.elapsed() >= health::STALLED_AFTER, "not before the limit");
    assert!(reason.contains("rabbitmq"), "{reason}");
    down.abort();

    let amqp = std::env::var("PRIORFETCH_TEST_AMQP").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let up = tokio::spawn(source(amqp).run(shutdown));
    let start = Instant::now();
    while health::stalled().is_some() && start.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(health::stalled(), None, "ready again once consuming");
    stop.send(true).unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(10), up).await;
}
