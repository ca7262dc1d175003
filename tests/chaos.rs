//! Chaos suite, all real processes: `priorfetch run` (or `listener` + `planner` + `mover`)
//! as child processes on Postgres, an archive (the simulator `priorfetch sim` with a
//! response delay, or Orthanc) moving to DCMTK storescp. Each scenario injects one fault
//! mid-work: kill -9 of `run`, `mover`, `planner`; a Postgres crash and restart (a private
//! server, not the shared one); a RabbitMQ restart; an archive outage. Each must end with
//! every expected prior at the destination exactly once, the jobs' counts equal to the
//! files received, and work resumed within 15 s of the fault's end. Each prints
//! `chaos <scenario>: recovered in X.Xs` (visible with `--no-capture`).
//!
//! Run through `scripts/test` (Postgres, RabbitMQ, DCMTK, Orthanc).

use chrono::{Duration as ChronoDuration, Utc};
use priorfetch_testkit::chaos::{Probe, Proc, Snapshot, Work, post_json, sop_instance_uids};
use priorfetch_testkit::dicom::{Orthanc, Storescp, StudySpec, store_files, write_study};
use priorfetch_testkit::pg_instance::{PgInstance, StopMode};
use priorfetch_testkit::ports::free_port;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_priorfetch");
/// Bound on a whole scenario, from the first event to the last file.
const SCENARIO_LIMIT: Duration = Duration::from_secs(120);
/// The issue's target for work to resume after a fault ends.
const RECOVERY_TARGET: Duration = Duration::from_secs(15);
/// How long we wait for any progress at all before calling recovery failed.
const RECOVERY_WAIT: Duration = Duration::from_secs(30);
const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Each exam has two CT priors on the archive (2 series x `per_series` instances), both
/// selected by the default rule (same modality, 5-year lookback).
struct Exams {
    studies: Vec<StudySpec>,
    events: Vec<String>,
}

fn exams(tag: &str, n: usize, per_series: usize) -> Exams {
    let today = Utc::now();
    let scheduled = (today + ChronoDuration::hours(2)).to_rfc3339();
    let (mut studies, mut events) = (Vec::new(), Vec::new());
    for i in 0..n {
        let patient = format!("CHAOS-{tag}-{i}");
        for (k, days) in [(0u32, 100i64), (1, 500)] {
            let mut s = StudySpec::small(&patient, 2 * i as u32 + k);
            s.study_uid = format!("1.2.826.0.1.3680043.10.544.{i}.{k}");
            s.modality = "CT".into();
            s.instances_per_series = per_series;
            s.study_date = (today - ChronoDuration::days(days)).format("%Y%m%d").to_string();
            studies.push(s);
        }
        events.push(
            serde_json::json!({
                "event_id": format!("chaos-{tag}-{i}"), "type": "exam.scheduled",
                "patient": { "id": patient, "name": "DOE^JANE", "birth_date": "19700101" },
                "accession_number": format!("CH{i}"), "study_instance_uid": format!("1.2.826.0.1.3680043.10.545.{i}"),
                "scheduled_at": scheduled, "priority": "routine", "modality": "CT", "body_part": "CHEST"
            })
            .to_string(),
        );
    }
    Exams { studies, events }
}

fn wait_port(port: u16, what: &str) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(30), "{what} did not listen on {port} within 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

enum Archive {
    /// `priorfetch sim` serving a folder, with a delay per response so transfers are in flight.
    Sim,
    Orthanc,
}

enum Roles {
    /// `priorfetch run`: everything in one process.
    Run,
    /// `listener`, `planner` and `mover` processes (after `migrate`).
    Split,
}

struct Stack {
    name: String,
    /// Config, logs and archive data; removed after the processes stop.
    _work: tempfile::TempDir,
    dest: Storescp,
    _sim: Option<Proc>,
    orthanc: Option<Orthanc>,
    procs: Vec<Proc>,
    /// Admin port serving `POST /api/events`.
    intake_port: u16,
    probe: Probe,
    exams: Exams,
    started: Instant,
}

