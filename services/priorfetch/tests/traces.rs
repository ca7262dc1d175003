//! Traces that follow an exam end to end: `priorfetch listener`, `planner` and `mover` as
//! three processes against one Postgres, an Orthanc archive (C-GET, relayed to DCMTK
//! storescp), and an OTLP receiver built on the official protobuf definitions (the
//! listener and mover export over gRPC, the planner over HTTP/protobuf). One exam posted
//! with a known `traceparent` gives one trace with spans from all three processes, the
//! retrieve counts as attributes, and no PHI anywhere in the exported bytes.
//!
//! Needs Postgres (`PRIORFETCH_TEST_POSTGRES`), Orthanc and DCMTK: see `scripts/test`.

use chrono::{Duration as ChronoDuration, Utc};
use priorfetch_store::{ExamStatus, JobState, Store};
use priorfetch_testkit::db::TestDb;
use priorfetch_testkit::dicom::{Orthanc, Storescp, StudySpec, store_files, write_study};
use priorfetch_testkit::otlp::{OtlpReceiver, ReceivedSpan, Transport};
use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TRACE_ID: &str = "5f3c9a7e0b1d4c2a8e6f1a2b3c4d5e6f";
const UPSTREAM_SPAN: &str = "a1b2c3d4e5f60718";

/// A `priorfetch` role process, stopped with SIGTERM (spans flush) or killed on drop.
struct Role {
    name: &'static str,
    child: Child,
    log: std::path::PathBuf,
}

