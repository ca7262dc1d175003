//! priorfetch's database: the only hand-off between listener, planner and mover.
//!
//! Layout:
//! - `entity/`: sea-orm entities (exams, priors, retrieve_jobs, archive_slots, dead_letters),
//!   private: callers get domain types (`Job`, `ExamRecord`), mapped in `rows.rs`.
//! - `migration/`: one migration set for Postgres and SQLite.
//! - `exams.rs`: idempotent exam intake, planner claims, dead letters.
//! - `jobs/`: the retrieve-job queue: enqueue, claim under a per-archive cap, progress,
//!   finish, retry with backoff, cancel, rescue of expired leases, retention purge.
//! - `liveness.rs`: worker identities, their heartbeat, hand-back at start-up.
//! - `retrieval.rs`: the mover's records: instances a retry still needs, the destination's
//!   count, the exam roll-up.
//! - `planning.rs`: a plan recorded in one transaction (priors with reasons, the plan's
//!   explanation, jobs); re-plans of exams an archive was unreachable for.
//! - `operator.rs`: filtered exam and job views, bulk retry, dead letters by ID, the audit
//!   trail of operator actions (admin API and CLI).
//! - `backoff.rs`: the retry policy.
//! - `console.rs`: the web console's reads (jobs per exam, slots, last retrieve and
//!   C-FIND per archive) and its reschedule of one job.
//! - `worklist.rs`: a source's exams by key prefix and time, re-opening a cancelled exam.
//! - `signal.rs`: wake-ups when work is enqueued (Postgres LISTEN/NOTIFY, in-process on SQLite).
//! - `signals.rs`: read-only queries behind the readiness and queue metrics (`crates/signals`).
//!
//! Every operation is one short transaction; no transaction is held across network work.
//! Postgres supports many replicas (claims use `FOR UPDATE SKIP LOCKED`); SQLite is for a
//! single process (one connection, so a single writer).

pub mod backoff;
mod console;
mod entity;
mod error;
mod exams;
mod exams_pg;
pub mod housekeeping;
mod jobs;
pub mod liveness;
pub mod migration;
mod operator;
mod planning;
mod retrieval;
mod rows;
mod signal;
mod signals;
mod worklist;

pub use backoff::RetryPolicy;
pub use console::{ExamJobs, SlotUse};
pub use entity::dead_letter::Model as DeadLetter;
pub use entity::exam_plan::Model as ExamPlan;
pub use entity::prior::Model as Prior;
pub use error::StoreError;
pub use exams::{Inserted, NewExam};
pub use jobs::{
    ArchivePreference, ClaimOrder, Failover, Finish, NewJob, PurgeReport, RescueReport, RescueScope, RetryOutcome,
};
pub use liveness::{Heartbeat, HeartbeatOptions, role_of_identity, worker_identity};
pub use operator::{AuditEntry, AuditRecord, ExamFilter, JobFilter};
pub use planning::{PlanOutcome, PlanRecord, PriorRecord};
pub use priorfetch_domain::{
    Counts, ExamPriority, ExamRecord, ExamStatus, Job, JobState, PatientIdentifier, RetrieveMethod,
};
pub use retrieval::ExamRollUp;
pub use signal::WorkSignal;
pub use signals::{OpenJobs, Readiness, UpcomingExams, signal_statements};

use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend};
use sea_orm_migration::MigratorTrait;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The Postgres NOTIFY channel raised when retrieve jobs or exams are enqueued.
pub const WORK_CHANNEL: &str = "priorfetch_work";

/// A handle on the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
    /// Bumped on every local enqueue and on every NOTIFY from other processes.
    work: Arc<watch::Sender<u64>>,
    listener_started: Arc<tokio::sync::OnceCell<()>>,
}

/// No transaction of ours waits on anything but the database between its statements.
const IDLE_IN_TRANSACTION_LIMIT: &str = "30s";

impl Store {
    /// Connects to `postgres://...` or `sqlite:...`. `password`, when not empty, is put
    /// into the Postgres URL here so the configured URL itself can be printed.
    pub async fn connect(url: &str, password: &str, max_connections: u32) -> Result<Store, StoreError> {
        let is_sqlite = url.starts_with("sqlite:");
        let url = if password.is_empty() || is_sqlite { url.to_string() } else { with_password(url, password) };
        let mut options = ConnectOptions::new(url);
        options
            .sqlx_logging(false)
            .connect_timeout(Duration::from_secs(10))
            .acquire_timeout(Duration::from_secs(10))
            // A ping on every checkout is one more round trip per queue statement (claims
            // run thousands per second); only connections idle long enough for a proxy or
            // the server to have dropped them are pinged.
            .test_before_acquire_if_idle_for(Duration::from_secs(30));
        if is_sqlite {
            // One connection: SQLite has a single writer, and one connection makes every
            // transaction (claims included) serial without SQLITE_BUSY retries.
            options.max_connections(1).min_connections(1);
            options.map_sqlx_sqlite_opts(|o| {
                o.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                    .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                    .foreign_keys(true)
                    .busy_timeout(Duration::from_secs(10))
            });
        } else {
            options.max_connections(max_connections.max(2)).min_connections(1);
            // Queue statements are prepared once per connection and run thousands of times
            // with the same shape: a generic plan skips ~2 ms of planning per claim
            // (measured by scripts/bench-claim).
            // A transaction whose task was cancelled mid-way must not keep its row locks
            // until its pooled connection happens to be used again: the server ends it.
            options.map_sqlx_postgres_opts(|o| {
                o.options([
                    ("plan_cache_mode", "force_generic_plan"),
                    ("idle_in_transaction_session_timeout", IDLE_IN_TRANSACTION_LIMIT),
                ])
            });
        }
        let db = Database::connect(options).await.map_err(StoreError::Connect)?;
        let (work, _) = watch::channel(0);
        Ok(Store { db, work: Arc::new(work), listener_started: Arc::new(tokio::sync::OnceCell::new()) })
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        migration::Migrator::up(&self.db, None).await.map_err(StoreError::Migrate)
    }

    /// Readiness: one round trip.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.db.ping().await.map_err(|e| StoreError::query("ping", e))
    }

    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    pub fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    pub fn is_postgres(&self) -> bool {
        self.backend() == DbBackend::Postgres
    }

    /// Wakes local waiters, and on Postgres other processes, that work was enqueued.
    /// Call inside the enqueuing transaction so the NOTIFY is sent on commit.
    async fn notify_work<C: ConnectionTrait>(&self, conn: &C) -> Result<(), StoreError> {
        if self.is_postgres() {
            conn.execute_unprepared(&format!("NOTIFY {WORK_CHANNEL}"))
                .await
                .map_err(|e| StoreError::query("notify", e))?;
        }
        Ok(())
    }

    fn wake_local(&self) {
        self.work.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// `postgres://user@host/db` + password -> `postgres://user:password@host/db`.
fn with_password(url: &str, password: &str) -> String {
    // RFC 3986: everything but the unreserved characters is percent-encoded
    const KEPT: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
    let encoded = percent_encoding::utf8_percent_encode(password, KEPT).to_string();
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => {
            let user = &url[s + 3..at];
            let user = user.split(':').next().unwrap_or(user);
            format!("{}{}:{}{}", &url[..s + 3], user, encoded, &url[at..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn password_goes_into_the_url_encoded() {
        assert_eq!(super::with_password("postgres://app@db:5432/x", "p@ss w"), "postgres://app:p%40ss%20w@db:5432/x");
        assert_eq!(super::with_password("postgres://db/x", "pw"), "postgres://db/x");
    }
}
