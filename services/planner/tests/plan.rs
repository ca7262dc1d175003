//! The planner against real archives: two Orthanc instances (one with LimitFindResults),
//! an Orthanc destination, dcmqrscp, and a closed port.

mod common;

use chrono::Utc;
use common::*;
use priorfetch_planner::Planner;
use priorfetch_store::ExamStatus;
use priorfetch_testkit::db::TestDb;
use priorfetch_testkit::dicom::{Dcmqrscp, Orthanc, load_studies};
use std::time::{Duration, Instant};

const RULES: &str = r#"
[[rules]]
name = "ct-chest"
match = { modality = ["CT"], body_part = ["CHEST"] }
priors = { same_modality = true, body_part = ["CHEST"], lookback = "5y", max = 5 }

[[rules]]
name = "default"
priors = { same_modality = true, lookback = "5y", max = 1 }
"#;

fn uid(n: u32) -> String {
    format!("1.2.826.0.1.3680043.10.543.77.{n}")
}

/// Rules, dedupe across archives, the preferred archive, the destination check and a
/// capped archive (LimitFindResults = 2 with 4 studies in range) in one scenario.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_dedupe_destination_and_match_cap() {
    let db = TestDb::postgres().await;
    let store = store(&db).await;
    let arch1 = Orthanc::start("ARCH1", OUR_AE, &[], Some(2));
    let arch2 = Orthanc::start("ARCH2", OUR_AE, &[], None);
    let dest = Orthanc::start("DEST", OUR_AE, &[], None);
    let p = "PLAN1";
    let s1 = study(p, &uid(1), &years_ago(0.5), "CT", "CHEST"); // on both archives
    let s2 = study(p, &uid(2), &years_ago(1.5), "CT", "CHEST"); // only on arch2
    let s3 = study(p, &uid(3), &years_ago(1.0), "MR", "HEAD"); // another modality
    let s4 = study(p, &uid(4), &years_ago(2.5), "CT", "CHEST"); // already at the destination
    let s5 = study(p, &uid(5), &years_ago(3.0), "CT", "CHEST"); // arch1, 4th study in range
    let s6 = study(p, &uid(6), &years_ago(0.8), "CT", "ABDOMEN"); // body part only at series level
    let old = study(p, &uid(7), &years_ago(8.0), "CT", "CHEST"); // outside the lookback
    let other = study("SOMEONE-ELSE", &uid(8), &years_ago(1.0), "CT", "CHEST");
    load_studies("ARCH1", arch1.port, &[s1.clone(), s3.clone(), s4.clone(), s5.clone(), old.clone(), other.clone()]);
    load_studies("ARCH2", arch2.port, &[s1.clone(), s2.clone(), s6.clone()]);
    load_studies("DEST", dest.port, std::slice::from_ref(&s4));

    let config = config(&format!(
        "{}{}{}{RULES}",
        archive("short-term", "ARCH1", arch1.port, 1, ""),
        archive("long-term", "ARCH2", arch2.port, 2, ""),
        destination(dest.port, true)
    ));
    let planner = Planner::new(store.clone(), config);
    let scheduled = Utc::now() + chrono::Duration::hours(30);
    let exam = claimed(&store, exam_event("e1", p, "CT", "CHEST", scheduled, "routine")).await;
    let report = planner.plan_exam(&exam).await.unwrap();

    assert_eq!(report.rule.as_deref(), Some("ct-chest"));
    assert!(report.gaps.is_empty(), "{:?}", report.gaps);
    assert_eq!(
        report.selected(),
        vec![("long-term".into(), uid(2)), ("short-term".into(), uid(1)), ("short-term".into(), uid(5))]
    );
    let reason = |archive: &str, n: u32| {
        report
            .decisions
            .iter()
            .find(|d| d.study.archive == archive && d.study.study_instance_uid == uid(n))
            .map(|d| d.reason.clone())
            .unwrap_or_else(|| panic!("no decision for {archive} {n}: {:#?}", report.decisions))
    };
    assert!(reason("long-term", 1).contains("duplicate: preferred copy on 'short-term'"), "{}", reason("long-term", 1));
    assert!(reason("short-term", 3).contains("modalities MR not in CT"), "{}", reason("short-term", 3));
    assert!(reason("short-term", 4).contains("already complete at the destination"), "{}", reason("short-term", 4));
    assert!(reason("long-term", 6).contains("body part ABDOMEN not in CHEST"), "{}", reason("long-term", 6));
    // every study of the capped archive in range was found; the old one and the other
    // patient's were not asked for
    let on_arch1: Vec<_> = report
        .decisions
        .iter()
        .filter(|d| d.study.archive == "short-term")
        .map(|d| d.study.study_instance_uid.clone())
        .collect();
    for n in [1, 3, 4, 5] {
        assert!(on_arch1.contains(&uid(n)), "study {n} missing from the capped archive: {on_arch1:?}");
    }
    assert!(!on_arch1.contains(&uid(7)) && !on_arch1.contains(&uid(8)));

    // jobs: one per selected copy, timed by the lead time, with the instance count
    let jobs = store.jobs_of_exam(exam.id).await.unwrap();
    assert_eq!(jobs.len(), 3);
    let j1 = jobs.iter().find(|j| j.study_instance_uid == uid(1)).unwrap();
    assert_eq!((j1.archive.as_str(), j1.method.as_str(), j1.destination.as_str()), ("short-term", "move", "DEST"));
    assert_eq!((j1.priority, j1.expected_instances, j1.state.as_str()), (5, Some(2), "scheduled"));
    // (the database keeps microseconds)
    assert!((j1.not_before - (scheduled - chrono::Duration::hours(12))).num_milliseconds().abs() < 1);
    assert!((j1.deadline.unwrap() - scheduled).num_milliseconds().abs() < 1);

    // the explanation: rule, keys sent (with the split ranges of the capped archive)
    let explained = priorfetch_planner::api::explain(&store, exam.id).await.unwrap().unwrap();
    assert_eq!(explained["plan"]["rule"], "ct-chest");
    let arch1_queries = explained["plan"]["cfind"]["short-term"].as_array().unwrap();
    assert!(arch1_queries.iter().any(|q| q["outcome"].as_str().unwrap().starts_with("capped")), "{arch1_queries:#?}");
    let study_queries: Vec<_> = arch1_queries.iter().filter(|q| q["level"] == "STUDY").collect();
    assert!(study_queries.len() >= 3, "a capped range is split into at least two more: {study_queries:#?}");
    assert_eq!(study_queries[0]["keys"]["PatientID"], p);
    assert!(study_queries[0]["keys"].get("IssuerOfPatientID").is_none());
    assert!(
        arch1_queries
            .iter()
            .all(|q| q["keys"]["QueryRetrieveLevel"] == "STUDY" || q["keys"]["QueryRetrieveLevel"] == "SERIES")
    );
    assert_eq!(explained["priors"].as_array().unwrap().len(), report.decisions.len());
    assert_eq!(explained["jobs"].as_array().unwrap().len(), 3);
    assert!(!explained["plan"]["cfind"]["destination"].as_array().unwrap().is_empty());
    assert_eq!(store.exam(exam.id).await.unwrap().unwrap().status, ExamStatus::Planned);

    // the default rule for a STAT MR exam: the most recent MR, fetched at once
    let mr = claimed(&store, exam_event("e2", p, "MR", "HEAD", scheduled, "stat")).await;
    let report = planner.plan_exam(&mr).await.unwrap();
    assert_eq!(report.rule.as_deref(), Some("default"));
    assert_eq!(report.selected(), vec![("short-term".into(), uid(3))]);
    let job = &store.jobs_of_exam(mr.id).await.unwrap()[0];
    assert_eq!((job.priority, job.state.as_str()), (0, "available"));
    assert!(job.not_before <= Utc::now());
}

