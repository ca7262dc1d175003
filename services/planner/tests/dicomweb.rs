//! A DICOMweb archive in the same fan-out as a DIMSE one: Orthanc's DICOMweb plugin
//! queried with QIDO-RS (clipped by LimitFindResults, so the planner must split date
//! ranges to find every study), Orthanc over DIMSE beside it with overlapping studies.

mod common;

use chrono::Utc;
use common::*;
use priorfetch_planner::Planner;
use priorfetch_store::{JobState, RetrieveMethod};
use priorfetch_testkit::db::TestDb;
use priorfetch_testkit::dicom::{Orthanc, load_studies};

const RULES: &str = r#"
[[rules]]
name = "ct-chest"
match = { modality = ["CT"], body_part = ["CHEST"] }
priors = { same_modality = true, body_part = ["CHEST"], lookback = "5y", max = 5 }
"#;

fn uid(n: u32) -> String {
    format!("1.2.826.0.1.3680043.10.543.88.{n}")
}

fn web_archive(name: &str, url: &str, priority: i32, max_matches: u32) -> String {
    format!(
        "[[archives]]\nname = '{name}'\nprotocol = 'dicomweb'\nbase_url = '{url}'\nretrieve = 'wado'\n\
         priority = {priority}\nmax_matches = {max_matches}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dicomweb_and_dimse_archives_are_planned_together() {
    let db = TestDb::postgres().await;
    let store = store(&db).await;
    let web = Orthanc::start_dicomweb("WEBARCH", OUR_AE, Some(2));
    let dimse = Orthanc::start("DIMSEARCH", OUR_AE, &[], None);
    let p = "WEB1";
    let s1 = study(p, &uid(1), &years_ago(0.5), "CT", "CHEST"); // on both
    let s2 = study(p, &uid(2), &years_ago(1.5), "CT", "CHEST"); // web only
    let s3 = study(p, &uid(3), &years_ago(2.0), "CT", "CHEST"); // web only
    let s4 = study(p, &uid(4), &years_ago(3.0), "CT", "ABDOMEN"); // web, other body part (series level)
    let s5 = study(p, &uid(5), &years_ago(1.0), "CT", "CHEST"); // DIMSE only
    let other = study("SOMEONE-ELSE", &uid(9), &years_ago(1.0), "CT", "CHEST");
    load_studies("WEBARCH", web.port, &[s1.clone(), s2.clone(), s3.clone(), s4.clone(), other]);
    load_studies("DIMSEARCH", dimse.port, &[s1.clone(), s5.clone()]);

    let config = config(&format!(
        "{}{}{}{RULES}",
        web_archive("cloud", &web.dicomweb_url(), 1, 2),
        archive("local", "DIMSEARCH", dimse.port, 2, ""),
        destination(1, false)
    ));
    let planner = Planner::new(store.clone(), config);
    let scheduled = Utc::now() + chrono::Duration::hours(30);
    let exam = claimed(&store, exam_event("w1", p, "CT", "CHEST", scheduled, "routine")).await;
    let report = planner.plan_exam(&exam).await.unwrap();

    assert!(report.gaps.is_empty(), "{:?}", report.gaps);
    assert_eq!(
        report.selected(),
        vec![("cloud".into(), uid(1)), ("cloud".into(), uid(2)), ("cloud".into(), uid(3)), ("local".into(), uid(5))]
    );
    let reason = |archive: &str, n: u32| {
        report
            .decisions
            .iter()
            .find(|d| d.study.archive == archive && d.study.study_instance_uid == uid(n))
            .map(|d| d.reason.clone())
            .unwrap_or_else(|| panic!("no decision for {archive} {n}: {:#?}", report.decisions))
    };
    assert!(reason("local", 1).contains("duplicate: preferred copy on 'cloud'"), "{}", reason("local", 1));
    assert!(reason("cloud", 4).contains("body part ABDOMEN not in CHEST"), "{}", reason("cloud", 4));

    // the DICOMweb archive's jobs say WADO-RS, the DIMSE archive's C-MOVE
    let jobs = store.jobs_of_exam(exam.id).await.unwrap();
    assert_eq!(jobs.len(), 4);
    for j in &jobs {
        let method = if j.archive == "cloud" { RetrieveMethod::Wado } else { RetrieveMethod::Move };
        assert_eq!((j.method, j.state), (method, JobState::Scheduled), "{j:?}");
    }
    assert_eq!(jobs.iter().find(|j| j.study_instance_uid == uid(2)).unwrap().expected_instances, Some(2));

    // the explanation shows the QIDO keys, and that the clipped archive was split
    let explained = priorfetch_planner::api::explain(&store, exam.id).await.unwrap().unwrap();
    let cloud = explained["plan"]["cfind"]["cloud"].as_array().unwrap();
    assert!(cloud.iter().any(|q| q["outcome"].as_str().unwrap().starts_with("capped")), "{cloud:#?}");
    assert_eq!(cloud[0]["keys"]["PatientID"], p);
    let study_queries = cloud.iter().filter(|q| q["level"] == "STUDY").count();
    assert!(study_queries >= 3, "a clipped range is split into at least two more: {cloud:#?}");
}
