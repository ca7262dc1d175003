//! RabbitMQ source (lapin): durable queue and dead-letter queue declared at start,
//! QoS prefetch, deliveries batched, acknowledged (multiple) only after the batch is
//! committed; invalid payloads published to the dead-letter queue (with publisher
//! confirms) before their ack. A lost connection (broker restart) is retried with
//! backoff: unacknowledged deliveries come back, and the idempotent insert absorbs them.

use crate::intake::{Intake, Verdict};
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use priorfetch_config::{RabbitmqConfig, redact_url};
use std::time::Duration;
use tokio::sync::watch;

/// Batching: at most `max` deliveries, and no more than `wait` after the first.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    pub max: usize,
    pub wait: Duration,
}

pub struct RabbitSource {
    pub config: RabbitmqConfig,
    pub intake: Intake,
    pub batching: Batching,
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("amqp: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("the broker ended the consumer (queue deleted or connection closed)")]
    ConsumerEnded,
    #[error("dead-letter publish not confirmed by the broker")]
    NotConfirmed,
    #[error("intake.rabbitmq.tls: {0}")]
    Tls(String),
}

/// The CA and client certificate of `intake.rabbitmq.tls` for an `amqps://` URL, read at
/// each connect so that rotated files are picked up by the next session.
pub fn tls_config(tls: Option<&priorfetch_config::TlsConfig>) -> Result<OwnedTLSConfig, String> {
    let mut owned = OwnedTLSConfig::default();
    let Some(tls) = tls else { return Ok(owned) };
    let read = |path: &std::path::Path| std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()));
    if let Some(ca) = &tls.ca {
        let pem = read(ca)?;
        owned.cert_chain = Some(String::from_utf8(pem).map_err(|_| format!("{}: not a PEM file", ca.display()))?);
    }
    if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
        owned.identity = Some(OwnedIdentity::PKCS8 { pem: read(cert)?, key: read(key)? });
    }
    Ok(owned)
}

/// Connects to `config.url`; `amqps://` URLs use `config.tls` (CA, client certificate).
pub async fn connect(config: &RabbitmqConfig) -> Result<Connection, String> {
    let tls = tls_config(config.tls.as_ref())?;
    let runtime = lapin::runtime::default_runtime().map_err(|e| e.to_string())?;
    Connection::connect_with_config(&config.url, ConnectionProperties::default(), tls, runtime)
        .await
        .map_err(|e| e.to_string())
}

