//! The operator's record (issue 19): `audit` (who did what, when, to which jobs or with
//! which filter; one row per retry, bulk retry, cancel or replay), and on `dead_letters`
//! when a letter was last replayed and what came of it (nullable: not replayed).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Audit {
    Table,
    Id,
    At,
    Actor,
    Action,
    Target,
    Outcome,
}

#[derive(DeriveIden)]
enum DeadLetters {
    Table,
    ReplayedAt,
    ReplayOutcome,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Audit::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Audit::Id))
                    .col(timestamp_with_time_zone(Audit::At))
                    .col(string(Audit::Actor))
                    .col(string(Audit::Action))
                    .col(json_binary(Audit::Target))
                    .col(text(Audit::Outcome))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create().name("audit_at_idx").table(Audit::Table).col(Audit::At).if_not_exists().to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(DeadLetters::Table)
                    .add_column(timestamp_with_time_zone_null(DeadLetters::ReplayedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter().table(DeadLetters::Table).add_column(text_null(DeadLetters::ReplayOutcome)).to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(Table::alter().table(DeadLetters::Table).drop_column(DeadLetters::ReplayOutcome).to_owned())
            .await?;
        manager
            .alter_table(Table::alter().table(DeadLetters::Table).drop_column(DeadLetters::ReplayedAt).to_owned())
            .await?;
        manager.drop_table(Table::drop().table(Audit::Table).if_exists().to_owned()).await
    }
}
