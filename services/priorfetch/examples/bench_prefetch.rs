//! End-to-end prefetch benchmark (issue 7): 200 exams × 3 CT priors on one Orthanc archive,
//! the time until every prior is at the destination, for a sequential DCMTK
//! findscu+movescu script (scripts/baseline-dcmtk, into DEST-A) and for `priorfetch run`
//! (the real binary, HTTP intake, Postgres, into DEST-B), in the same run.
//!
//! Run through scripts/bench-prefetch (starts Postgres, installs DCMTK/Orthanc, builds the
//! binary). Env: BENCH_PATIENTS (200), BENCH_MAX_ASSOCIATIONS (4), BENCH_TIMEOUT_S (600).

use chrono::{Duration as Days, Utc};
use priorfetch_store::ExamStatus;
use priorfetch_testkit::bench::env_or;
use priorfetch_testkit::db::TestDb;
use priorfetch_testkit::dicom::{Destination, Orthanc, StudySpec, store_files, write_study};
use priorfetch_testkit::ports::free_port;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PRIORS: usize = 3;
const INSTANCES: usize = 10;

fn days_ago(days: i64) -> String {
    (Utc::now().date_naive() - Days::days(days)).format("%Y%m%d").to_string()
}

fn study(patient: &str, uid: String, date: String, modality: &str) -> StudySpec {
    StudySpec {
        patient_id: patient.into(),
        patient_name: format!("BENCH^{patient}"),
        accession: format!("A{}", uid.rsplit('.').take(2).collect::<Vec<_>>().join("")),
        study_uid: uid,
        study_date: date,
        description: format!("{modality} CHEST"),
        modality: modality.into(),
        body_part: "CHEST".into(),
        series: 1,
        instances_per_series: INSTANCES,
        rows: 64,
        columns: 64,
    }
}

