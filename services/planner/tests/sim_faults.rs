//! The planner against the simulator in fault modes: match caps (refuse, truncate,
//! cancel), rejected associations and refused queries, duplicates across archives, and
//! IssuerOfPatientID.

mod common;

use chrono::Utc;
use common::*;
use pacs_sim::{CapBehaviour, DataSource, Faults, MatchCap, RejectReason, Sim, SimConfig, SimHandle, SyntheticSpec};
use priorfetch_planner::{PlanReport, Planner};
use priorfetch_testkit::db::TestDb;
use std::time::{Duration, Instant};

const PATIENT: &str = "SIM-P0001";
/// Studies of the patient, all within the 10 years the generator spreads them over.
const STUDIES: usize = 12;
const CAP: usize = 3;

/// Every study of the patient in the window, with no filter, far fewer than `max`.
const ALL_PRIORS: &str = r#"
[[rules]]
name = "all"
priors = { lookback = "11y", max = 100 }
"#;

fn spec(seed: u64) -> SyntheticSpec {
    SyntheticSpec {
        patients: 2,
        seed,
        studies_per_patient: (STUDIES, STUDIES),
        series_per_study: (1, 1),
        instances_per_series: 1,
        rows: 8,
        columns: 8,
        ..Default::default()
    }
}

async fn sim(ae: &str, seed: u64, faults: Faults) -> SimHandle {
    Sim::start(SimConfig::new(ae, DataSource::Synthetic(spec(seed))).with_faults(faults), "127.0.0.1:0")
        .await
        .expect("simulator starts")
}

fn capped(behaviour: CapBehaviour) -> Faults {
    Faults { match_cap: Some(MatchCap { limit: CAP, behaviour }), ..Default::default() }
}

/// (archive, uid) of every study of the patient the simulator holds, sorted.
fn held(archive: &str, sim: &SimHandle) -> Vec<(String, String)> {
    let mut all: Vec<_> = sim
        .index()
        .into_iter()
        .filter(|s| s.patient_id == PATIENT)
        .map(|s| (archive.to_string(), s.study_instance_uid))
        .collect();
    all.sort();
    all
}

fn scheduled() -> chrono::DateTime<Utc> {
    Utc::now() + chrono::Duration::hours(2)
}

/// A capped archive still yields every study: 0xA700 (refuse) and 0xFE00 (cancel) are
/// seen on the wire; a silent truncation only through `max_matches`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capped_archive_yields_every_study() {
    let db = TestDb::sqlite();
    let store = store(&db).await;
    for (n, (behaviour, max_matches)) in
        [(CapBehaviour::Refuse, None), (CapBehaviour::Cancel, None), (CapBehaviour::Truncate, Some(CAP))]
            .into_iter()
            .enumerate()
    {
        let arch = sim("CAPPED", 11, capped(behaviour)).await;
        let expected = held("capped", &arch);
        assert_eq!(expected.len(), STUDIES, "{:?}", spec(11).studies_for(PATIENT));
        let extra = max_matches.map(|m| format!("max_matches = {m}")).unwrap_or_default();
        let config = config(&format!(
            "{}{}{ALL_PRIORS}",
            archive("capped", "CAPPED", arch.port(), 1, &extra),
            destination(1, false)
        ));
        let planner = Planner::new(store.clone(), config);
        let exam =
            claimed(&store, exam_event(&format!("cap{n}"), PATIENT, "CT", "CHEST", scheduled(), "routine")).await;
        let report = planner.plan_exam(&exam).await.unwrap();

        assert!(report.gaps.is_empty(), "{behaviour:?}: {:?}", report.gaps);
        assert_eq!(report.selected(), expected, "{behaviour:?}: every study of the patient, none twice");
        assert_eq!(store.jobs_of_exam(exam.id).await.unwrap().len(), STUDIES);
        // the explanation shows the split: the whole window capped, then narrower ranges
        let explained = priorfetch_planner::api::explain(&store, exam.id).await.unwrap().unwrap();
        let queries = explained["plan"]["cfind"]["capped"].as_array().unwrap().clone();
        assert_eq!(queries.len(), report.cfinds);
        assert_eq!(arch.stats().finds as usize, report.cfinds, "every C-FIND sent is logged");
        let first = &queries[0];
        let outcome = first["outcome"].as_str().unwrap();
        assert!(outcome.starts_with("capped, range split"), "{behaviour:?}: {outcome}");
        match behaviour {
            CapBehaviour::Refuse => assert!(outcome.contains("A700"), "{outcome}"),
            CapBehaviour::Cancel => assert!(outcome.contains("0xFE00"), "{outcome}"),
            CapBehaviour::Truncate => assert!(outcome.contains("ok"), "{outcome}"),
        }
        let window = first["keys"]["StudyDate"].as_str().unwrap().to_string();
        assert!(queries.len() >= 3, "{behaviour:?}: at least the window and its two halves: {queries:#?}");
        let (from, to) = window.split_once('-').unwrap();
        for q in &queries[1..] {
            assert_eq!(q["keys"]["PatientID"], PATIENT);
            let range = q["keys"]["StudyDate"].as_str().unwrap();
            let (f, t) = range.split_once('-').unwrap();
            assert!(f >= from && t <= to && range != window, "{range} is a part of {window}");
        }
        // an answer taken as complete is within the cap; with `max_matches` a full answer
        // counts as capped (it may have been cut), so those taken hold fewer
        let most = if max_matches.is_some() { CAP - 1 } else { CAP };
        for q in queries.iter().filter(|q| q["outcome"] == "ok") {
            assert!(q["matches"].as_u64().unwrap() <= most as u64, "{behaviour:?}: {q}");
        }
        arch.shutdown().await;
    }
}

