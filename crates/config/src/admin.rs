//! `[[admin.tokens]]`: who may use the admin HTTP server's API. A token is given in clear
//! (`token`, a secret) or as its SHA-256 (`token_sha256`, hex), so a config file need not
//! hold the token itself.

use crate::secret::Secret;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    #[serde(default)]
    pub tokens: Vec<AdminToken>,
    /// Serve the operator API (`/api/exams`, `/api/jobs`, `/api/dead-letters`). Off, those
    /// paths answer 404 (`/api/events` has its own rules). On without tokens, only a
    /// loopback `service.admin_listen` is accepted.
    #[serde(default = "enabled")]
    pub api: bool,
    /// `/metrics`, `/healthz` and `/readyz` without a token (probes, scraping). Off, they
    /// need a bearer token of any configured role, as the API does.
    #[serde(default = "enabled")]
    pub open_probes: bool,
}

fn enabled() -> bool {
    true
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig { tokens: Vec::new(), api: true, open_probes: true }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads status (metrics, exams, jobs).
    Viewer,
    /// Reads and acts (retry, cancel), and may send events.
    Operator,
    /// Sends events (`POST /api/events`) only.
    Sender,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminToken {
    /// Who holds it (logged on use; the token never is).
    pub name: String,
    pub role: Role,
    #[serde(default)]
    pub token: Secret,
    /// Lower-case hex SHA-256 of the token, instead of `token`.
    #[serde(default)]
    pub token_sha256: Option<String>,
}

/// Whether the operator API, as configured, would be open to a network: on, no token, and
/// an admin listener beyond loopback (`config check` refuses it).
pub fn api_open_to_network(admin: &AdminConfig, admin_listen: &str) -> bool {
    let loopback = admin_listen.parse::<std::net::SocketAddr>().map(|a| a.ip().is_loopback()).unwrap_or(true);
    admin.api && admin.tokens.is_empty() && !loopback
}

/// Problems with the token list, as (index, field, message).
pub(crate) fn check(admin: &AdminConfig) -> Vec<(usize, &'static str, String)> {
    let mut issues = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (i, t) in admin.tokens.iter().enumerate() {
        if t.name.trim().is_empty() {
            issues.push((i, "name", "must not be empty".to_string()));
        } else if !names.insert(t.name.as_str()) {
            issues.push((i, "name", format!("duplicate token name '{}'", t.name)));
        }
        match (t.token.is_empty(), &t.token_sha256) {
            (true, None) => issues.push((i, "token", "set token or token_sha256".into())),
            (false, Some(_)) => issues.push((i, "token", "set token or token_sha256, not both".into())),
            (false, None) if t.token.expose().len() < 16 => {
                issues.push((i, "token", "must be at least 16 characters (use a random one)".into()))
            }
            (true, Some(hash)) if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
                issues.push((i, "token_sha256", "must be 64 hexadecimal digits".into()))
            }
            _ => {}
        }
    }
    issues
}
