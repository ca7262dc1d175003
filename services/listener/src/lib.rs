//! The listener: scheduled-exam messages in, one `exams` row each, exactly once.
//!
//! - `intake.rs`: decode a batch, commit it, a verdict per message (shared by all sources).
//! - `rabbitmq.rs`, `kafka.rs`, `http.rs`, `mllp/`: the sources; `intake.source` names
//!   one or several that run at once.
//! - `worklist.rs`: Modality Worklist polling (source `worklist`): steps become exams,
//!   changed steps update them, vanished future steps cancel them.
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
pub mod mllp;
pub mod rabbitmq;
pub mod worklist;

pub use intake::{Intake, Verdict};
pub use rabbitmq::Batching;

use priorfetch_config::{Config, IntakeSource};
use priorfetch_events::DecodeOptions;
use priorfetch_store::Store;
use std::time::Duration;
use tokio::sync::watch;

pub const DEFAULT_BATCHING: Batching = Batching { max: 500, wait: Duration::from_millis(20) };

/// How a source decodes: its name goes into HL7 event keys; MLLP keys also carry the
/// sending application and facility (MSH-3, MSH-4), since many interface engines share
/// one listener and each numbers its messages (MSH-10) on its own.
pub fn decode_options(config: &Config, source: IntakeSource) -> DecodeOptions {
    DecodeOptions {
        source: source.as_str().to_string(),
        hl7: config.intake.hl7.clone(),
        sender_in_key: source == IntakeSource::Mllp,
    }
}

fn intake_for(config: &Config, store: Store, source: IntakeSource) -> Intake {
    Intake::new(store, decode_options(config, source)).with_dead_letter_limit(config.intake.dead_letter_limit)
}

/// The intake of `source` as the listener runs it (its decode options and dead-letter
/// bound): an operator's replay of a dead letter goes through the one its letter came from.
pub fn intake_of(config: &Config, store: Store, source: IntakeSource) -> Intake {
    intake_for(config, store, source)
}

/// The HTTP intake (`POST /api/events`), served by the admin server.
pub fn http_intake(config: &Config, store: Store) -> Intake {
    intake_for(config, store, IntakeSource::Http)
}

#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    #[error(transparent)]
    Kafka(#[from] kafka::KafkaSourceError),
    #[error(transparent)]
    Mllp(#[from] mllp::MllpError),
    #[error(transparent)]
    Worklist(#[from] worklist::WorklistSetupError),
}

/// Runs every configured source until `shutdown` (the HTTP source is served by the admin
/// server through [`http::routes`]). The first source that fails ends the listener: a
/// listener that silently lost one of its feeds would look healthy while exams go missing.
pub async fn run(config: &Config, store: Store, shutdown: watch::Receiver<bool>) -> Result<(), ListenerError> {
    // The listener claims nothing; it beats so `priorfetch_workers_alive{role="listener"}`
    // (read from the database by every process) shows it.
    let q = &config.queue;
    let beat = priorfetch_store::HeartbeatOptions { every: q.heartbeat, dead_after: q.dead_after, exam_lease: None };
    let (_heartbeat, _) =
        store.start_worker(&priorfetch_store::worker_identity(&config.queue.instance, "listener"), beat).await;
    let mut sources: tokio::task::JoinSet<Result<(), ListenerError>> = tokio::task::JoinSet::new();
    for source in config.intake.source.iter() {
        let intake = intake_for(config, store.clone(), source);
        let shutdown = shutdown.clone();
        match source {
            IntakeSource::Http => {}
            IntakeSource::Rabbitmq => {
                let source = rabbitmq::RabbitSource {
                    config: config.intake.rabbitmq.clone(),
                    intake,
                    // Half the prefetch: the next batch streams in while one commits.
                    batching: Batching {
                        max: (config.intake.rabbitmq.prefetch as usize / 2).max(1),
                        ..DEFAULT_BATCHING
                    },
                };
                sources.spawn(async move {
                    source.run(shutdown).await;
                    Ok(())
                });
            }
            IntakeSource::Kafka => {
                let source = kafka::KafkaSource {
                    config: config.intake.kafka.clone(),
                    intake,
                    batching: DEFAULT_BATCHING,
                    overrides: Vec::new(),
                };
                sources.spawn(async move { Ok(source.run(shutdown).await?) });
            }
            IntakeSource::Mllp => {
                let listener = mllp::MllpListener::bind(&config.intake.mllp, intake).await?;
                sources.spawn(async move { Ok(listener.run(shutdown).await?) });
            }
            IntakeSource::Worklist => {
                let poller = worklist::WorklistPoller::new(config, store.clone(), intake)?;
                sources.spawn(async move {
                    poller.run(shutdown).await;
                    Ok(())
                });
            }
        }
    }
    let mut shutdown = shutdown;
    loop {
        tokio::select! {
            ended = sources.join_next() => match ended {
                None => break,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => return Err(e),
                Some(Err(panic)) => {
                    tracing::error!(error = %panic, "an intake source task ended abnormally");
                }
            },
            _ = mllp::stopped(&mut shutdown) => {
                while sources.join_next().await.is_some() {}
                break;
            }
        }
    }
    if !*shutdown.borrow() {
        // Only the HTTP source (or none that runs a task): wait for the stop.
        mllp::stopped(&mut shutdown).await;
    }
    Ok(())
}
