//! Who may send events over HTTP, and how fast. With `[[admin.tokens]]` configured, a
//! sender shows a bearer token of role `sender` or `operator` (401 without one, 403 for
//! another role); with none, only loopback senders are served (403 otherwise: a service
//! listening on a hospital network is not an open door). Over HTTPS (`service.admin_tls`), a
//! client certificate signed by its `ca` admits a sender as a token does. Above `intake.http.rate_limit`
//! events per second, 429 with Retry-After. Tokens are compared by their SHA-256.

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Json, Response};
use priorfetch_config::{AdminToken, Config, Role};
use priorfetch_telemetry::admin::ClientCertificate;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The access rules of `POST /api/events`.
#[derive(Clone)]
pub struct Access {
    tokens: Arc<Vec<Known>>,
    bucket: Option<Arc<Mutex<Bucket>>>,
    pub max_body: usize,
}

struct Known {
    name: String,
    role: Role,
    sha256: [u8; 32],
}

struct Bucket {
    rate: f64,
    level: f64,
    at: Instant,
}

impl Access {
    pub fn new(config: &Config) -> Access {
        let tokens = config.admin.tokens.iter().filter_map(known).collect();
        let rate = config.intake.http.rate_limit;
        Access {
            tokens: Arc::new(tokens),
            bucket: (rate > 0)
                .then(|| Arc::new(Mutex::new(Bucket { rate: rate as f64, level: rate as f64, at: Instant::now() }))),
            max_body: config.intake.http.max_body,
        }
    }

    /// Loopback only, default limits (tests, the demo).
    pub fn loopback() -> Access {
        Access { tokens: Arc::new(Vec::new()), bucket: None, max_body: 1024 * 1024 }
    }

    fn take_one(&self) -> bool {
        let Some(bucket) = &self.bucket else { return true };
        let mut b = bucket.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        b.level = (b.level + now.duration_since(b.at).as_secs_f64() * b.rate).min(b.rate);
        b.at = now;
        if b.level >= 1.0 {
            b.level -= 1.0;
            true
        } else {
            false
        }
    }

    /// The sender's name when it may send, else the answer it gets. A client certificate
    /// the HTTPS handshake verified against `service.admin_tls.ca` admits like a token.
    fn admit(
        &self,
        peer: Option<SocketAddr>,
        certificate: Option<&ClientCertificate>,
        headers: &HeaderMap,
    ) -> Result<String, Refusal> {
        if let Some(certificate) = certificate {
            return Ok(format!("client certificate {}", &certificate.sha256[..16.min(certificate.sha256.len())]));
        }
        if self.tokens.is_empty() {
            return match peer {
                Some(addr) if addr.ip().is_loopback() => Ok("loopback".into()),
                _ => Err(Refusal(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "HTTP intake serves only loopback senders until [[admin.tokens]] are configured",
                )),
            };
        }
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim);
        let Some(given) = given else {
            return Err(Refusal(StatusCode::UNAUTHORIZED, "unauthorized", "send Authorization: Bearer <token>"));
        };
        let digest: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        match self.tokens.iter().find(|k| k.sha256 == digest) {
            Some(k) if matches!(k.role, Role::Sender | Role::Operator) => Ok(k.name.clone()),
            Some(_) => Err(Refusal(StatusCode::FORBIDDEN, "forbidden", "this token's role may not send events")),
            None => Err(Refusal(StatusCode::UNAUTHORIZED, "unauthorized", "unknown token")),
        }
    }
}

#[cfg(test)]
impl Access {
    fn admit_plain(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> Result<String, Refusal> {
        self.admit(peer, None, headers)
    }
}

fn known(token: &AdminToken) -> Option<Known> {
    let sha256 = match &token.token_sha256 {
        Some(hex) => decode_hex(hex)?,
        None => Sha256::digest(token.token.expose().as_bytes()).into(),
    };
    Some(Known { name: token.name.clone(), role: token.role, sha256 })
}

fn decode_hex(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

/// Why a sender is turned away: status, code, message.
struct Refusal(StatusCode, &'static str, &'static str);

fn refuse(status: StatusCode, code: &str, message: &str) -> Response {
    let mut response = (status, Json(json!({ "error": message, "code": code }))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    }
    response
}

/// The middleware in front of the intake route.
pub async fn guard(State(access): State<Access>, request: Request, next: Next) -> Response {
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    let certificate = request.extensions().get::<ClientCertificate>();
    let sender = match access.admit(peer, certificate, request.headers()) {
        Ok(name) => name,
        Err(Refusal(status, code, message)) => {
            crate::metrics::HTTP_REFUSED.with_label_values(&[status.as_str()]).inc();
            tracing::info!(peer = ?peer, status = status.as_u16(), "http intake: sender refused");
            return refuse(status, code, message);
        }
    };
    if !access.take_one() {
        crate::metrics::HTTP_REFUSED.with_label_values(&["429"]).inc();
        let mut response = refuse(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "too many events; retry shortly");
        response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        return response;
    }
    tracing::debug!(%sender, "http intake: event");
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_tokens_only_loopback_senders_are_admitted() {
        let access = Access::loopback();
        let from = |a: &str| Some(a.parse::<SocketAddr>().unwrap());
        assert!(access.admit_plain(from("127.0.0.1:5000"), &HeaderMap::new()).is_ok());
        assert!(access.admit_plain(from("[::1]:5000"), &HeaderMap::new()).is_ok());
        let refused = access.admit_plain(from("10.1.2.3:5000"), &HeaderMap::new()).err().map(|r| r.0);
        assert_eq!(refused, Some(StatusCode::FORBIDDEN));
        assert!(access.admit_plain(None, &HeaderMap::new()).is_err(), "unknown peer: refused");
    }

    #[test]
    fn hex_digests_decode() {
        let hex = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        assert_eq!(decode_hex(hex).map(|d| d[0]), Some(0x9f));
        assert_eq!(decode_hex("zz"), None);
    }
}
