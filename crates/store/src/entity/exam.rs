use sea_orm::entity::prelude::*;

/// A scheduled exam, one row per `event_key` (the idempotency key of the intake).
/// Patient name and birth date are deliberately not stored: the planner needs only the ID.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "exams")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    #[sea_orm(unique)]
    pub event_key: String,
    pub patient_id: String,
    pub issuer: Option<String>,
    /// Every identifier of the patient, `[{id, issuer}]`, the primary included; `None` on
    /// rows stored before the column existed (read as the primary only).
    pub patient_ids: Option<Json>,
    pub accession_number: Option<String>,
    pub study_instance_uid: Option<String>,
    pub scheduled_at: Option<DateTimeUtc>,
    pub modality: Option<String>,
    pub body_part: Option<String>,
    pub procedure_code: Option<String>,
    pub procedure_text: Option<String>,
    /// routine | urgent | stat
    pub priority: String,
    /// received, planning, planned, fetching, complete, partial, failed, cancelled
    pub status: String,
    /// W3C traceparent of the intake span, so planner and mover traces join it.
    pub trace_parent: Option<String>,
    /// Planner lease (status = planning).
    pub leased_until: Option<DateTimeUtc>,
    pub worker: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    /// When the exam's priors all ended (its final status was set); compared with
    /// `scheduled_at` for the readiness SLO.
    pub ready_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
