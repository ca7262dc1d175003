//! Support for the chaos suite (tests/chaos.rs): processes that can be killed with
//! SIGKILL and started again, a poller of the job tables that tells when work resumed
//! after a fault, a minimal HTTP client for the intake, and the SOP Instance UIDs of the
//! files a destination received.
//!
//! The poller reads the tables with its own small pool and treats every error as "no
//! answer yet", so it keeps polling through a database restart.

use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A child process (e.g. `priorfetch mover`) that logs to a file, appending across restarts.
pub struct Proc {
    pub name: String,
    command: Vec<String>,
    env: Vec<(String, String)>,
    dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    /// Starts `program args...` in `dir` with `env`; stdout and stderr go to `dir/<name>.log`.
    pub fn start(name: &str, program: &str, args: &[&str], env: &[(&str, &str)], dir: &Path) -> Proc {
        let mut command = vec![program.to_string()];
        command.extend(args.iter().map(|a| a.to_string()));
        let mut proc = Proc {
            name: name.into(),
            command,
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            dir: dir.to_path_buf(),
            log: dir.join(format!("{name}.log")),
            child: None,
        };
        proc.restart();
        proc
    }

    /// Starts the process again (a supervisor restarting it); kills a running one first.
    pub fn restart(&mut self) {
        self.kill9();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("process log");
        let child = Command::new(&self.command[0])
            .args(&self.command[1..])
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(&self.dir)
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.name));
        self.child = Some(child);
    }

    /// SIGKILL, as a crash or the OOM killer would (no shutdown code runs).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub fn terminate(&mut self, grace: Duration) {
        if let Some(child) = self.child.as_mut() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let start = Instant::now();
            while matches!(child.try_wait(), Ok(None)) && start.elapsed() < grace {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        self.kill9();
    }

    /// The exit status when the process ended on its own.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// One retrieve job as the poller sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRow {
    pub id: i64,
    pub patient_id: String,
    pub study_instance_uid: String,
    pub state: String,
    pub attempt: i64,
    pub completed: i64,
    /// Why the last attempt failed, if it did (printed when a scenario fails).
    pub last_error: Option<String>,
}

/// The job and exam tables at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub jobs: Vec<JobRow>,
    /// Exam status -> count.
    pub exams: HashMap<String, i64>,
}

/// What counts as work resuming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// Intake: a new exam row.
    Intake,
    /// Planner: an exam leaves `received`/`planning`, or a new job row.
    Planner,
    /// Mover: a job's instance count grows, a re-claimed job counts its first instance,
    /// or a job completes.
    Mover,
}

const EXAM_DONE: [&str; 4] = ["complete", "partial", "failed", "cancelled"];

impl Snapshot {
    pub fn exam_count(&self) -> i64 {
        self.exams.values().sum()
    }

    /// Exams past planning (jobs written).
    pub fn exams_planned(&self) -> i64 {
        self.exams.iter().filter(|(s, _)| !["received", "planning"].contains(&s.as_str())).map(|(_, n)| n).sum()
    }

    pub fn exams_finished(&self) -> i64 {
        self.exams.iter().filter(|(s, _)| EXAM_DONE.contains(&s.as_str())).map(|(_, n)| n).sum()
    }

    pub fn exams_in(&self, status: &str) -> i64 {
        self.exams.get(status).copied().unwrap_or(0)
    }

    pub fn jobs_in(&self, state: &str) -> usize {
        self.jobs.iter().filter(|j| j.state == state).count()
    }

    /// Running jobs that already counted instances: a kill now interrupts a transfer.
    pub fn jobs_mid_transfer(&self) -> usize {
        self.jobs.iter().filter(|j| j.state == "running" && j.completed > 0).count()
    }

    pub fn completed_instances(&self) -> i64 {
        self.jobs.iter().map(|j| j.completed).sum()
    }

    /// Whether `self` shows `work` done since `base`.
    pub fn progressed_since(&self, base: &Snapshot, work: Work) -> bool {
        match work {
            Work::Intake => self.exam_count() > base.exam_count(),
            Work::Planner => self.exams_planned() > base.exams_planned() || self.jobs.len() > base.jobs.len(),
            Work::Mover => {
                let before: HashMap<i64, &JobRow> = base.jobs.iter().map(|j| (j.id, j)).collect();
                self.jobs.iter().any(|j| match before.get(&j.id) {
                    None => j.completed > 0 || j.state == "completed",
                    Some(b) => {
                        (j.state == "completed" && b.state != "completed")
                            || (j.attempt == b.attempt && j.completed > b.completed)
                            || (j.attempt > b.attempt && j.completed > 0)
                    }
                })
            }
        }
    }
}

