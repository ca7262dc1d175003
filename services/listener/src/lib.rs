//! The listener: scheduled-exam messages in, one `exams` row each, exactly once.
//!
//! - `intake.rs`: decode a batch, commit it, a verdict per message (shared by all sources).
//! - `rabbitmq.rs`, `kafka.rs`, `http.rs`: the sources; `intake.source` picks one.
//! - `health.rs`: whether the bus intake makes progress (`/readyz`).
//! - `metrics.rs`: `priorfetch_events_total{source,outcome}`, dead letters by reason.
//!
//! Exactly once: the event key (`event_id`, or source + MSH-10 for HL7) is unique in
//! `exams`; a message is acknowledged (or its offset committed) only after its rows are
//! committed, so a crash between commit and ack leads to a redelivery that is a no-op.

pub mod access;
pub mod health;
pub mod http;
pub mod intake;
pub mod kafka;
pub mod metrics;
pub mod rabbitmq;

pub use intake::{Intake, Verdict};
pub use rabbitmq::Batching;

use priorfetch_config::{Config, IntakeSource};
use priorfetch_events::DecodeOptions;
use priorfetch_store::Store;
use std::time::Duration;
use tokio::sync::watch;

pub const DEFAULT_BATCHING: Batching = Batching { max: 500, wait: Duration::from_millis(20) };

pub fn decode_options(config: &Config) -> DecodeOptions {
    let source = match config.intake.source {
        IntakeSource::Http => "http",
        IntakeSource::Rabbitmq => "rabbitmq",
        IntakeSource::Kafka => "kafka",
    };
    DecodeOptions { source: source.to_string(), hl7: config.intake.hl7.clone() }
}

/// The HTTP intake (`POST /api/events`), served by the admin server.
pub fn http_intake(config: &Config, store: Store) -> Intake {
    let options = DecodeOptions { source: "http".into(), ..decode_options(config) };
    Intake::new(store, options).with_dead_letter_limit(config.intake.dead_letter_limit)
}

/// Runs the configured bus source until `shutdown` (the HTTP source is served by the
/// admin server through [`http::routes`]).
pub async fn run(
    config: &Config,
    store: Store,
    shutdown: watch::Receiver<bool>,
) -> Result<(), kafka::KafkaSourceError> {
    let intake = Intake::new(store, decode_options(config)).with_dead_letter_limit(config.intake.dead_letter_limit);
    match config.intake.source {
        IntakeSource::Http => {
            let mut shutdown = shutdown;
            let _ = shutdown.wait_for(|stop| *stop).await;
            Ok(())
        }
        IntakeSource::Rabbitmq => {
            let source = rabbitmq::RabbitSource {
                config: config.intake.rabbitmq.clone(),
                intake,
                // Half the prefetch: the next batch streams in while one commits.
                batching: Batching { max: (config.intake.rabbitmq.prefetch as usize / 2).max(1), ..DEFAULT_BATCHING },
            };
            source.run(shutdown).await;
            Ok(())
        }
        IntakeSource::Kafka => {
            let source = kafka::KafkaSource {
                config: config.intake.kafka.clone(),
                intake,
                batching: DEFAULT_BATCHING,
                overrides: Vec::new(),
            };
            source.run(shutdown).await
        }
    }
}
