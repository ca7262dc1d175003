//! Worker liveness: one row per worker identity (host + role, or a configured instance
//! name), refreshed by the process's heartbeat. The rescuer hands back the claims of a
//! worker whose row expired, so a crashed process costs seconds, not a whole lease.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Workers {
    Table,
    Name,
    StartedAt,
    BeatAt,
    ExpiresAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Workers::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Workers::Name).string().not_null().primary_key())
                    .col(ColumnDef::new(Workers::StartedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(Workers::BeatAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(Workers::ExpiresAt).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(Workers::Table).if_exists().to_owned()).await
    }
}
