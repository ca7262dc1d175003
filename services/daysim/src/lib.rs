//! `priorfetch bench day`: a time-compressed hospital day.
//!
//! Orders arrive hours to minutes before their exams (yesterday's taken in before 00:00),
//! some STAT, some rescheduled or cancelled (`scenario.rs`, deterministic from the seed).
//! Three simulated archives serve one synthetic population: a fast short-term archive (2
//! years), a VNA (6 years, C-GET, transient failures and an outage window) and a slow
//! long-term archive with two associations (everything) (`archives.rs`). The listener's
//! intake, the planner and the mover run in-process on their own Postgres database
//! (`run.rs`), once per dispatch policy, side by side on the same day.
//!
//! Readiness is judged from what the destination received, against each exam's final
//! schedule, and compared with what priorfetch recorded (`report.rs`).

pub mod archives;
pub mod clock;
pub mod messages;
pub mod report;
pub mod run;
pub mod scenario;

use priorfetch_config::Dispatch;
pub use report::DayResult;
pub use scenario::Kind;

#[derive(Debug, Clone)]
pub struct DayOptions {
    pub kind: Kind,
    pub exams: usize,
    pub seed: u64,
    /// Simulated hours in the day.
    pub hours: f64,
    /// Simulated seconds per wall second.
    pub speed: f64,
    pub dispatch: Vec<Dispatch>,
    /// Postgres server URL (each run creates and drops its own database).
    pub server: String,
}

impl Default for DayOptions {
    fn default() -> Self {
        DayOptions {
            kind: Kind::Default,
            exams: 2000,
            seed: 42,
            hours: 24.0,
            speed: 240.0,
            dispatch: vec![Dispatch::Deadline, Dispatch::Fifo],
            server: std::env::var("PRIORFETCH_TEST_POSTGRES")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct DayReport {
    pub options: DayOptions,
    pub results: Vec<DayResult>,
}

/// Runs the day once per policy, at the same time (same wall period, same machine load).
pub async fn run(options: DayOptions) -> anyhow::Result<DayReport> {
    let day = options.hours * scenario::HOUR;
    let spec = run::RunSpec {
        kind: options.kind,
        seed: options.seed,
        exams: scenario::exams(options.seed, options.exams, day),
        day,
        speed: options.speed,
        server: options.server.clone(),
    };
    let runs = options.dispatch.iter().map(|d| {
        let spec = spec.clone();
        let d = *d;
        tokio::spawn(async move { run::run(&spec, d).await })
    });
    let mut results = Vec::new();
    for handle in runs.collect::<Vec<_>>() {
        let data = handle.await??;
        results.push(report::judge(&spec.exams, &data));
    }
    Ok(DayReport { options, results })
}

impl DayReport {
    /// The comparison table and each policy's late and failed reasons.
    pub fn table(&self) -> String {
        let o = &self.options;
        let mut out = format!(
            "scenario {} | {} exams | seed {} | {} simulated hours at {}x\n\n",
            o.kind.as_str(),
            o.exams,
            o.seed,
            o.hours,
            o.speed
        );
        out.push_str(&format!(
            "{:<9} {:>9} {:>6} {:>6} {:>6} {:>9} {:>21} {:>6} {:>9} {:>7} {:>8} {:>10}\n",
            "dispatch",
            "ready",
            "late",
            "failed",
            "exams",
            "cancelled",
            "slack p1/p5/p50 min",
            "jobs",
            "failovers",
            "jobs/s",
            "images/s",
            "recorded"
        ));
        for r in &self.results {
            out.push_str(&format!(
                "{:<9} {:>8.2}% {:>6} {:>6} {:>6} {:>9} {:>21} {:>6} {:>9} {:>7.1} {:>8.1} {:>10}\n",
                r.dispatch,
                r.readiness() * 100.0,
                r.late,
                r.failed,
                r.exams,
                r.cancelled,
                format!("{:.0}/{:.0}/{:.0}", r.slack_minutes[0], r.slack_minutes[1], r.slack_minutes[2]),
                r.jobs,
                r.failovers,
                r.jobs_per_s,
                r.instances_per_s,
                format!("{}/{}/{}", r.recorded.0, r.recorded.1, r.recorded.2),
            ));
        }
        for r in &self.results {
            for (what, reasons) in [("late", &r.late_reasons), ("failed", &r.failed_reasons)] {
                for (why, n) in reasons {
                    out.push_str(&format!("  {} {what}: {n} x {why}\n", r.dispatch));
                }
            }
            if r.disagreements > 0 {
                out.push_str(&format!(
                    "  {}: {} exams where the recorded readiness disagrees with the destination\n",
                    r.dispatch, r.disagreements
                ));
                for example in &r.disagreement_examples {
                    out.push_str(&format!("    {example}\n"));
                }
            }
        }
        out
    }
}
