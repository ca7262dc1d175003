//! One migration set for Postgres and SQLite, built with sea-query's schema builder so
//! the same code yields each dialect. One file per migration (`DeriveMigrationName`
//! names it after the file).

use sea_orm_migration::prelude::*;

mod m20261122_000001_initial;
mod m20261202_000001_planning;
mod m20261202_000002_retrieve_detail;
mod m20261202_000003_queue_vacuum;
mod m20261202_000004_lean_queue_indexes;
mod m20261210_000001_workers;
mod m20261216_000001_patient_identity;
mod m20261220_000001_readiness;
mod m20261221_000001_exams_scheduled_idx;
mod m20261222_000001_operator_audit;
mod m20261223_000001_job_trace_parent;

pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_initial::Migration),
            Box::new(m20261202_000001_planning::Migration),
            Box::new(m20261202_000002_retrieve_detail::Migration),
            Box::new(m20261202_000003_queue_vacuum::Migration),
            Box::new(m20261202_000004_lean_queue_indexes::Migration),
            Box::new(m20261210_000001_workers::Migration),
            Box::new(m20261216_000001_patient_identity::Migration),
            Box::new(m20261220_000001_readiness::Migration),
            Box::new(m20261221_000001_exams_scheduled_idx::Migration),
            Box::new(m20261222_000001_operator_audit::Migration),
            Box::new(m20261223_000001_job_trace_parent::Migration),
        ]
    }
}
