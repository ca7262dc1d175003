//! `priorfetch explain`: a dry run of planning for a patient and a procedure. The archives
//! are queried as the planner would query them; nothing is written (the planner runs on a
//! throw-away in-memory store, never the configured database).

use super::out::outln;
use crate::Failure;
use priorfetch_domain::{Exam, ExamPriority, PatientIdentifier};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(clap::Args)]
pub struct ExplainArgs {
    /// The patient's ID (as the RIS sends it).
    #[arg(long)]
    patient_id: String,
    /// The issuer of --patient-id (archives with `patient_id_issuer` are matched on it).
    #[arg(long)]
    issuer: Option<String>,
    /// The exam's modality (e.g. CT); rules and same-modality priors use it.
    #[arg(long)]
    modality: Option<String>,
    /// The exam's body part (e.g. CHEST).
    #[arg(long)]
    body_part: Option<String>,
    /// The procedure code (`[[procedure_map]]` may fill modality and body part from it).
    #[arg(long)]
    procedure: Option<String>,
    /// When the exam is scheduled: RFC 3339, a date (YYYY-MM-DD) or a duration ago; default now.
    #[arg(long)]
    scheduled_at: Option<String>,
    /// routine, urgent or stat.
    #[arg(long, default_value = "routine")]
    priority: String,
    /// The whole explanation as one JSON object instead of a summary.
    #[arg(long)]
    json: bool,
}

pub async fn run(path: &Path, args: ExplainArgs) -> Result<ExitCode, Failure> {
    let config = Arc::new(super::load_config(path)?);
    let now = chrono::Utc::now();
    let scheduled_at = match args.scheduled_at.as_deref() {
        None => now,
        Some(text) => match priorfetch_api::filters::parse_time("scheduled-at", text, now) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: --{e}");
                return Ok(ExitCode::from(2));
            }
        },
    };
    let exam = Exam {
        id: 0,
        patient_id: args.patient_id.clone(),
        issuer: args.issuer.clone(),
        identifiers: vec![PatientIdentifier::new(args.patient_id.clone(), args.issuer.clone())],
        accession_number: None,
        study_instance_uid: None,
        scheduled_at: Some(scheduled_at),
        modality: args.modality,
        body_part: args.body_part,
        procedure_code: args.procedure,
        procedure_text: None,
        priority: ExamPriority::parse(&args.priority),
    };
    // the planner needs a store handle; a private in-memory one guarantees nothing is written
    let scratch = priorfetch_store::Store::connect("sqlite::memory:", "", 1).await?;
    let planner = priorfetch_planner::Planner::new(scratch, config);
    let explained = planner.explain_dry(&exam).await;
    if args.json {
        outln!("{explained}")?;
        return Ok(ExitCode::SUCCESS);
    }
    outln!("rule: {}", explained["rule"].as_str().unwrap_or("none matches: nothing would be fetched"))?;
    if let Some(refusal) = explained["refusal"].as_str() {
        outln!("refused: {refusal}")?;
    }
    for (archive, queries) in explained["cfind"].as_object().into_iter().flatten() {
        let n = queries.as_array().map_or(0, Vec::len);
        outln!("{archive}: {n} queries")?;
    }
    for (archive, why) in explained["gaps"].as_object().into_iter().flatten() {
        outln!("gap {archive}: {}", why.as_str().unwrap_or_default())?;
    }
    let priors = explained["priors"].as_array().cloned().unwrap_or_default();
    outln!("candidates: {}", priors.len())?;
    for p in &priors {
        outln!(
            "  [{}] {} {} {} {}: {}",
            if p["selected"] == true { "x" } else { " " },
            p["archive"].as_str().unwrap_or_default(),
            p["study_date"].as_str().unwrap_or("-"),
            p["modalities"].as_str().unwrap_or("-"),
            p["study_instance_uid"].as_str().unwrap_or_default(),
            p["reason"].as_str().unwrap_or_default()
        )?;
    }
    let jobs = explained["jobs"].as_array().cloned().unwrap_or_default();
    outln!("would enqueue {} jobs", jobs.len())?;
    for j in &jobs {
        outln!(
            "  {} {} {} -> {} not before {}",
            j["archive"].as_str().unwrap_or_default(),
            j["method"].as_str().unwrap_or_default(),
            j["study_instance_uid"].as_str().unwrap_or_default(),
            j["destination"].as_str().unwrap_or_default(),
            j["not_before"].as_str().unwrap_or_default()
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