/// An archive that truncates silently (success after `limit` matches) cannot be told
/// from one that holds only that many: without `max_matches` the planner takes the first
/// answer as complete, plans 3 of 12 studies and records no gap. This pins that down:
/// `max_matches` is required for such archives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_truncation_needs_max_matches() {
    let db = TestDb::sqlite();
    let store = store(&db).await;
    let arch = sim("TRUNC", 12, capped(CapBehaviour::Truncate)).await;
    let all = held("trunc", &arch);
    let config =
        config(&format!("{}{}{ALL_PRIORS}", archive("trunc", "TRUNC", arch.port(), 1, ""), destination(1, false)));
    let planner = Planner::new(store.clone(), config);
    let exam = claimed(&store, exam_event("t1", PATIENT, "CT", "CHEST", scheduled(), "routine")).await;
    let report = planner.plan_exam(&exam).await.unwrap();
    assert!(report.gaps.is_empty(), "{:?}", report.gaps);
    assert_eq!(report.cfinds, 1, "nothing says the answer was cut");
    let selected = report.selected();
    assert_eq!(selected.len(), CAP);
    assert!(selected.iter().all(|s| all.contains(s)));
    let plan = store.exam_plan(exam.id).await.unwrap().unwrap();
    assert_eq!(plan.queries["trunc"][0]["outcome"], "ok");
    assert_eq!(plan.queries["trunc"][0]["matches"], CAP);
    arch.shutdown().await;
}

