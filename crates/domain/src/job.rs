//! Retrieve jobs: how a prior is brought (method), where a job stands (state), what the
//! archive reported (counts), and the job as the queue holds it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How a study is brought from an archive: C-MOVE, C-GET or WADO-RS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RetrieveMethod {
    Move,
    Get,
    Wado,
}

impl RetrieveMethod {
    pub const ALL: [RetrieveMethod; 3] = [RetrieveMethod::Move, RetrieveMethod::Get, RetrieveMethod::Wado];

    /// The config and stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            RetrieveMethod::Move => "move",
            RetrieveMethod::Get => "get",
            RetrieveMethod::Wado => "wado",
        }
    }

    /// `as_str` back; None for anything else.
    pub fn parse(text: &str) -> Option<RetrieveMethod> {
        RetrieveMethod::ALL.into_iter().find(|m| m.as_str() == text)
    }
}

impl std::fmt::Display for RetrieveMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// Where a job stands. Claimable: `Scheduled`, `Available` and `Retryable` once their
/// `not_before` has passed; `Running` is leased by one worker; the rest are finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Scheduled,
    Available,
    Running,
    Retryable,
    Completed,
    Partial,
    Failed,
    Cancelled,
    Skipped,
}

impl JobState {
    pub const ALL: [JobState; 9] = [
        JobState::Scheduled,
        JobState::Available,
        JobState::Running,
        JobState::Retryable,
        JobState::Completed,
        JobState::Partial,
        JobState::Failed,
        JobState::Cancelled,
        JobState::Skipped,
    ];
    pub const OPEN: [JobState; 3] = [JobState::Scheduled, JobState::Available, JobState::Retryable];

    /// The stored and printed form.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Scheduled => "scheduled",
            JobState::Available => "available",
            JobState::Running => "running",
            JobState::Retryable => "retryable",
            JobState::Completed => "completed",
            JobState::Partial => "partial",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::Skipped => "skipped",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Partial | JobState::Failed | JobState::Cancelled | JobState::Skipped
        )
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// Sub-operation counts reported by the archive (C-MOVE/C-GET responses).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Unknown until the archive's first pending response.
    pub remaining: Option<i32>,
    pub completed: i32,
    pub failed: i32,
    pub warning: i32,
}

/// One failed attempt in a job's error history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptError {
    pub at: String,
    pub attempt: i32,
    pub error: String,
}

/// One study to bring from one archive to one destination, as the queue holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: i64,
    pub exam_id: i64,
    pub study_instance_uid: String,
    pub archive: String,
    /// What the planner chose for the archive; the mover runs it as recorded.
    pub method: RetrieveMethod,
    /// Destination AE title.
    pub destination: String,
    pub state: JobState,
    /// Lower runs first (STAT exams get a lower number).
    pub priority: i32,
    pub not_before: DateTime<Utc>,
    /// The exam's scheduled time: the prior must be there before it.
    pub deadline: Option<DateTime<Utc>>,
    pub attempt: i32,
    pub max_attempts: i32,
    /// Counts of the latest attempt.
    pub counts: Counts,
    pub expected_instances: Option<i32>,
    /// Final DIMSE status of the latest attempt.
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub errors: Vec<AttemptError>,
    pub leased_until: Option<DateTime<Utc>>,
    pub worker: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// SOP Instance UIDs the next attempt still has to bring (the archive named them as
    /// failed); None means the whole study.
    pub pending_instances: Option<Vec<String>>,
    /// Instances the destination confirmed (C-GET relay leg, or the verification C-FIND).
    pub received: i32,
    /// W3C traceparent of the exam's trace: each attempt's span joins it. None: not traced.
    pub trace_parent: Option<String>,
}

impl Job {
    /// The instances this attempt must bring when earlier attempts named failed ones;
    /// None for the whole study.
    pub fn pending(&self) -> Option<&[String]> {
        self.pending_instances.as_deref().filter(|p| !p.is_empty())
    }

    /// Instances earlier attempts already delivered: they count towards this attempt's
    /// total when only the pending ones are asked for.
    pub fn delivered_before(&self) -> i32 {
        match (self.pending(), self.expected_instances) {
            (Some(p), Some(expected)) => (expected - p.len() as i32).max(0),
            _ => 0,
        }
    }

    /// Instances this attempt should bring: the pending ones, else the whole study.
    pub fn expected_now(&self) -> Option<u32> {
        match self.pending() {
            Some(p) => Some(p.len() as u32),
            None => self.expected_instances.map(|e| e.max(0) as u32),
        }
    }
}
