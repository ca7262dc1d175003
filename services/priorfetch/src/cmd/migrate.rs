use crate::Failure;
use std::path::Path;
use std::process::ExitCode;

pub async fn run(path: &Path) -> Result<ExitCode, Failure> {
    let config = super::load_config(path)?;
    let _logs = super::init_logs(&config);
    let store = super::connect(&config).await?;
    store.migrate().await?;
    tracing::info!(database = %priorfetch_config::redact_url(&config.database.url), "migrations applied");
    Ok(ExitCode::SUCCESS)
}
