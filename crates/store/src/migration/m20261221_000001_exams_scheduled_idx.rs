//! `exams (scheduled_at)`: the readiness signals (`signals.rs`) read exams by their
//! scheduled time every few seconds in every process; without it each read scans the
//! whole retention of exams. `status` is already indexed, so status updates were never
//! HOT: this index adds one entry per exam row version, not a lost HOT update.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::ConnectionTrait;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("CREATE INDEX IF NOT EXISTS exams_scheduled_idx ON exams (scheduled_at)").await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared("DROP INDEX IF EXISTS exams_scheduled_idx").await?;
        Ok(())
    }
}
