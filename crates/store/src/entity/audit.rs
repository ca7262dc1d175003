use sea_orm::entity::prelude::*;

/// One operator action (retry, bulk retry, cancel, replay): who, what, when, on what.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub at: DateTimeUtc,
    /// The admin token's name (`[[admin.tokens]].name`), `loopback` on a token-less loopback
    /// listener, or `cli:<user>` for the command line.
    pub actor: String,
    /// `jobs.retry`, `jobs.bulk_retry`, `jobs.cancel`, `dead_letters.replay`.
    pub action: String,
    /// The job or dead letter (`{"job": 7}`), or the bulk retry's filter. Never PHI.
    pub target: Json,
    /// What came of it (`requeued 3`, `refused: running`, `accepted exam 12`).
    pub outcome: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
