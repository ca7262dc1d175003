//! `priorfetch bench day`: the simulated hospital day (crate `priorfetch-daysim`), once per
//! dispatch policy side by side; prints readiness before the scan and the reasons of every
//! late or failed exam. Exits 1 when deadline dispatch misses `--slo`.

use crate::Failure;
use priorfetch_config::Dispatch;
use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// A time-compressed hospital day against three simulated archives (needs PostgreSQL).
    Day(DayArgs),
}

#[derive(clap::Args)]
pub struct DayArgs {
    /// `default` (a short VNA outage) or `stress` (slower long-term archive, long outage).
    #[arg(long, default_value = "default")]
    scenario: String,
    /// Scheduled exams in the day (one patient each).
    #[arg(long, default_value_t = 2000)]
    exams: usize,
    /// Seed of the day (orders, schedules, archives' content).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Simulated hours in the day.
    #[arg(long, default_value_t = 24.0)]
    hours: f64,
    /// Simulated seconds per wall second (240: a day in 6 minutes).
    #[arg(long, default_value_t = 240.0)]
    speed: f64,
    /// `deadline`, `fifo` or `both` (side by side on the same day).
    #[arg(long, default_value = "both")]
    dispatch: String,
    /// PostgreSQL server URL without a database (each run creates and drops its own).
    #[arg(long, env = "PRIORFETCH_TEST_POSTGRES", default_value = "postgres://postgres@127.0.0.1:5432")]
    postgres: String,
    /// Readiness (0..1) deadline dispatch must reach for exit code 0.
    #[arg(long, default_value_t = 0.0)]
    slo: f64,
}

pub async fn run(command: BenchCommand) -> Result<ExitCode, Failure> {
    let BenchCommand::Day(args) = command;
    let _ = priorfetch_telemetry::init(priorfetch_telemetry::TelemetryOptions {
        format: priorfetch_telemetry::LogFormat::Text,
        default_filter: "error",
        service_name: "priorfetch-bench",
    });
    let kind = priorfetch_daysim::Kind::parse(&args.scenario).map_err(anyhow::Error::msg)?;
    let dispatch = match args.dispatch.as_str() {
        "deadline" => vec![Dispatch::Deadline],
        "fifo" => vec![Dispatch::Fifo],
        "both" => vec![Dispatch::Deadline, Dispatch::Fifo],
        other => return Err(anyhow::anyhow!("unknown --dispatch '{other}': use deadline, fifo or both").into()),
    };
    eprintln!(
        "simulating {} hours of {} exams at {}x: about {:.0} s",
        args.hours,
        args.exams,
        args.speed,
        args.hours * 3600.0 / args.speed + 40.0
    );
    let options = priorfetch_daysim::DayOptions {
        kind,
        exams: args.exams,
        seed: args.seed,
        hours: args.hours,
        speed: args.speed,
        dispatch,
        server: args.postgres,
    };
    let report = priorfetch_daysim::run(options).await?;
    super::out::unless_closed(super::out::text(&report.table()))?;
    let missed = report.results.iter().any(|r| r.dispatch == "deadline" && r.readiness() < args.slo);
    Ok(if missed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
