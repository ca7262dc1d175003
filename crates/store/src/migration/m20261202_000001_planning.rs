//! exam_plans: how each exam was planned (rule fired, C-FIND keys sent per archive, gaps
//! left by unreachable archives) and when it is re-planned.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ExamPlans {
    Table,
    ExamId,
    Rule,
    Queries,
    Gaps,
    Attempts,
    ReplanAt,
    PlannedAt,
}

#[derive(DeriveIden)]
enum Exams {
    Table,
    Id,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(ExamPlans::Table)
                .if_not_exists()
                .col(big_integer(ExamPlans::ExamId).primary_key())
                .col(string_null(ExamPlans::Rule))
                .col(json_binary(ExamPlans::Queries))
                .col(json_binary(ExamPlans::Gaps))
                .col(integer(ExamPlans::Attempts))
                .col(timestamp_with_time_zone_null(ExamPlans::ReplanAt))
                .col(timestamp_with_time_zone(ExamPlans::PlannedAt))
                .foreign_key(
                    ForeignKey::create()
                        .from(ExamPlans::Table, ExamPlans::ExamId)
                        .to(Exams::Table, Exams::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        // Only exams waiting for a re-plan are indexed: the claim scans nothing else.
        m.get_connection()
            .execute_unprepared(
                "CREATE INDEX IF NOT EXISTS exam_plans_replan_idx ON exam_plans (replan_at) WHERE replan_at IS NOT NULL",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(ExamPlans::Table).if_exists().to_owned()).await
    }
}