impl Stack {
    async fn start(
        name: &str,
        db_url: &str,
        n: usize,
        archive: Archive,
        roles: Roles,
        rabbit_queue: Option<&str>,
    ) -> Stack {
        let work = tempfile::tempdir().unwrap();
        // Orthanc moves small studies in a few ms: larger ones keep work in flight long
        // enough for a fault to land mid-work.
        let per_series = match archive {
            Archive::Sim => 3,
            Archive::Orthanc => 20,
        };
        let exams = exams(name, n, per_series);
        let dest = Storescp::start("DEST");
        let data = work.path().join("archive-data");
        for s in &exams.studies {
            write_study(&data.join(&s.study_uid), s);
        }
        let (sim, orthanc, archive_port, cap) = start_archive(archive, &data, &dest, work.path());
        let config = work.path().join("priorfetch.toml");
        std::fs::write(&config, config_text(archive_port, cap, dest.port, &work.path().join("spool"), rabbit_queue))
            .unwrap();
        let config = config.to_str().unwrap().to_string();
        let start_role = |role: &str, port: u16| {
            let listen = format!("127.0.0.1:{port}");
            let env = [
                ("PRIORFETCH__DATABASE__URL", db_url),
                ("PRIORFETCH__SERVICE__ADMIN_LISTEN", &listen),
                ("RUST_LOG", "info"),
            ];
            Proc::start(role, BIN, &["--config", &config, role], &env, work.path())
        };
        let intake_port = free_port();
        let procs = match roles {
            Roles::Run => vec![start_role("run", intake_port)],
            Roles::Split => {
                let out = Command::new(BIN)
                    .args(["--config", &config, "migrate"])
                    .env("PRIORFETCH__DATABASE__URL", db_url)
                    .output()
                    .unwrap();
                assert!(out.status.success(), "migrate: {}", String::from_utf8_lossy(&out.stderr));
                vec![
                    start_role("listener", intake_port),
                    start_role("planner", free_port()),
                    start_role("mover", free_port()),
                ]
            }
        };
        wait_port(intake_port, "the intake (admin listener)");
        let probe = Probe::connect(db_url).await;
        Stack {
            name: name.into(),
            _work: work,
            dest,
            _sim: sim,
            orthanc,
            procs,
            intake_port,
            probe,
            exams,
            started: Instant::now(),
        }
    }

    fn proc(&mut self, name: &str) -> &mut Proc {
        self.procs.iter_mut().find(|p| p.name == name).unwrap()
    }

    /// The last lines of every process log, for failure messages.
    fn logs(&self) -> String {
        let tail = |log: String| {
            log.lines().rev().take(25).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
        };
        self.procs.iter().map(|p| format!("--- {} ---\n{}", p.name, tail(p.log()))).collect::<Vec<_>>().join("\n")
    }

    fn post(&self, events: &[String]) {
        post_events(self.intake_port, events, Duration::ZERO);
    }

    /// Waits until `check` holds (work is mid-way), bounded.
    async fn wait_mid_work(&self, what: &str, check: impl FnMut(&Snapshot) -> bool) -> Snapshot {
        match self.probe.wait_until(Duration::from_secs(60), check).await {
            Ok(s) => s,
            Err(last) => panic!("{}: never reached '{what}': {last:?}\n{}", self.name, self.logs()),
        }
    }

    /// Measures the time from `fault_end` to the first `work` progress beyond `base`,
    /// prints it, then checks the end state; asserts recovery within the target last, so
    /// a slow recovery still reports whether everything arrived.
    async fn finish(&mut self, base: &Snapshot, fault_end: Instant, work: Work) {
        let Some(recovered) = self.probe.time_to_progress(base, work, fault_end, RECOVERY_WAIT).await else {
            println!("chaos {}: no progress within {RECOVERY_WAIT:?} after the fault ended", self.name);
            panic!(
                "{}: work did not resume within {RECOVERY_WAIT:?}: {:?}\n{}",
                self.name,
                self.probe.snapshot().await,
                self.logs()
            );
        };
        println!("chaos {}: recovered in {:.1}s", self.name, recovered.as_secs_f64());
        self.assert_delivered_exactly_once().await;
        assert!(
            recovered <= RECOVERY_TARGET,
            "{}: work resumed after {recovered:?}, target {RECOVERY_TARGET:?}",
            self.name
        );
    }