/// dcmqrscp omits ModalitiesInStudy and the instance counts: the modality comes from a
/// SERIES-level query, and the issuer is sent when configured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dcmqrscp_archive_modalities_from_series_level() {
    let db = TestDb::sqlite();
    let store = store(&db).await;
    let qr = Dcmqrscp::start("DCMQR", OUR_AE, &[]);
    let p = "PLAN2";
    load_studies(
        "DCMQR",
        qr.port,
        &[study(p, &uid(21), &years_ago(1.0), "CT", "CHEST"), study(p, &uid(22), &years_ago(0.5), "MR", "CHEST")],
    );
    let config = config(&format!("{}{}", archive("dcm", "DCMQR", qr.port, 1, ""), destination(1, false)));
    let planner = Planner::new(store.clone(), config);
    let exam =
        claimed(&store, exam_event("d1", p, "CT", "CHEST", Utc::now() + chrono::Duration::hours(2), "urgent")).await;
    let report = planner.plan_exam(&exam).await.unwrap();
    assert!(report.gaps.is_empty(), "{:?}", report.gaps);
    assert_eq!(report.selected(), vec![("dcm".into(), uid(21))]);
    let mr = report.decisions.iter().find(|d| d.study.study_instance_uid == uid(22)).unwrap();
    assert!(mr.reason.contains("modalities MR not in CT"), "{}", mr.reason);
    let job = &store.jobs_of_exam(exam.id).await.unwrap()[0];
    assert_eq!((job.priority, job.expected_instances), (1, None));
    assert!(report.cfinds >= 3, "one STUDY and two SERIES queries: {}", report.cfinds);
}

