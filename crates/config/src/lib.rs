//! Typed priorfetch configuration.
//!
//! Layers, later wins: the embedded defaults (`config/priorfetch.toml`, compiled in), the
//! `--config` file, then environment variables `PRIORFETCH__SECTION__KEY`
//! (e.g. `PRIORFETCH__DATABASE__URL`). Unknown keys are rejected, and [`Config::load`]
//! validates the whole tree and reports every problem with the offending key.
//!
//! Layout: `model.rs` the settings types, `validate.rs` the cross-field checks,
//! `secret.rs` values that never print, `duration.rs` human durations, `tls.rs` the TLS
//! blocks, `signals.rs` the database-read signals.

mod admin;
mod duration;
mod intake;
mod model;
mod secret;
mod signals;
mod tls;
mod validate;
pub mod windows;

pub use admin::{AdminConfig, AdminToken, Role};
pub use model::*;
pub use secret::{Secret, redact_url};
pub use signals::SignalsConfig;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use std::fmt;
use std::path::Path;

/// The embedded defaults: the same file the repo ships as `config/priorfetch.toml`.
pub const DEFAULTS_TOML: &str = include_str!("../../../config/priorfetch.toml");

/// One problem with the configuration: the dotted key (`archives[1].port`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Every problem found; the CLI prints one per line and exits 2.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n{}", .issues.iter().map(|i| format!("  {i}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError {
    pub issues: Vec<ConfigIssue>,
}

impl ConfigError {
    fn one(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self { issues: vec![ConfigIssue { key: key.into(), message: message.into() }] }
    }
}

/// Where the configuration comes from.
#[derive(Debug, Clone, Default)]
pub struct Sources<'a> {
    /// A TOML file layered over the defaults; `None` uses the defaults alone.
    pub file: Option<&'a Path>,
    /// Extra TOML text layered after the file (tests, `demo`).
    pub overlay: Option<&'a str>,
    /// Read `PRIORFETCH__*` environment variables (off in tests for isolation).
    pub env: bool,
}

impl Config {
    /// Loads the layers and validates the result.
    pub fn load(sources: Sources<'_>) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULTS_TOML));
        if let Some(path) = sources.file {
            if !path.exists() {
                return Err(ConfigError::one("--config", format!("file {} does not exist", path.display())));
            }
            // Arrays of tables in the file replace the defaults' (no merging of archives).
            figment = figment.merge(Toml::file(path));
        }
        if let Some(text) = sources.overlay {
            figment = figment.merge(Toml::string(text));
        }
        if sources.env {
            figment = figment.merge(Env::prefixed("PRIORFETCH__").split("__"));
            // Figment parses environment values (`12345` becomes a number, `true` a bool);
            // a password is whatever characters it has, so those keys are taken raw.
            for (name, value) in std::env::vars() {
                if let Some(rest) = name.strip_prefix("PRIORFETCH__")
                    && rest.ends_with("PASSWORD")
                {
                    let key = rest.to_ascii_lowercase().replace("__", ".");
                    figment = figment.merge(figment::providers::Serialized::default(&key, value));
                }
            }
        }
        let config: Config = figment.extract().map_err(|e| ConfigError { issues: figment_issues(e) })?;
        let issues = validate::validate(&config);
        if issues.is_empty() { Ok(config) } else { Err(ConfigError { issues }) }
    }

    /// The resolved configuration as TOML, secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        let mut shown = self.clone();
        shown.database.url = redact_url(&shown.database.url);
        shown.intake.rabbitmq.url = redact_url(&shown.intake.rabbitmq.url);
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot render: {e}"))
    }

    pub fn archive(&self, name: &str) -> Option<&ArchiveConfig> {
        self.archives.iter().find(|a| a.name == name)
    }
}

fn figment_issues(error: figment::Error) -> Vec<ConfigIssue> {
    error
        .into_iter()
        .map(|e| {
            let key = dotted_key(&e.path);
            let message = match &e.kind {
                // figment's path already ends with the unknown field
                figment::error::Kind::UnknownField(..) => "unknown key".to_string(),
                figment::error::Kind::MissingField(field) => {
                    let key = if key.is_empty() { field.to_string() } else { format!("{key}.{field}") };
                    return ConfigIssue { key, message: "required".into() };
                }
                other => other.to_string(),
            };
            ConfigIssue { key: if key.is_empty() { "(root)".into() } else { key }, message }
        })
        .collect()
}

/// `["archives", "1", "port"]` -> `archives[1].port`.
fn dotted_key(path: &[String]) -> String {
    let mut out = String::new();
    for part in path {
        if part.chars().all(|c| c.is_ascii_digit()) && !out.is_empty() {
            out.push_str(&format!("[{part}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(part);
        }
    }
    out
}
