//! Secrets that never print.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A password or token. `Debug`, `Display` and `Serialize` print `[redacted]`,
/// so a secret cannot leak through `config check`, a log line or a panic message.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The only way to read the value: grep for it in reviews.
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.0.is_empty() { "" } else { "[redacted]" })
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// Replaces the secrets of a URL by `[redacted]`: the password of `scheme://user:password@host`
/// and the value of every query parameter whose name says it is a secret
/// (`?password=`, `sslpassword`, `token`, `api_key`, ...), since drivers accept both.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else { return url.to_string() };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let head = match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => {
            format!("{}{}:[redacted]{}", &url[..scheme_end + 3], &authority[..colon], &rest[at..authority_end])
        }
        _ => url[..scheme_end + 3 + authority_end].to_string(),
    };
    head + &redact_query(&rest[authority_end..])
}

/// Path, query and fragment with secret-named query values replaced.
fn redact_query(tail: &str) -> String {
    let Some(q) = tail.find('?') else { return tail.to_string() };
    let (path, query) = tail.split_at(q + 1);
    let (query, fragment) = query.split_at(query.find('#').unwrap_or(query.len()));
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, value)) if is_secret_name(name) && !value.is_empty() => format!("{name}=[redacted]"),
            _ => pair.to_string(),
        })
        .collect();
    format!("{path}{}{fragment}", pairs.join("&"))
}

fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["pass", "pwd", "secret", "token", "key", "auth", "credential"].iter().any(|s| name.contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "[redacted] [redacted]");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn url_passwords_are_redacted() {
        assert_eq!(redact_url("amqp://guest:guest@127.0.0.1:5672/%2f"), "amqp://guest:[redacted]@127.0.0.1:5672/%2f");
        assert_eq!(redact_url("postgres://postgres@db/x"), "postgres://postgres@db/x");
        assert_eq!(redact_url("sqlite://priorfetch.db?mode=rwc"), "sqlite://priorfetch.db?mode=rwc");
    }

    #[test]
    fn query_parameter_secrets_are_redacted() {
        assert_eq!(
            redact_url("postgres://app@db:5432/pf?password=hunter2&sslmode=require"),
            "postgres://app@db:5432/pf?password=[redacted]&sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://u:pw@db/x?sslpassword=s3&application_name=pf#frag"),
            "postgres://u:[redacted]@db/x?sslpassword=[redacted]&application_name=pf#frag"
        );
        assert_eq!(
            redact_url("https://h/api?access_token=abc&api_key=k"),
            "https://h/api?access_token=[redacted]&api_key=[redacted]"
        );
    }
}