impl RabbitSource {
    /// Consumes until `shutdown` turns true; reconnects with backoff (200 ms doubling to
    /// 30 s, back to 200 ms after a session that stayed up for a while).
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Reconnect::default();
        loop {
            if *shutdown.borrow() {
                return;
            }
            let started = tokio::time::Instant::now();
            let result = self.session(&mut shutdown).await;
            let delay = backoff.next_delay(started.elapsed());
            match result {
                Ok(()) => return, // clean shutdown
                Err(e) => {
                    crate::health::failing(&format!("rabbitmq: {e}"));
                    tracing::warn!(
                    url = %redact_url(&self.config.url), error = %e, retry_in = ?delay,
                    "rabbitmq session ended; reconnecting"
                    )
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    async fn session(&self, shutdown: &mut watch::Receiver<bool>) -> Result<(), SessionError> {
        let tls = tls_config(self.config.tls.as_ref()).map_err(SessionError::Tls)?;
        let runtime = lapin::runtime::default_runtime()?;
        let connection =
            Connection::connect_with_config(&self.config.url, ConnectionProperties::default(), tls, runtime).await?;
        let channel = connection.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        declare_queues(&channel, &self.config).await?;
        channel.basic_qos(self.config.prefetch, BasicQosOptions::default()).await?;
        let mut consumer = channel
            .basic_consume(
                self.config.queue.as_str().into(),
                "priorfetch-listener".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        tracing::info!(queue = %self.config.queue, prefetch = self.config.prefetch, "consuming from rabbitmq");
        crate::health::healthy();
        loop {
            // First delivery of a batch, or shutdown.
            let first = tokio::select! {
                next = consumer.next() => next,
                _ = shutdown.changed() => {
                    let _ = connection.close(200, "shutdown".into()).await;
                    return Ok(());
                }
            };
            let Some(first) = first else { return Err(SessionError::ConsumerEnded) };
            let mut batch = vec![first?];
            let deadline = tokio::time::Instant::now() + self.batching.wait;
            while batch.len() < self.batching.max {
                match tokio::time::timeout_at(deadline, consumer.next()).await {
                    Ok(Some(delivery)) => batch.push(delivery?),
                    Ok(None) | Err(_) => break,
                }
            }
            let last_tag = batch.last().map(|d| d.delivery_tag).unwrap_or_default();
            let payloads: Vec<&[u8]> = batch.iter().map(|d| d.data.as_slice()).collect();
            let traceparents: Vec<Option<&str>> = batch.iter().map(|d| traceparent(&d.properties)).collect();
            let verdicts = match self.intake.process_traced(&payloads, &traceparents).await {
                Ok(v) => v,
                Err(e) => {
                    // Nothing committed for sure: hand the batch back and slow down.
                    tracing::warn!(error = %e, batch = batch.len(), "database unavailable; requeueing batch");
                    crate::health::failing("database unavailable");
                    channel.basic_nack(last_tag, BasicNackOptions { multiple: true, requeue: true }).await?;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            for (delivery, verdict) in batch.iter().zip(&verdicts) {
                if let Verdict::Invalid { code, reason, .. } = verdict {
                    publish_dead_letter(&channel, &self.config.dead_letter_queue, &delivery.data, code, reason).await?;
                }
            }
            channel.basic_ack(last_tag, BasicAckOptions { multiple: true }).await?;
            crate::health::healthy();
        }
    }
}

/// The message's W3C `traceparent` header (text), which the exam's trace continues.
fn traceparent(properties: &BasicProperties) -> Option<&str> {
    let value = properties.headers().as_ref()?.inner().get(priorfetch_telemetry::traces::TRACEPARENT)?;
    match value {
        AMQPValue::LongString(text) => std::str::from_utf8(text.as_bytes()).ok(),
        AMQPValue::ShortString(text) => Some(text.as_str()),
        _ => None,
    }
}

/// Reconnect delays: doubling while sessions keep failing, and starting over once a
/// session was healthy for [`Reconnect::HEALTHY`], so that one outage next week does not
/// inherit the 30 s delay of an outage today.
#[derive(Debug)]
pub struct Reconnect {
    next: Duration,
}

impl Reconnect {
    pub const INITIAL: Duration = Duration::from_millis(200);
    pub const MAX: Duration = Duration::from_secs(30);
    pub const HEALTHY: Duration = Duration::from_secs(30);

    /// The delay before the next attempt, given how long the session that ended lasted.
    pub fn next_delay(&mut self, lasted: Duration) -> Duration {
        if lasted >= Self::HEALTHY {
            self.next = Self::INITIAL;
        }
        let delay = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        delay
    }
}

impl Default for Reconnect {
    fn default() -> Self {
        Reconnect { next: Self::INITIAL }
    }
}

/// Declares the queue and its dead-letter queue (both durable). Idempotent.
pub async fn declare_queues(channel: &Channel, config: &RabbitmqConfig) -> Result<(), lapin::Error> {
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    channel.queue_declare(config.dead_letter_queue.as_str().into(), durable, FieldTable::default()).await?;
    channel.queue_declare(config.queue.as_str().into(), durable, FieldTable::default()).await?;
    Ok(())
}

async fn publish_dead_letter(
    channel: &Channel,
    queue: &str,
    payload: &[u8],
    code: &str,
    reason: &str,
) -> Result<(), SessionError> {
    let mut headers = FieldTable::default();
    headers.insert(ShortString::from("x-priorfetch-reason"), AMQPValue::LongString(reason.into()));
    headers.insert(ShortString::from("x-priorfetch-code"), AMQPValue::LongString(code.into()));
    let properties = BasicProperties::default().with_headers(headers).with_delivery_mode(2);
    let confirm = channel
        .basic_publish("".into(), queue.into(), BasicPublishOptions::default(), payload, properties)
        .await?
        .await?;
    if confirm.is_nack() {
        return Err(SessionError::NotConfirmed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Reconnect;
    use std::time::Duration;

    #[test]
    fn the_traceparent_header_is_read_as_text() {
        use lapin::BasicProperties;
        use lapin::types::{AMQPValue, FieldTable, ShortString};
        let given = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let with = |value: AMQPValue| {
            let mut headers = FieldTable::default();
            headers.insert(ShortString::from("traceparent"), value);
            BasicProperties::default().with_headers(headers)
        };
        assert_eq!(super::traceparent(&with(AMQPValue::LongString(given.into()))), Some(given));
        assert_eq!(super::traceparent(&with(AMQPValue::ShortString(given.into()))), Some(given));
        assert_eq!(super::traceparent(&with(AMQPValue::LongUInt(7))), None);
        assert_eq!(super::traceparent(&BasicProperties::default()), None);
    }

    #[test]
    fn reconnect_backoff_grows_and_resets_after_a_healthy_session() {
        let mut backoff = Reconnect::default();
        let quick = Duration::from_millis(5);
        let delays: Vec<Duration> = (0..10).map(|_| backoff.next_delay(quick)).collect();
        assert_eq!(delays[0], Reconnect::INITIAL);
        assert_eq!(delays[1], Reconnect::INITIAL * 2);
        assert_eq!(*delays.last().unwrap(), Reconnect::MAX);
        assert_eq!(backoff.next_delay(Reconnect::HEALTHY), Reconnect::INITIAL, "a healthy session starts over");
        assert_eq!(backoff.next_delay(quick), Reconnect::INITIAL * 2);
    }
}
