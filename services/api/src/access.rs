//! Who may use the operator API. With `[[admin.tokens]]` configured every request shows
//! `Authorization: Bearer <token>`: none or an unknown token is 401, a `sender` token (it
//! may only `POST /api/events`) is 403, a `viewer` may read (without PHI), an `operator`
//! may read with PHI and act (retry, cancel, replay; 403 for a viewer). With no token
//! configured, only a loopback listener serves the API (configuration refuses anything
//! else), and its loopback callers act as operator `loopback`. Tokens are compared by
//! their SHA-256, as the intake does.

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Json, Response};
use priorfetch_config::{AdminToken, Config, Role};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::sync::Arc;

/// The caller of a request the guard admitted (a request extension).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name (audited and logged; never the token).
    pub name: String,
    /// `Viewer` or `Operator`.
    pub role: Role,
}

impl Caller {
    /// Operators see patient identifiers; viewers get them redacted.
    pub fn sees_phi(&self) -> bool {
        self.role == Role::Operator
    }

    pub fn may_act(&self) -> bool {
        self.role == Role::Operator
    }
}

/// The token table of the operator API.
#[derive(Clone)]
pub struct Access {
    tokens: Arc<Vec<Known>>,
}

struct Known {
    name: String,
    role: Role,
    sha256: [u8; 32],
}

/// Why a request is turned away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: &'static str,
}

impl Refusal {
    fn new(status: StatusCode, code: &'static str, message: &'static str) -> Refusal {
        Refusal { status, code, message }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(json!({ "error": self.message, "code": self.code }))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl Access {
    pub fn new(config: &Config) -> Access {
        Access { tokens: Arc::new(config.admin.tokens.iter().filter_map(known).collect()) }
    }

    /// The caller a bearer token stands for (also for a console login form).
    pub fn caller_of_token(&self, token: &str) -> Result<Caller, Refusal> {
        let digest: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
        match self.tokens.iter().find(|k| k.sha256 == digest) {
            Some(k) if matches!(k.role, Role::Viewer | Role::Operator) => {
                Ok(Caller { name: k.name.clone(), role: k.role })
            }
            Some(_) => Err(Refusal::new(StatusCode::FORBIDDEN, "forbidden", "this token's role may only send events")),
            None => Err(Refusal::new(StatusCode::UNAUTHORIZED, "unauthorized", "unknown token")),
        }
    }

    /// Who is calling, from the peer address and the headers.
    pub fn admit(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> Result<Caller, Refusal> {
        if self.tokens.is_empty() {
            return match peer {
                Some(addr) if addr.ip().is_loopback() => Ok(Caller { name: "loopback".into(), role: Role::Operator }),
                _ => Err(Refusal::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "the API serves only loopback callers until [[admin.tokens]] are configured",
                )),
            };
        }
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
        match given {
            Some(token) => self.caller_of_token(token),
            None => Err(Refusal::new(StatusCode::UNAUTHORIZED, "unauthorized", "send Authorization: Bearer <token>")),
        }
    }
}

fn known(token: &AdminToken) -> Option<Known> {
    let sha256 = match &token.token_sha256 {
        Some(text) => hex::decode(text).ok()?.try_into().ok()?,
        None => Sha256::digest(token.token.expose().as_bytes()).into(),
    };
    Some(Known { name: token.name.clone(), role: token.role, sha256 })
}

/// The middleware in front of every operator route: admits the caller (a [`Caller`]
/// extension for the handlers), and lets only operators change anything.
pub async fn guard(State(access): State<Access>, mut request: Request, next: Next) -> Response {
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    let caller = match access.admit(peer, request.headers()) {
        Ok(caller) => caller,
        Err(refusal) => {
            tracing::info!(peer = ?peer, status = refusal.status.as_u16(), path = %request.uri().path(), "api: caller refused");
            return refusal.into_response();
        }
    };
    if request.method() != Method::GET && request.method() != Method::HEAD && !caller.may_act() {
        tracing::info!(caller = %caller.name, path = %request.uri().path(), "api: viewer may not act");
        return Refusal::new(StatusCode::FORBIDDEN, "forbidden", "this token's role may only read").into_response();
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// The paths probes and Prometheus use.
pub const PROBES: [&str; 3] = ["/metrics", "/healthz", "/readyz"];

/// With `admin.open_probes = false`, in front of the whole admin router: the probe paths
/// need a bearer token of any configured role (a `sender` included); everything else
/// passes to its own guard.
pub async fn probe_guard(State(access): State<Access>, request: Request, next: Next) -> Response {
    if !PROBES.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
    let known = given.is_some_and(|token| {
        let digest: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
        access.tokens.iter().any(|k| k.sha256 == digest)
    });
    if known {
        next.run(request).await
    } else {
        Refusal::new(StatusCode::UNAUTHORIZED, "unauthorized", "send Authorization: Bearer <token>").into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(tokens: &[(&str, Role, &str)]) -> Access {
        let tokens = tokens
            .iter()
            .map(|(name, role, token)| Known {
                name: name.to_string(),
                role: *role,
                sha256: Sha256::digest(token.as_bytes()).into(),
            })
            .collect();
        Access { tokens: Arc::new(tokens) }
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
        headers
    }

    #[test]
    fn roles_map_to_callers_and_refusals() {
        let a = access(&[("v", Role::Viewer, "viewer-token"), ("s", Role::Sender, "sender-token")]);
        let peer = Some("10.0.0.1:1".parse().unwrap());
        assert_eq!(a.admit(peer, &bearer("viewer-token")).unwrap().role, Role::Viewer);
        assert_eq!(a.admit(peer, &bearer("sender-token")).unwrap_err().status, StatusCode::FORBIDDEN);
        assert_eq!(a.admit(peer, &bearer("nope")).unwrap_err().status, StatusCode::UNAUTHORIZED);
        assert_eq!(a.admit(peer, &HeaderMap::new()).unwrap_err().status, StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn without_tokens_only_loopback_callers_act() {
        let a = access(&[]);
        let caller = a.admit(Some("127.0.0.1:9".parse().unwrap()), &HeaderMap::new()).unwrap();
        assert!(caller.may_act() && caller.name == "loopback");
        let refused = a.admit(Some("192.168.1.5:9".parse().unwrap()), &HeaderMap::new()).unwrap_err();
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
    }
}
