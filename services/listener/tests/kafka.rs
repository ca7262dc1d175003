//! Against a real Kafka-protocol broker (tansu, started by scripts/test): 10,000 events with
//! 10% invalid and 10% duplicates end as exactly the right exams, dead letters on the
//! dead-letter topic with reasons, offsets committed only after the rows.

mod common;

use priorfetch_config::{KafkaConfig, Secret};
use priorfetch_listener::kafka::KafkaSource;
use priorfetch_listener::{Batching, Intake};
use priorfetch_store::Store;
use priorfetch_testkit::db::TestDb;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::time::{Duration, Instant};

fn brokers() -> String {
    std::env::var("PRIORFETCH_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

async fn create_topics(names: &[&str]) {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", brokers()).create().expect("admin client");
    let topics: Vec<NewTopic> = names.iter().map(|n| NewTopic::new(n, 3, TopicReplication::Fixed(1))).collect();
    let results = tokio::time::timeout(Duration::from_secs(30), admin.create_topics(&topics, &AdminOptions::new()))
        .await
        .expect("Kafka broker at 127.0.0.1:9092: run the tests through scripts/test")
        .expect("create topics");
    for r in results {
        r.expect("topic created");
    }
}

async fn produce(topic: &str, payloads: &[Vec<u8>]) {
    let producer: FutureProducer =
        ClientConfig::new().set("bootstrap.servers", brokers()).set("linger.ms", "5").create().unwrap();
    let mut sends = Vec::new();
    for (i, p) in payloads.iter().enumerate() {
        let key = format!("k{}", i % 64);
        let producer = producer.clone();
        let topic = topic.to_string();
        let p = p.clone();
        sends.push(tokio::spawn(async move {
            producer.send(FutureRecord::to(&topic).key(&key).payload(&p), Duration::from_secs(30)).await.map(|_| ())
        }));
    }
    for s in sends {
        s.await.unwrap().map_err(|(e, _)| e).expect("produced");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_events_exactly_once_with_dead_letter_topic() {
    let db = TestDb::postgres().await;
    let store = Store::connect(&db.url, "", 8).await.unwrap();
    store.migrate().await.unwrap();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (topic, dead) = (format!("pf-test-{id}"), format!("pf-test-{id}.dead"));
    create_topics(&[&topic, &dead]).await;
    let (payloads, unique, invalid) = common::mixed_batch(10_000);
    produce(&topic, &payloads).await;

    let config = KafkaConfig {
        brokers: brokers(),
        topic: topic.clone(),
        group_id: format!("pf-test-{id}"),
        dead_letter_topic: dead.clone(),
        password: Secret::default(),
        security_protocol: Default::default(),
        sasl_mechanism: None,
        username: None,
        tls: None,
    };
    let intake = Intake::new(
        store.clone(),
        priorfetch_events::DecodeOptions { source: "kafka".into(), hl7: Default::default(), sender_in_key: false },
    );
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let source = KafkaSource {
        config,
        intake,
        batching: Batching { max: 500, wait: Duration::from_millis(20) },
        overrides: vec![("session.timeout.ms".into(), "6000".into())],
    };
    let task = tokio::spawn(source.run(shutdown));
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(180) {
        if store.count_exams().await.unwrap() as usize >= unique && store.dead_letters().await.unwrap().len() >= invalid
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // let the last commit land
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(20), task).await.expect("stops").unwrap().unwrap();
    assert_eq!(store.count_exams().await.unwrap() as usize, unique);
    assert_eq!(store.dead_letters().await.unwrap().len(), invalid);

    // the dead-letter topic holds each invalid message once, with its reason
    let reader: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", format!("pf-test-reader-{id}"))
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .create()
        .unwrap();
    reader.subscribe(&[dead.as_str()]).unwrap();
    let mut seen = 0;
    let start = Instant::now();
    while seen < invalid && start.elapsed() < Duration::from_secs(60) {
        if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_secs(5), reader.recv()).await {
            let headers = m.headers().expect("reason headers");
            let reason = headers.iter().find(|h| h.key == "x-priorfetch-reason").and_then(|h| h.value);
            assert!(reason.is_some_and(|r| !r.is_empty()));
            seen += 1;
        }
    }
    assert_eq!(seen, invalid);
}
