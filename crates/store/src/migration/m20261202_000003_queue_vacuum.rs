//! Postgres only: the queue tables churn (every claim and finish rewrites a row), so they
//! are vacuumed early instead of at autovacuum's default 20% of the table: dead index
//! entries of finished jobs otherwise pile up in front of the claim's index scans. Free
//! space in each page (fillfactor) lets progress updates, which touch no indexed column,
//! stay HOT updates. SQLite has no such settings.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        let db = manager.get_connection();
        db.execute_unprepared(
            "ALTER TABLE retrieve_jobs SET (fillfactor = 85, autovacuum_vacuum_scale_factor = 0.0, \
             autovacuum_vacuum_threshold = 2000, autovacuum_vacuum_cost_delay = 0, \
             autovacuum_analyze_scale_factor = 0.02)",
        )
        .await?;
        db.execute_unprepared(
            "ALTER TABLE archive_slots SET (fillfactor = 50, autovacuum_vacuum_scale_factor = 0.0, \
             autovacuum_vacuum_threshold = 200, autovacuum_vacuum_cost_delay = 0)",
        )
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        let db = manager.get_connection();
        db.execute_unprepared(
            "ALTER TABLE retrieve_jobs RESET (fillfactor, autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold, \
             autovacuum_vacuum_cost_delay, autovacuum_analyze_scale_factor)",
        )
        .await?;
        db.execute_unprepared(
            "ALTER TABLE archive_slots RESET (fillfactor, autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold, \
             autovacuum_vacuum_cost_delay)",
        )
        .await?;
        Ok(())
    }
}
