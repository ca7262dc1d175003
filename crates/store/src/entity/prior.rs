use sea_orm::entity::prelude::*;

/// A candidate prior study of an exam, selected or not, with the reason.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "priors")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub exam_id: i64,
    pub archive: String,
    pub study_instance_uid: String,
    /// DICOM DA (YYYYMMDD) as the archive returned it.
    pub study_date: Option<String>,
    /// ModalitiesInStudy, backslash-separated.
    pub modalities: Option<String>,
    pub description: Option<String>,
    pub expected_instances: Option<i32>,
    pub selected: bool,
    /// Why selected or skipped (rule name, lookback, max count, already at destination...).
    pub reason: String,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
