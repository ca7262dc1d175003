//! A private PostgreSQL server in a temp folder, for tests that stop, crash or restart the
//! database: the shared server on 5432 serves every other test and must never go down.
//!
//! `initdb` and `pg_ctl` come from `PRIORFETCH_PG_BIN` or the newest
//! `/usr/lib/postgresql/*/bin`. As root they run as user `postgres` (`runuser`), since the
//! server refuses to run as root. Every `pg_ctl` call waits at most 30 s; the server is
//! stopped (`-m immediate`) when the guard drops.

use crate::ports::free_port;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// How the server goes down: `Fast` (clean shutdown, clients disconnected) or
/// `Immediate` (no checkpoint: a crash as far as clients and recovery are concerned).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    Fast,
    Immediate,
}

pub struct PgInstance {
    pub port: u16,
    bin: PathBuf,
    dir: tempfile::TempDir,
    as_root: bool,
    running: bool,
}

/// The newest installed server's `bin` folder.
fn find_bin() -> PathBuf {
    if let Ok(dir) = std::env::var("PRIORFETCH_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let version = e.file_name().to_str()?.parse::<u32>().ok()?;
                    let bin = e.path().join("bin");
                    bin.join("initdb").exists().then_some((version, bin))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!("no PostgreSQL server binaries under /usr/lib/postgresql: run the tests through scripts/test (or set PRIORFETCH_PG_BIN)")
    })
}

impl PgInstance {
    /// `initdb` (trust auth, no fsync) and start on a free loopback port.
    pub fn start() -> PgInstance {
        let bin = find_bin();
        let dir = tempfile::Builder::new().prefix("pf-pg-").tempdir().expect("temp dir");
        let as_root = std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false);
        if as_root {
            let status =
                Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()).status().expect("chown");
            assert!(status.success(), "chown of the private Postgres folder to user postgres failed");
        }
        let mut pg = PgInstance { port: free_port(), bin, dir, as_root, running: false };
        let data = pg.data_dir();
        let out = pg
            .command("initdb")
            .args(["-D", data.to_str().unwrap(), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"])
            .output()
            .expect("run initdb");
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        pg.start_server();
        pg
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, tool: &str) -> Command {
        let program = self.bin.join(tool);
        if self.as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        }
    }

    /// Starts the server on the same port and data (after [`PgInstance::stop`]); waits
    /// until it accepts connections.
    pub fn start_server(&mut self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100",
            self.port,
            self.dir.path().display()
        );
        let out = self
            .command("pg_ctl")
            .args(["-D", self.data_dir().to_str().unwrap(), "-l", self.log_path().to_str().unwrap()])
            .args(["-w", "-t", "30", "-o", &options, "start"])
            .output()
            .expect("run pg_ctl start");
        assert!(out.status.success(), "pg_ctl start failed: {}\n{}", String::from_utf8_lossy(&out.stderr), self.log());
        self.running = true;
    }

    /// Stops the server; its data stays for [`PgInstance::start_server`].
    pub fn stop(&mut self, mode: StopMode) {
        let mode = match mode {
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        };
        let out = self
            .command("pg_ctl")
            .args(["-D", self.data_dir().to_str().unwrap(), "-m", mode, "-w", "-t", "30", "stop"])
            .output()
            .expect("run pg_ctl stop");
        assert!(out.status.success(), "pg_ctl stop failed: {}", String::from_utf8_lossy(&out.stderr));
        self.running = false;
    }

    /// URL of database `postgres` as user `postgres` (trust auth).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// The server's log (start-up, crash recovery).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PgInstance {
    fn drop(&mut self) {
        if self.running {
            let _ = self
                .command("pg_ctl")
                .args(["-D", self.data_dir().to_str().unwrap_or_default(), "-m", "immediate", "-w", "-t", "30", "stop"])
                .output();
        }
    }
}
