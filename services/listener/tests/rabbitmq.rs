//! Against the real RabbitMQ (scripts/test starts it): 10,000 events with 10% invalid and
//! 10% duplicates end as exactly the right exams and dead letters, across a broker
//! restart in the middle; a listener killed between commit and ack duplicates nothing.

mod common;

use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use priorfetch_config::RabbitmqConfig;
use priorfetch_listener::rabbitmq::{RabbitSource, declare_queues};
use priorfetch_listener::{Batching, Intake};
use priorfetch_store::Store;
use priorfetch_testkit::db::TestDb;
use std::time::{Duration, Instant};

fn amqp_url() -> String {
    std::env::var("PRIORFETCH_TEST_AMQP").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

fn config() -> RabbitmqConfig {
    let id = uuid::Uuid::new_v4().simple().to_string();
    RabbitmqConfig {
        url: amqp_url(),
        queue: format!("pf-test-{id}"),
        dead_letter_queue: format!("pf-test-{id}.dead"),
        prefetch: 500,
        tls: None,
    }
}

async fn publish_all(config: &RabbitmqConfig, payloads: &[Vec<u8>]) {
    let conn = Connection::connect(&config.url, ConnectionProperties::default())
        .await
        .expect("RabbitMQ at 127.0.0.1:5672: run the tests through scripts/test");
    let channel = conn.create_channel().await.unwrap();
    channel.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    declare_queues(&channel, config).await.unwrap();
    let mut confirms = Vec::new();
    for p in payloads {
        let props = BasicProperties::default().with_delivery_mode(2); // persistent: survives a restart
        confirms.push(
            channel
                .basic_publish("".into(), config.queue.as_str().into(), BasicPublishOptions::default(), p, props)
                .await
                .unwrap(),
        );
    }
    for c in confirms {
        assert!(c.await.unwrap().is_ack());
    }
    conn.close(200, "done".into()).await.ok();
}

async fn queue_depth(config: &RabbitmqConfig, queue: &str) -> u32 {
    let conn = Connection::connect(&config.url, ConnectionProperties::default()).await.unwrap();
    let channel = conn.create_channel().await.unwrap();
    let q = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions { passive: true, durable: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .unwrap();
    conn.close(200, "done".into()).await.ok();
    q.message_count()
}

fn rabbitmqctl(args: &[&str]) {
    let status = std::process::Command::new("rabbitmqctl").args(args).status().expect("rabbitmqctl");
    assert!(status.success(), "rabbitmqctl {args:?}");
}

async fn wait_for(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_events_exactly_once_across_a_broker_restart() {
    let db = TestDb::postgres().await;
    let store = Store::connect(&db.url, "", 8).await.unwrap();
    store.migrate().await.unwrap();
    let config = config();
    let (payloads, unique, invalid) = common::mixed_batch(10_000);
    assert_eq!((unique, invalid), (8_000, 1_000));
    let (first, second) = payloads.split_at(5_000);
    publish_all(&config, first).await;

    let intake = Intake::new(
        store.clone(),
        priorfetch_events::DecodeOptions { source: "rabbitmq".into(), hl7: Default::default(), sender_in_key: false },
    );
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let source = RabbitSource {
        config: config.clone(),
        intake,
        batching: Batching { max: 200, wait: Duration::from_millis(20) },
    };
    let task = tokio::spawn(source.run(shutdown));

    // restart the broker while the listener is consuming
    wait_for("first exams", Duration::from_secs(60), async || store.count_exams().await.unwrap() > 500).await;
    rabbitmqctl(&["stop_app"]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    rabbitmqctl(&["start_app"]);
    rabbitmqctl(&["await_startup"]);
    publish_all(&config, second).await;

    wait_for("all exams", Duration::from_secs(120), async || {
        store.count_exams().await.unwrap() as usize >= unique && store.dead_letters().await.unwrap().len() >= invalid
    })
    .await;
    wait_for("queue drained", Duration::from_secs(30), async || queue_depth(&config, &config.queue).await == 0).await;
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task).await.expect("stops on shutdown").unwrap();

    assert_eq!(store.count_exams().await.unwrap() as usize, unique, "exactly one exam per distinct event");
    // Dead letters: once each, unless the restart cut a batch between its commit and its
    // ack, whose redelivery dead-letters its invalid messages again (never an exam).
    let letters = store.dead_letters().await.unwrap();
    assert!(letters.len() >= invalid && letters.len() <= invalid + 200, "{} dead letters", letters.len());
    assert!(letters.iter().all(|l| !l.reason.is_empty()));
    let dlq = queue_depth(&config, &config.dead_letter_queue).await as usize;
    assert!(dlq >= invalid && dlq <= invalid + 200, "{dlq} on the dead-letter queue");
    let hl7 = store.exam_by_key("hl7:rabbitmq:HL7-4").await.unwrap().expect("HL7 order stored");
    assert_eq!(hl7.exam.accession_number.as_deref(), Some("HACC4"));
}

/// A listener that committed a batch and died before acking: the broker redelivers, the
/// next listener finds every event already stored, and no exam is duplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_between_commit_and_ack_duplicates_nothing() {
    let db = TestDb::postgres().await;
    let store = Store::connect(&db.url, "", 4).await.unwrap();
    store.migrate().await.unwrap();
    let config = config();
    let payloads: Vec<Vec<u8>> = (0..300).map(common::json_event).collect();
    publish_all(&config, &payloads).await;
    let intake = Intake::new(
        store.clone(),
        priorfetch_events::DecodeOptions { source: "rabbitmq".into(), hl7: Default::default(), sender_in_key: false },
    );

    // the doomed listener: consume, commit, and vanish without acknowledging
    {
        let conn = Connection::connect(&config.url, ConnectionProperties::default()).await.unwrap();
        let channel = conn.create_channel().await.unwrap();
        let mut consumer = channel
            .basic_consume(
                config.queue.as_str().into(),
                "doomed".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let mut batch = Vec::new();
        while batch.len() < 300 {
            batch.push(consumer.next().await.unwrap().unwrap());
        }
        let bodies: Vec<&[u8]> = batch.iter().map(|d| d.data.as_slice()).collect();
        let verdicts = intake.process(&bodies).await.unwrap();
        assert!(verdicts.iter().all(|v| matches!(v, priorfetch_listener::Verdict::Accepted(_))));
        drop(consumer);
        conn.close(320, "killed".into()).await.ok(); // connection gone: deliveries return to the queue
    }
    assert_eq!(queue_depth(&config, &config.queue).await, 300, "unacknowledged deliveries are back");

    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let source = RabbitSource {
        config: config.clone(),
        intake,
        batching: Batching { max: 100, wait: Duration::from_millis(20) },
    };
    let task = tokio::spawn(source.run(shutdown));
    // Ready depth 0 is not enough: deliveries may still be in flight; wait until all 300
    // redeliveries were processed.
    let duplicates = || priorfetch_listener::metrics::EVENTS.with_label_values(&["rabbitmq", "duplicate"]).get();
    wait_for("redelivery processed", Duration::from_secs(30), async || {
        queue_depth(&config, &config.queue).await == 0 && duplicates() >= 300
    })
    .await;
    stop.send(true).unwrap();
    task.await.unwrap();
    assert_eq!(store.count_exams().await.unwrap(), 300, "redelivery was a no-op");
    let duplicates = duplicates();
    assert!(duplicates >= 300, "{duplicates}");
}

/// Dead letters on the queue carry the reason as headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_carry_the_reason() {
    let db = TestDb::postgres().await;
    let store = Store::connect(&db.url, "", 4).await.unwrap();
    store.migrate().await.unwrap();
    let config = config();
    publish_all(&config, &[common::invalid_event(1), common::json_event(1)]).await;
    let intake = Intake::new(
        store.clone(),
        priorfetch_events::DecodeOptions { source: "rabbitmq".into(), hl7: Default::default(), sender_in_key: false },
    );
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(
        RabbitSource {
            config: config.clone(),
            intake,
            batching: Batching { max: 10, wait: Duration::from_millis(20) },
        }
        .run(shutdown),
    );
    wait_for("dead letter", Duration::from_secs(30), async || {
        queue_depth(&config, &config.dead_letter_queue).await == 1
    })
    .await;
    stop.send(true).unwrap();
    task.await.unwrap();
    let conn = Connection::connect(&config.url, ConnectionProperties::default()).await.unwrap();
    let channel = conn.create_channel().await.unwrap();
    let mut consumer = channel
        .basic_consume(
            config.dead_letter_queue.as_str().into(),
            "reader".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let letter = consumer.next().await.unwrap().unwrap();
    let headers = letter.properties.headers().clone().unwrap();
    let reason = headers.inner().get("x-priorfetch-reason").cloned();
    let Some(AMQPValue::LongString(reason)) = reason else { panic!("reason header missing: {headers:?}") };
    assert!(reason.to_string().contains("patient"), "{reason}");
    assert_eq!(store.count_exams().await.unwrap(), 1);
}

/// One poison message in front of 1,000 valid ones: each kind the hostile tester found
/// (NUL bytes, a 5,000-character ID, a 200 KB HL7 field, a wildcard ID, years 0 and 9999)
/// ends as one dead letter naming the field, and the 1,000 commit within seconds. A row
/// the database itself refuses (here a CHECK constraint; in the field, any value the
/// decoder let through) is isolated by splitting the batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_blocks_nothing_behind_it() {
    let db = TestDb::postgres().await;
    let store = Store::connect(&db.url, "", 4).await.unwrap();
    store.migrate().await.unwrap();
    let refused_by_db = serde_json::json!({ "event_id": "db-refuses", "type": "exam.scheduled",
        "patient": { "id": "REFUSED-BY-DB" }, "accession_number": "A1", "scheduled_at": "2026-11-23T09:30:00Z" });
    let mut cases = common::poison_events();
    cases.push(("row the database refuses", refused_by_db.to_string().into_bytes(), "rejected_by_database"));
    use sea_orm::ConnectionTrait;
    store
        .connection()
        .execute_unprepared("ALTER TABLE exams ADD CONSTRAINT test_poison CHECK (patient_id <> 'REFUSED-BY-DB')")
        .await
        .unwrap();

    for (n, (name, poison, field)) in cases.into_iter().enumerate() {
        let config = config();
        let mut payloads = vec![poison];
        payloads.extend((0..1_000).map(|i| common::json_event(100_000 * (n + 1) + i)));
        publish_all(&config, &payloads).await;
        let exams_before = store.count_exams().await.unwrap();
        let intake = Intake::new(
            store.clone(),
            priorfetch_events::DecodeOptions {
                source: "rabbitmq".into(),
                hl7: Default::default(),
                sender_in_key: false,
            },
        );
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let batching = Batching { max: 250, wait: Duration::from_millis(20) };
        let task = tokio::spawn(RabbitSource { config: config.clone(), intake, batching }.run(shutdown));
        let start = Instant::now();
        wait_for(name, Duration::from_secs(20), async || store.count_exams().await.unwrap() == exams_before + 1_000)
            .await;
        let took = start.elapsed();
        wait_for("dead letter", Duration::from_secs(10), async || {
            queue_depth(&config, &config.dead_letter_queue).await == 1
        })
        .await;
        wait_for("queue drained", Duration::from_secs(10), async || queue_depth(&config, &config.queue).await == 0)
            .await;
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), task).await.expect("stops on shutdown").unwrap();

        let letters = store.dead_letters().await.unwrap();
        assert_eq!(letters.len(), n + 1, "{name}: one dead letter per poison message");
        let reason = &letters.last().unwrap().reason;
        assert!(reason.contains(field), "{name}: reason names {field}: {reason}");
        assert!(reason.chars().count() < 700 && !reason.contains('\u{0}'), "{name}: reason clipped: {reason}");
        assert!(took < Duration::from_secs(15), "{name}: 1,000 exams took {took:?}");
        println!("poison '{name}': 1,000 valid exams committed in {:.2}s, 1 dead letter", took.as_secs_f64());
    }
}