/// One HTTP/1.1 request over a plain socket (no client dependency); returns status and body.
fn http(port: u16, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let status = raw.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

/// (CountStudies, CountInstances) from Orthanc's REST API.
fn orthanc_counts(o: &Orthanc) -> (u64, u64) {
    let (status, body) = http(o.http_port, "GET", "/statistics", "").expect("orthanc /statistics");
    assert_eq!(status, 200, "orthanc /statistics: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("statistics json");
    (v["CountStudies"].as_u64().unwrap_or(0), v["CountInstances"].as_u64().unwrap_or(0))
}

/// The StudyInstanceUIDs an Orthanc holds, sorted.
fn orthanc_study_uids(o: &Orthanc) -> Vec<String> {
    let (status, body) = http(o.http_port, "GET", "/studies?expand", "").expect("orthanc /studies");
    assert_eq!(status, 200, "orthanc /studies: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("studies json");
    let mut uids: Vec<String> = v
        .as_array()
        .map(|a| a.iter().filter_map(|s| s["MainDicomTags"]["StudyInstanceUID"].as_str().map(String::from)).collect())
        .unwrap_or_default();
    uids.sort();
    uids
}

/// Stops `priorfetch run` (SIGTERM, then kill) whatever happens.
struct RunGuard(Child);

impl Drop for RunGuard {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let start = Instant::now();
        while matches!(self.0.try_wait(), Ok(None)) && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::main]
async fn main() {
    let patients = env_or("BENCH_PATIENTS", 200usize);
    let max_assoc = env_or("BENCH_MAX_ASSOCIATIONS", 4u64);
    let timeout = Duration::from_secs(env_or("BENCH_TIMEOUT_S", 600u64));
    let expected_studies = (patients * PRIORS) as u64;
    let expected_instances = expected_studies * INSTANCES as u64;
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");

    // Destinations are Orthancs: they take concurrent associations (storescp serializes them
    // and would be the bottleneck for both contenders).
    let dest_a = Orthanc::start("DEST-A", "PRIORFETCH", &[], None);
    let dest_b = Orthanc::start("DEST-B", "PRIORFETCH", &[], None);
    let archive = Orthanc::start(
        "ARCHIVE",
        "PRIORFETCH",
        &[
            Destination { ae: "DEST-A".into(), port: dest_a.port },
            Destination { ae: "DEST-B".into(), port: dest_b.port },
        ],
        None,
    );

    // Per patient: 3 CT priors within the lookback (to fetch), 1 CT older than the lookback
    // and 1 recent MR (both to skip).
    let t = Instant::now();
    let data = tempfile::tempdir().expect("temp dir");
    let ids: Vec<String> = (0..patients).map(|p| format!("BENCH-{p:04}")).collect();
    for (p, id) in ids.iter().enumerate() {
        let dir = data.path().join(id);
        for k in 0..PRIORS {
            let date = days_ago(60 + 365 * k as i64 + p as i64 % 200);
            write_study(
                &dir.join(format!("ct{k}")),
                &study(id, format!("1.2.826.0.1.3680043.10.777.{p}.{k}"), date, "CT"),
            );
        }
        write_study(&dir.join("old"), &study(id, format!("1.2.826.0.1.3680043.10.777.{p}.8"), days_ago(7 * 365), "CT"));
        write_study(&dir.join("mr"), &study(id, format!("1.2.826.0.1.3680043.10.777.{p}.9"), days_ago(30), "MR"));
    }
    store_files("ARCHIVE", archive.port, data.path());
    let (s, i) = orthanc_counts(&archive);
    assert_eq!((s, i), (patients as u64 * 5, patients as u64 * 5 * INSTANCES as u64), "archive load");
    println!("archive: {s} studies, {i} instances loaded in {:.1} s", t.elapsed().as_secs_f64());

    // Baseline: the sequential DCMTK script into DEST-A.
    // The rule's answer: per patient the 3 recent CT studies, nothing else.
    let mut expected_uids: Vec<String> =
        (0..patients).flat_map(|p| (0..PRIORS).map(move |k| format!("1.2.826.0.1.3680043.10.777.{p}.{k}"))).collect();
    expected_uids.sort();
    let ids_file = data.path().join("patients.txt");
    std::fs::write(&ids_file, ids.join("\n") + "\n").unwrap();
    let t = Instant::now();
    let out = Command::new(repo.join("scripts/baseline-dcmtk"))
        .args([
            "ARCHIVE",
            "127.0.0.1",
            &archive.port.to_string(),
            "DEST-A",
            ids_file.to_str().unwrap(),
            &days_ago(5 * 365),
        ])
        .output()
        .expect("run scripts/baseline-dcmtk");
    let baseline_s = t.elapsed().as_secs_f64();
    assert!(out.status.success(), "baseline failed: {}", String::from_utf8_lossy(&out.stderr));
    let (a_studies, a_instances) = orthanc_counts(&dest_a);
    assert_eq!((a_studies, a_instances), (expected_studies, expected_instances), "baseline at DEST-A");
    assert!(orthanc_study_uids(&dest_a) == expected_uids, "baseline moved other studies than the rule's");
    println!("baseline (DCMTK findscu+movescu, sequential): {a_studies} studies, {baseline_s:.1} s");

    // priorfetch: the real binary against a fresh Postgres database.
    let db = TestDb::postgres().await;
    let store = priorfetch_store::Store::connect(&db.url, "", 4).await.expect("connect store");
    store.migrate().await.expect("migrate");
    let work = tempfile::tempdir().expect("temp dir");
    let admin = free_port();
    let config = work.path().join("priorfetch.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[service]
ae_title = "PRIORFETCH"
admin_listen = "127.0.0.1:{admin}"
shutdown_grace = "5s"
[intake]
source = "http"
[[archives]]
name = "archive"
ae_title = "ARCHIVE"
host = "127.0.0.1"
port = {ap}
priority = 1
retrieve = "move"
move_destination = "DEST-B"
max_associations = {max_assoc}
[destination]
ae_title = "DEST-B"
host = "127.0.0.1"
port = {bp}
check_existing = false
[[rules]]
name = "default"
match = {{}}
priors = {{ same_modality = true, lookback = "5y", max = 3 }}
[mover]
workers = 8
spool_dir = "{spool}"
progress_interval = "1s"
"#,
            ap = archive.port,
            bp = dest_b.port,
            spool = work.path().join("spool").display(),
        ),
    )
    .unwrap();
    let bin = std::env::current_exe().unwrap().parent().and_then(|d| d.parent()).unwrap().join("priorfetch");
    assert!(bin.exists(), "{} missing: run through scripts/bench-prefetch (cargo build --workspace)", bin.display());
    let log_path = work.path().join("run.log");
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let mut run = RunGuard(
        Command::new(&bin)
            .args(["--config", config.to_str().unwrap(), "run"])
            .env("PRIORFETCH__DATABASE__URL", &db.url)
            .env("RUST_LOG", "warn")
            .env("TCP_NODELAY", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .expect("start priorfetch run"),
    );
    let ready = Instant::now();
    while http(admin, "GET", "/healthz", "").is_err() {
        if let Ok(Some(status)) = run.0.try_wait() {
            panic!("priorfetch run exited ({status}):\n{}", log());
        }
        assert!(ready.elapsed() < Duration::from_secs(30), "admin port never answered:\n{}", log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let scheduled = (Utc::now() + Days::hours(2)).to_rfc3339();
    let t = Instant::now();
    for (p, id) in ids.iter().enumerate() {
        let event = serde_json::json!({
            "event_id": format!("bench-{p}"), "type": "exam.scheduled",
            "patient": { "id": id, "name": format!("BENCH^{id}"), "birth_date": "19700101" },
            "accession_number": format!("NEW{p}"), "study_instance_uid": format!("1.2.826.0.1.3680043.10.778.{p}"),
            "scheduled_at": scheduled, "priority": "routine", "modality": "CT", "body_part": "CHEST"
        });
        let (status, body) = http(admin, "POST", "/api/events", &event.to_string()).expect("post event");
        assert_eq!(status, 202, "POST /api/events: {body}");
    }
    let posted_s = t.elapsed().as_secs_f64();

    let mut planned_s = None;
    let exams = loop {
        let exams = store.list_exams(patients as u64 + 10).await.expect("list exams");
        let all = exams.len() == patients;
        if planned_s.is_none() && all && exams.iter().all(|e| !["received", "planning"].contains(&e.status.as_str())) {
            planned_s = Some(t.elapsed().as_secs_f64());
        }
        if all && exams.iter().all(|e| ["complete", "partial", "failed", "cancelled"].contains(&e.status.as_str())) {
            break exams;
        }
        if let Ok(Some(status)) = run.0.try_wait() {
            panic!("priorfetch run exited ({status}):\n{}", log());
        }
        if t.elapsed() > timeout {
            let mut by_status = std::collections::BTreeMap::new();
            for e in &exams {
                *by_status.entry(e.status.as_str()).or_insert(0) += 1;
            }
            panic!("not done after {timeout:?}: {by_status:?}\n{}", log());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let priorfetch_s = t.elapsed().as_secs_f64();
    drop(run);
    let not_complete = exams.iter().filter(|e| e.status != ExamStatus::Complete).count();
    assert_eq!(not_complete, 0, "exams not complete:\n{}", log());
    let (b_studies, b_instances) = orthanc_counts(&dest_b);
    assert_eq!((b_studies, b_instances), (expected_studies, expected_instances), "priorfetch at DEST-B");
    assert!(orthanc_study_uids(&dest_b) == expected_uids, "priorfetch moved other studies than the rule's");
    println!(
        "priorfetch run: {b_studies} studies, {priorfetch_s:.1} s (planned after {:.1} s; events posted in {posted_s:.2} s; max_associations = {max_assoc})",
        planned_s.unwrap_or(priorfetch_s)
    );
    println!("ratio: {:.1}×", baseline_s / priorfetch_s);
}
