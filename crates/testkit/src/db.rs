//! A fresh database per test: a new Postgres database on the server named by
//! `PRIORFETCH_TEST_POSTGRES` (default `postgres://postgres@127.0.0.1:5432`, as
//! `scripts/test` provides), or a new SQLite file in a temp folder.
//!
//! Postgres test databases are named `pf_test_*`; `scripts/test` drops leftovers at start.

use sea_orm::{ConnectionTrait, Database};

pub struct TestDb {
    /// URL to hand to `Store::connect`.
    pub url: String,
    /// Keeps the SQLite folder alive for the test's duration.
    _dir: Option<tempfile::TempDir>,
}

pub fn postgres_server_url() -> String {
    std::env::var("PRIORFETCH_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

impl TestDb {
    /// Creates an empty Postgres database. Panics with the fix when no server answers:
    /// the tests need the real server that `scripts/test` starts.
    pub async fn postgres() -> TestDb {
        let server = postgres_server_url();
        let admin = Database::connect(format!("{server}/postgres")).await.unwrap_or_else(|e| {
            panic!("no PostgreSQL at {server} ({e}): run the tests through scripts/test, which starts it")
        });
        let name = format!("pf_test_{}", uuid::Uuid::new_v4().simple());
        admin.execute_unprepared(&format!("CREATE DATABASE {name}")).await.expect("create test database");
        admin.close().await.ok();
        TestDb { url: format!("{server}/{name}"), _dir: None }
    }

    /// A new SQLite database file in a temp folder.
    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("test.db").display());
        TestDb { url, _dir: Some(dir) }
    }
}

/// Tracing output in tests only when `TEST_LOG` is set (zero2prod's habit).
pub fn init_test_log() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt().with_env_filter("debug").with_test_writer().try_init();
    }
}

/// Instantiates each `async fn name(db: TestDb)` test body twice: against a fresh
/// Postgres database (`mod postgres`) and a fresh SQLite file (`mod sqlite`).
#[macro_export]
macro_rules! both_databases {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::db::TestDb::postgres().await).await }
            )*
        }
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::db::TestDb::sqlite()).await }
            )*
        }
    };
}
