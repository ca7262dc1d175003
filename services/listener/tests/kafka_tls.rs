//! Kafka over TLS (`security_protocol = "ssl"` with `intake.kafka.tls`): a broker of its own
//! (tansu) advertised behind an OpenSSL endpoint (socat) that wants a client certificate
//! signed by the test CA. Admin, producer and the listener's consumer all go through TLS.

use priorfetch_config::{KafkaConfig, KafkaSecurity, Secret, TlsConfig};
use priorfetch_listener::kafka::{KafkaSource, connection_config};
use priorfetch_listener::{Batching, Intake};
use priorfetch_store::Store;
use priorfetch_testkit::db::TestDb;
use priorfetch_testkit::dicom::TlsTerminator;
use priorfetch_testkit::ports::free_port;
use priorfetch_testkit::tls::TestPki;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A tansu broker on `port` that tells clients to connect to `localhost:advertised`.
struct Tansu(Child);

impl Tansu {
    fn start(port: u16, advertised: u16) -> Tansu {
        let bin = std::env::var("PRIORFETCH_TANSU_BIN")
            .expect("PRIORFETCH_TANSU_BIN: run the tests through scripts/test (it builds tansu)");
        let child = Command::new(bin)
            .args(["broker", "--listener-url", &format!("tcp://127.0.0.1:{port}")])
            .args(["--advertised-listener-url", &format!("tcp://localhost:{advertised}")])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(30), "tansu did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Tansu(child)
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_with_our_ca_and_client_certificate_consumes_and_without_the_certificate_fails() {
    let pki = TestPki::new();
    let broker_cert = pki.issue("broker", &["localhost"]);
    let client = pki.issue("listener", &["priorfetch"]);
    let plain = free_port();
    // socat picks its own port; tansu must advertise it, so the terminator starts first
    // (it connects upstream only when a client comes).
    let tls = TlsTerminator::start_with(&broker_cert.cert, &broker_cert.key, Some(&pki.ca), plain);
    let _broker = Tansu::start(plain, tls.port);

    let id = uuid::Uuid::new_v4().simple().to_string();
    let config = KafkaConfig {
        brokers: format!("localhost:{}", tls.port),
        topic: format!("pf-tls-{id}"),
        group_id: format!("pf-tls-{id}"),
        dead_letter_topic: format!("pf-tls-{id}.dead"),
        password: Secret::default(),
        security_protocol: KafkaSecurity::Ssl,
        sasl_mechanism: None,
        username: None,
        tls: Some(TlsConfig {
            ca: Some(pki.ca.clone()),
            cert: Some(client.cert.clone()),
            key: Some(client.key.clone()),
            ..TlsConfig::default()
        }),
    };

    let admin: AdminClient<DefaultClientContext> = connection_config(&config).create().unwrap();
    let topics = [&config.topic, &config.dead_letter_topic].map(|t| NewTopic::new(t, 1, TopicReplication::Fixed(1)));
    let created = tokio::time::timeout(Duration::from_secs(30), admin.create_topics(&topics, &AdminOptions::new()))
        .await
        .expect("topics created over TLS within 30 s")
        .unwrap();
    for topic in created {
        topic.expect("topic created");
    }
    let producer: FutureProducer = connection_config(&config).create().unwrap();
    for i in 0..3 {
        let event = format!(
            r#"{{"event_id":"ktls-{id}-{i}","type":"exam.scheduled","patient":{{"id":"MRN{i}"}},
               "accession_number":"A{i}","scheduled_at":"2026-12-23T09:30:00+01:00","modality":"CT"}}"#
        );
        producer
            .send(FutureRecord::<str, str>::to(&config.topic).payload(&event), Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)
            .expect("produced over TLS");
    }

    let db = TestDb::postgres().await;
    let store = Store::connect(&db.url, "", 2).await.unwrap();
    store.migrate().await.unwrap();
    let options =
        priorfetch_events::DecodeOptions { source: "kafka".into(), hl7: Default::default(), sender_in_key: false };
    let source = KafkaSource {
        config: config.clone(),
        intake: Intake::new(store.clone(), options),
        batching: Batching { max: 10, wait: Duration::from_millis(20) },
        overrides: vec![("session.timeout.ms".into(), "6000".into())],
    };
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(source.run(shutdown));
    let started = Instant::now();
    while store.count_exams().await.unwrap() < 3 {
        assert!(started.elapsed() < Duration::from_secs(60), "events did not arrive over TLS");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.send(true).unwrap();
    running.await.unwrap().unwrap();

    // The same client without its certificate: the endpoint refuses the handshake.
    let no_cert =
        KafkaConfig { tls: Some(TlsConfig { ca: Some(pki.ca.clone()), ..TlsConfig::default() }), ..config.clone() };
    let consumer: BaseConsumer = connection_config(&no_cert).set("group.id", "pf-tls-none").create().unwrap();
    let metadata =
        tokio::task::spawn_blocking(move || consumer.fetch_metadata(None, Duration::from_secs(5))).await.unwrap();
    assert!(metadata.is_err(), "no metadata without a client certificate");
}
