use super::out::outln;
use crate::Failure;
use clap::Subcommand;
use priorfetch_api::filters::JobParams;
use priorfetch_api::views::status_text;
use std::path::Path;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum JobsCommand {
    /// Newest jobs first, with counts by state; the filters combine.
    List {
        /// Only this state (scheduled, available, running, retryable, completed, partial, failed, cancelled, skipped).
        #[arg(long)]
        state: Option<String>,
        /// Only jobs of this archive (its configured name).
        #[arg(long)]
        archive: Option<String>,
        /// Only jobs of this exam (its numeric ID; `exams show ACCESSION` gives it).
        #[arg(long)]
        exam: Option<i64>,
        /// Only jobs changed since: RFC 3339, a date (YYYY-MM-DD, UTC) or a duration ago (12h).
        #[arg(long)]
        since: Option<String>,
        /// Only jobs changed before: same forms as --since.
        #[arg(long)]
        until: Option<String>,
        /// At most this many jobs, newest first.
        #[arg(long, default_value_t = 50)]
        limit: u64,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One job with its error history.
    Show {
        /// Job ID (the first column of `jobs list`).
        id: i64,
        /// One JSON object on one line instead of indented JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make a finished or waiting job claimable now, with a fresh attempt budget; or every
    /// job a --filter selects (bulk retry). Audited.
    #[command(group = clap::ArgGroup::new("which").required(true).args(["id", "filter"]))]
    Retry {
        /// Job ID (the first column of `jobs list`).
        id: Option<i64>,
        /// Bulk retry of the jobs matching KEY=VALUE pairs, comma-separated: state (default
        /// failed; never running), archive, exam, since, until (times as for `jobs list`),
        /// e.g. `state=failed,archive=lta,since=12h`.
        #[arg(long, value_name = "KEY=VALUE,...")]
        filter: Option<String>,
    },
    /// Cancel an unfinished job (a running retrieve is stopped with C-CANCEL).
    Cancel {
        /// Job ID (the first column of `jobs list`).
        id: i64,
    },
    /// Set when a waiting job is next tried (it keeps its attempts), or re-open a failed or
    /// partial job with a fresh attempt budget at that time. Audited.
    Reschedule {
        /// Job ID (the first column of `jobs list`).
        id: i64,
        /// When: `in 2h` (or `2h`), `YYYY-MM-DDTHH:MM` in this machine's time zone, or RFC 3339.
        #[arg(long, value_name = "WHEN")]
        at: String,
    },
}

fn job_json(j: &priorfetch_store::Job) -> serde_json::Value {
    priorfetch_api::views::job(j)
}

/// Who the audit names for actions from the command line.
pub fn cli_actor() -> String {
    format!("cli:{}", std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "unknown".into()))
}

pub async fn run(path: &Path, command: JobsCommand) -> Result<ExitCode, Failure> {
    let config = super::load_config(path)?;
    let store = super::connect(&config).await?;
    match command {
        JobsCommand::List { state, archive, exam, since, until, limit, json } => {
            let params = JobParams {
                state,
                archive,
                exam: exam.map(|e| e.to_string()),
                since,
                until,
                limit: Some(limit.to_string()),
            };
            let (filter, limit) = match params.parse(chrono::Utc::now()) {
                Ok(parsed) => parsed,
                Err(e) => {
                    eprintln!("error: --{e}");
                    return Ok(ExitCode::from(2));
                }
            };
            let jobs = store.find_jobs(&filter, limit).await?;
            if json {
                for j in &jobs {
                    outln!("{}", job_json(j))?;
                }
            } else {
                let header = format!(
                    "{:>8} {:>8} {:<16} {:<6} {:<10} {:>4} {:>9} {:>9} {:>6}  last error",
                    "job", "exam", "archive", "method", "state", "try", "completed", "expected", "failed"
                );
                outln!("{header}")?;
                for j in &jobs {
                    outln!(
                        "{:>8} {:>8} {:<16} {:<6} {:<10} {:>4} {:>9} {:>9} {:>6}  {}",
                        j.id,
                        j.exam_id,
                        j.archive,
                        j.method,
                        j.state,
                        format!("{}/{}", j.attempt, j.max_attempts),
                        j.counts.completed,
                        j.expected_instances.map(|n| n.to_string()).unwrap_or_else(|| "?".into()),
                        j.counts.failed,
                        match (j.last_status, j.last_error.as_deref()) {
                            (Some(status), Some(error)) => format!("{}: {error}", status_text(status)),
                            (Some(status), None) => status_text(status),
                            (None, error) => error.unwrap_or("").to_string(),
                        }
                    )?;
                }
                let counts = store.job_counts().await?;
                let summary: Vec<String> = counts.iter().map(|(s, n)| format!("{s}={n}")).collect();
                outln!("totals: {}", if summary.is_empty() { "no jobs".into() } else { summary.join(" ") })?;
            }
            Ok(ExitCode::SUCCESS)
        }
        JobsCommand::Show { id, json } => {
            let Some(job) = store.job(id).await? else {
                eprintln!("error: no job {id}");
                return Ok(ExitCode::from(1));
            };
            let mut value = job_json(&job);
            // how the job came about: the rule that fired, the exam inputs it saw, the
            // patient identifier each archive was queried with (hashed) or why it was
            // skipped, the C-FIND keys sent, the prior's selection reason
            if let Some(plan) = store.exam_plan(job.exam_id).await? {
                value["plan"] = serde_json::json!({
                    "rule": plan.rule, "inputs": plan.inputs, "archives": plan.archives,
                    "cfind": plan.queries, "gaps": plan.gaps,
                    "attempts": plan.attempts, "replan_at": plan.replan_at,
                });
            }
            let priors = store.priors_of_exam(job.exam_id).await?;
            if let Some(p) =
                priors.iter().find(|p| p.study_instance_uid == job.study_instance_uid && p.archive == job.archive)
            {
                value["reason"] = serde_json::json!(p.reason);
            }
            if json {
                outln!("{value}")?;
            } else {
                outln!("{}", serde_json::to_string_pretty(&value)?)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        JobsCommand::Retry { id: _, filter: Some(filter) } => {
            let params = match JobParams::from_pairs(&filter) {
                Ok(params) => params,
                Err(e) => {
                    eprintln!("error: --filter: {}", e.message);
                    return Ok(ExitCode::from(2));
                }
            };
            match priorfetch_api::actions::bulk_retry(&store, &cli_actor(), &params).await {
                Ok(requeued) => {
                    outln!("requeued {requeued} jobs")?;
                    Ok(ExitCode::SUCCESS)
                }
                Err(priorfetch_api::actions::ActionError::Filter(e)) => {
                    eprintln!("error: --filter: {e}");
                    Ok(ExitCode::from(2))
                }
                Err(e) => Err(e.into()),
            }
        }
        JobsCommand::Retry { id, filter: None } => {
            let id = id.unwrap_or_default();
            if priorfetch_api::actions::retry(&store, &cli_actor(), id).await? {
                outln!("job {id} is available again")?;
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("error: job {id} does not exist or is running");
                Ok(ExitCode::from(1))
            }
        }
        JobsCommand::Reschedule { id, at } => {
            let Some(when) = priorfetch_api::filters::parse_when(&at, chrono::Utc::now()) else {
                eprintln!("error: --at: '{at}' is not a time: 'in 2h', 'YYYY-MM-DDTHH:MM' or RFC 3339");
                return Ok(ExitCode::from(2));
            };
            if priorfetch_api::actions::reschedule(&store, &cli_actor(), id, when).await? {
                outln!("job {id} rescheduled for {}", when.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))?;
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("error: job {id} does not exist, or is not waiting, failed or partial");
                Ok(ExitCode::from(1))
            }
        }
        JobsCommand::Cancel { id } => {
            if priorfetch_api::actions::cancel(&store, &cli_actor(), id).await? {
                outln!("job {id} cancelled")?;
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("error: job {id} does not exist or is already finished");
                Ok(ExitCode::from(1))
            }
        }
    }
}