/// An unreachable archive does not block the exam: the other plans, the gap is
/// recorded, and the running planner re-plans with backoff until the archive answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_archive_leaves_a_gap_and_is_replanned() {
    let db = TestDb::postgres().await;
    let store = store(&db).await;
    let up = Orthanc::start("ARCH1", OUR_AE, &[], None);
    let mut down = Orthanc::start("ARCH2", OUR_AE, &[], None);
    let p = "PLAN3";
    load_studies("ARCH1", up.port, &[study(p, &uid(31), &years_ago(1.0), "CT", "CHEST")]);
    load_studies("ARCH2", down.port, &[study(p, &uid(32), &years_ago(0.5), "CT", "CHEST")]);
    down.stop();
    let config = config(&format!(
        "{}{}{}[planner]\nreplan_backoff = {{ initial = '1s', factor = 1.0, max = '1s', jitter = 0.0 }}\n",
        archive("up", "ARCH1", up.port, 2, ""),
        archive("down", "ARCH2", down.port, 1, ""),
        destination(1, false)
    ));
    let planner = Planner::new(store.clone(), config);
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(planner.run(shutdown));
    let id = store
        .insert_exam(&exam_event("u1", p, "CT", "CHEST", Utc::now() + chrono::Duration::hours(2), "routine"))
        .await
        .unwrap()
        .id();

    // first plan: the reachable archive's prior is scheduled, the gap is visible
    let deadline = Instant::now() + Duration::from_secs(20);
    let plan = loop {
        if let Some(plan) = store.exam_plan(id).await.unwrap() {
            break plan;
        }
        assert!(Instant::now() < deadline, "exam not planned within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(plan.gaps["down"]["error"].as_str().unwrap().contains("no TCP path"), "{}", plan.gaps);
    assert_eq!(plan.gaps["down"]["retry"], true);
    assert!(plan.replan_at.is_some());
    let jobs = store.jobs_of_exam(id).await.unwrap();
    assert_eq!(
        jobs.iter().map(|j| (j.archive.as_str(), j.study_instance_uid.clone())).collect::<Vec<_>>(),
        vec![("up", uid(31))]
    );
    // the archive comes back with its prior
    down.restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    let plan = loop {
        let plan = store.exam_plan(id).await.unwrap().unwrap();
        if plan.gaps.as_object().is_some_and(|g| g.is_empty()) {
            break plan;
        }
        assert!(Instant::now() < deadline, "not re-planned within 30 s: {}", plan.gaps);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(plan.attempts >= 2 && plan.replan_at.is_none(), "{plan:?}");
    assert_eq!(plan.queries["down"].as_array().unwrap()[0]["outcome"], "ok");
    let mut jobs: Vec<_> =
        store.jobs_of_exam(id).await.unwrap().into_iter().map(|j| (j.archive, j.study_instance_uid)).collect();
    jobs.sort();
    assert_eq!(jobs, vec![("down".to_string(), uid(32)), ("up".to_string(), uid(31))]);
    assert_eq!(store.exam(id).await.unwrap().unwrap().status, ExamStatus::Planned);
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), running).await.expect("planner stops").unwrap();
}

/// An archive that answers again brings forward the re-plans of the exams planned without
/// it: the next exam's C-FIND finds it up, and the first exam's prior there is queued at
/// once, not after its backoff (10 minutes here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_answering_again_brings_its_replans_forward() {
    let db = TestDb::postgres().await;
    let store = store(&db).await;
    let up = Orthanc::start("ARCH1", OUR_AE, &[], None);
    let mut down = Orthanc::start("ARCH2", OUR_AE, &[], None);
    let p = "PLAN4";
    load_studies("ARCH1", up.port, &[study(p, &uid(41), &years_ago(1.0), "CT", "CHEST")]);
    load_studies("ARCH2", down.port, &[study(p, &uid(42), &years_ago(0.5), "CT", "CHEST")]);
    down.stop();
    let config = config(&format!(
        "{}{}{}[planner]\nreplan_backoff = {{ initial = '10m', factor = 1.0, max = '10m', jitter = 0.0 }}\n",
        archive("up", "ARCH1", up.port, 2, ""),
        archive("down", "ARCH2", down.port, 1, ""),
        destination(1, false)
    ));
    let planner = Planner::new(store.clone(), config);
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(planner.run(shutdown));
    let soon = Utc::now() + chrono::Duration::hours(2);
    let first = store.insert_exam(&exam_event("c1", p, "CT", "CHEST", soon, "routine")).await.unwrap().id();
    let deadline = Instant::now() + Duration::from_secs(20);
    let plan = loop {
        if let Some(plan) = store.exam_plan(first).await.unwrap() {
            break plan;
        }
        assert!(Instant::now() < deadline, "exam not planned within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let replan_at = plan.replan_at.expect("a re-plan is pending");
    assert!(replan_at > Utc::now() + chrono::Duration::minutes(9), "backoff of 10 min: {replan_at}");

    // The archive is back; another patient's exam makes the planner query it.
    down.restart();
    let other = study("PLAN4-OTHER", &uid(43), &years_ago(1.0), "CT", "CHEST");
    load_studies("ARCH1", up.port, std::slice::from_ref(&other));
    store.insert_exam(&exam_event("c2", "PLAN4-OTHER", "CT", "CHEST", soon, "routine")).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let jobs = store.jobs_of_exam(first).await.unwrap();
        if jobs.iter().any(|j| j.archive == "down" && j.study_instance_uid == uid(42)) {
            break;
        }
        assert!(Instant::now() < deadline, "the first exam was not re-planned within 30 s of the comeback");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let plan = store.exam_plan(first).await.unwrap().unwrap();
    assert!(plan.gaps.as_object().is_some_and(|g| g.is_empty()), "{}", plan.gaps);
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), running).await.expect("planner stops").unwrap();
}
