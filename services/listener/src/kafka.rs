//! Kafka source (rdkafka): a consumer group with `enable.auto.commit=false`; messages are
//! batched, committed to the database, invalid ones produced to the dead-letter topic
//! (with reason headers), and only then are the offsets committed. A poison message is
//! just an invalid one: dead-lettered and passed, it never blocks its partition.

use crate::intake::{Intake, Verdict};
use crate::rabbitmq::Batching;
use futures::StreamExt;
use priorfetch_config::KafkaConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::watch;

pub struct KafkaSource {
    pub config: KafkaConfig,
    pub intake: Intake,
    pub batching: Batching,
    /// Extra librdkafka settings (tests lower `session.timeout.ms`).
    pub overrides: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum KafkaSourceError {
    #[error("kafka client setup failed for brokers {brokers}: {source}")]
    Setup { brokers: String, source: rdkafka::error::KafkaError },
}

/// The brokers and security settings of `intake.kafka` as librdkafka properties: TLS
/// (`ssl.ca.location`, client certificate) and SASL pass straight through.
pub fn connection_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &kafka.brokers).set("security.protocol", kafka.security_protocol.as_str());
    if let Some(tls) = &kafka.tls {
        let path = |p: &std::path::Path| p.display().to_string();
        if let Some(ca) = &tls.ca {
            config.set("ssl.ca.location", path(ca));
        }
        if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
            config.set("ssl.certificate.location", path(cert)).set("ssl.key.location", path(key));
        }
    }
    if let Some(mechanism) = &kafka.sasl_mechanism {
        config.set("sasl.mechanisms", mechanism);
    }
    if let Some(username) = &kafka.username {
        config.set("sasl.username", username);
    }
    if !kafka.password.is_empty() {
        config.set("sasl.password", kafka.password.expose());
    }
    config
}

/// The message's W3C `traceparent` header, which the exam's trace continues.
fn traceparent(message: &rdkafka::message::OwnedMessage) -> Option<&str> {
    use rdkafka::message::Headers;
    let headers = message.headers()?;
    headers
        .iter()
        .find(|h| h.key == priorfetch_telemetry::traces::TRACEPARENT)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

impl KafkaSource {
    fn client_config(&self) -> ClientConfig {
        let mut config = connection_config(&self.config);
        config
            .set("group.id", &self.config.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            .set("message.timeout.ms", "30000");
        for (k, v) in &self.overrides {
            config.set(k, v);
        }
        config
    }

    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> Result<(), KafkaSourceError> {
        let setup = |source| KafkaSourceError::Setup { brokers: self.config.brokers.clone(), source };
        let consumer: StreamConsumer = self.client_config().create().map_err(setup)?;
        let producer: FutureProducer = self.client_config().create().map_err(setup)?;
        consumer.subscribe(&[self.config.topic.as_str()]).map_err(setup)?;
        tracing::info!(topic = %self.config.topic, group = %self.config.group_id, "consuming from kafka");
        let mut stream = consumer.stream();
        loop {
            let first = tokio::select! {
                next = stream.next() => next,
                _ = shutdown.changed() => return Ok(()),
            };
            let Some(first) = first else { return Ok(()) };
            let mut batch = Vec::new();
            match first {
                Ok(m) => batch.push(m.detach()),
                Err(e) => {
                    // librdkafka retries broker connections itself; keep polling.
                    tracing::warn!(error = %e, "kafka consume error");
                    crate::health::failing(&format!("kafka: {e}"));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
            let deadline = tokio::time::Instant::now() + self.batching.wait;
            while batch.len() < self.batching.max {
                match tokio::time::timeout_at(deadline, stream.next()).await {
                    Ok(Some(Ok(m))) => batch.push(m.detach()),
                    Ok(Some(Err(e))) => tracing::warn!(error = %e, "kafka consume error"),
                    Ok(None) | Err(_) => break,
                }
            }
            let payloads: Vec<&[u8]> = batch.iter().map(|m| m.payload().unwrap_or_default()).collect();
            let traceparents: Vec<Option<&str>> = batch.iter().map(traceparent).collect();
            let verdicts = loop {
                match self.intake.process_traced(&payloads, &traceparents).await {
                    Ok(v) => break v,
                    Err(e) => {
                        // Offsets stay uncommitted; retry the same batch once the database is back.
                        tracing::warn!(error = %e, batch = batch.len(), "database unavailable; retrying batch");
                        crate::health::failing("database unavailable");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                            _ = shutdown.changed() => return Ok(()),
                        }
                    }
                }
            };
            for (message, verdict) in batch.iter().zip(&verdicts) {
                if let Verdict::Invalid { code, reason, .. } = verdict {
                    let headers = OwnedHeaders::new()
                        .insert(Header { key: "x-priorfetch-reason", value: Some(reason.as_str()) })
                        .insert(Header { key: "x-priorfetch-code", value: Some(*code) })
                        .insert(Header {
                            key: "x-priorfetch-origin",
                            value: Some(&format!("{}/{}/{}", message.topic(), message.partition(), message.offset())),
                        });
                    let mut record = FutureRecord::<[u8], [u8]>::to(&self.config.dead_letter_topic)
                        .payload(message.payload().unwrap_or_default())
                        .headers(headers);
                    if let Some(key) = message.key() {
                        record = record.key(key);
                    }
                    if let Err((e, _)) = producer.send(record, Duration::from_secs(30)).await {
                        // The dead letter is in the database already; do not block the partition.
                        tracing::error!(error = %e, "dead-letter topic publish failed");
                    }
                }
            }
            // Commit the next offset of every partition in the batch.
            let mut next: HashMap<(String, i32), i64> = HashMap::new();
            for m in &batch {
                let entry = next.entry((m.topic().to_string(), m.partition())).or_insert(0);
                *entry = (*entry).max(m.offset() + 1);
            }
            let mut offsets = TopicPartitionList::new();
            for ((topic, partition), offset) in next {
                let _ = offsets.add_partition_offset(&topic, partition, Offset::Offset(offset));
            }
            crate::health::healthy();
            if let Err(e) = consumer.commit(&offsets, CommitMode::Sync) {
                // A rebalance can revoke the partition: the next owner re-reads and the
                // idempotent insert makes that harmless.
                tracing::warn!(error = %e, "offset commit failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::Timestamp;
    use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};

    #[test]
    fn the_traceparent_header_is_read_as_text() {
        let given = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let message = |headers: Option<OwnedHeaders>| {
            OwnedMessage::new(Some(b"{}".to_vec()), None, "t".into(), Timestamp::NotAvailable, 0, 1, headers)
        };
        let headers = OwnedHeaders::new()
            .insert(Header { key: "x-other", value: Some("y") })
            .insert(Header { key: "traceparent", value: Some(given) });
        let traced = message(Some(headers));
        assert_eq!(super::traceparent(&traced), Some(given));
        assert_eq!(super::traceparent(&message(None)), None);
    }
}