/// An archive rejecting associations and one refusing every query (0xA700, out of
/// resources) leave retryable gaps while the third archive's priors are scheduled; the
/// running planner re-plans with backoff and completes the plan once they recover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejecting_and_refusing_archives_are_gaps_replanned_with_backoff() {
    let db = TestDb::postgres().await;
    let store = store(&db).await;
    let good = sim("GOOD", 21, Faults::default()).await;
    let rejecting = sim("REJECT", 22, Faults { reject: Some(RejectReason::Busy), ..Default::default() }).await;
    // a cap of 0: every query with a match is refused, even one day
    let refusing = sim(
        "REFUSE",
        23,
        Faults { match_cap: Some(MatchCap { limit: 0, behaviour: CapBehaviour::Refuse }), ..Default::default() },
    )
    .await;
    let config = config(&format!(
        "{}{}{}{}{ALL_PRIORS}[planner]\nreplan_backoff = {{ initial = '1s', factor = 1.0, max = '1s', jitter = 0.0 }}\n",
        archive("good", "GOOD", good.port(), 3, ""),
        archive("rejecting", "REJECT", rejecting.port(), 1, ""),
        archive("refusing", "REFUSE", refusing.port(), 2, ""),
        destination(1, false)
    ));
    let planner = Planner::new(store.clone(), config);
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(planner.run(shutdown));
    let id = store.insert_exam(&exam_event("r1", PATIENT, "CT", "CHEST", scheduled(), "routine")).await.unwrap().id();

    let deadline = Instant::now() + Duration::from_secs(10);
    let plan = loop {
        if let Some(plan) = store.exam_plan(id).await.unwrap() {
            break plan;
        }
        assert!(Instant::now() < deadline, "exam not planned within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(plan.replan_at.is_some(), "{plan:?}");
    assert_eq!(plan.gaps["rejecting"]["retry"], true, "{}", plan.gaps);
    assert_eq!(plan.gaps["refusing"]["retry"], true, "{}", plan.gaps);
    assert!(plan.gaps.get("good").is_none(), "{}", plan.gaps);
    assert!(rejecting.stats().rejected >= 1);
    // the refusing archive is not hammered: splitting stops at the first refused day
    let refused = plan.queries["refusing"].as_array().unwrap().len();
    assert!(refused <= 40, "{refused} C-FINDs to an archive refusing everything");
    let mut jobs: Vec<_> =
        store.jobs_of_exam(id).await.unwrap().into_iter().map(|j| (j.archive, j.study_instance_uid)).collect();
    jobs.sort();
    assert_eq!(jobs, held("good", &good), "the healthy archive's priors are scheduled at once");

    rejecting.set_faults(Faults::default());
    refusing.set_faults(Faults::default());
    let deadline = Instant::now() + Duration::from_secs(15);
    let plan = loop {
        let plan = store.exam_plan(id).await.unwrap().unwrap();
        if plan.gaps.as_object().is_some_and(|g| g.is_empty()) {
            break plan;
        }
        assert!(Instant::now() < deadline, "not re-planned within 15 s: {}", plan.gaps);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(plan.attempts >= 2 && plan.replan_at.is_none(), "{plan:?}");
    let mut jobs: Vec<_> =
        store.jobs_of_exam(id).await.unwrap().into_iter().map(|j| (j.archive, j.study_instance_uid)).collect();
    jobs.sort();
    let mut expected = [held("good", &good), held("rejecting", &rejecting), held("refusing", &refusing)].concat();
    expected.sort();
    assert_eq!(jobs, expected);
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), running).await.expect("planner stops").unwrap();
    for s in [good, rejecting, refusing] {
        s.shutdown().await;
    }
}

/// Two archives holding the same studies (same seed): each is fetched once, from the
/// archive with the lower `priority` value, whatever the order of the configuration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_are_fetched_once_from_the_preferred_archive() {
    let db = TestDb::sqlite();
    let store = store(&db).await;
    let second = sim("SECOND", 31, Faults::default()).await;
    let first = sim("FIRST", 31, Faults::default()).await;
    let config = config(&format!(
        "{}{}{}{ALL_PRIORS}",
        archive("second", "SECOND", second.port(), 5, ""),
        archive("first", "FIRST", first.port(), 1, ""),
        destination(1, false)
    ));
    let planner = Planner::new(store.clone(), config);
    let exam = claimed(&store, exam_event("d1", PATIENT, "CT", "CHEST", scheduled(), "routine")).await;
    let report = planner.plan_exam(&exam).await.unwrap();
    assert!(report.gaps.is_empty(), "{:?}", report.gaps);
    let uids = |v: Vec<(String, String)>| v.into_iter().map(|(_, u)| u).collect::<Vec<_>>();
    assert_eq!(uids(held("first", &first)), uids(held("second", &second)), "same seed, same studies");
    assert_eq!(report.selected(), held("first", &first));
    assert_eq!(report.decisions.len(), 2 * STUDIES);
    for d in report.decisions.iter().filter(|d| d.study.archive == "second") {
        assert!(!d.selected && d.reason.contains("duplicate: preferred copy on 'first'"), "{}", d.reason);
    }
    let jobs = store.jobs_of_exam(exam.id).await.unwrap();
    assert_eq!(jobs.len(), STUDIES);
    assert!(jobs.iter().all(|j| j.archive == "first"));
    first.shutdown().await;
    second.shutdown().await;
}

