//! Worker identities and their heartbeat.
//!
//! Each claiming process has a stable identity per host and role (`host/mover`), or a
//! configured instance name. It writes the identity into every claim, beats every few
//! seconds (`workers.expires_at` = now + `dead_after`), and at start-up hands back
//! whatever a crashed predecessor of the same identity still held
//! ([`Store::reclaim_worker`]). The rescuer hands back the claims of identities whose
//! heartbeat expired, so a dead process of another host costs `dead_after` plus one
//! rescue tick, while the per-job lease (extended by the running job itself) stays the
//! backstop.

use crate::entity::{exam, worker};
use crate::{Store, StoreError};
use chrono::Utc;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};
use std::time::Duration;

/// `instance/role` with a configured instance name (stable across restarts, so a start-up
/// hands back at once what its crashed predecessor held); otherwise `hostname/role/pid`,
/// unique per process, so several processes of one role on one host never take each
/// other's claims (a dead one is then found by its expired heartbeat).
pub fn worker_identity(instance: &str, role: &str) -> String {
    match instance.trim() {
        "" => format!("{}/{role}/{}", hostname(), std::process::id()),
        instance => format!("{instance}/{role}"),
    }
}

/// The role of an identity made by [`worker_identity`]: `instance/role` or
/// `host/role/pid`. None for a name of another shape.
pub fn role_of_identity(name: &str) -> Option<&str> {
    let mut parts = name.rsplit('/');
    let last = parts.next()?;
    let role = if !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()) { parts.next()? } else { last };
    // an identity always has a prefix before its role
    parts.next()?;
    (!role.is_empty()).then_some(role)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// How a worker shows it is alive.
#[derive(Debug, Clone, Copy)]
pub struct HeartbeatOptions {
    /// Time between beats.
    pub every: Duration,
    /// A worker whose last beat is older than this is dead.
    pub dead_after: Duration,
    /// Planner: also extend the leases of the exams it is planning by this much.
    pub exam_lease: Option<Duration>,
}

/// The running heartbeat; it stops when dropped.
pub struct Heartbeat {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Store {
    /// One beat: the identity's row, and with `exam_lease` its planning exams' leases.
    pub async fn beat(&self, name: &str, options: &HeartbeatOptions) -> Result<(), StoreError> {
        let op = "heartbeat";
        let now = Utc::now();
        let row = worker::ActiveModel {
            name: Set(name.to_string()),
            started_at: Set(now),
            beat_at: Set(now),
            expires_at: Set(now + options.dead_after),
        };
        worker::Entity::insert(row)
            .on_conflict(
                OnConflict::column(worker::Column::Name)
                    .update_columns([worker::Column::BeatAt, worker::Column::ExpiresAt])
                    .to_owned(),
            )
            .exec_without_returning(&self.db)
            .await
            .map_err(|e| StoreError::query(op, e))?;
        if let Some(lease) = options.exam_lease {
            exam::Entity::update_many()
                .col_expr(exam::Column::LeasedUntil, Expr::value(now + lease))
                .filter(exam::Column::Status.eq("planning"))
                .filter(exam::Column::Worker.eq(name))
                .exec(&self.db)
                .await
                .map_err(|e| StoreError::query(op, e))?;
        }
        Ok(())
    }

    /// Starts a worker's life: beats first (so the predecessor's expired row cannot make
    /// the new incarnation look dead), hands back what the predecessor held, and beats
    /// in the background until the returned handle is dropped. A failing database is
    /// retried by the beat itself; the reclaim error is returned so the caller can log it.
    pub async fn start_worker(
        &self,
        name: &str,
        options: HeartbeatOptions,
    ) -> (Heartbeat, Result<crate::RescueReport, StoreError>) {
        let _ = self.beat(name, &options).await;
        let reclaimed = self.reclaim_worker(name).await;
        let store = self.clone();
        let name = name.to_string();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(options.every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut failing = false;
            loop {
                tick.tick().await;
                // Bounded: a hung connection must not stall the beats that follow.
                let result = tokio::time::timeout(options.dead_after, store.beat(&name, &options)).await;
                match result {
                    Ok(Ok(())) if failing => {
                        tracing::info!(worker = %name, "heartbeat restored");
                        failing = false;
                    }
                    Ok(Ok(())) => {}
                    Ok(Err(e)) if !failing => {
                        tracing::warn!(worker = %name, error = %e, "heartbeat failed; retrying");
                        failing = true;
                    }
                    Err(_) if !failing => {
                        tracing::warn!(worker = %name, "heartbeat timed out; retrying");
                        failing = true;
                    }
                    _ => {}
                }
            }
        });
        (Heartbeat { task }, reclaimed)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn identity_is_instance_or_host_then_role() {
        assert_eq!(super::worker_identity("north-1", "mover"), "north-1/mover");
        let own = super::worker_identity("  ", "planner");
        assert!(own.ends_with(&format!("/planner/{}", std::process::id())), "{own}");
    }

    #[test]
    fn role_comes_back_from_an_identity() {
        use super::role_of_identity as role;
        assert_eq!(role(&super::worker_identity("north-1", "mover")), Some("mover"));
        assert_eq!(role(&super::worker_identity("", "listener")), Some("listener"));
        assert_eq!(role("host-a/planner/1234"), Some("planner"));
        assert_eq!(role("a/b/mover"), Some("mover"));
        assert_eq!((role("mover"), role("/"), role("12"), role("x/12")), (None, None, None, None));
    }
}
