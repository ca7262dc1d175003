//! `amqps://` with the CA and client certificate of `intake.rabbitmq.tls`: RabbitMQ behind an
//! OpenSSL TLS endpoint (socat) that wants a client certificate signed by the test CA.

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use priorfetch_config::{RabbitmqConfig, TlsConfig};
use priorfetch_listener::rabbitmq::{RabbitSource, connect, declare_queues};
use priorfetch_listener::{Batching, Intake};
use priorfetch_store::Store;
use priorfetch_testkit::db::TestDb;
use priorfetch_testkit::dicom::TlsTerminator;
use priorfetch_testkit::tls::TestPki;
use std::time::{Duration, Instant};

fn plain_url() -> String {
    std::env::var("PRIORFETCH_TEST_AMQP").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_with_our_ca_and_client_certificate_consumes_and_without_them_fails() {
    let pki = TestPki::new();
    let server = pki.issue("broker", &["localhost"]);
    let client = pki.issue("listener", &["priorfetch"]);
    let port = plain_url().rsplit_once(':').and_then(|(_, p)| p.split('/').next()?.parse().ok()).unwrap_or(5672);
    let tls_broker = TlsTerminator::start_with(&server.cert, &server.key, Some(&pki.ca), port);

    let id = uuid::Uuid::new_v4().simple().to_string();
    let config = RabbitmqConfig {
        url: format!("amqps://guest:guest@localhost:{}/%2f", tls_broker.port),
        queue: format!("pf-tls-{id}"),
        dead_letter_queue: format!("pf-tls-{id}.dead"),
        prefetch: 10,
        tls: Some(TlsConfig {
            ca: Some(pki.ca.clone()),
            cert: Some(client.cert.clone()),
            key: Some(client.key.clone()),
            ..TlsConfig::default()
        }),
    };

    // Events published over plain AMQP arrive through the TLS session.
    let publisher = Connection::connect(&plain_url(), ConnectionProperties::default()).await.unwrap();
    let channel = publisher.create_channel().await.unwrap();
    channel.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    declare_queues(&channel, &config).await.unwrap();
    for i in 0..3 {
        let event = format!(
            r#"{{"event_id":"tls-{id}-{i}","type":"exam.scheduled","patient":{{"id":"MRN{i}"}},
               "accession_number":"A{i}","scheduled_at":"2026-12-23T09:30:00+01:00","modality":"CT"}}"#
        );
        let publish = channel
            .basic_publish(
                "".into(),
                config.queue.as_str().into(),
                BasicPublishOptions::default(),
                event.as_bytes(),
                BasicProperties::default(),
            )
            .await
            .unwrap();
        publish.await.unwrap();
    }

    let db = TestDb::postgres().await;
    let store = Store::connect(&db.url, "", 2).await.unwrap();
    store.migrate().await.unwrap();
    let options =
        priorfetch_events::DecodeOptions { source: "rabbitmq".into(), hl7: Default::default(), sender_in_key: false };
    let source = RabbitSource {
        config: config.clone(),
        intake: Intake::new(store.clone(), options),
        batching: Batching { max: 10, wait: Duration::from_millis(20) },
    };
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(source.run(shutdown));
    let started = Instant::now();
    while store.count_exams().await.unwrap() < 3 {
        assert!(started.elapsed() < Duration::from_secs(30), "events did not arrive over amqps");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.send(true).unwrap();
    running.await.unwrap();

    // Without the client certificate, or without our CA, the session cannot start.
    let no_cert =
        RabbitmqConfig { tls: Some(TlsConfig { ca: Some(pki.ca.clone()), ..TlsConfig::default() }), ..config.clone() };
    assert!(connect(&no_cert).await.is_err(), "the broker's endpoint wants a client certificate");
    let no_ca = RabbitmqConfig {
        tls: Some(TlsConfig { cert: Some(client.cert.clone()), key: Some(client.key.clone()), ..TlsConfig::default() }),
        ..config.clone()
    };
    let error = connect(&no_ca).await.expect_err("the broker's certificate is signed by an unknown CA");
    assert!(error.to_lowercase().contains("certificate"), "{error}");
    assert!(connect(&config).await.is_ok());
    let _ = channel.queue_delete(config.queue.as_str().into(), Default::default()).await;
    let _ = channel.queue_delete(config.dead_letter_queue.as_str().into(), Default::default()).await;
}
