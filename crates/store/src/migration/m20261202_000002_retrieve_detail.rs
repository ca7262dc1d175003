//! retrieve_jobs.pending_instances (the instances a retry still has to bring, when the
//! archive named the failed ones) and retrieve_jobs.received (instances the destination
//! confirmed: the relay leg of a C-GET, or the verification C-FIND).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum RetrieveJobs {
    Table,
    PendingInstances,
    Received,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite takes one column per ALTER TABLE.
        manager
            .alter_table(
                Table::alter()
                    .table(RetrieveJobs::Table)
                    .add_column(json_binary_null(RetrieveJobs::PendingInstances))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(RetrieveJobs::Table)
                    .add_column(integer(RetrieveJobs::Received).default(0))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(Table::alter().table(RetrieveJobs::Table).drop_column(RetrieveJobs::Received).to_owned())
            .await?;
        manager
            .alter_table(
                Table::alter().table(RetrieveJobs::Table).drop_column(RetrieveJobs::PendingInstances).to_owned(),
            )
            .await
    }
}
