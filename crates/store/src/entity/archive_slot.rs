use sea_orm::entity::prelude::*;

/// One of an archive's `max_associations` retrieve slots; `job_id` is set while a job
/// holds it.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "archive_slots")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub archive: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub slot: i32,
    pub job_id: Option<i64>,
    pub leased_until: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
