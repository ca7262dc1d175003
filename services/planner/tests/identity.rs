//! Patient identity across archives, all real: an HL7 ORM whose PID-3 carries the
//! patient's identifiers of two assigning authorities goes through the intake (Postgres),
//! the planner queries two Orthanc archives, each with the identifier of its
//! `patient_id_issuer`, and skips a third (dcmqrscp) whose issuer the message lacks. The
//! priors of both archives are found, the study both hold is fetched once, the mover
//! brings them to an Orthanc destination (C-MOVE from one archive, C-GET relayed from the
//! other), and a second order of the patient finds them all at the destination.

mod common;

use chrono::Utc;
use common::*;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use priorfetch_events::{DecodeOptions, short_hash};
use priorfetch_listener::{Intake, Verdict};
use priorfetch_mover::{Mover, MoverOptions};
use priorfetch_planner::Planner;
use priorfetch_store::{JobState, Store};
use priorfetch_testkit::db::TestDb;
use priorfetch_testkit::dicom::{Dcmqrscp, Destination, Orthanc, StudySpec, load_studies, store_files, write_study};
use std::time::{Duration, Instant};

const ISSUER_OF_PATIENT_ID: Tag = Tag(0x0010, 0x0021);

const RULES: &str = r#"
[[rules]]
name = "ct"
match = { modality = ["CT"] }
priors = { same_modality = true, lookback = "5y", max = 5 }
"#;

fn uid(n: u32) -> String {
    format!("1.2.826.0.1.3680043.10.543.88.{n}")
}

/// Loads the studies into an archive with IssuerOfPatientID `issuer` in every file: the
/// archive files its patients under that authority's IDs.
fn load_with_issuer(ae: &str, port: u16, issuer: &str, specs: &[StudySpec]) {
    let dir = tempfile::tempdir().unwrap();
    for (i, spec) in specs.iter().enumerate() {
        for path in write_study(&dir.path().join(format!("s{i}")), spec) {
            let mut file = dicom_object::open_file(&path).unwrap();
            file.put(DataElement::new(ISSUER_OF_PATIENT_ID, VR::LO, PrimitiveValue::from(issuer)));
            file.write_to_file(&path).unwrap();
        }
    }
    store_files(ae, port, dir.path());
}

/// An ORM^O01 for a CT whose PID-3 names the patient in both domains.
fn orm(control_id: &str, accession: &str) -> Vec<u8> {
    let at = (Utc::now() + chrono::Duration::hours(2)).format("%Y%m%d%H%M%S+0000");
    format!(
        "MSH|^~\\&|RIS|HOSP|PF|HOSP|20261122083000||ORM^O01|{control_id}|P|2.5.1\r\
         PID|1||N-100^^^HOSP_N^MR~S-200^^^HOSP_S^MR||DOE^JANE||19700101|F\r\
         ORC|NW|PL-{accession}|FL-{accession}||SC||^^^{at}^^R\r\
         OBR|1|PL-{accession}|FL-{accession}|CTCH^CT chest||||||||||||||{accession}||||||CT\r"
    )
    .into_bytes()
}

/// The message through the real intake, then claimed as the planner would.
async fn intake(store: &Store, message: &[u8]) -> priorfetch_domain::Exam {
    let options = DecodeOptions { source: "mllp".into(), hl7: Default::default(), sender_in_key: false };
    let verdicts = Intake::new(store.clone(), options).process(&[message]).await.unwrap();
    let Verdict::Accepted(id) = verdicts[0] else { panic!("not accepted: {verdicts:?}") };
    let claimed = store.claim_exams("test", 10, Duration::from_secs(60)).await.unwrap();
    claimed.into_iter().map(|e| e.exam).find(|e| e.id == id).expect("claimed")
}

