//! `priorfetch`: one binary, many roles. Each subcommand lives in `cmd/`; the logic
//! lives in the library crates. Exit codes: 0 success, 1 runtime failure, 2 usage or
//! configuration error (with the offending key named). A reader that closes stdout early
//! (`priorfetch find --json | head -1`) ends the command quietly with exit 0, as with
//! ripgrep: nothing on stderr, and `set -o pipefail` scripts do not fail on `| head`.

mod cmd;

use clap::{Parser, Subcommand};
use cmd::serve::Roles;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "priorfetch", version, about = "Pre-fetch prior imaging studies before scheduled exams")]
struct Cli {
    /// Configuration file layered over the embedded defaults (then PRIORFETCH__SECTION__KEY).
    #[arg(long, global = true, default_value = "config/priorfetch.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: cmd::config::ConfigCommand,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// The embedded demo: two simulated archives, a simulated destination, SQLite, a burst of
    /// exams; exits 0 only when every expected prior arrived.
    Demo(cmd::demo::DemoArgs),
    /// Run every service in one process: listener, planner, mover, admin HTTP (migrates first).
    Run,
    /// Run the listener: the configured intake source (and `POST /api/events`) into `exams`.
    Listener,
    /// Run the mover: retrieve jobs (C-MOVE, or C-GET relayed by C-STORE) to the destination.
    Mover,
    /// Run the planner: received exams -> C-FIND on every archive -> priors + retrieve jobs.
    Planner,
    /// C-ECHO an archive (a configured name, or AET@host:port).
    Echo(cmd::dicom::EchoArgs),
    /// Ad-hoc C-FIND; prints a table, or JSON lines with --json.
    Find(cmd::dicom::FindArgs),
    /// Ad-hoc C-MOVE or C-GET of a study, with progress and final sub-operation counts.
    Retrieve(cmd::dicom::RetrieveArgs),
    /// Run a C-STORE receiver into a folder.
    StoreScp(cmd::dicom::StoreScpArgs),
    /// Diagnose archives and the destination: reach, AE titles, contexts, move destination, match cap.
    Doctor(cmd::doctor::DoctorArgs),
    /// Run the archive simulator (Q/R SCP with synthetic or folder data and fault injection).
    Sim(Box<cmd::sim::SimArgs>),
    /// Benchmarks of the whole product (a simulated hospital day).
    Bench {
        #[command(subcommand)]
        command: cmd::bench::BenchCommand,
    },
    /// Inspect and steer retrieve jobs.
    Jobs {
        #[command(subcommand)]
        command: cmd::jobs::JobsCommand,
    },
    /// Inspect exams: the schedule, one exam's plan, priors and jobs.
    Exams {
        #[command(subcommand)]
        command: cmd::operator::ExamsCommand,
    },
    /// Dry run of planning: given a patient and procedure, query the archives and print what
    /// would be fetched and why (writes nothing).
    Explain(cmd::explain::ExplainArgs),
    /// Inspect and replay messages the intake could not use.
    DeadLetters {
        #[command(subcommand)]
        command: cmd::operator::DeadLettersCommand,
    },
}

/// A failure with its exit code: 2 for configuration, 1 for everything else, 0 when
/// stdout was closed by its reader.
pub enum Failure {
    Config(priorfetch_config::ConfigError),
    Runtime(anyhow::Error),
    /// stdout's reader went away (broken pipe): stop writing, quietly.
    Closed,
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Runtime(e.into())
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Config { command } => cmd::config::run(&cli.config, command).await,
            Command::Migrate => cmd::migrate::run(&cli.config).await,
            Command::Demo(args) => cmd::demo::run(args).await,
            Command::Run => cmd::serve::serve(&cli.config, Roles::ALL).await,
            Command::Listener => cmd::serve::serve(&cli.config, Roles::LISTENER).await,
            Command::Mover => cmd::serve::serve(&cli.config, Roles::MOVER).await,
            Command::Planner => cmd::serve::serve(&cli.config, Roles::PLANNER).await,
            Command::Bench { command } => cmd::bench::run(command).await,
            Command::Jobs { command } => cmd::jobs::run(&cli.config, command).await,
            Command::Exams { command } => cmd::operator::exams(&cli.config, command).await,
            Command::DeadLetters { command } => cmd::operator::dead_letters(&cli.config, command).await,
            Command::Explain(args) => cmd::explain::run(&cli.config, args).await,
            Command::Echo(args) => cmd::dicom::echo(&cli.config, args).await,
            Command::Find(args) => cmd::dicom::find(&cli.config, args).await,
            Command::Retrieve(args) => cmd::dicom::retrieve(&cli.config, args).await,
            Command::StoreScp(args) => cmd::dicom::store_scp(&cli.config, args).await,
            Command::Doctor(args) => cmd::doctor::run(&cli.config, args).await,
            Command::Sim(args) => cmd::sim::run(&cli.config, *args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(Failure::Config(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
        Err(Failure::Closed) => ExitCode::SUCCESS,
    }
}

#[cfg(test)]
mod help_tests;
