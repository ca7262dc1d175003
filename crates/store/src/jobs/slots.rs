//! Extra slots of a running job: a retrieve split over several associations holds one
//! slot of its archive per association. The extra rows carry the job's id like its own
//! slot, so every path that extends or frees "the job's slot" (progress, finish, retry,
//! hand-back, cancel, the rescuer) covers them too, and the archive's
//! `max_associations` holds across replicas.

use super::held_by;
use crate::entity::{archive_slot, retrieve_job};
use crate::{Store, StoreError};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, TransactionTrait};
use std::time::Duration;

impl Store {
    /// Takes up to `wanted` free slots of `archive` for job `job_id` (running, held by
    /// `worker`), leased like a claim. Returns how many it got: 0 when the archive is
    /// full or the job is no longer this worker's. No row lock is needed: the update
    /// only takes rows still free, so a concurrent claimer simply wins them.
    pub async fn claim_extra_slots(
        &self,
        job_id: i64,
        worker: &str,
        archive: &str,
        wanted: u32,
        lease: Duration,
    ) -> Result<u32, StoreError> {
        let op = "claim extra slots";
        if wanted == 0 {
            return Ok(0);
        }
        let until = Utc::now() + lease;
        let txn = self.db.begin().await.map_err(|e| StoreError::query(op, e))?;
        let held = retrieve_job::Entity::find()
            .filter(held_by(job_id, worker))
            .filter(retrieve_job::Column::Archive.eq(archive))
            .one(&txn)
            .await
            .map_err(|e| StoreError::query(op, e))?;
        if held.is_none() {
            return Ok(0);
        }
        let free: Vec<i32> = archive_slot::Entity::find()
            .select_only()
            .column(archive_slot::Column::Slot)
            .filter(archive_slot::Column::Archive.eq(archive))
            .filter(archive_slot::Column::JobId.is_null())
            .order_by_asc(archive_slot::Column::Slot)
            .limit(wanted as u64)
            .into_tuple()
            .all(&txn)
            .await
            .map_err(|e| StoreError::query(op, e))?;
        if free.is_empty() {
            return Ok(0);
        }
        let taken = archive_slot::Entity::update_many()
            .col_expr(archive_slot::Column::JobId, Expr::value(Some(job_id)))
            .col_expr(archive_slot::Column::LeasedUntil, Expr::value(Some(until)))
            .filter(archive_slot::Column::Archive.eq(archive))
            .filter(archive_slot::Column::Slot.is_in(free))
            .filter(archive_slot::Column::JobId.is_null())
            .exec(&txn)
            .await
            .map_err(|e| StoreError::query(op, e))?;
        txn.commit().await.map_err(|e| StoreError::query(op, e))?;
        Ok(taken.rows_affected as u32)
    }

    /// Frees every slot job `job_id` holds but one (the split retrieve ended; the job
    /// keeps its own slot until it finishes). Returns how many were freed.
    pub async fn release_extra_slots(&self, job_id: i64, worker: &str) -> Result<u32, StoreError> {
        let op = "release extra slots";
        let txn = self.db.begin().await.map_err(|e| StoreError::query(op, e))?;
        let held = retrieve_job::Entity::find()
            .filter(held_by(job_id, worker))
            .one(&txn)
            .await
            .map_err(|e| StoreError::query(op, e))?;
        let Some(job) = held else { return Ok(0) };
        let slots: Vec<i32> = archive_slot::Entity::find()
            .select_only()
            .column(archive_slot::Column::Slot)
            .filter(archive_slot::Column::Archive.eq(job.archive.as_str()))
            .filter(archive_slot::Column::JobId.eq(job_id))
            .order_by_asc(archive_slot::Column::Slot)
            .into_tuple()
            .all(&txn)
            .await
            .map_err(|e| StoreError::query(op, e))?;
        let extra: Vec<i32> = slots.into_iter().skip(1).collect();
        if extra.is_empty() {
            return Ok(0);
        }
        let freed = archive_slot::Entity::update_many()
            .col_expr(archive_slot::Column::JobId, Expr::value(Option::<i64>::None))
            .col_expr(archive_slot::Column::LeasedUntil, Expr::value(Option::<DateTime<Utc>>::None))
            .filter(archive_slot::Column::Archive.eq(job.archive.as_str()))
            .filter(archive_slot::Column::JobId.eq(job_id))
            .filter(archive_slot::Column::Slot.is_in(extra))
            .exec(&txn)
            .await
            .map_err(|e| StoreError::query(op, e))?;
        txn.commit().await.map_err(|e| StoreError::query(op, e))?;
        Ok(freed.rows_affected as u32)
    }

    /// How many slots job `job_id` holds (tests and diagnostics).
    pub async fn slots_held(&self, job_id: i64) -> Result<u32, StoreError> {
        let n = archive_slot::Entity::find()
            .filter(archive_slot::Column::JobId.eq(job_id))
            .all(&self.db)
            .await
            .map_err(|e| StoreError::query("slots held", e))?
            .len();
        Ok(n as u32)
    }
}
