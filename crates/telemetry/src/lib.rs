//! Telemetry: logs, traces, metrics, and the admin HTTP server.
//!
//! - [`init`]: the tracing subscriber (text or JSON, `RUST_LOG` filter) plus an OTLP trace
//!   exporter when the standard `OTEL_EXPORTER_OTLP_ENDPOINT` is set: gRPC or
//!   HTTP/protobuf by `OTEL_EXPORTER_OTLP_PROTOCOL`, resource `service.name` and a
//!   `service.instance.id` unique to the process.
//! - [`traces`]: the exam's trace across processes (`traceparent` to and from spans).
//! - [`metrics`]: the process-wide Prometheus registry; each crate registers its own
//!   static metrics there (`priorfetch_` prefix), plus the process metrics (`process_*`).
//! - [`archive_health`]: `priorfetch_archive_up{archive}`, recorded by every component that
//!   talks to an archive, expiring when no one did for a while.
//! - [`admin`]: `/metrics`, `/healthz`, `/readyz` (readiness checks the database), plus
//!   routes a service adds (the HTTP intake's `POST /api/events`).

pub mod admin;
pub mod archive_health;
pub mod metrics;
pub mod traces;

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
    /// `service.name` of exported traces (`OTEL_SERVICE_NAME` overrides it).
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
    #[error("OTEL_EXPORTER_OTLP_PROTOCOL='{0}' is not supported: use grpc or http/protobuf")]
    Protocol(String),
}

/// How spans travel to the collector (`OTEL_EXPORTER_OTLP_PROTOCOL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// `grpc` (the default; port 4317 by convention).
    Grpc,
    /// `http/protobuf`: `POST {endpoint}/v1/traces` (port 4318 by convention).
    HttpProtobuf,
}

impl OtlpProtocol {
    /// The protocol an `OTEL_EXPORTER_OTLP_PROTOCOL` value names: unset or empty is gRPC;
    /// `http/json` and anything else is an error ([`init`] warns and uses gRPC).
    pub fn parse(value: Option<&str>) -> Result<OtlpProtocol, TelemetryError> {
        match value.map(str::trim) {
            None | Some("") | Some("grpc") => Ok(OtlpProtocol::Grpc),
            Some("http/protobuf") => Ok(OtlpProtocol::HttpProtobuf),
            Some(other) => Err(TelemetryError::Protocol(other.to_string())),
        }
    }
}

/// The resource of exported spans: `service.name` from `OTEL_SERVICE_NAME`, else
/// `configured`; `service.instance.id` from `OTEL_RESOURCE_ATTRIBUTES` when it sets one,
/// else a fresh UUID, so replicas (and the three roles of one host) stay apart.
/// Other `OTEL_RESOURCE_ATTRIBUTES` keys are kept.
fn resource(configured: &str) -> opentelemetry_sdk::Resource {
    let service_name = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| configured.to_string());
    let mut builder = opentelemetry_sdk::Resource::builder().with_service_name(service_name);
    let attributes = std::env::var("OTEL_RESOURCE_ATTRIBUTES").unwrap_or_default();
    let instance_set =
        attributes.split(',').any(|pair| pair.split_once('=').is_some_and(|(k, _)| k.trim() == "service.instance.id"));
    if !instance_set {
        builder = builder
            .with_attribute(opentelemetry::KeyValue::new("service.instance.id", uuid::Uuid::new_v4().to_string()));
    }
    builder.build()
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
            // A protocol we do not speak is reported and gRPC used: traces are worth less
            // than the service, and the subscriber is not up yet to log it.
            let protocol = OtlpProtocol::parse(std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL").ok().as_deref())
                .unwrap_or_else(|e| {
                    eprintln!("warning: telemetry: {e}; exporting traces over grpc");
                    OtlpProtocol::Grpc
                });
            // The exporter reads OTEL_EXPORTER_OTLP_* itself (endpoint, headers, timeout).
            let builder = opentelemetry_otlp::SpanExporter::builder();
            let exporter = match protocol {
                OtlpProtocol::Grpc => builder.with_tonic().build(),
                OtlpProtocol::HttpProtobuf => {
                    use opentelemetry_otlp::WithExportConfig;
                    builder.with_http().with_protocol(opentelemetry_otlp::Protocol::HttpBinary).build()
                }
            }
            .map_err(|e| TelemetryError::Otlp { endpoint: endpoint.clone(), reason: e.to_string() })?;
            let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(resource(options.service_name))
                .build();
            let tracer = provider.tracer("priorfetch");
            opentelemetry::global::set_tracer_provider(provider.clone());
            opentelemetry::global::set_text_map_propagator(
                opentelemetry_sdk::propagation::TraceContextPropagator::new(),
            );
            traces::set_exporting(true);
            // Spans of our crates only, without the log events inside them: a span's
            // attributes are what its `info_span!` names (no PHI), and neither library
            // spans (database, HTTP clients, the exporter's own) nor log lines leave the
            // process this way.
            // Not bound by the log filter either: `RUST_LOG=warn` quietens logs, not traces.
            let only_our_spans = tracing_subscriber::filter::filter_fn(|meta| {
                meta.is_span() && meta.target().starts_with("priorfetch") && *meta.level() <= tracing::Level::INFO
            });
            (Some(tracing_opentelemetry::layer().with_tracer(tracer).with_filter(only_our_spans)), Some(provider))
        }
        _ => (None, None),
    };
    // try_init: a second init (tests) keeps the first subscriber instead of panicking.
    let _ = tracing_subscriber::registry().with(fmt.with_filter(filter)).with(otel).try_init();
    Ok(TelemetryGuard { provider })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otlp_protocol_is_grpc_unless_http_protobuf_is_named() {
        assert_eq!(OtlpProtocol::parse(None).unwrap(), OtlpProtocol::Grpc);
        assert_eq!(OtlpProtocol::parse(Some("")).unwrap(), OtlpProtocol::Grpc);
        assert_eq!(OtlpProtocol::parse(Some("grpc")).unwrap(), OtlpProtocol::Grpc);
        assert_eq!(OtlpProtocol::parse(Some("http/protobuf")).unwrap(), OtlpProtocol::HttpProtobuf);
        let refused = OtlpProtocol::parse(Some("http/json")).unwrap_err().to_string();
        assert!(refused.contains("http/json") && refused.contains("grpc or http/protobuf"), "{refused}");
    }
}
