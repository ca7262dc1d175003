//! `exams list|show` and `dead-letters list|replay`: the operator API's views and actions
//! from the command line (the same filters, JSON and audit as `/api/exams` and
//! `/api/dead-letters`). Whoever runs these has the database's credentials, so the JSON
//! carries patient identifiers as the API gives them to an operator.

use super::jobs::cli_actor;
use super::out::{outln, table};
use crate::Failure;
use clap::Subcommand;
use priorfetch_api::filters::ExamParams;
use priorfetch_api::views;
use std::path::Path;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum ExamsCommand {
    /// Exams matching the filters: by scheduled time when a window is given, else newest first.
    List {
        /// Scheduled at or after: RFC 3339, a date (YYYY-MM-DD, UTC) or a duration ago (12h).
        #[arg(long)]
        from: Option<String>,
        /// Scheduled before: same forms as --from.
        #[arg(long)]
        to: Option<String>,
        /// Only this status (received, planning, planned, fetching, complete, partial, failed, cancelled).
        #[arg(long)]
        state: Option<String>,
        /// Only exams with this accession number.
        #[arg(long)]
        accession: Option<String>,
        /// Only exams of this patient (any of the patient's identifiers).
        #[arg(long)]
        patient_id: Option<String>,
        /// At most this many exams (1..=1000).
        #[arg(long, default_value_t = 50)]
        limit: u64,
        /// JSON lines (one exam each) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One exam with its plan, priors (with the reason each was chosen or skipped) and jobs.
    Show {
        /// Exam ID, or accession number (the newest exam with it).
        key: String,
        /// One JSON object on one line instead of indented JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum DeadLettersCommand {
    /// Messages the intake could not use, newest first, with the reason and any replay.
    List {
        /// At most this many letters (1..=1000).
        #[arg(long, default_value_t = 50)]
        limit: u64,
        /// JSON lines (payload included) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Feed a dead letter's payload back into the intake it came from (idempotent: an exam
    /// already recorded stays one exam). Audited.
    Replay {
        /// Dead letter ID (the first column of `dead-letters list`).
        id: i64,
        /// The outcome as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

fn cell(value: Option<&str>) -> String {
    value.unwrap_or("-").to_string()
}

pub async fn exams(path: &Path, command: ExamsCommand) -> Result<ExitCode, Failure> {
    let config = super::load_config(path)?;
    let store = super::connect(&config).await?;
    match command {
        ExamsCommand::List { from, to, state, accession, patient_id, limit, json } => {
            let params = ExamParams {
                scheduled_from: from,
                scheduled_to: to,
                state,
                accession,
                patient_id,
                limit: Some(limit.to_string()),
            };
            let (filter, limit) = match params.parse(chrono::Utc::now()) {
                Ok(parsed) => parsed,
                Err(e) => {
                    let flag = match e.param {
                        "scheduled_from" => "from",
                        "scheduled_to" => "to",
                        other => other,
                    };
                    eprintln!("error: --{flag}: {}", e.message);
                    return Ok(ExitCode::from(2));
                }
            };
            let exams = store.find_exams(&filter, limit).await?;
            if json {
                for e in &exams {
                    outln!("{}", views::exam(e, true))?;
                }
                return Ok(ExitCode::SUCCESS);
            }
            let headers: Vec<String> =
                ["exam", "scheduled", "status", "priority", "accession", "modality", "procedure"]
                    .map(String::from)
                    .into();
            let rows: Vec<Vec<String>> = exams
                .iter()
                .map(|r| {
                    let e = &r.exam;
                    vec![
                        e.id.to_string(),
                        e.scheduled_at.map(|t| t.format("%Y-%m-%d %H:%M").to_string()).unwrap_or_else(|| "-".into()),
                        r.status.as_str().to_string(),
                        e.priority.as_str().to_string(),
                        cell(e.accession_number.as_deref()),
                        cell(e.modality.as_deref()),
                        cell(e.procedure_text.as_deref().or(e.procedure_code.as_deref())),
                    ]
                })
                .collect();
            super::out::text(&table(&headers, &rows))?;
            outln!("{} exams", exams.len())?;
            Ok(ExitCode::SUCCESS)
        }
        ExamsCommand::Show { key, json } => {
            let Some(record) = priorfetch_api::exam_by_key(&store, &key).await? else {
                eprintln!("error: no exam with ID or accession '{key}'");
                return Ok(ExitCode::from(1));
            };
            let detail = priorfetch_api::exam_detail(&store, &record, true).await?;
            if json {
                outln!("{detail}")?;
            } else {
                outln!("{}", serde_json::to_string_pretty(&detail)?)?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub async fn dead_letters(path: &Path, command: DeadLettersCommand) -> Result<ExitCode, Failure> {
    let config = super::load_config(path)?;
    let store = super::connect(&config).await?;
    match command {
        DeadLettersCommand::List { limit, json } => {
            if !(1..=priorfetch_api::filters::MAX_LIMIT).contains(&limit) {
                eprintln!("error: --limit: must be 1..={}", priorfetch_api::filters::MAX_LIMIT);
                return Ok(ExitCode::from(2));
            }
            let letters = store.list_dead_letters(limit).await?;
            if json {
                for d in &letters {
                    outln!("{}", views::dead_letter(d, true))?;
                }
                return Ok(ExitCode::SUCCESS);
            }
            let headers: Vec<String> =
                ["id", "received", "source", "bytes", "replayed", "reason"].map(String::from).into();
            let rows: Vec<Vec<String>> = letters
                .iter()
                .map(|d| {
                    let mut reason: String = d.reason.chars().take(100).collect();
                    if d.reason.chars().count() > 100 {
                        reason.push('…');
                    }
                    vec![
                        d.id.to_string(),
                        d.received_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                        d.source.clone(),
                        d.payload.len().to_string(),
                        cell(d.replay_outcome.as_deref()),
                        reason,
                    ]
                })
                .collect();
            super::out::text(&table(&headers, &rows))?;
            outln!("{} dead letters", letters.len())?;
            Ok(ExitCode::SUCCESS)
        }
        DeadLettersCommand::Replay { id, json } => {
            let replayed = match priorfetch_api::actions::replay(&store, &config, &cli_actor(), id).await {
                Ok(r) => r,
                Err(priorfetch_api::actions::ActionError::NoDeadLetter(_)) => {
                    eprintln!("error: no dead letter {id}");
                    return Ok(ExitCode::from(1));
                }
                Err(e) => return Err(e.into()),
            };
            if json {
                let value = serde_json::json!({
                    "dead_letter": id, "outcome": replayed.outcome, "exam_id": replayed.exam_id, "reason": replayed.reason,
                });
                outln!("{value}")?;
            } else {
                match (replayed.exam_id, &replayed.reason) {
                    (Some(exam), _) => outln!("dead letter {id}: {} (exam {exam})", replayed.outcome)?,
                    (None, Some(reason)) => outln!("dead letter {id}: {}: {reason}", replayed.outcome)?,
                    (None, None) => outln!("dead letter {id}: {}", replayed.outcome)?,
                }
            }
            Ok(if replayed.outcome == "invalid" { ExitCode::from(1) } else { ExitCode::SUCCESS })
        }
    }
}