impl Role {
    fn start(name: &'static str, config: &Path, db: &TestDb, admin: u16, otlp: Option<(&str, &str)>) -> Role {
        let log = config.with_file_name(format!("{name}.log"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_priorfetch"));
        command
            .args(["--config", config.to_str().unwrap(), name])
            .env("PRIORFETCH__DATABASE__URL", &db.url)
            .env("PRIORFETCH__SERVICE__ADMIN_LISTEN", format!("127.0.0.1:{admin}"))
            .env("RUST_LOG", "info")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_PROTOCOL")
            .env_remove("OTEL_SERVICE_NAME")
            .env_remove("OTEL_RESOURCE_ATTRIBUTES")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if let Some((endpoint, protocol)) = otlp {
            command.env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint).env("OTEL_EXPORTER_OTLP_PROTOCOL", protocol);
        }
        Role { name, child: command.spawn().unwrap(), log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then a bounded wait for a clean exit.
    async fn stop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "{} exited with {status}:\n{}", self.name, self.log());
                return;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "{} did not stop:\n{}", self.name, self.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for_port(port: u16, role: &Role) {
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < Duration::from_secs(30), "{} did not start:\n{}", role.name, role.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `POST /api/events` with an optional `traceparent` header; the status and body.
fn post(port: u16, body: &str, traceparent: Option<&str>) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let header = traceparent.map(|t| format!("traceparent: {t}\r\n")).unwrap_or_default();
    write!(
        stream,
        "POST /api/events HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n{header}content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    (response[9..12].parse().unwrap(), response.split("\r\n\r\n").nth(1).unwrap_or_default().to_string())
}

fn write_config(dir: &Path, archive: &Orthanc, dest: &Storescp) -> std::path::PathBuf {
    let path = dir.join("priorfetch.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[service]
ae_title = "PRIORFETCH"
shutdown_grace = "5s"
[intake]
source = "http"
[[archives]]
name = "north"
ae_title = "{ae}"
host = "127.0.0.1"
port = {ap}
retrieve = "get"
max_associations = 2
[destination]
ae_title = "DEST"
host = "127.0.0.1"
port = {dp}
check_existing = false
[mover]
workers = 2
spool_dir = "{spool}"
spool_limit_mb = 64
progress_interval = "200ms"
dimse_timeout = "30s"
"#,
            ae = archive.ae,
            ap = archive.port,
            dp = dest.port,
            spool = dir.join("spool").display(),
        ),
    )
    .unwrap();
    path
}

/// The exam's one job, once it and the exam ended (bounded).
async fn wait_until_fetched(
    store: &Store,
    roles: &mut [&mut Role],
) -> (priorfetch_store::ExamRecord, priorfetch_store::Job) {
    let started = Instant::now();
    loop {
        let exams = store.list_exams(10).await.unwrap();
        if let [exam] = exams.as_slice()
            && exam.status.is_terminal()
        {
            let jobs = store.jobs_of_exam(exam.exam.id).await.unwrap();
            if let [job] = jobs.as_slice() {
                return (exam.clone(), job.clone());
            }
        }
        for role in roles.iter_mut() {
            if let Ok(Some(status)) = role.child.try_wait() {
                panic!("{} exited ({status}):\n{}", role.name, role.log());
            }
        }
        if started.elapsed() > Duration::from_secs(90) {
            let logs: Vec<String> = roles.iter().map(|r| format!("--- {}\n{}", r.name, r.log())).collect();
            panic!("exam not fetched in time: {exams:?}\n{}", logs.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn one<'a>(spans: &'a [ReceivedSpan], name: &str) -> &'a ReceivedSpan {
    let found: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.name() == name).collect();
    assert_eq!(found.len(), 1, "one '{name}' span: {:#?}", spans.iter().map(|s| s.name()).collect::<Vec<_>>());
    found[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_exam_is_one_trace_across_listener_planner_and_mover_without_phi() {
    let otlp = OtlpReceiver::start().await.unwrap();
    let db = TestDb::postgres().await;
    let store = Store::connect(&db.url, "", 4).await.unwrap();
    store.migrate().await.unwrap();

    // The patient's identifying strings: none may leave a process in a span.
    let patient_id = "TRC5521X";
    let patient_name = "DOE^TRACY";
    let birth_date = "19610203";
    let accession = "ACCTRC8812";
    let exam_uid = "1.2.826.0.1.3680043.10.999.7731";
    let mut prior = StudySpec::small(patient_id, 921);
    prior.study_date = "20250310".into();
    prior.modality = "CT".into();
    prior.patient_name = "PRIOR^TRACY".into();

    let dest = Storescp::start("DEST");
    let archive = Orthanc::start("NORTH", "PRIORFETCH", &[], None);
    let files = tempfile::tempdir().unwrap();
    write_study(&files.path().join(&prior.study_uid), &prior);
    store_files("NORTH", archive.port, files.path());

    let work = tempfile::tempdir().unwrap();
    let config = write_config(work.path(), &archive, &dest);
    let grpc = otlp.grpc_endpoint();
    let http = otlp.http_endpoint();
    let listener_port = priorfetch_testkit::ports::free_port();
    let mut listener = Role::start("listener", &config, &db, listener_port, Some((&grpc, "grpc")));
    let mut planner =
        Role::start("planner", &config, &db, priorfetch_testkit::ports::free_port(), Some((&http, "http/protobuf")));
    let mut mover = Role::start("mover", &config, &db, priorfetch_testkit::ports::free_port(), Some((&grpc, "grpc")));
    wait_for_port(listener_port, &listener);

    let event = serde_json::json!({
        "event_id": "trace-1", "type": "exam.scheduled",
        "patient": { "id": patient_id, "name": patient_name, "birth_date": birth_date },
        "accession_number": accession, "study_instance_uid": exam_uid,
        "scheduled_at": (Utc::now() + ChronoDuration::hours(2)).to_rfc3339(),
        "priority": "stat", "modality": "CT", "body_part": "CHEST"
    });
    let traceparent = format!("00-{TRACE_ID}-{UPSTREAM_SPAN}-01");
    let (status, body) = post(listener_port, &event.to_string(), Some(&traceparent));
    assert_eq!(status, 202, "{body}\n{}", listener.log());

    let (exam, job) = wait_until_fetched(&store, &mut [&mut listener, &mut planner, &mut mover]).await;
    assert_eq!(exam.status, ExamStatus::Complete, "{exam:?} {job:?}\n{}", mover.log());
    assert_eq!((job.state, job.counts.completed, job.counts.failed), (JobState::Completed, 6, 0), "{job:?}");
    let stored = exam.trace_parent.clone().expect("the exam keeps its trace context");
    assert!(stored.starts_with(&format!("00-{TRACE_ID}-")), "{stored}");
    assert_eq!(job.trace_parent.as_deref(), Some(stored.as_str()), "the job carries the exam's trace");

    for role in [&mut listener, &mut planner, &mut mover] {
        role.stop().await;
    }
    let complete = |spans: &[ReceivedSpan]| {
        let names: HashSet<&str> = spans.iter().map(|s| s.name()).collect();
        ["intake", "plan", "cfind", "retrieve", "relay"].iter().all(|n| names.contains(n))
    };
    let received = otlp.wait_for(Duration::from_secs(20), complete).await;
    let spans = otlp.spans();
    assert!(received, "spans missing: {:#?}", spans.iter().map(|s| s.name()).collect::<Vec<_>>());

    // One trace: every span of ours carries the trace ID the sender gave.
    for span in &spans {
        assert_eq!(span.trace_id(), TRACE_ID, "{span:#?}");
        assert_eq!(span.service_name, "priorfetch", "{span:#?}");
    }
    let intake = one(&spans, "intake");
    let plan = one(&spans, "plan");
    let retrieve = one(&spans, "retrieve");
    let relay = one(&spans, "relay");
    let queries: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.name() == "cfind").collect();
    assert!(!queries.is_empty());

    // Three processes, each its own service.instance.id; both protocols used.
    let instances: HashSet<&str> = [intake, plan, retrieve].iter().map(|s| s.instance_id.as_str()).collect();
    assert_eq!(instances.len(), 3, "three processes: {instances:?}");
    assert!(instances.iter().all(|i| !i.is_empty()));
    assert_eq!(
        (intake.transport, plan.transport, retrieve.transport),
        (Transport::Grpc, Transport::HttpProtobuf, Transport::Grpc)
    );

    // Parent links: upstream -> intake -> plan -> cfind; intake -> retrieve -> relay.
    assert_eq!(intake.parent_id(), UPSTREAM_SPAN);
    assert_eq!(stored, format!("00-{TRACE_ID}-{}-01", intake.span_id()), "the exam stores the intake span");
    assert_eq!(plan.parent_id(), intake.span_id());
    for query in &queries {
        assert_eq!(query.parent_id(), plan.span_id());
        assert_eq!(query.str("archive"), Some("north"));
        assert_eq!(query.instance_id, plan.instance_id);
    }
    assert!(queries.iter().any(|q| q.str("level") == Some("STUDY") && q.int("matches") == Some(1)), "{queries:#?}");
    assert_eq!(retrieve.parent_id(), intake.span_id());
    assert_eq!(relay.parent_id(), retrieve.span_id());
    assert_eq!(relay.instance_id, retrieve.instance_id);

    // The attributes: ids, counts, outcomes.
    assert_eq!(intake.int("exam_id"), Some(exam.exam.id));
    assert_eq!(intake.str("outcome"), Some("accepted"));
    assert_eq!(plan.int("exam_id"), Some(exam.exam.id));
    assert_eq!(plan.str("rule"), Some("default"));
    assert_eq!((plan.int("candidates"), plan.int("jobs")), (Some(1), Some(1)));
    assert_eq!(retrieve.int("job_id"), Some(job.id));
    assert_eq!(retrieve.str("archive"), Some("north"));
    assert_eq!(retrieve.str("method"), Some("get"));
    assert_eq!(retrieve.int("attempt"), Some(job.attempt as i64));
    assert_eq!(
        (retrieve.int("completed"), retrieve.int("failed"), retrieve.int("warning"), retrieve.int("remaining")),
        (Some(6), Some(0), Some(0), Some(0)),
        "{retrieve:#?}"
    );
    assert_eq!(retrieve.str("outcome"), Some("completed"));
    assert_eq!((relay.int("confirmed"), relay.int("refused")), (Some(6), Some(0)));

    // No PHI anywhere in what was exported, byte for byte.
    let exported: Vec<u8> = otlp.exports().into_iter().flat_map(|e| e.bytes).collect();
    let contains = |needle: &str| exported.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(contains("north") && contains("retrieve"), "the search sees what was exported");
    for phi in [
        patient_id,
        patient_name,
        "TRACY",
        birth_date,
        accession,
        exam_uid,
        prior.study_uid.as_str(),
        prior.accession.as_str(),
        "1.2.826.0.1.3680043",
    ] {
        assert!(!contains(phi), "'{phi}' was exported");
    }
}

/// Without an exporter the listener makes no spans, but a sender's `traceparent` is still
/// kept with the exam (an upstream trace continues in whichever process exports later);
/// a malformed one is not kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_exporter_an_incoming_traceparent_is_still_stored() {
    let db = TestDb::postgres().await;
    let store = Store::connect(&db.url, "", 2).await.unwrap();
    store.migrate().await.unwrap();
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("priorfetch.toml");
    std::fs::write(&config, "[intake]\nsource = \"http\"\n").unwrap();
    let port = priorfetch_testkit::ports::free_port();
    let mut listener = Role::start("listener", &config, &db, port, None);
    wait_for_port(port, &listener);
    let event = |id: &str| {
        serde_json::json!({
            "event_id": id, "type": "exam.scheduled", "patient": { "id": "P1" }, "modality": "CT",
            "accession_number": format!("A-{id}"), "scheduled_at": "2026-11-23T09:30:00+01:00"
        })
        .to_string()
    };
    let given = format!("00-{TRACE_ID}-{UPSTREAM_SPAN}-01");
    for (id, traceparent) in [("a", Some(given.as_str())), ("b", Some("00-not-a-trace-01")), ("c", None)] {
        let (status, body) = post(port, &event(id), traceparent);
        assert_eq!(status, 202, "{body}");
    }
    listener.stop().await;
    let mut stored: Vec<(String, Option<String>)> =
        store.list_exams(10).await.unwrap().into_iter().map(|e| (e.event_key, e.trace_parent)).collect();
    stored.sort();
    assert_eq!(stored, vec![("json:a".into(), Some(given)), ("json:b".into(), None), ("json:c".into(), None)]);
}
