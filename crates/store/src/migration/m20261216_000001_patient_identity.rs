//! exams.patient_ids (every identifier of the patient, `[{id, issuer}]`, the primary
//! included; archives with `patient_id_issuer` are queried with the one of their issuer),
//! exam_plans.archives (per archive: the identifier used, hashed, or why it was skipped)
//! and exam_plans.inputs (exam fields filled from `[[procedure_map]]`, rule inputs the
//! exam lacked and what the planner did instead). All nullable: rows stored before read
//! as "the primary identifier only" and "nothing recorded".

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Exams {
    Table,
    PatientIds,
}

#[derive(DeriveIden)]
enum ExamPlans {
    Table,
    Archives,
    Inputs,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite takes one column per ALTER TABLE.
        manager
            .alter_table(Table::alter().table(Exams::Table).add_column(json_binary_null(Exams::PatientIds)).to_owned())
            .await?;
        manager
            .alter_table(
                Table::alter().table(ExamPlans::Table).add_column(json_binary_null(ExamPlans::Archives)).to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter().table(ExamPlans::Table).add_column(json_binary_null(ExamPlans::Inputs)).to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.alter_table(Table::alter().table(ExamPlans::Table).drop_column(ExamPlans::Inputs).to_owned()).await?;
        manager.alter_table(Table::alter().table(ExamPlans::Table).drop_column(ExamPlans::Archives).to_owned()).await?;
        manager.alter_table(Table::alter().table(Exams::Table).drop_column(Exams::PatientIds).to_owned()).await
    }
}
