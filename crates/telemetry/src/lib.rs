//! Telemetry: logs, traces, metrics, and the admin HTTP server.
//!
//! - [`init`]: the tracing subscriber (text or JSON, `RUST_LOG` filter) plus an OTLP trace
//!   exporter when the standard `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
//! - [`metrics`]: the process-wide Prometheus registry; each crate registers its own
//!   static metrics there (`priorfetch_` prefix), plus the process metrics (`process_*`).
//! - [`archive_health`]: `priorfetch_archive_up{archive}`, recorded by every component that
//!   talks to an archive, expiring when no one did for a while.
//! - [`admin`]: `/metrics`, `/healthz`, `/readyz` (readiness checks the database), plus
//!   routes a service adds (the HTTP intake's `POST /api/events`).

pub mod admin;
pub mod archive_health;
pub mod metrics;

use opentelemetry::trace::TracerProvider as _;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

pub struct TelemetryOptions<'a> {
    pub format: LogFormat,
    /// Filter used when `RUST_LOG` is unset.
    pub default_filter: &'a str,
    /// `service.name` of exported traces.
    pub service_name: &'a str,
}

/// Flushes exported spans when dropped: keep it alive until the process ends.
pub struct TelemetryGuard {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("telemetry: flushing traces failed: {e}");
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("bad log filter '{0}': {1}")]
    Filter(String, String),
    #[error("cannot set up the OTLP exporter for {endpoint}: {reason}")]
    Otlp { endpoint: String, reason: String },
}

/// Colours only for a person at a terminal: log files, pipes and journald get plain text,
/// and `NO_COLOR` (any non-empty value, <https://no-color.org>) turns them off everywhere.
fn colour_logs() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Installs the global subscriber. Logs go to stderr so command output (tables, JSON)
/// on stdout stays clean. Call once, inside the tokio runtime (the OTLP batch exporter
/// runs on it).
pub fn init(options: TelemetryOptions<'_>) -> Result<TelemetryGuard, TelemetryError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(value) if !value.trim().is_empty() => {
            EnvFilter::try_new(&value).map_err(|e| TelemetryError::Filter(value.clone(), e.to_string()))?
        }
        _ => EnvFilter::try_new(options.default_filter)
            .map_err(|e| TelemetryError::Filter(options.default_filter.to_string(), e.to_string()))?,
    };
    let ansi = colour_logs();
    let fmt = match options.format {
        LogFormat::Text => tracing_subscriber::fmt::layer().with_ansi(ansi).with_writer(std::io::stderr).boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let (otel, provider) = match std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT") {
        Ok(endpoint) if !endpoint.trim().is_empty() => {
            // The exporter reads OTEL_EXPORTER_OTLP_* itself (endpoint, headers, timeout).
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .build()
                .map_err(|e| TelemetryError::Otlp { endpoint: endpoint.clone(), reason: e.to_string() })?;
            let resource =
                opentelemetry_sdk::Resource::builder().with_service_name(options.service_name.to_string()).build();
            let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(resource)
                .build();
            let tracer = provider.tracer("priorfetch");
            opentelemetry::global::set_tracer_provider(provider.clone());
            opentelemetry::global::set_text_map_propagator(
                opentelemetry_sdk::propagation::TraceContextPropagator::new(),
            );
            (Some(tracing_opentelemetry::layer().with_tracer(tracer)), Some(provider))
        }
        _ => (None, None),
    };
    // try_init: a second init (tests) keeps the first subscriber instead of panicking.
    let _ = tracing_subscriber::registry().with(filter).with(fmt).with(otel).try_init();
    Ok(TelemetryGuard { provider })
}
