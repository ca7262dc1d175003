//! One module per subcommand.

pub mod config;
pub mod jobs;
pub mod migrate;

use crate::Failure;
use priorfetch_config::{Config, Sources};
use std::path::Path;

/// Loads the configuration. The default path may be absent (the embedded defaults
/// apply); an explicitly named file must exist.
pub fn load_config(path: &Path) -> Result<Config, Failure> {
    let default = Path::new("config/priorfetch.toml");
    let file = if path == default && !path.exists() { None } else { Some(path) };
    Config::load(Sources { file, overlay: None, env: true }).map_err(Failure::Config)
}

/// Logging for commands: `RUST_LOG` or the configured level, on stderr.
pub fn init_logs(config: &Config) -> priorfetch_telemetry::TelemetryGuard {
    let format = match config.telemetry.log_format {
        priorfetch_config::LogFormat::Text => priorfetch_telemetry::LogFormat::Text,
        priorfetch_config::LogFormat::Json => priorfetch_telemetry::LogFormat::Json,
    };
    priorfetch_telemetry::init(priorfetch_telemetry::TelemetryOptions {
        format,
        default_filter: &config.telemetry.log_level,
        service_name: &config.telemetry.service_name,
    })
    .unwrap_or_else(|e| {
        eprintln!("warning: {e}; logging with defaults");
        priorfetch_telemetry::init(priorfetch_telemetry::TelemetryOptions {
            format,
            default_filter: "info",
            service_name: &config.telemetry.service_name,
        })
        .expect("default log filter parses")
    })
}

pub async fn connect(config: &Config) -> Result<priorfetch_store::Store, Failure> {
    let db = &config.database;
    let store = priorfetch_store::Store::connect(&db.url, db.password.expose(), db.max_connections)
        .await
        .map_err(|e| anyhow::anyhow!("{e} (database.url = {})", priorfetch_config::redact_url(&db.url)))?;
    Ok(store)
}
