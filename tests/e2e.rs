//! End to end, all real: scheduled-exam events on RabbitMQ -> `priorfetch run` (listener,
//! planner, mover in one process) -> C-FIND on two Orthanc archives -> C-MOVE from one
//! and C-GET relayed from the other -> DCMTK storescp. Every expected instance must be at
//! the destination and the counts in Postgres must match.
//!
//! Run through `scripts/test` (it starts Postgres, RabbitMQ, and installs Orthanc/DCMTK).

use chrono::{Duration as ChronoDuration, Utc};
use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use priorfetch_store::ExamStatus;
use priorfetch_testkit::dicom::{Destination, Orthanc, Storescp, StudySpec, store_files, write_study};
use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn study(patient: &str, n: u32, date: &str) -> StudySpec {
    let mut s = StudySpec::small(patient, n);
    s.study_date = date.into();
    s.modality = "CT".into();
    s
}

fn load(ae: &str, port: u16, specs: &[&StudySpec]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for s in specs {
        write_study(&dir.path().join(&s.study_uid), s);
    }
    store_files(ae, port, dir.path());
    dir
}

/// Runs `priorfetch run` with `config`, publishes one CT exam event per patient on
/// RabbitMQ, waits (bounded) until every exam ended, stops the process. Returns the
/// exams and the process's log.
async fn run_until_done(
    store: &priorfetch_store::Store,
    config_path: &std::path::Path,
    db_url: &str,
    work: &std::path::Path,
    queue: &str,
    patients: &[&str],
) -> (Vec<priorfetch_store::ExamRecord>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_priorfetch"))
        .args(["--config", config_path.to_str().unwrap(), "run"])
        .env("PRIORFETCH__DATABASE__URL", db_url)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(work.join("run.log")).unwrap())
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(work.join("run.log")).unwrap_or_default();

    // The listener declares the queue; publish once it exists.
    let amqp = Connection::connect("amqp://guest:guest@127.0.0.1:5672/%2f", ConnectionProperties::default())
        .await
        .expect("RabbitMQ at 127.0.0.1:5672: run the tests through scripts/test");
    let start = Instant::now();
    loop {
        let channel = amqp.create_channel().await.unwrap();
        let passive = QueueDeclareOptions { passive: true, durable: true, ..Default::default() };
        if channel.queue_declare(queue.into(), passive, FieldTable::default()).await.is_ok() {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "queue never declared:\n{}", log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let channel = amqp.create_channel().await.unwrap();
    let scheduled = (Utc::now() + ChronoDuration::hours(2)).to_rfc3339();
    for (i, patient) in patients.iter().enumerate() {
        let event = serde_json::json!({
            "event_id": format!("{queue}-{i}"), "type": "exam.scheduled",
            "patient": { "id": patient, "name": "DOE^JANE", "birth_date": "19700101" },
            "accession_number": format!("NEW{i}"), "study_instance_uid": format!("1.2.826.0.1.3680043.10.999.{i}"),
            "scheduled_at": scheduled, "priority": "routine", "modality": "CT", "body_part": "CHEST"
        });
        channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                event.to_string().as_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }

    // Every exam ends; bounded.
    let start = Instant::now();
    let exams = loop {
        let exams = store.list_exams(10).await.unwrap();
        if exams.len() == patients.len() && exams.iter().all(|e| e.status.is_terminal()) {
            break exams;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("priorfetch run exited ({status}):\n{}", log());
        }
        assert!(start.elapsed() < Duration::from_secs(90), "exams not done: {exams:?}\n{}", log());
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let stopped = Instant::now();
    while child.try_wait().unwrap().is_none() && stopped.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    (exams, log())
}

/// `[service]` and a RabbitMQ `[intake]` on `queue` (with its dead-letter queue).
fn service_and_intake(queue: &str) -> String {
    format!(
        r#"
[service]
ae_title = "PRIORFETCH"
admin_listen = "127.0.0.1:{admin}"
shutdown_grace = "5s"
[intake]
source = "rabbitmq"
[intake.rabbitmq]
url = "amqp://guest:guest@127.0.0.1:5672/%2f"
queue = "{queue}"
dead_letter_queue = "{queue}.dead"
"#,
        admin = priorfetch_testkit::ports::free_port()
    )
}

/// The SOP Instance UIDs of the studies (as `write_study` numbers them).
fn instances_of(specs: &[&StudySpec]) -> HashSet<String> {
    specs
        .iter()
        .flat_map(|s| {
            (1..=s.series)
                .flat_map(move |se| (1..=s.instances_per_series).map(move |i| format!("{}.{se}.{i}", s.study_uid)))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_on_rabbitmq_bring_every_expected_prior_to_the_destination() {
    let db = priorfetch_testkit::db::TestDb::postgres().await;
    let store = priorfetch_store::Store::connect(&db.url, "", 4).await.unwrap();
    store.migrate().await.unwrap();

    let dest = Storescp::start("DEST");
    let north = Orthanc::start("NORTH", "PRIORFETCH", &[Destination { ae: "DEST".into(), port: dest.port }], None);
    let south = Orthanc::start("SOUTH", "PRIORFETCH", &[], None);
    // Patient E2E-1: three CT priors within the default 5-year lookback; the newest is on
    // both archives (fetched once, from NORTH, the preferred one); an MR that the default
    // rule (same modality) skips; one CT older than the lookback.
    let a = study("E2E-1", 901, "20250310");
    let b = study("E2E-1", 902, "20240120");
    let c = study("E2E-1", 903, "20230605");
    let mut mr = study("E2E-1", 904, "20250101");
    mr.modality = "MR".into();
    let old = study("E2E-1", 905, "20150101");
    // Patient E2E-2: one prior, only on SOUTH (C-GET, relayed).
    let d = study("E2E-2", 906, "20260102");
    let _n = load("NORTH", north.port, &[&a, &b, &mr, &old]);
    let _s = load("SOUTH", south.port, &[&a, &c, &d]);

    let work = tempfile::tempdir().unwrap();
    let queue = format!("pf-e2e-{}", uuid::Uuid::new_v4().simple());
    let intake = service_and_intake(&queue);
    let config_path = work.path().join("priorfetch.toml");
    std::fs::write(
        &config_path,
        format!(
            r#"{intake}prefetch = 50
[[archives]]
name = "north"
ae_title = "NORTH"
host = "127.0.0.1"
port = {np}
priority = 1
retrieve = "move"
move_destination = "DEST"
max_associations = 2
[[archives]]
name = "south"
ae_title = "SOUTH"
host = "127.0.0.1"
port = {sp}
priority = 2
retrieve = "get"
max_associations = 2
[destination]
ae_title = "DEST"
host = "127.0.0.1"
port = {dp}
check_existing = false
[mover]
workers = 4
spool_dir = "{spool}"
spool_limit_mb = 64
progress_interval = "200ms"
dimse_timeout = "30s"
"#,
            np = north.port,
            sp = south.port,
            dp = dest.port,
            spool = work.path().join("spool").display(),
        ),
    )
    .unwrap();
    let (exams, log) = run_until_done(&store, &config_path, &db.url, work.path(), &queue, &["E2E-1", "E2E-2"]).await;
    let log = || log.clone();
    assert!(exams.iter().all(|e| e.status == ExamStatus::Complete), "{exams:?}\n{}", log());
    let mut jobs = Vec::new();
    for e in &exams {
        jobs.extend(store.jobs_of_exam(e.exam.id).await.unwrap());
    }
    let mut fetched: Vec<(String, String)> =
        jobs.iter().map(|j| (j.study_instance_uid.clone(), j.archive.clone())).collect();
    fetched.sort();
    let mut expected = vec![
        (a.study_uid.clone(), "north".to_string()),
        (b.study_uid.clone(), "north".to_string()),
        (c.study_uid.clone(), "south".to_string()),
        (d.study_uid.clone(), "south".to_string()),
    ];
    expected.sort();
    assert_eq!(fetched, expected, "the expected priors, each once, from the preferred archive");
    for j in &jobs {
        assert_eq!((j.state.as_str(), j.counts.completed, j.counts.failed), ("completed", 6, 0), "{j:?}");
        assert_eq!(j.expected_instances, Some(6));
    }
    // At the destination: exactly the instances of the four priors, none missing.
    let arrived: HashSet<String> = dest
        .files()
        .iter()
        .filter_map(|p| dicom_object::open_file(p).ok())
        .filter_map(|f| {
            f.element(dicom_dictionary_std::tags::SOP_INSTANCE_UID)
                .ok()
                .and_then(|e| e.to_str().ok())
                .map(|s| s.trim_end_matches('\0').to_string())
        })
        .collect();
    let wanted = instances_of(&[&a, &b, &c, &d]);
    assert_eq!(arrived, wanted, "every expected instance at the destination, nothing else");
    assert!(!log().contains("DOE^JANE") && !log().contains("E2E-1"), "no PHI in the logs");
}

/// One DIMSE archive (C-GET) and one DICOMweb archive (QIDO-RS + WADO-RS, preferred), both
/// Orthanc, with overlapping studies; priors go to DCMTK storescp by C-STORE, or (the
/// variant) to a DICOMweb reading PACS (Orthanc) by STOW-RS.
async fn dicomweb_and_dimse_archives(dicomweb_destination: bool) {
    let db = priorfetch_testkit::db::TestDb::postgres().await;
    let store = priorfetch_store::Store::connect(&db.url, "", 4).await.unwrap();
    store.migrate().await.unwrap();
    let cloud = Orthanc::start_dicomweb("CLOUD", "PRIORFETCH", None);
    let local = Orthanc::start("LOCAL", "PRIORFETCH", &[], None);
    let a = study("WEB-1", 911, "20250310"); // on both: from the preferred DICOMweb archive
    let b = study("WEB-1", 912, "20240120"); // DICOMweb only
    let c = study("WEB-1", 913, "20230605"); // DIMSE only
    let d = study("WEB-2", 914, "20260102"); // DIMSE only
    let _c = load("CLOUD", cloud.port, &[&a, &b]);
    let _l = load("LOCAL", local.port, &[&a, &c, &d]);
    let storescp = Storescp::start("DEST");
    let reading = Orthanc::start_dicomweb("READING", "PRIORFETCH", None);
    let destination = if dicomweb_destination {
        format!("protocol = \"dicomweb\"\nbase_url = \"{}\"\nae_title = \"READING\"", reading.dicomweb_url())
    } else {
        format!("ae_title = \"DEST\"\nhost = \"127.0.0.1\"\nport = {}", storescp.port)
    };
    let work = tempfile::tempdir().unwrap();
    let queue = format!("pf-e2e-web-{}", uuid::Uuid::new_v4().simple());
    let intake = service_and_intake(&queue);
    let config_path = work.path().join("priorfetch.toml");
    std::fs::write(
        &config_path,
        format!(
            r#"{intake}[[archives]]
name = "cloud"
protocol = "dicomweb"
base_url = "{cloud_url}"
retrieve = "wado"
priority = 1
[[archives]]
name = "local"
ae_title = "LOCAL"
host = "127.0.0.1"
port = {lp}
priority = 2
retrieve = "get"
[destination]
{destination}
check_existing = false
[mover]
spool_dir = "{spool}"
progress_interval = "200ms"
"#,
            cloud_url = cloud.dicomweb_url(),
            lp = local.port,
            spool = work.path().join("spool").display(),
        ),
    )
    .unwrap();
    let (exams, log) = run_until_done(&store, &config_path, &db.url, work.path(), &queue, &["WEB-1", "WEB-2"]).await;
    assert!(exams.iter().all(|e| e.status == ExamStatus::Complete), "{exams:?}\n{log}");
    let mut fetched = Vec::new();
    for e in &exams {
        for j in store.jobs_of_exam(e.exam.id).await.unwrap() {
            assert_eq!((j.counts.completed, j.counts.failed), (6, 0), "{j:?}");
            fetched.push((j.study_instance_uid.clone(), j.archive.clone()));
        }
    }
    fetched.sort();
    let mut expected = vec![
        (a.study_uid.clone(), "cloud".to_string()),
        (b.study_uid.clone(), "cloud".to_string()),
        (c.study_uid.clone(), "local".to_string()),
        (d.study_uid.clone(), "local".to_string()),
    ];
    expected.sort();
    assert_eq!(fetched, expected, "each prior once, from the preferred archive");

    let wanted = instances_of(&[&a, &b, &c, &d]);
    let arrived: HashSet<String> = if dicomweb_destination {
        let client = priorfetch_dicomweb::DicomWebClient::new(
            &reading.dicomweb_url(),
            priorfetch_dicomweb::Auth::None,
            &Default::default(),
        )
        .unwrap();
        let mut uids = HashSet::new();
        for s in [&a, &b, &c, &d] {
            let query = priorfetch_dicomweb::Query {
                level: priorfetch_dicomweb::Level::Instances(s.study_uid.clone()),
                keys: vec![("SOPInstanceUID".into(), String::new())],
            };
            for m in client.search_all(&query, 100, None).await.unwrap().matches {
                let uid = m.element(dicom_dictionary_std::tags::SOP_INSTANCE_UID).unwrap().to_str().unwrap();
                uids.insert(uid.trim_end_matches('\0').to_string());
            }
        }
        uids
    } else {
        storescp
            .files()
            .iter()
            .filter_map(|p| dicom_object::open_file(p).ok())
            .filter_map(|f| {
                let e = f.element(dicom_dictionary_std::tags::SOP_INSTANCE_UID).ok()?;
                e.to_str().ok().map(|s| s.trim_end_matches('\0').to_string())
            })
            .collect()
    };
    assert_eq!(arrived, wanted, "every expected instance at the destination, nothing else");
    assert!(!log.contains("DOE^JANE") && !log.contains("WEB-1"), "no PHI in the logs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dicomweb_and_a_dimse_archive_fill_a_dimse_destination() {
    dicomweb_and_dimse_archives(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dicomweb_and_a_dimse_archive_fill_a_dicomweb_destination() {
    dicomweb_and_dimse_archives(true).await;
}
