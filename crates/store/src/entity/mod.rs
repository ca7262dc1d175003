//! sea-orm entities, one per table.

pub mod archive_slot;
pub mod audit;
pub mod dead_letter;
pub mod exam;
pub mod exam_plan;
pub mod prior;
pub mod retrieve_job;
pub mod worker;