    /// Every exam ends complete; one completed job per expected prior; the destination
    /// holds exactly the expected instances, each once; the jobs' counts equal the files.
    async fn assert_delivered_exactly_once(&self) {
        let n = self.exams.events.len() as i64;
        let limit = SCENARIO_LIMIT.saturating_sub(self.started.elapsed());
        let done = match self
            .probe
            .wait_until(limit, |s| s.exams_finished() == n && s.jobs.iter().all(|j| j.state != "running"))
            .await
        {
            Ok(s) => s,
            Err(last) => {
                panic!("{}: exams not finished within {SCENARIO_LIMIT:?}: {last:?}\n{}", self.name, self.logs())
            }
        };
        if done.exams_in("complete") != n {
            let unfinished: Vec<_> = done.jobs.iter().filter(|j| j.state != "completed").collect();
            panic!(
                "{}: every exam complete: {:?}; jobs not completed: {unfinished:?}\n{}",
                self.name,
                done.exams,
                self.logs()
            );
        }
        let mut jobs: Vec<(String, String)> =
            done.jobs.iter().map(|j| (j.patient_id.clone(), j.study_instance_uid.clone())).collect();
        jobs.sort();
        let mut expected: Vec<(String, String)> =
            self.exams.studies.iter().map(|s| (s.patient_id.clone(), s.study_uid.clone())).collect();
        expected.sort();
        assert_eq!(jobs, expected, "{}: one job per expected prior", self.name);
        let per_study = self.exams.studies[0].instance_count() as i64;
        for j in &done.jobs {
            assert_eq!((j.state.as_str(), j.completed), ("completed", per_study), "{}: {j:?}", self.name);
        }
        // storescp names files by SOP Instance UID, so a re-sent instance replaces its
        // file (as a PACS stores it once); a different name for the same UID would be a
        // duplicate.
        let files = self.dest.files();
        let uids = sop_instance_uids(&files);
        let distinct: BTreeSet<String> = uids.iter().cloned().collect();
        assert_eq!(distinct.len(), uids.len(), "{}: no instance twice at the destination", self.name);
        let wanted: BTreeSet<String> = self
            .exams
            .studies
            .iter()
            .flat_map(|s| {
                (1..=s.series)
                    .flat_map(move |se| (1..=s.instances_per_series).map(move |i| format!("{}.{se}.{i}", s.study_uid)))
            })
            .collect();
        assert_eq!(distinct, wanted, "{}: exactly the expected instances at the destination", self.name);
        assert_eq!(
            done.completed_instances(),
            files.len() as i64,
            "{}: the jobs' counts equal the files received",
            self.name
        );
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        for p in &mut self.procs {
            p.terminate(Duration::from_secs(3));
        }
    }
}

/// The archive holding `data`, moving to `dest`: (sim process, Orthanc, port, max_associations).
fn start_archive(
    archive: Archive,
    data: &Path,
    dest: &Storescp,
    dir: &Path,
) -> (Option<Proc>, Option<Orthanc>, u16, u32) {
    match archive {
        Archive::Sim => {
            let port = free_port().to_string();
            let dest_arg = format!("DEST=127.0.0.1:{}", dest.port);
            let args = ["sim", "--port", &port, "--ae", "NORTH", "--data", data.to_str().unwrap()];
            let args: Vec<&str> = args.into_iter().chain(["--destination", &dest_arg, "--delay", "1s"]).collect();
            let sim = Proc::start("sim", BIN, &args, &[("RUST_LOG", "warn")], dir);
            let port = port.parse().unwrap();
            wait_port(port, "priorfetch sim");
            (Some(sim), None, port, 3)
        }
        Archive::Orthanc => {
            let orthanc = Orthanc::start("NORTH", "PRIORFETCH", &[dest.destination()], None);
            store_files("NORTH", orthanc.port, data);
            // One association at a time: Orthanc moves small studies fast, and the outage
            // must find work left.
            let port = orthanc.port;
            (None, Some(orthanc), port, 1)
        }
    }
}

