//! Fewer index writes per queue transition. A claim or a finish changes `state`, so it
//! is never a HOT update: the new row version is added to every index of
//! `retrieve_jobs`. Two of them earned nothing for that cost:
//! - `retrieve_jobs_exam_idx (exam_id)` repeated the leading column of the unique key
//!   `(exam_id, study_instance_uid, destination)`, which serves every lookup by exam;
//! - `retrieve_jobs_running_idx (leased_until) WHERE state = 'running'` served only the
//!   rescuer, which now starts from `archive_slots` (every running job holds a slot, and
//!   the slot's lease moves with the job's).

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::ConnectionTrait;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("DROP INDEX IF EXISTS retrieve_jobs_exam_idx").await?;
        db.execute_unprepared("DROP INDEX IF EXISTS retrieve_jobs_running_idx").await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("CREATE INDEX IF NOT EXISTS retrieve_jobs_exam_idx ON retrieve_jobs (exam_id)").await?;
        db.execute_unprepared(
            "CREATE INDEX IF NOT EXISTS retrieve_jobs_running_idx ON retrieve_jobs (leased_until) \
             WHERE state = 'running'",
        )
        .await?;
        Ok(())
    }
}
