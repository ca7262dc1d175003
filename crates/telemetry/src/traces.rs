//! Traces that follow an exam across processes: the W3C `traceparent` of the exam's trace
//! is stored with the exam and its jobs, and each service parents its spans on it.
//!
//! - [`exporting`]: whether spans go anywhere (an OTLP endpoint is configured). Hot paths
//!   (intake) create no span per event when nothing would export it.
//! - [`context_from_traceparent`] / [`traceparent_of`] / [`current_traceparent`]: the
//!   W3C TraceContext header to and from an OpenTelemetry context.
//! - [`follow`]: makes a fresh `tracing` span a child of a stored `traceparent`.
//!
//! Only spans of our own crates (target `priorfetch…`) are exported, and only their
//! fields: log events inside a span are not attached to it (they go to the logs, whose
//! level and content are governed separately), so a span carries exactly the attributes
//! its `info_span!` names, and those are never PHI (internal ids, archive names, counts,
//! statuses, hashed UIDs).

use opentelemetry::Context;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C header (and AMQP/Kafka header) name.
pub const TRACEPARENT: &str = "traceparent";

/// Set by [`crate::init`] when an OTLP exporter is installed.
static EXPORTING: AtomicBool = AtomicBool::new(false);

pub(crate) fn set_exporting(on: bool) {
    EXPORTING.store(on, Ordering::Relaxed);
}

/// True when spans are exported (an OTLP endpoint is configured in this process).
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// The remote span context a `traceparent` header names; None when it is malformed or
/// invalid (all-zero IDs, unknown version syntax), so a bad header starts a new trace
/// rather than failing the message.
pub fn context_from_traceparent(traceparent: &str) -> Option<Context> {
    let carrier = HashMap::from([(TRACEPARENT.to_string(), traceparent.trim().to_string())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    cx.span().span_context().is_valid().then_some(cx)
}

/// A `traceparent` as stored: the header normalised, or None when it is not a valid
/// W3C traceparent (only valid values are kept with an exam).
pub fn valid_traceparent(traceparent: &str) -> Option<String> {
    context_from_traceparent(traceparent).and_then(|cx| traceparent_of_context(&cx))
}

fn traceparent_of_context(cx: &Context) -> Option<String> {
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(cx, &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// The `traceparent` of `span`: None when the span is not exported (no exporter, or
/// filtered out).
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    if span.is_disabled() {
        return None;
    }
    traceparent_of_context(&span.context())
}

/// The `traceparent` of the current `tracing` span (see [`traceparent_of`]).
pub fn current_traceparent() -> Option<String> {
    traceparent_of(&tracing::Span::current())
}

/// Parents the fresh `span` on the stored `traceparent` (an exam's, a job's), so that it
/// joins the exam's trace whichever process runs it. Call it right after creating the
/// span, before entering it. Nothing happens without a valid `traceparent` (the span then
/// parents on the current span, or starts a trace) or when the span is not exported.
pub fn follow(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(cx) = traceparent.and_then(context_from_traceparent) else { return };
    if span.is_disabled() {
        return;
    }
    if let Err(e) = span.set_parent(cx) {
        tracing::debug!(error = %e, "span not parented on the stored traceparent");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIVEN: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparent_round_trips_and_rejects_garbage() {
        let cx = context_from_traceparent(GIVEN).expect("valid");
        assert_eq!(cx.span().span_context().trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(valid_traceparent(&format!(" {GIVEN} ")).as_deref(), Some(GIVEN));
        for bad in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        ] {
            assert!(context_from_traceparent(bad).is_none(), "{bad:?} is refused");
            assert_eq!(valid_traceparent(bad), None);
        }
    }

    #[test]
    fn without_an_exporter_spans_have_no_traceparent() {
        let span = tracing::info_span!("intake");
        follow(&span, Some(GIVEN));
        assert_eq!(traceparent_of(&span), None);
        assert!(!exporting());
    }
}
