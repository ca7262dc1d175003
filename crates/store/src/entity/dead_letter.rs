use sea_orm::entity::prelude::*;

/// A message the intake could not use, kept with the reason.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "dead_letters")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// rabbitmq | kafka | http
    pub source: String,
    pub payload: Vec<u8>,
    pub reason: String,
    pub received_at: DateTimeUtc,
    /// When an operator last replayed it into the intake (`None`: never).
    pub replayed_at: Option<DateTimeUtc>,
    /// The intake's verdict on that replay (`accepted exam 12`, `duplicate exam 12`, `invalid: ...`).
    pub replay_outcome: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