fn study_keys(report_exam: i64, plan: &serde_json::Value, archive: &str) -> serde_json::Value {
    let q = &plan[archive][0]["keys"];
    assert!(!q.is_null(), "exam {report_exam}: no query to {archive}: {plan}");
    q.clone()
}

fn on(report: &PlanReport, archive: &str) -> usize {
    report.decisions.iter().filter(|d| d.study.archive == archive).count()
}

/// `query_issuer = true` sends the exam's issuer. A patient ID is only unique within its
/// issuer, so an archive holding `SIM-P0001` of issuer SIM has nothing for `SIM-P0001` of
/// issuer HOSP: no studies and no gap is right. Without `query_issuer` the issuer is not
/// sent and the ID alone matches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_of_patient_id_is_sent_when_configured() {
    let db = TestDb::sqlite();
    let store = store(&db).await;
    let with_issuer = sim("ISSUER", 41, Faults::default()).await;
    let plain = sim("PLAIN", 42, Faults::default()).await;
    let config = config(&format!(
        "{}{}{}{ALL_PRIORS}",
        archive("issuer", "ISSUER", with_issuer.port(), 1, "query_issuer = true"),
        archive("plain", "PLAIN", plain.port(), 2, ""),
        destination(1, false)
    ));
    let planner = Planner::new(store.clone(), config);
    for (key, issuer, expected_on_issuer) in
        [("i1", Some("SIM"), STUDIES), ("i2", Some("HOSP"), 0), ("i3", None, STUDIES)]
    {
        let mut event = exam_event(key, PATIENT, "CT", "CHEST", scheduled(), "routine");
        event.issuer = issuer.map(str::to_string);
        let exam = claimed(&store, event).await;
        let report = planner.plan_exam(&exam).await.unwrap();
        assert!(report.gaps.is_empty(), "{key}: {:?}", report.gaps);
        assert_eq!(on(&report, "issuer"), expected_on_issuer, "{key}");
        assert_eq!(on(&report, "plain"), STUDIES, "{key}");
        let plan = store.exam_plan(exam.id).await.unwrap().unwrap().queries;
        let sent = study_keys(exam.id, &plan, "issuer");
        match issuer {
            Some(i) => assert_eq!(sent["IssuerOfPatientID"], i, "{key}: {sent}"),
            None => assert!(sent.get("IssuerOfPatientID").is_none(), "{key}: an empty issuer is not sent: {sent}"),
        }
        assert!(study_keys(exam.id, &plan, "plain").get("IssuerOfPatientID").is_none(), "{key}");
    }
    with_issuer.shutdown().await;
    plain.shutdown().await;
}

/// The simulator's DICOMweb side capping QIDO-RS: silently (Orthanc's way: `max_matches`
/// must be known), with `Warning: 299`, or with 413. Every study is found each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capped_dicomweb_archive_yields_every_study() {
    let db = TestDb::postgres().await;
    let store = store(&db).await;
    for (n, (behaviour, max_matches)) in [
        (CapBehaviour::Truncate, format!("max_matches = {CAP}")),
        (CapBehaviour::Cancel, String::new()),
        (CapBehaviour::Refuse, String::new()),
    ]
    .into_iter()
    .enumerate()
    {
        let arch = sim("WEBCAP", 21, capped(behaviour)).await;
        let url = arch.serve_dicomweb("127.0.0.1:0").await.unwrap();
        let config = config(&format!(
            "[[archives]]\nname = 'web'\nprotocol = 'dicomweb'\nbase_url = '{url}'\nretrieve = 'wado'\n{max_matches}\n{}{ALL_PRIORS}",
            destination(1, false)
        ));
        let planner = Planner::new(store.clone(), config);
        let exam =
            claimed(&store, exam_event(&format!("webcap{n}"), PATIENT, "CT", "CHEST", scheduled(), "routine")).await;
        let report = planner.plan_exam(&exam).await.unwrap();
        assert!(report.gaps.is_empty(), "{behaviour:?}: {:?}", report.gaps);
        let mut selected = report.selected();
        selected.sort();
        assert_eq!(selected, held("web", &arch), "{behaviour:?}: every study of the patient, none twice");
        arch.shutdown().await;
    }
}