fn config_text(archive_port: u16, cap: u32, dest_port: u16, spool: &Path, rabbit_queue: Option<&str>) -> String {
    let intake = match rabbit_queue {
        Some(q) => format!(
            "source = \"rabbitmq\"\n[intake.rabbitmq]\nurl = \"{AMQP}\"\nqueue = \"{q}\"\ndead_letter_queue = \"{q}.dead\"\nprefetch = 50\n"
        ),
        None => "source = \"http\"\n".into(),
    };
    format!(
        r#"[service]
ae_title = "PRIORFETCH"
shutdown_grace = "5s"
[intake]
{intake}
[[archives]]
name = "north"
ae_title = "NORTH"
host = "127.0.0.1"
port = {archive_port}
priority = 1
retrieve = "move"
move_destination = "DEST"
max_associations = {cap}
[destination]
ae_title = "DEST"
host = "127.0.0.1"
port = {dest_port}
check_existing = false
[mover]
spool_dir = "{spool}"
progress_interval = "200ms"
"#,
        spool = spool.display()
    )
}

/// Posts each event (retrying while the intake answers 503 or is not up), `gap` apart.
fn post_events(port: u16, events: &[String], gap: Duration) {
    for event in events {
        let start = Instant::now();
        loop {
            match post_json(port, "/api/events", event) {
                Ok(202) => break,
                other => assert!(start.elapsed() < Duration::from_secs(30), "POST /api/events: {other:?}"),
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        std::thread::sleep(gap);
    }
}

/// Some priors moved and C-MOVEs running (the simulator's delay holds each one ~1 s).
fn mid_transfer(s: &Snapshot) -> bool {
    s.jobs_in("completed") >= 1 && s.jobs_in("running") >= 1
}

/// kill -9 of one role mid-work, restarted a second later as a supervisor would.
async fn kill_role(stack: &mut Stack, role: &str, work: Work, mid: impl FnMut(&Snapshot) -> bool) {
    stack.wait_mid_work(&format!("{role} mid-work"), mid).await;
    stack.proc(role).kill9();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let base = stack.probe.snapshot().await.expect("database answers");
    stack.proc(role).restart();
    stack.finish(&base, Instant::now(), work).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_run_mid_retrieve() {
    let db = priorfetch_testkit::db::TestDb::postgres().await;
    let mut stack = Stack::start("kill-run", &db.url, 12, Archive::Sim, Roles::Run, None).await;
    stack.post(&stack.exams.events.clone());
    kill_role(&mut stack, "run", Work::Mover, mid_transfer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_mover_mid_retrieve() {
    let db = priorfetch_testkit::db::TestDb::postgres().await;
    let mut stack = Stack::start("kill-mover", &db.url, 12, Archive::Sim, Roles::Split, None).await;
    stack.post(&stack.exams.events.clone());
    kill_role(&mut stack, "mover", Work::Mover, mid_transfer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_planner_mid_plan() {
    let db = priorfetch_testkit::db::TestDb::postgres().await;
    let mut stack = Stack::start("kill-planner", &db.url, 16, Archive::Sim, Roles::Split, None).await;
    // Exams keep arriving, so the restarted planner has new work besides what it held.
    let (port, events) = (stack.intake_port, stack.exams.events.clone());
    let feeder = std::thread::spawn(move || post_events(port, &events, Duration::from_millis(250)));
    let n = stack.exams.events.len() as i64;
    kill_role(&mut stack, "planner", Work::Planner, |s| {
        s.exams_in("planning") >= 1 && s.exams_planned() >= 1 && s.exams_planned() + 6 <= n
    })
    .await;
    feeder.join().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_crash_and_restart_mid_retrieve() {
    let mut pg = PgInstance::start();
    let url = pg.url();
    let mut stack = Stack::start("postgres-restart", &url, 12, Archive::Sim, Roles::Run, None).await;
    stack.post(&stack.exams.events.clone());
    stack.wait_mid_work("retrieves mid-transfer", mid_transfer).await;
    // Nothing can be recorded while the server is down: the snapshot before the crash is
    // the state work resumes from.
    let base = stack.probe.snapshot().await.expect("database answers");
    pg.stop(StopMode::Immediate);
    tokio::time::sleep(Duration::from_secs(3)).await;
    pg.start_server();
    stack.finish(&base, Instant::now(), Work::Mover).await;
}

/// Orthanc stopped for 4 s mid-retrieve: its jobs are held while a C-ECHO probes it, and
/// its return makes the attempts that failed during the outage due at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_outage_mid_retrieve() {
    let db = priorfetch_testkit::db::TestDb::postgres().await;
    let mut stack = Stack::start("archive-outage", &db.url, 16, Archive::Orthanc, Roles::Run, None).await;
    stack.post(&stack.exams.events.clone());
    let total = 2 * stack.exams.events.len();
    stack
        .wait_mid_work("some priors moved, most left", |s| {
            s.jobs.len() == total && (2..=total - 8).contains(&s.jobs_in("completed"))
        })
        .await;
    stack.orthanc.as_mut().unwrap().stop();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let base = stack.probe.snapshot().await.expect("database answers");
    stack.orthanc.as_mut().unwrap().restart();
    stack.finish(&base, Instant::now(), Work::Mover).await;
}

mod rabbitmq {
    use super::*;
    use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
    use lapin::types::FieldTable;
    use lapin::{BasicProperties, Connection, ConnectionProperties};

    fn rabbitmqctl(args: &[&str]) {
        let status = Command::new("rabbitmqctl").args(args).status().expect("rabbitmqctl");
        assert!(status.success(), "rabbitmqctl {args:?}");
    }

    /// Publishes persistent messages once the listener has declared the queue.
    async fn publish(queue: &str, events: &[String]) {
        let start = Instant::now();
        let channel = loop {
            assert!(start.elapsed() < Duration::from_secs(30), "RabbitMQ queue {queue} not available");
            let Ok(conn) = Connection::connect(AMQP, ConnectionProperties::default()).await else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            let channel = conn.create_channel().await.unwrap();
            let passive = QueueDeclareOptions { passive: true, durable: true, ..Default::default() };
            if channel.queue_declare(queue.into(), passive, FieldTable::default()).await.is_ok() {
                break conn.create_channel().await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        for event in events {
            let props = BasicProperties::default().with_delivery_mode(2);
            let confirm =
                channel.basic_publish("".into(), queue.into(), BasicPublishOptions::default(), event.as_bytes(), props);
            confirm.await.unwrap().await.unwrap();
        }
    }

    /// In the `rabbitmq` test group (one at a time): it restarts the shared broker.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rabbitmq_restart_mid_intake() {
        let db = priorfetch_testkit::db::TestDb::postgres().await;
        let queue = format!("pf-chaos-{}", uuid::Uuid::new_v4().simple());
        let mut stack = Stack::start("rabbitmq-restart", &db.url, 12, Archive::Sim, Roles::Run, Some(&queue)).await;
        let events = stack.exams.events.clone();
        let (first, second) = events.split_at(6);
        publish(&queue, first).await;
        stack.wait_mid_work("first exams taken in", |s| s.exam_count() == 6 && s.jobs_in("completed") >= 1).await;
        rabbitmqctl(&["stop_app"]);
        tokio::time::sleep(Duration::from_secs(2)).await;
        rabbitmqctl(&["start_app"]);
        rabbitmqctl(&["await_startup"]);
        let fault_end = Instant::now();
        let base = stack.probe.snapshot().await.expect("database answers");
        publish(&queue, second).await;
        stack.finish(&base, fault_end, Work::Intake).await;
    }
}
