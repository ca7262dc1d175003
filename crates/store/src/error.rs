use sea_orm::DbErr;

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
}

impl StoreError {
    pub(crate) fn query(op: &'static str, source: DbErr) -> Self {
        StoreError::Query { op, source }
    }

    pub fn is_retryable(&self) -> bool {
        !matches!(self, StoreError::Migrate(_))
    }
}
