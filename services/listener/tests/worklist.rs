//! Modality Worklist polling against real MWL SCPs (DCMTK wlmscpfs, Orthanc's worklist
//! plugin) and real Postgres: steps become exams, a re-poll changes nothing, a changed
//! step re-plans, a vanished future step cancels, bad items are dead-lettered.
//!
//! Polls run at a fixed "now" (2030-03-10 08:00 UTC, 09:00 in the site's +01:00), so the
//! window (24 h) and the dates asked for do not depend on when the test runs.

use chrono::{DateTime, TimeZone, Utc};
use priorfetch_config::{Config, IntakeSource, Sources};
use priorfetch_listener::worklist::{PollError, PollReport, WorklistPoller};
use priorfetch_listener::{Intake, decode_options, metrics};
use priorfetch_store::{ExamRecord, ExamStatus, Store};
use priorfetch_testkit::db::TestDb;
use priorfetch_testkit::dicom::OrthancTls;
use priorfetch_testkit::tls::TestPki;
use priorfetch_testkit::worklist::{MwlItem, OrthancWorklists, Wlmscpfs};

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 3, 10, 8, 0, 0).unwrap()
}

fn config(name: &str, ae: &str, port: u16, extra: &str) -> Config {
    let toml = format!(
        "[intake]\nsource = \"worklist\"\n[intake.hl7]\ndefault_utc_offset = \"+01:00\"\n\
         [intake.worklist]\nname = \"{name}\"\nae_title = \"{ae}\"\nhost = \"127.0.0.1\"\nport = {port}\n\
         look_ahead = \"24h\"\ntimeout = \"20s\"\n{extra}"
    );
    Config::load(Sources { file: None, overlay: Some(&toml), env: false }).expect("config")
}

async fn poller(config: &Config) -> (TestDb, Store, WorklistPoller) {
    priorfetch_testkit::db::init_test_log();
    let db = TestDb::postgres().await;
    let store = Store::connect(&db.url, "", 4).await.unwrap();
    store.migrate().await.unwrap();
    let intake = Intake::new(store.clone(), decode_options(config, IntakeSource::Worklist));
    let poller = WorklistPoller::new(config, store.clone(), intake).expect("poller");
    (db, store, poller)
}

fn uid(n: u32) -> String {
    format!("1.2.826.0.1.3680043.10.77.{n}")
}

/// Patient MRN<n>, accession ACC<n>, study UID ...77.<n>, one CT step SPS<n>.
fn item(n: u32, date: &str, time: &str) -> MwlItem {
    MwlItem::simple(&format!("MRN{n}"), &format!("ACC{n}"), &uid(n), &format!("SPS{n}"), date, time)
}

async fn exam(store: &Store, name: &str, n: u32) -> Option<ExamRecord> {
    store.exam_by_key(&format!("mwl:{name}:{}:SPS{n}", uid(n))).await.unwrap()
}

