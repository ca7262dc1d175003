//! retrieve_jobs.trace_parent: the W3C traceparent of the exam's trace, copied from the
//! exam when the planner creates the job, so the mover's retrieve spans join the trace
//! the listener started. Nullable: jobs stored before (or of untraced exams) have none.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum RetrieveJobs {
    Table,
    TraceParent,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter().table(RetrieveJobs::Table).add_column(string_null(RetrieveJobs::TraceParent)).to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(Table::alter().table(RetrieveJobs::Table).drop_column(RetrieveJobs::TraceParent).to_owned())
            .await
    }
}
