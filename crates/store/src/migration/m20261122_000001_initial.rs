//! exams, priors, retrieve_jobs, archive_slots, dead_letters.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Exams {
    Table,
    Id,
    EventKey,
    PatientId,
    Issuer,
    AccessionNumber,
    StudyInstanceUid,
    ScheduledAt,
    Modality,
    BodyPart,
    ProcedureCode,
    ProcedureText,
    Priority,
    Status,
    TraceParent,
    LeasedUntil,
    Worker,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Priors {
    Table,
    Id,
    ExamId,
    Archive,
    StudyInstanceUid,
    StudyDate,
    Modalities,
    Description,
    ExpectedInstances,
    Selected,
    Reason,
    CreatedAt,
}

#[derive(DeriveIden)]
enum RetrieveJobs {
    Table,
    Id,
    ExamId,
    StudyInstanceUid,
    Archive,
    Method,
    Destination,
    State,
    Priority,
    NotBefore,
    Deadline,
    Attempt,
    MaxAttempts,
    Remaining,
    Completed,
    Failed,
    Warning,
    ExpectedInstances,
    LastStatus,
    LastError,
    Errors,
    LeasedUntil,
    Worker,
    CreatedAt,
    UpdatedAt,
    FinishedAt,
}

#[derive(DeriveIden)]
enum ArchiveSlots {
    Table,
    Archive,
    Slot,
    JobId,
    LeasedUntil,
}

