use crate::Failure;
use clap::Subcommand;
use std::path::Path;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Print the resolved configuration (secrets redacted); exit 2 naming any bad key.
    Check,
}

pub async fn run(path: &Path, command: ConfigCommand) -> Result<ExitCode, Failure> {
    match command {
        ConfigCommand::Check => {
            let config = super::load_config(path)?;
            super::out::text(&config.to_redacted_toml())?;
            eprintln!("configuration ok");
            Ok(ExitCode::SUCCESS)
        }
    }
}