/// Polls the job tables of one database.
pub struct Probe {
    db: DatabaseConnection,
}

impl Probe {
    pub async fn connect(url: &str) -> Probe {
        let mut options = ConnectOptions::new(url.to_string());
        options
            .max_connections(2)
            .min_connections(0)
            .connect_timeout(Duration::from_secs(2))
            .acquire_timeout(Duration::from_secs(2))
            .test_before_acquire(true)
            .sqlx_logging(false);
        let db = Database::connect(options).await.unwrap_or_else(|e| panic!("probe cannot connect to {url}: {e}"));
        Probe { db }
    }

    /// The tables now, or `None` while the database does not answer (or has no schema yet).
    pub async fn snapshot(&self) -> Option<Snapshot> {
        let query = |sql: &str| self.db.query_all_raw(Statement::from_string(DbBackend::Postgres, sql.to_string()));
        let jobs = tokio::time::timeout(
            Duration::from_secs(3),
            query(
                "SELECT j.id::bigint AS id, e.patient_id::text AS patient_id, j.study_instance_uid::text AS study, \
                 j.state::text AS state, j.attempt::bigint AS attempt, j.completed::bigint AS completed, \
                 j.last_error::text AS last_error \
                 FROM retrieve_jobs j JOIN exams e ON e.id = j.exam_id ORDER BY j.id",
            ),
        )
        .await
        .ok()?
        .ok()?;
        let exams = tokio::time::timeout(
            Duration::from_secs(3),
            query("SELECT status::text AS status, count(*)::bigint AS n FROM exams GROUP BY status"),
        )
        .await
        .ok()?
        .ok()?;
        let jobs = jobs
            .iter()
            .map(|r| {
                Some(JobRow {
                    id: r.try_get("", "id").ok()?,
                    patient_id: r.try_get("", "patient_id").ok()?,
                    study_instance_uid: r.try_get("", "study").ok()?,
                    state: r.try_get("", "state").ok()?,
                    attempt: r.try_get("", "attempt").ok()?,
                    completed: r.try_get("", "completed").ok()?,
                    last_error: r.try_get("", "last_error").ok()?,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        let exams = exams
            .iter()
            .map(|r| Some((r.try_get("", "status").ok()?, r.try_get("", "n").ok()?)))
            .collect::<Option<_>>()?;
        Some(Snapshot { jobs, exams })
    }

    /// Polls every 200 ms until `check` holds; the last snapshot seen, or `None` after `limit`.
    pub async fn wait_until(
        &self,
        limit: Duration,
        mut check: impl FnMut(&Snapshot) -> bool,
    ) -> Result<Snapshot, Option<Snapshot>> {
        let start = Instant::now();
        let mut last = None;
        while start.elapsed() < limit {
            if let Some(s) = self.snapshot().await {
                if check(&s) {
                    return Ok(s);
                }
                last = Some(s);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(last)
    }

    /// Time from `since` (the fault's end) until the first `work` progress beyond `base`,
    /// polled every 200 ms; `None` when nothing moved within `limit`.
    pub async fn time_to_progress(
        &self,
        base: &Snapshot,
        work: Work,
        since: Instant,
        limit: Duration,
    ) -> Option<Duration> {
        self.wait_until(limit, |s| s.progressed_since(base, work)).await.ok().map(|_| since.elapsed())
    }
}

/// POSTs a JSON body over plain HTTP/1.1 to 127.0.0.1:`port`; the status code.
pub fn post_json(port: u16, path: &str, body: &str) -> std::io::Result<u16> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = Vec::new();
    stream.take(64 * 1024).read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {text:.80}")))
}

/// GETs `path` over plain HTTP/1.1 from 127.0.0.1:`port` (e.g. `/metrics`); the status
/// code and the body.
pub fn get_text(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
    let mut response = Vec::new();
    stream.take(16 * 1024 * 1024).read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok());
    let code = code.ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {head:.80}")))?;
    Ok((code, body.to_string()))
}

/// SOP Instance UIDs of the Part-10 files, in file order (duplicates kept); unreadable
/// files count as `"<unreadable: name>"` so they show in comparisons.
pub fn sop_instance_uids(files: &[PathBuf]) -> Vec<String> {
    files
        .iter()
        .map(|p| {
            dicom_object::open_file(p)
                .ok()
                .and_then(|f| {
                    f.element(dicom_core::Tag(0x0008, 0x0018))
                        .ok()
                        .and_then(|e| e.to_str().ok())
                        .map(|s| s.trim_end_matches('\0').to_string())
                })
                .unwrap_or_else(|| format!("<unreadable: {}>", p.display()))
        })
        .collect()
}
