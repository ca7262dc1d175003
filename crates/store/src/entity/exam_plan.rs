use sea_orm::entity::prelude::*;

/// How an exam was planned: the explanation `jobs show` and the admin API print.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "exam_plans")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub exam_id: i64,
    /// The rule that fired; `None` when no rule matched the exam.
    pub rule: Option<String>,
    /// Per archive: the C-FIND queries sent (keys), their outcome and match counts.
    pub queries: Json,
    /// Per archive that could not be queried completely: why. Empty when complete.
    pub gaps: Json,
    /// Per archive: the patient identifier used (issuer, hashed id, how it was chosen) or
    /// why the archive was skipped. `None` on plans recorded before the column existed.
    pub archives: Option<Json>,
    /// Exam fields filled from `[[procedure_map]]`, and rule inputs the exam lacked with
    /// what the planner did instead (a list). `None` on older plans.
    pub inputs: Option<Json>,
    /// How many times the exam was planned (first plan = 1).
    pub attempts: i32,
    /// When the exam is planned again because of a gap; `None` when not.
    pub replan_at: Option<DateTimeUtc>,
    pub planned_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
