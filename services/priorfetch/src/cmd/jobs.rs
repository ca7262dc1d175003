use super::out::outln;
use crate::Failure;
use clap::Subcommand;
use priorfetch_store::JobState;
use std::path::Path;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum JobsCommand {
    /// Newest jobs first, with counts by state.
    List {
        /// Only this state (scheduled, available, running, retryable, completed, partial, failed, cancelled, skipped).
        #[arg(long)]
        state: Option<String>,
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
    /// Make a finished or waiting job claimable now, with a fresh attempt budget.
    Retry {
        /// Job ID (the first column of `jobs list`).
        id: i64,
    },
    /// Cancel an unfinished job (a running retrieve is stopped with C-CANCEL).
    Cancel {
        /// Job ID (the first column of `jobs list`).
        id: i64,
    },
}

fn job_json(j: &priorfetch_store::Job) -> serde_json::Value {
    serde_json::json!({
        "id": j.id, "exam_id": j.exam_id, "study_instance_uid": j.study_instance_uid,
        "archive": j.archive, "method": j.method, "destination": j.destination, "state": j.state,
        "priority": j.priority, "not_before": j.not_before, "deadline": j.deadline,
        "attempt": j.attempt, "max_attempts": j.max_attempts, "remaining": j.counts.remaining,
        "completed": j.counts.completed, "failed": j.counts.failed, "warning": j.counts.warning,
        "expected_instances": j.expected_instances, "last_status": j.last_status,
        "last_error": j.last_error, "errors": j.errors, "worker": j.worker,
        "leased_until": j.leased_until, "created_at": j.created_at, "updated_at": j.updated_at,
        "finished_at": j.finished_at,
    })
}

pub async fn run(path: &Path, command: JobsCommand) -> Result<ExitCode, Failure> {
    let config = super::load_config(path)?;
    let store = super::connect(&config).await?;
    match command {
        JobsCommand::List { state, limit, json } => {
            let state = match state.as_deref().map(|s| (s, JobState::parse(s))) {
                None => None,
                Some((_, Some(st))) => Some(st),
                Some((s, None)) => {
                    eprintln!("error: --state: unknown state '{s}'");
                    return Ok(ExitCode::from(2));
                }
            };
            let jobs = store.list_jobs(state, limit).await?;
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
                        j.last_error.as_deref().unwrap_or("")
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
        JobsCommand::Retry { id } => {
            if store.retry_now(id).await? {
                outln!("job {id} is available again")?;
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("error: job {id} does not exist or is running");
                Ok(ExitCode::from(1))
            }
        }
        JobsCommand::Cancel { id } => {
            if store.cancel_job(id).await? {
                outln!("job {id} cancelled")?;
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("error: job {id} does not exist or is already finished");
                Ok(ExitCode::from(1))
            }
        }
    }
}
