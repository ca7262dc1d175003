use sea_orm::entity::prelude::*;

/// One study to bring from one archive to one destination.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "retrieve_jobs")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub exam_id: i64,
    pub study_instance_uid: String,
    pub archive: String,
    /// move | get | wado
    pub method: String,
    /// Destination AE title.
    pub destination: String,
    /// See [`crate::JobState`].
    pub state: String,
    /// Lower runs first (STAT exams get a lower number).
    pub priority: i32,
    pub not_before: DateTimeUtc,
    /// The exam's scheduled time: the prior must be there before it.
    pub deadline: Option<DateTimeUtc>,
    pub attempt: i32,
    pub max_attempts: i32,
    /// Sub-operation counts of the latest attempt; `remaining` is unknown until the
    /// archive's first pending response.
    pub remaining: Option<i32>,
    pub completed: i32,
    pub failed: i32,
    pub warning: i32,
    pub expected_instances: Option<i32>,
    /// Final DIMSE status of the latest attempt.
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    /// Error history: a JSON array of {at, attempt, error}.
    pub errors: Json,
    pub leased_until: Option<DateTimeUtc>,
    pub worker: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub finished_at: Option<DateTimeUtc>,
    /// SOP Instance UIDs the next attempt still has to bring (the archive named them in a
    /// Failed SOP Instance UID List); NULL means the whole study.
    pub pending_instances: Option<Json>,
    /// Instances the destination confirmed (C-GET relay leg, or the verification C-FIND).
    pub received: i32,
    /// Archives this job failed over from (a JSON array of names); NULL: none.
    pub tried_archives: Option<Json>,
    /// W3C traceparent of the exam's trace (copied from the exam by the planner): the
    /// mover's spans for this job join it. NULL: not traced.
    pub trace_parent: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