#[derive(DeriveIden)]
enum DeadLetters {
    Table,
    Id,
    Source,
    Payload,
    Reason,
    ReceivedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Exams::Table)
                .if_not_exists()
                .col(big_pk_auto(Exams::Id))
                .col(string_uniq(Exams::EventKey))
                .col(string(Exams::PatientId))
                .col(string_null(Exams::Issuer))
                .col(string_null(Exams::AccessionNumber))
                .col(string_null(Exams::StudyInstanceUid))
                .col(timestamp_with_time_zone_null(Exams::ScheduledAt))
                .col(string_null(Exams::Modality))
                .col(string_null(Exams::BodyPart))
                .col(string_null(Exams::ProcedureCode))
                .col(string_null(Exams::ProcedureText))
                .col(string(Exams::Priority))
                .col(string(Exams::Status))
                .col(string_null(Exams::TraceParent))
                .col(timestamp_with_time_zone_null(Exams::LeasedUntil))
                .col(string_null(Exams::Worker))
                .col(timestamp_with_time_zone(Exams::CreatedAt))
                .col(timestamp_with_time_zone(Exams::UpdatedAt))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create().name("exams_status_idx").table(Exams::Table).col(Exams::Status).col(Exams::Id).to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("exams_patient_idx")
                .table(Exams::Table)
                .col(Exams::PatientId)
                .col(Exams::Issuer)
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Priors::Table)
                .if_not_exists()
                .col(big_pk_auto(Priors::Id))
                .col(big_integer(Priors::ExamId))
                .col(string(Priors::Archive))
                .col(string(Priors::StudyInstanceUid))
                .col(string_null(Priors::StudyDate))
                .col(string_null(Priors::Modalities))
                .col(string_null(Priors::Description))
                .col(integer_null(Priors::ExpectedInstances))
                .col(boolean(Priors::Selected))
                .col(string(Priors::Reason))
                .col(timestamp_with_time_zone(Priors::CreatedAt))
                .foreign_key(
                    ForeignKey::create()
                        .from(Priors::Table, Priors::ExamId)
                        .to(Exams::Table, Exams::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("priors_unique_idx")
                .table(Priors::Table)
                .col(Priors::ExamId)
                .col(Priors::Archive)
                .col(Priors::StudyInstanceUid)
                .unique()
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(RetrieveJobs::Table)
                .if_not_exists()
                .col(big_pk_auto(RetrieveJobs::Id))
                .col(big_integer(RetrieveJobs::ExamId))
                .col(string(RetrieveJobs::StudyInstanceUid))
                .col(string(RetrieveJobs::Archive))
                .col(string(RetrieveJobs::Method))
                .col(string(RetrieveJobs::Destination))
                .col(string(RetrieveJobs::State))
                .col(integer(RetrieveJobs::Priority))
                .col(timestamp_with_time_zone(RetrieveJobs::NotBefore))
                .col(timestamp_with_time_zone_null(RetrieveJobs::Deadline))
                .col(integer(RetrieveJobs::Attempt))
                .col(integer(RetrieveJobs::MaxAttempts))
                .col(integer_null(RetrieveJobs::Remaining))
                .col(integer(RetrieveJobs::Completed))
                .col(integer(RetrieveJobs::Failed))
                .col(integer(RetrieveJobs::Warning))
                .col(integer_null(RetrieveJobs::ExpectedInstances))
                .col(integer_null(RetrieveJobs::LastStatus))
                .col(text_null(RetrieveJobs::LastError))
                .col(json_binary(RetrieveJobs::Errors))
                .col(timestamp_with_time_zone_null(RetrieveJobs::LeasedUntil))
                .col(string_null(RetrieveJobs::Worker))
                .col(timestamp_with_time_zone(RetrieveJobs::CreatedAt))
                .col(timestamp_with_time_zone(RetrieveJobs::UpdatedAt))
                .col(timestamp_with_time_zone_null(RetrieveJobs::FinishedAt))
                .foreign_key(
                    ForeignKey::create()
                        .from(RetrieveJobs::Table, RetrieveJobs::ExamId)
                        .to(Exams::Table, Exams::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        // The unique key that makes enqueue idempotent.
        m.create_index(
            Index::create()
                .name("retrieve_jobs_unique_idx")
                .table(RetrieveJobs::Table)
                .col(RetrieveJobs::ExamId)
                .col(RetrieveJobs::StudyInstanceUid)
                .col(RetrieveJobs::Destination)
                .unique()
                .to_owned(),
        )
        .await?;
        // Partial indexes (both dialects support WHERE): the claim scans only open jobs in
        // claim order, the rescuer only running ones; finished rows cost nothing.
        let conn = m.get_connection();
        conn.execute_unprepared(
            "CREATE INDEX IF NOT EXISTS retrieve_jobs_claim_idx ON retrieve_jobs \
             (archive, priority, deadline, id) WHERE state IN ('scheduled', 'available', 'retryable')",
        )
        .await?;
        conn.execute_unprepared(
            "CREATE INDEX IF NOT EXISTS retrieve_jobs_running_idx ON retrieve_jobs (leased_until) \
             WHERE state = 'running'",
        )
        .await?;
        conn.execute_unprepared(
            "CREATE INDEX IF NOT EXISTS retrieve_jobs_finished_idx ON retrieve_jobs (finished_at) \
             WHERE finished_at IS NOT NULL",
        )
        .await?;
        m.create_index(
            Index::create()
                .name("retrieve_jobs_exam_idx")
                .table(RetrieveJobs::Table)
                .col(RetrieveJobs::ExamId)
                .to_owned(),
        )
        .await?;

        // One row per allowed concurrent retrieve of an archive: a claim must take a free
        // slot row (FOR UPDATE SKIP LOCKED), so the cap holds across replicas.
        m.create_table(
            Table::create()
                .table(ArchiveSlots::Table)
                .if_not_exists()
                .col(string(ArchiveSlots::Archive))
                .col(integer(ArchiveSlots::Slot))
                .col(big_integer_null(ArchiveSlots::JobId))
                .col(timestamp_with_time_zone_null(ArchiveSlots::LeasedUntil))
                .primary_key(Index::create().col(ArchiveSlots::Archive).col(ArchiveSlots::Slot))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(DeadLetters::Table)
                .if_not_exists()
                .col(big_pk_auto(DeadLetters::Id))
                .col(string(DeadLetters::Source))
                .col(blob(DeadLetters::Payload))
                .col(text(DeadLetters::Reason))
                .col(timestamp_with_time_zone(DeadLetters::ReceivedAt))
                .to_owned(),
        )
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for table in ["dead_letters", "archive_slots", "retrieve_jobs", "priors", "exams"] {
            m.drop_table(Table::drop().table(Alias::new(table)).if_exists().to_owned()).await?;
        }
        Ok(())
    }
}