fn decision<'a>(report: &'a priorfetch_planner::PlanReport, archive: &str, n: u32) -> &'a priorfetch_domain::Decision {
    report
        .decisions
        .iter()
        .find(|d| d.study.archive == archive && d.study.study_instance_uid == uid(n))
        .unwrap_or_else(|| panic!("no decision for {archive} {n}: {:#?}", report.decisions))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_archive_is_queried_with_the_identifier_of_its_issuer() {
    let db = TestDb::postgres().await;
    let store = store(&db).await;
    let dest = Orthanc::start("DEST", OUR_AE, &[], None);
    let north = Orthanc::start("NORTH", OUR_AE, &[Destination { ae: "DEST".into(), port: dest.port }], None);
    let south = Orthanc::start("SOUTH", OUR_AE, &[], None);
    let east = Dcmqrscp::start("EAST", OUR_AE, &[]);
    // The same patient is N-100 at NORTH (HOSP_N) and S-200 at SOUTH (HOSP_S); study 1
    // is on both. At SOUTH, N-100 is someone else: never a candidate.
    let shared = study("N-100", &uid(1), &years_ago(0.5), "CT", "CHEST");
    load_with_issuer(
        "NORTH",
        north.port,
        "HOSP_N",
        &[shared.clone(), study("N-100", &uid(2), &years_ago(1.5), "CT", "CHEST")],
    );
    load_with_issuer(
        "SOUTH",
        south.port,
        "HOSP_S",
        &[
            StudySpec { patient_id: "S-200".into(), ..shared.clone() },
            study("S-200", &uid(3), &years_ago(2.0), "CT", "ABDOMEN"),
            study("N-100", &uid(4), &years_ago(1.0), "CT", "HEAD"),
        ],
    );
    load_studies("EAST", east.port, &[study("E-300", &uid(5), &years_ago(1.0), "CT", "CHEST")]);

    let work = tempfile::tempdir().unwrap();
    let config = config(&format!(
        "{}{}{}{}{RULES}[mover]\nspool_dir = '{}'\nprogress_interval = '200ms'\n",
        archive("north", "NORTH", north.port, 1, "patient_id_issuer = 'HOSP_N'\nquery_issuer = true"),
        archive("south", "SOUTH", south.port, 2, "patient_id_issuer = 'HOSP_S'\nretrieve = 'get'"),
        archive("east", "EAST", east.port, 3, "patient_id_issuer = 'HOSP_E'"),
        destination(dest.port, true),
        work.path().display(),
    ));
    let planner = Planner::new(store.clone(), config.clone());
    let exam = intake(&store, &orm("C1", "ACC-1")).await;
    assert_eq!((exam.patient_id.as_str(), exam.identifiers.len()), ("N-100", 2), "every PID-3 identifier stored");
    let report = planner.plan_exam(&exam).await.unwrap();

    // found on both archives under their own IDs; study 1 once, from the preferred copy
    assert!(report.gaps.is_empty(), "{:?}", report.gaps);
    assert_eq!(report.selected(), vec![("north".into(), uid(1)), ("north".into(), uid(2)), ("south".into(), uid(3))]);
    let copy = &decision(&report, "south", 1).reason;
    assert!(copy.contains("duplicate: preferred copy on 'north'"), "{copy}");
    assert!(!report.decisions.iter().any(|d| d.study.study_instance_uid == uid(4)), "SOUTH's N-100 is another patient");
    // the third archive: not queried, and the plan says why
    let skipped = &report.skipped["east"];
    assert!(skipped.contains("'HOSP_E'") && skipped.contains("not queried"), "{skipped}");

    // the explanation: identifier per archive (issuer, hashed ID), keys sent, the skip
    let explained = priorfetch_planner::api::explain(&store, exam.id).await.unwrap().unwrap();
    let plan = &explained["plan"];
    let archives = &plan["archives"];
    assert_eq!(archives["north"]["patient"]["issuer"], "HOSP_N", "{archives:#}");
    assert_eq!(archives["north"]["patient"]["id_hash"], short_hash("N-100"));
    assert_eq!(archives["north"]["patient"]["issuer_sent"], true);
    assert_eq!(archives["south"]["patient"]["issuer"], "HOSP_S");
    assert_eq!(archives["south"]["patient"]["id_hash"], short_hash("S-200"));
    assert_eq!(archives["south"]["patient"]["issuer_sent"], false);
    assert_eq!(archives["east"]["skipped"].as_str(), Some(skipped.as_str()));
    assert!(!archives.to_string().contains("N-100") && !archives.to_string().contains("S-200"), "{archives}");
    let north_keys = &plan["cfind"]["north"][0]["keys"];
    assert_eq!(
        (north_keys["PatientID"].as_str(), north_keys["IssuerOfPatientID"].as_str()),
        (Some("N-100"), Some("HOSP_N"))
    );
    let south_keys = &plan["cfind"]["south"][0]["keys"];
    assert_eq!(south_keys["PatientID"], "S-200");
    assert!(south_keys.get("IssuerOfPatientID").is_none(), "query_issuer is off for south: {south_keys}");
    assert!(plan["cfind"].get("east").is_none(), "east got no C-FIND: {}", plan["cfind"]);
    let identifiers = explained["exam"]["patient_identifiers"].as_array().unwrap();
    assert_eq!(identifiers.len(), 2);
    assert!(!explained["exam"].to_string().contains("S-200"));

    // fetched: C-MOVE from north, C-GET relayed from south, every instance confirmed
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let options = MoverOptions { worker: "identity-mover".into(), poll_interval: Duration::from_millis(100) };
    let mover = tokio::spawn(Mover::new(store.clone(), config, options).run(shutdown));
    let started = Instant::now();
    let jobs = loop {
        let jobs = store.jobs_of_exam(exam.id).await.unwrap();
        if jobs.iter().all(|j| j.state.is_finished()) {
            break jobs;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "jobs not finished: {jobs:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(30), mover).await.expect("mover stops").unwrap().unwrap();
    assert_eq!(jobs.len(), 3);
    for j in &jobs {
        assert_eq!((j.state, j.counts.completed, j.counts.failed, j.received), (JobState::Completed, 2, 0, 2), "{j:?}");
    }

    // a second order of the patient: the priors from both domains are at the destination
    let again = intake(&store, &orm("C2", "ACC-2")).await;
    let report = planner.plan_exam(&again).await.unwrap();
    assert!(report.selected().is_empty(), "{:#?}", report.decisions);
    for (archive, n) in [("north", 1), ("north", 2), ("south", 3)] {
        let reason = &decision(&report, archive, n).reason;
        assert!(reason.contains("already complete at the destination"), "{archive} {n}: {reason}");
    }
    assert_eq!(report.jobs_enqueued, 0);
}