fn counts(r: &PollReport) -> (usize, usize, usize, usize, usize, usize) {
    (r.new, r.unchanged, r.updated, r.reopened, r.cancelled, r.invalid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dcmtk_steps_become_exams_and_follow_the_worklist() {
    let scp = Wlmscpfs::start("MWL");
    let config = config("ris", "MWL", scp.port, "");
    let (_db, store, poller) = poller(&config).await;
    scp.put("a", &item(1, "20300310", "140000")); // today 14:00 local
    scp.put("b", &item(2, "20300311", "073000")); // tomorrow 07:30, inside the 24 h
    scp.put("c", &item(3, "20300310", "070000")); // earlier today: taken, never cancelled
    scp.put("d", &item(4, "20300311", "120000")); // tomorrow noon: beyond the window

    let first = poller.poll_at(now()).await.unwrap();
    assert!(first.complete);
    assert_eq!((first.steps, counts(&first), first.later), (4, (3, 0, 0, 0, 0, 0), 1), "{first:?}");
    let a = exam(&store, "ris", 1).await.expect("step a is an exam");
    assert_eq!(a.status, ExamStatus::Received);
    assert_eq!(a.exam.patient_id, "MRN1");
    assert_eq!(a.exam.issuer.as_deref(), Some("HOSP"));
    assert_eq!(a.exam.accession_number.as_deref(), Some("ACC1"));
    assert_eq!(a.exam.scheduled_at.unwrap().to_rfc3339(), "2030-03-10T13:00:00+00:00", "local +01:00");
    assert_eq!(a.exam.modality.as_deref(), Some("CT"));
    assert_eq!(a.exam.procedure_code.as_deref(), Some("CTCHEST"));
    assert_eq!(a.exam.procedure_text.as_deref(), Some("CT chest"));
    assert!(exam(&store, "ris", 4).await.is_none(), "beyond the window: a later poll takes it");

    // nothing changed: no writes
    let before: Vec<ExamRecord> = store.list_exams(100).await.unwrap();
    let again = poller.poll_at(now()).await.unwrap();
    assert_eq!(counts(&again), (0, 3, 0, 0, 0, 0), "{again:?}");
    let after: Vec<ExamRecord> = store.list_exams(100).await.unwrap();
    assert_eq!(
        before.iter().map(|e| (e.exam.id, e.updated_at, e.status)).collect::<Vec<_>>(),
        after.iter().map(|e| (e.exam.id, e.updated_at, e.status)).collect::<Vec<_>>()
    );

    // a planned exam whose step moved and changed modality goes back to the planner
    store.set_exam_status(a.exam.id, ExamStatus::Planned).await.unwrap();
    let mut moved = item(1, "20300310", "153000");
    moved.steps[0].modality = Some("MR".into());
    scp.put("a", &moved);
    let changed = poller.poll_at(now()).await.unwrap();
    assert_eq!(counts(&changed), (0, 2, 1, 0, 0, 0), "{changed:?}");
    let a2 = exam(&store, "ris", 1).await.unwrap();
    assert_eq!((a2.exam.id, a2.status), (a.exam.id, ExamStatus::Received), "same exam, re-planned");
    assert_eq!(a2.exam.scheduled_at.unwrap().to_rfc3339(), "2030-03-10T14:30:00+00:00");
    assert_eq!(a2.exam.modality.as_deref(), Some("MR"));

    // a future step leaves: cancelled; a past one leaves: kept
    scp.remove("b");
    scp.remove("c");
    let gone = poller.poll_at(now()).await.unwrap();
    assert_eq!(counts(&gone), (0, 1, 0, 0, 1, 0), "{gone:?}");
    assert_eq!(exam(&store, "ris", 2).await.unwrap().status, ExamStatus::Cancelled);
    assert_eq!(exam(&store, "ris", 3).await.unwrap().status, ExamStatus::Received, "past steps are not cancelled");
    assert_eq!(exam(&store, "ris", 1).await.unwrap().status, ExamStatus::Received);

    // the step comes back (rescheduled out of the window and in again): re-opened
    scp.put("b", &item(2, "20300311", "060000"));
    let back = poller.poll_at(now()).await.unwrap();
    assert_eq!(counts(&back), (0, 1, 0, 1, 0, 0), "{back:?}");
    let b = exam(&store, "ris", 2).await.unwrap();
    assert_eq!(b.status, ExamStatus::Received);
    assert_eq!(b.exam.scheduled_at.unwrap().to_rfc3339(), "2030-03-11T05:00:00+00:00");
    assert!(metrics::WORKLIST_POLLS.with_label_values(&["ris", "ok"]).get() >= 5);
    assert_eq!(metrics::WORKLIST_STEPS.with_label_values(&["ris"]).get(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dcmtk_bad_items_are_dead_lettered_once_and_others_become_exams() {
    let scp = Wlmscpfs::start("MWL");
    let config = config("bad", "MWL", scp.port, "");
    let (_db, store, poller) = poller(&config).await;
    scp.put("good", &item(1, "20300310", "100000"));
    scp.put("turns-bad", &item(2, "20300310", "110000"));
    let mut no_patient = item(3, "20300310", "120000");
    no_patient.patient_id = None;
    scp.put("no-patient", &no_patient);
    let mut bad_uid = item(4, "20300310", "130000");
    bad_uid.study_uid = Some("1.2.x4".into());
    scp.put("bad-uid", &bad_uid);

    let report = poller.poll_at(now()).await.unwrap();
    assert_eq!((report.steps, report.new, report.invalid), (2, 2, 2), "{report:?}");
    assert!(report.complete);
    let letters = store.dead_letters().await.unwrap();
    assert_eq!(letters.len(), 2, "{letters:?}");
    assert!(letters.iter().all(|l| l.source == "worklist"));
    let reasons: Vec<&str> = letters.iter().map(|l| l.reason.as_str()).collect();
    assert!(reasons.iter().any(|r| r.contains("PatientID (0010,0020)")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("StudyInstanceUID (0020,000D)")), "{reasons:?}");
    // the payload is the item as DICOM JSON (ScheduledProcedureStepSequence inside)
    assert!(letters.iter().all(|l| String::from_utf8_lossy(&l.payload).contains("\"00400100\"")));

    // a known step whose item turns bad is dead-lettered, not taken for a step that left
    let mut turned = item(2, "20300310", "110000");
    turned.patient_id = None;
    scp.put("turns-bad", &turned);
    let report = poller.poll_at(now()).await.unwrap();
    assert_eq!((report.new, report.unchanged, report.cancelled, report.invalid), (0, 1, 0, 3), "{report:?}");
    assert_eq!(exam(&store, "bad", 2).await.unwrap().status, ExamStatus::Received);
    assert_eq!(store.dead_letters().await.unwrap().len(), 3, "only the newly bad item is added");
    assert!(metrics::WORKLIST_CHANGES.with_label_values(&["bad", "invalid"]).get() >= 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_scp_fails_the_poll_and_cancels_nothing() {
    let scp = Wlmscpfs::start("MWL");
    let config = config("down", "MWL", scp.port, "");
    let (_db, store, poller) = poller(&config).await;
    scp.put("a", &item(1, "20300310", "140000"));
    assert_eq!(poller.poll_at(now()).await.unwrap().new, 1);

    drop(scp);
    let failed = poller.poll_at(now()).await;
    assert!(matches!(failed, Err(PollError::Dimse(_))), "{failed:?}");
    assert_eq!(exam(&store, "down", 1).await.unwrap().status, ExamStatus::Received, "not cancelled");
    assert_eq!(metrics::WORKLIST_POLLS.with_label_values(&["down", "unreachable"]).get(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orthanc_worklists_give_zones_other_ids_and_body_part() {
    let orthanc = OrthancWorklists::start("ORTHANCMWL", "PRIORFETCH");
    let config = config("orthanc", "ORTHANCMWL", orthanc.port, "station_ae = [\"CT1\", \"MR1\"]\n");
    let (_db, store, poller) = poller(&config).await;
    let mut full = item(1, "20300310", "100000");
    full.timezone_offset = Some("-0500".into()); // 10:00 in New York is 15:00 UTC
    full.other_ids = vec![("NAT-77".into(), Some("NATIONAL".into()))];
    full.priority = Some("STAT".into());
    full.steps[0].body_part = Some("CHEST".into());
    orthanc.put("full", &full);
    let mut elsewhere = item(2, "20300310", "110000");
    elsewhere.steps[0].station_ae = Some("US9".into());
    orthanc.put("elsewhere", &elsewhere);

    let report = poller.poll_at(now()).await.unwrap();
    assert_eq!((report.steps, report.new), (1, 1), "{report:?}\n{}", orthanc.log());
    let e = exam(&store, "orthanc", 1).await.unwrap();
    assert_eq!(e.exam.scheduled_at.unwrap().to_rfc3339(), "2030-03-10T15:00:00+00:00");
    assert_eq!(e.exam.body_part.as_deref(), Some("CHEST"));
    assert_eq!(e.exam.priority, priorfetch_store::ExamPriority::Stat);
    let ids: Vec<(String, Option<String>)> =
        e.exam.identifiers.iter().map(|i| (i.id.clone(), i.issuer.clone())).collect();
    assert!(ids.contains(&("NAT-77".into(), Some("NATIONAL".into()))), "{ids:?}");
    assert!(ids.contains(&("MRN1".into(), Some("HOSP".into()))), "{ids:?}");
    assert!(exam(&store, "orthanc", 2).await.is_none(), "another station");

    assert_eq!(counts(&poller.poll_at(now()).await.unwrap()), (0, 1, 0, 0, 0, 0));
    // the step moves an hour later: the planned exam goes back to the planner
    store.set_exam_status(e.exam.id, ExamStatus::Planned).await.unwrap();
    full.steps[0].time = Some("110000".into());
    orthanc.put("full", &full);
    assert_eq!(counts(&poller.poll_at(now()).await.unwrap()), (0, 0, 1, 0, 0, 0));
    let moved = exam(&store, "orthanc", 1).await.unwrap();
    assert_eq!((moved.exam.id, moved.status), (e.exam.id, ExamStatus::Received), "same exam, re-planned");
    assert_eq!(moved.exam.scheduled_at.unwrap().to_rfc3339(), "2030-03-10T16:00:00+00:00");
    orthanc.remove("full");
    assert_eq!(poller.poll_at(now()).await.unwrap().cancelled, 1);
    assert_eq!(exam(&store, "orthanc", 1).await.unwrap().status, ExamStatus::Cancelled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orthanc_worklists_over_dicom_tls() {
    let pki = TestPki::new();
    let server = pki.issue("orthanc", &["localhost", "127.0.0.1"]);
    let tls = OrthancTls { cert: server.cert, key: server.key, ca: pki.ca.clone(), require_client_cert: false };
    let orthanc = OrthancWorklists::start_tls("ORTHANCTLS", "PRIORFETCH", &tls);
    let extra = format!("[intake.worklist.tls]\nca = \"{}\"\n", pki.ca.display());
    let (_db, store, poller) = poller(&config("tls", "ORTHANCTLS", orthanc.port, &extra)).await;
    orthanc.put("a", &item(1, "20300310", "100000"));
    let report = poller.poll_at(now()).await.unwrap_or_else(|e| panic!("{e}\n{}", orthanc.log()));
    assert_eq!(report.new, 1, "{report:?}");
    assert!(exam(&store, "tls", 1).await.is_some());

    // the same SCP without TLS on our side fails, and cancels nothing
    let plain = config("tls", "ORTHANCTLS", orthanc.port, "");
    let intake = Intake::new(store.clone(), decode_options(&plain, IntakeSource::Worklist));
    let plain = WorklistPoller::new(&plain, store.clone(), intake).unwrap();
    assert!(plain.poll_at(now()).await.is_err());
    assert_eq!(exam(&store, "tls", 1).await.unwrap().status, ExamStatus::Received);
}

/// `intake.source = "worklist"` through `priorfetch_listener::run`: polls at start and on
/// the schedule, and stops on shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_runs_the_poller_until_shutdown() {
    let scp = Wlmscpfs::start("MWL");
    let config = config("live", "MWL", scp.port, "schedule = \"* * * * * *\"\n");
    let (_db, store, _) = poller(&config).await;
    // two hours from now in the site's +01:00 (tomorrow near midnight: still in the window)
    let at = (Utc::now() + chrono::Duration::hours(2)).with_timezone(&chrono::FixedOffset::east_opt(3600).unwrap());
    scp.put("a", &item(1, &at.format("%Y%m%d").to_string(), &at.format("%H%M%S").to_string()));
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let listener = tokio::spawn({
        let (config, store) = (config.clone(), store.clone());
        async move { priorfetch_listener::run(&config, store, shutdown).await }
    });
    let started = std::time::Instant::now();
    while exam(&store, "live", 1).await.is_none() {
        assert!(started.elapsed() < std::time::Duration::from_secs(15), "no exam from the running poller");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    scp.remove("a");
    while exam(&store, "live", 1).await.unwrap().status != ExamStatus::Cancelled {
        assert!(started.elapsed() < std::time::Duration::from_secs(15), "the next tick did not cancel the step");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    stop.send(true).unwrap();
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), listener).await;
    assert!(matches!(ended, Ok(Ok(Ok(())))), "{ended:?}");
}
