//! An OTLP trace receiver on the official protobuf definitions (`opentelemetry-proto`),
//! for trace tests: gRPC (`TraceService/Export`) and HTTP/protobuf (`POST /v1/traces`) on
//! two loopback ports. It keeps every `ExportTraceServiceRequest` and its bytes as they
//! came (HTTP) or as re-encoded (gRPC), so a test can look for strings in everything a
//! process exported.
//!
//! ```ignore
//! let otlp = OtlpReceiver::start().await?;
//! // child.env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.grpc_endpoint())
//! // child.env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.http_endpoint())
//! //      .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
//! let spans = otlp.spans();
//! ```

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// Which way an export request came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Grpc,
    HttpProtobuf,
}

/// One export request as received.
#[derive(Debug, Clone)]
pub struct Export {
    pub transport: Transport,
    pub request: ExportTraceServiceRequest,
    /// The protobuf bytes: the HTTP body as sent, or the gRPC message re-encoded.
    pub bytes: Vec<u8>,
}

/// One span with its resource's identity.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub transport: Transport,
    /// Resource attribute `service.name`.
    pub service_name: String,
    /// Resource attribute `service.instance.id`.
    pub instance_id: String,
    pub span: Span,
}

impl ReceivedSpan {
    pub fn name(&self) -> &str {
        &self.span.name
    }

    pub fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }

    pub fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }

    /// The parent's span ID, hex; empty for a root span.
    pub fn parent_id(&self) -> String {
        hex(&self.span.parent_span_id)
    }

    pub fn attribute(&self, key: &str) -> Option<&any_value::Value> {
        find(&self.span.attributes, key)
    }

    /// An integer attribute (also one sent as a string of digits).
    pub fn int(&self, key: &str) -> Option<i64> {
        match self.attribute(key)? {
            any_value::Value::IntValue(v) => Some(*v),
            any_value::Value::StringValue(s) => s.parse().ok(),
            _ => None,
        }
    }

    pub fn str(&self, key: &str) -> Option<&str> {
        match self.attribute(key)? {
            any_value::Value::StringValue(s) => Some(s),
            _ => None,
        }
    }
}

fn find<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v: &AnyValue| v.value.as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

type Store = Arc<Mutex<Vec<Export>>>;

/// The running receiver; stops when dropped.
pub struct OtlpReceiver {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    received: Store,
    stop: watch::Sender<bool>,
}

#[derive(Clone)]
struct Grpc {
    received: Store,
}

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let request = request.into_inner();
        let bytes = request.encode_to_vec();
        self.received.lock().unwrap_or_else(|e| e.into_inner()).push(Export {
            transport: Transport::Grpc,
            request,
            bytes,
        });
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

async fn http_export(
    axum::extract::State(received): axum::extract::State<Store>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if !content_type.starts_with("application/x-protobuf") {
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("expected application/x-protobuf, got {content_type}"))
            .into_response();
    }
    if headers.get("content-encoding").is_some() {
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, "compressed bodies are not accepted here").into_response();
    }
    let request = match ExportTraceServiceRequest::decode(body.as_ref()) {
        Ok(request) => request,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("not an ExportTraceServiceRequest: {e}")).into_response(),
    };
    received.lock().unwrap_or_else(|e| e.into_inner()).push(Export {
        transport: Transport::HttpProtobuf,
        request,
        bytes: body.to_vec(),
    });
    let response = ExportTraceServiceResponse { partial_success: None }.encode_to_vec();
    (StatusCode::OK, [("content-type", "application/x-protobuf")], response).into_response()
}

impl OtlpReceiver {
    /// Listens on two free loopback ports: gRPC and HTTP/protobuf.
    pub async fn start() -> anyhow::Result<OtlpReceiver> {
        let received: Store = Arc::default();
        let (stop, stopped) = watch::channel(false);

        let grpc_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let grpc_addr = grpc_listener.local_addr()?;
        let service = TraceServiceServer::new(Grpc { received: received.clone() });
        let mut until = stopped.clone();
        tokio::spawn(async move {
            let incoming = tonic::transport::server::TcpIncoming::from(grpc_listener);
            let shutdown = async move {
                let _ = until.wait_for(|s| *s).await;
            };
            if let Err(e) = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
            {
                eprintln!("otlp receiver (grpc) ended: {e}");
            }
        });

        let http_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let http_addr = http_listener.local_addr()?;
        let app =
            axum::Router::new().route("/v1/traces", axum::routing::post(http_export)).with_state(received.clone());
        let mut until = stopped;
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = until.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(http_listener, app).with_graceful_shutdown(shutdown).await {
                eprintln!("otlp receiver (http) ended: {e}");
            }
        });
        Ok(OtlpReceiver { grpc_addr, http_addr, received, stop })
    }

    /// `OTEL_EXPORTER_OTLP_ENDPOINT` for `OTEL_EXPORTER_OTLP_PROTOCOL=grpc`.
    pub fn grpc_endpoint(&self) -> String {
        format!("http://{}", self.grpc_addr)
    }

    /// `OTEL_EXPORTER_OTLP_ENDPOINT` for `OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf` (the
    /// exporter appends `/v1/traces`).
    pub fn http_endpoint(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    /// Every export request so far.
    pub fn exports(&self) -> Vec<Export> {
        self.received.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Every span so far, with its resource's `service.name` and `service.instance.id`.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        let mut spans = Vec::new();
        for export in self.exports() {
            for resource_spans in &export.request.resource_spans {
                let attributes = resource_spans.resource.as_ref().map(|r| r.attributes.as_slice()).unwrap_or_default();
                let text = |key: &str| match find(attributes, key) {
                    Some(any_value::Value::StringValue(s)) => s.clone(),
                    _ => String::new(),
                };
                let (service_name, instance_id) = (text("service.name"), text("service.instance.id"));
                for scope in &resource_spans.scope_spans {
                    for span in &scope.spans {
                        spans.push(ReceivedSpan {
                            transport: export.transport,
                            service_name: service_name.clone(),
                            instance_id: instance_id.clone(),
                            span: span.clone(),
                        });
                    }
                }
            }
        }
        spans
    }

    /// Waits until `done` holds for the spans received, for at most `timeout`.
    pub async fn wait_for(&self, timeout: Duration, done: impl Fn(&[ReceivedSpan]) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if done(&self.spans()) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
