//! The scheduled exam, reduced to what planning needs.

use chrono::{DateTime, Utc};

/// routine | urgent | stat, as the intake stored it; anything else counts as routine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ExamPriority {
    Stat,
    Urgent,
    Routine,
}

impl ExamPriority {
    pub fn parse(text: &str) -> ExamPriority {
        match text.trim().to_ascii_lowercase().as_str() {
            "stat" => ExamPriority::Stat,
            "urgent" | "asap" => ExamPriority::Urgent,
            _ => ExamPriority::Routine,
        }
    }

    /// Queue priority of the exam's retrieve jobs: lower is claimed first.
    pub fn job_priority(self) -> i32 {
        match self {
            ExamPriority::Stat => 0,
            ExamPriority::Urgent => 1,
            ExamPriority::Routine => 5,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Exam {
    pub id: i64,
    pub patient_id: String,
    pub issuer: Option<String>,
    pub accession_number: Option<String>,
    /// The exam's own study, never a prior of itself.
    pub study_instance_uid: Option<String>,
    pub scheduled_at: Option<DateTime<Utc>>,
    pub modality: Option<String>,
    pub body_part: Option<String>,
    pub procedure_code: Option<String>,
    pub procedure_text: Option<String>,
    pub priority: ExamPriority,
}
