//! `priorfetch demo`: the embedded default a newcomer runs first (see crates'
//! `priorfetch-demo`). Exits 0 only when every expected prior arrived.

use crate::Failure;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Scheduled exams in the burst (one patient each).
    #[arg(long, default_value_t = 40)]
    exams: usize,
    /// Seed of the synthetic archives.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// No progress bars (CI logs).
    #[arg(long)]
    quiet: bool,
}

pub async fn run(args: DemoArgs) -> Result<ExitCode, Failure> {
    // Errors only (RUST_LOG shows more): the bars and the table are the demo's output, and
    // the partial retrieves it provokes on purpose would flood the screen with warnings.
    let _ = priorfetch_telemetry::init(priorfetch_telemetry::TelemetryOptions {
        format: priorfetch_telemetry::LogFormat::Text,
        default_filter: "error",
        service_name: "priorfetch-demo",
    });
    super::out::unless_closed(super::out::outln!(
        "priorfetch demo: {} scheduled exams -> NORTH (C-MOVE, C-FIND capped at 4) and SOUTH (C-GET, 30% failed \
         sub-operations at first) -> DEST; SQLite; nothing to install\n",
        args.exams
    ))?;
    let report = priorfetch_demo::run(priorfetch_demo::DemoOptions {
        exams: args.exams,
        seed: args.seed,
        progress: !args.quiet,
        timeout: Duration::from_secs(args.timeout),
    })
    .await?;
    super::out::unless_closed(super::out::text(&report.table()))?;
    Ok(if report.ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
