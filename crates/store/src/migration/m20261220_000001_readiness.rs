//! exams.ready_at (when the exam's priors all ended: compared with scheduled_at for the
//! readiness SLO, whichever process reads it) and retrieve_jobs.tried_archives (the
//! archives a job failed over from, so a failover never goes back to one of them).
//! Both nullable: rows stored before read as "not recorded" and "none".

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Exams {
    Table,
    ReadyAt,
}

#[derive(DeriveIden)]
enum RetrieveJobs {
    Table,
    TriedArchives,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter().table(Exams::Table).add_column(timestamp_with_time_zone_null(Exams::ReadyAt)).to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(RetrieveJobs::Table)
                    .add_column(json_binary_null(RetrieveJobs::TriedArchives))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(Table::alter().table(RetrieveJobs::Table).drop_column(RetrieveJobs::TriedArchives).to_owned())
            .await?;
        manager.alter_table(Table::alter().table(Exams::Table).drop_column(Exams::ReadyAt).to_owned()).await
    }
}
