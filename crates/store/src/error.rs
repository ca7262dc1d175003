use sea_orm::{DbErr, RuntimeErr};

/// Database failures, by step. All are retryable except a failed migration, which needs
/// an operator.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] DbErr),
    #[error("database migration failed: {0}")]
    Migrate(#[source] DbErr),
    #[error("database operation '{op}' failed: {source}")]
    Query {
        op: &'static str,
        #[source]
        source: DbErr,
    },
    /// A row holds a value the store never writes (edited by hand): names the row and the
    /// value so an operator can fix or delete it.
    #[error("{table} row {id} cannot be read: {what}")]
    Unreadable { table: &'static str, id: i64, what: String },
}

impl StoreError {
    pub(crate) fn query(op: &'static str, source: DbErr) -> Self {
        StoreError::Query { op, source }
    }

    pub fn is_retryable(&self) -> bool {
        !matches!(self, StoreError::Migrate(_) | StoreError::Unreadable { .. })
    }

    /// The database could not be reached or could not serve anyone right now (connection,
    /// pool, shutdown, resources): retrying the same statement later may succeed. Anything
    /// else was refused because of what the statement carried, so the rows that caused it
    /// must be isolated instead of retried forever.
    pub fn is_unavailable(&self) -> bool {
        let source = match self {
            StoreError::Connect(_) => return true,
            StoreError::Unreadable { .. } => return false,
            StoreError::Migrate(source) | StoreError::Query { source, .. } => source,
        };
        match source {
            DbErr::Conn(_) | DbErr::ConnectionAcquire(_) => true,
            DbErr::Exec(runtime) | DbErr::Query(runtime) => runtime_unavailable(runtime),
            _ => false,
        }
    }
}

fn runtime_unavailable(error: &RuntimeErr) -> bool {
    use sea_orm::sqlx::Error as Sqlx;
    let RuntimeErr::SqlxError(error) = error else { return false };
    match error.as_ref() {
        Sqlx::Io(_)
        | Sqlx::Tls(_)
        | Sqlx::Protocol(_)
        | Sqlx::PoolTimedOut
        | Sqlx::PoolClosed
        | Sqlx::WorkerCrashed => true,
        // SQLSTATE classes: 08 connection, 53 insufficient resources, 57 operator
        // intervention (shutdown, cancel), 40 serialization/deadlock; SQLite's (extended) codes
        // are numbers: 5 BUSY, 6 LOCKED.
        Sqlx::Database(db) => db.code().is_some_and(|code| match code.len() {
            5 => ["08", "53", "57", "40"].iter().any(|class| code.starts_with(class)),
            _ => code.parse::<u32>().is_ok_and(|n| matches!(n & 0xff, 5 | 6)),
        }),
        _ => false,
    }
}
