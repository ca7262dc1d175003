//! Intake benchmark (`scripts/bench-intake`): sustained events/s from RabbitMQ and from
//! Kafka into Postgres, through the real sources with batched commits. Prints figures.
//! `BENCH_EVENTS` (default 50,000) events are published first, then the clock runs from
//! the listener's start until the last exam row is committed.

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use priorfetch_config::{KafkaConfig, RabbitmqConfig, Secret};
use priorfetch_listener::{Batching, Intake};
use priorfetch_store::Store;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::time::{Duration, Instant};

fn event(i: usize) -> Vec<u8> {
    serde_json::json!({
        "event_id": format!("bench-{i}"), "type": "exam.scheduled",
        "patient": { "id": format!("MRN{}", i % 10_007), "issuer": "HOSP" },
        "accession_number": format!("ACC{i}"), "scheduled_at": "2026-11-23T09:30:00+01:00",
        "priority": "routine", "modality": "CT", "body_part": "CHEST"
    })
    .to_string()
    .into_bytes()
}

async fn fresh_store() -> anyhow::Result<(priorfetch_testkit::db::TestDb, Store)> {
    let db = priorfetch_testkit::db::TestDb::postgres().await;
    let store = Store::connect(&db.url, "", 8).await?;
    store.migrate().await?;
    Ok((db, store))
}

async fn wait_count(store: &Store, n: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    while store.count_exams().await? < n {
        anyhow::ensure!(Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = priorfetch_testkit::bench::env_or("BENCH_EVENTS", 50_000);
    let id = uuid::Uuid::new_v4().simple().to_string();

    // RabbitMQ -> Postgres
    let (_db, store) = fresh_store().await?;
    let config = RabbitmqConfig {
        url: std::env::var("PRIORFETCH_TEST_AMQP").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into()),
        queue: format!("pf-bench-{id}"),
        dead_letter_queue: format!("pf-bench-{id}.dead"),
        prefetch: 2000, // twice the batch: the next batch streams in while one commits
        tls: None,
    };
    let conn = Connection::connect(&config.url, ConnectionProperties::default()).await?;
    let channel = conn.create_channel().await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    priorfetch_listener::rabbitmq::declare_queues(&channel, &config).await?;
    let mut confirms = Vec::with_capacity(n);
    for i in 0..n {
        confirms.push(
            channel
                .basic_publish(
                    "".into(),
                    config.queue.as_str().into(),
                    BasicPublishOptions::default(),
                    &event(i),
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await?,
        );
    }
    for c in confirms {
        c.await?;
    }
    let intake = Intake::new(
        store.clone(),
        priorfetch_events::DecodeOptions { source: "rabbitmq".into(), hl7: Default::default(), sender_in_key: false },
    );
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let start = Instant::now();
    let task = tokio::spawn(
        priorfetch_listener::rabbitmq::RabbitSource {
            config,
            intake,
            batching: Batching { max: 1000, wait: Duration::from_millis(20) },
        }
        .run(shutdown),
    );
    wait_count(&store, n as u64).await?;
    let secs = start.elapsed().as_secs_f64();
    println!("bench-intake: rabbitmq->postgres {n} events in {secs:.2} s = {:.0} events/s", n as f64 / secs);
    stop.send(true)?;
    task.await?;

    // Kafka -> Postgres
    let (_db2, store) = fresh_store().await?;
    let brokers = std::env::var("PRIORFETCH_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let topic = format!("pf-bench-{id}");
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", &brokers).create()?;
    let dead_topic = format!("{topic}.dead");
    let topics = [
        rdkafka::admin::NewTopic::new(&topic, 4, rdkafka::admin::TopicReplication::Fixed(1)),
        rdkafka::admin::NewTopic::new(&dead_topic, 1, rdkafka::admin::TopicReplication::Fixed(1)),
    ];
    for r in admin.create_topics(&topics, &rdkafka::admin::AdminOptions::new()).await? {
        r.map_err(|(t, e)| anyhow::anyhow!("create topic {t}: {e}"))?;
    }
    let producer: FutureProducer =
        ClientConfig::new().set("bootstrap.servers", &brokers).set("linger.ms", "5").create()?;
    let mut sends = Vec::with_capacity(n);
    for i in 0..n {
        let (producer, topic) = (producer.clone(), topic.clone());
        sends.push(tokio::spawn(async move {
            let key = format!("k{}", i % 16);
            producer
                .send(FutureRecord::to(&topic).key(&key).payload(&event(i)), Duration::from_secs(60))
                .await
                .map(|_| ())
        }));
    }
    for s in sends {
        s.await?.map_err(|(e, _)| e)?;
    }
    let intake = Intake::new(
        store.clone(),
        priorfetch_events::DecodeOptions { source: "kafka".into(), hl7: Default::default(), sender_in_key: false },
    );
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let start = Instant::now();
    let source = priorfetch_listener::kafka::KafkaSource {
        config: KafkaConfig {
            brokers,
            topic: topic.clone(),
            group_id: format!("pf-bench-{id}"),
            dead_letter_topic: format!("{topic}.dead"),
            password: Secret::default(),
            security_protocol: Default::default(),
            sasl_mechanism: None,
            username: None,
            tls: None,
        },
        intake,
        batching: Batching { max: 1000, wait: Duration::from_millis(20) },
        overrides: vec![("session.timeout.ms".into(), "6000".into())],
    };
    let task = tokio::spawn(source.run(shutdown));
    wait_count(&store, n as u64).await?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "bench-intake: kafka->postgres {n} events in {secs:.2} s = {:.0} events/s (includes the consumer group join)",
        n as f64 / secs
    );
    stop.send(true)?;
    task.await??;
    Ok(())
}
