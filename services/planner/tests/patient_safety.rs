//! Patient safety and obeyed plans, against real simulated archives: another patient's
//! study in a C-FIND answer is discarded and counted; an exam whose PatientID would match
//! other patients is never queried; a re-plan after an outage keeps the rule's `max`
//! counting earlier jobs and leaves no live job for a prior it marks skipped.

mod common;

use chrono::Utc;
use common::*;
use pacs_sim::{DataSource, Faults, RejectReason, Sim, SimConfig, SimHandle, SyntheticSpec};
use priorfetch_planner::Planner;
use priorfetch_planner::metrics::FOREIGN_MATCHES;
use priorfetch_store::{ExamStatus, JobState, RetrieveMethod};
use priorfetch_store::{PlanRecord, PriorRecord, Store};
use priorfetch_testkit::db::TestDb;
use std::collections::HashSet;
use std::time::Duration;

const PATIENT: &str = "SIM-P0001";
const STUDIES: usize = 12;

const ALL_PRIORS: &str = r#"
[[rules]]
name = "all"
priors = { lookback = "11y", max = 100 }
"#;

const MAX_4: &str = r#"
[[rules]]
name = "four"
priors = { lookback = "11y", max = 4 }
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

async fn start(config: SimConfig) -> SimHandle {
    Sim::start(config, "127.0.0.1:0").await.expect("simulator starts")
}

fn scheduled() -> chrono::DateTime<Utc> {
    Utc::now() + chrono::Duration::hours(2)
}

fn uids_of(sim: &SimHandle, patient: bool) -> HashSet<String> {
    sim.index().into_iter().filter(|s| (s.patient_id == PATIENT) == patient).map(|s| s.study_instance_uid).collect()
}

/// The simulator answers every C-FIND with another patient's study too (in the window,
/// with its real PatientID): it is discarded, counted in
/// `priorfetch_foreign_matches_total{archive}`, and no prior or job exists for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_patients_match_is_discarded_and_counted() {
    let db = TestDb::sqlite();
    let store = store(&db).await;
    let sim = start(SimConfig::new("LOOSE", DataSource::Synthetic(spec(51))).with_foreign_matches(true)).await;
    let (own, foreign) = (uids_of(&sim, true), uids_of(&sim, false));
    assert_eq!(own.len(), STUDIES);
    let config =
        config(&format!("{}{}{ALL_PRIORS}", archive("loose", "LOOSE", sim.port(), 1, ""), destination(1, false)));
    let planner = Planner::new(store.clone(), config);
    let exam = claimed(&store, exam_event("f1", PATIENT, "CT", "CHEST", scheduled(), "routine")).await;
    let report = planner.plan_exam(&exam).await.unwrap();

    assert!(report.gaps.is_empty(), "{:?}", report.gaps);
    assert_eq!(report.cfinds, 1);
    assert_eq!(sim.stats().find_matches as usize, STUDIES + 1, "the simulator did send a foreign match");
    assert_eq!(FOREIGN_MATCHES.with_label_values(&["loose"]).get(), 1, "discarded and counted");
    let selected: HashSet<String> = report.selected().into_iter().map(|(_, u)| u).collect();
    assert_eq!(selected, own, "every study of the patient, nothing else");
    assert!(report.decisions.iter().all(|d| own.contains(&d.study.study_instance_uid)));
    let priors = store.priors_of_exam(exam.id).await.unwrap();
    assert_eq!(priors.len(), STUDIES);
    assert!(priors.iter().all(|p| !foreign.contains(&p.study_instance_uid)), "no prior of another patient");
    let jobs = store.jobs_of_exam(exam.id).await.unwrap();
    assert_eq!(jobs.len(), STUDIES);
    assert!(jobs.iter().all(|j| own.contains(&j.study_instance_uid)), "no job for another patient's study");
    sim.shutdown().await;
}

/// A plan the old planner could have recorded for a wildcard exam: another patient's
/// study selected, its job queued (rows written before the check existed).
fn pre_fix_plan(exam_id: i64, uid: &str) -> PlanRecord {
    PlanRecord {
        exam_id,
        rule: Some("all".into()),
        queries: serde_json::json!({}),
        gaps: serde_json::json!({}),
        archives: serde_json::json!({}),
        inputs: serde_json::json!([]),
        replan_at: None,
        priors: vec![PriorRecord {
            archive: "archive".into(),
            study_instance_uid: uid.into(),
            study_date: None,
            modalities: None,
            description: None,
            expected_instances: None,
            selected: true,
            reason: "selected".into(),
        }],
        jobs: vec![priorfetch_store::NewJob {
            exam_id,
            study_instance_uid: uid.into(),
            archive: "archive".into(),
            method: RetrieveMethod::Move,
            destination: "DEST".into(),
            priority: 5,
            not_before: Utc::now(),
            deadline: None,
            max_attempts: 3,
            expected_instances: None,
        }],
        max_jobs: None,
        refusal: None,
    }
}

/// Exams stored with a PatientID of `*`, `SIM-P*`, `?`, a `\` list or empty (bypassing
/// intake) are refused before any C-FIND: the simulator sees no association at all, the
/// exam fails with the reason, and a job an earlier plan queued for it is cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_patient_id_is_never_queried() {
    let db = TestDb::sqlite();
    let store = store(&db).await;
    let sim = start(SimConfig::new("ARCHIVE", DataSource::Synthetic(spec(52)))).await;
    let config =
        config(&format!("{}{}{ALL_PRIORS}", archive("archive", "ARCHIVE", sim.port(), 1, ""), destination(1, false)));
    let planner = Planner::new(store.clone(), config);
    for (n, (patient, expected)) in [
        ("*", "'*'"),
        ("SIM-P*", "'*'"),
        ("SIM-P000?", "'?'"),
        ("SIM-P0001\\SIM-P0002", "'\\'"),
        ("", "empty"),
        ("   ", "empty"),
    ]
    .into_iter()
    .enumerate()
    {
        let exam = claimed(&store, exam_event(&format!("w{n}"), patient, "CT", "CHEST", scheduled(), "routine")).await;
        // the first exam also has a plan the old planner recorded: re-planned, it is refused
        let exam = if n == 0 {
            store.record_plan(&pre_fix_plan(exam.id, "1.2.3.999")).await.unwrap();
            store.exam(exam.id).await.unwrap().unwrap().exam
        } else {
            exam
        };
        let report = planner.plan_exam(&exam).await.unwrap();
        assert_eq!((report.cfinds, report.jobs_enqueued), (0, 0), "{patient:?}");
        let why = report.gaps.get("exam").unwrap_or_else(|| panic!("{patient:?}: {:?}", report.gaps));
        assert!(why.contains(expected) && why.contains("refusing to query"), "{patient:?}: {why}");
        assert_eq!(store.exam(exam.id).await.unwrap().unwrap().status, ExamStatus::Failed, "{patient:?}");
        let plan = store.exam_plan(exam.id).await.unwrap().unwrap();
        assert_eq!(plan.gaps["exam"]["retry"], false);
        assert_eq!(plan.replan_at, None);
        assert!(store.priors_of_exam(exam.id).await.unwrap().iter().all(|p| !p.selected));
        for job in store.jobs_of_exam(exam.id).await.unwrap() {
            assert_eq!(job.state, JobState::Cancelled, "{patient:?}: {job:?}");
        }
    }
    let stats = sim.stats();
    assert_eq!((stats.associations, stats.finds), (0, 0), "not a single C-FIND was sent");
    sim.shutdown().await;
}

fn live(jobs: &[priorfetch_store::Job]) -> Vec<&priorfetch_store::Job> {
    jobs.iter()
        .filter(|j| j.state != priorfetch_store::JobState::Skipped && j.state != priorfetch_store::JobState::Cancelled)
        .collect()
}

/// At most `max` live jobs; none for a study whose recorded priors are all unselected;
/// skipped jobs never ran.
async fn assert_obeyed(store: &Store, exam_id: i64, step: &str) -> Vec<priorfetch_store::Job> {
    let jobs = store.jobs_of_exam(exam_id).await.unwrap();
    let live = live(&jobs);
    assert!(live.len() <= 4, "{step}: {} live jobs with max = 4: {live:#?}", live.len());
    let priors = store.priors_of_exam(exam_id).await.unwrap();
    let selected: HashSet<&str> = priors.iter().filter(|p| p.selected).map(|p| p.study_instance_uid.as_str()).collect();
    assert!(selected.len() <= 4, "{step}: {} priors selected", selected.len());
    for job in &live {
        assert!(selected.contains(job.study_instance_uid.as_str()), "{step}: a live job of a skipped prior: {job:?}");
    }
    for job in jobs.iter().filter(|j| j.state == JobState::Skipped) {
        assert_eq!(job.attempt, 0, "{step}: a skipped job never ran");
    }
    jobs
}

/// The outage over-fetch: archive `a` rejects associations on the first plan, so the 4
/// most recent of `b`'s studies are selected and one job starts. Back, `a` brings newer
/// priors: the re-plan skips `b`'s unstarted jobs, keeps the started one and counts it,
/// so the exam never has more than 4 live jobs and none of a prior marked skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replan_after_an_outage_keeps_max_and_skips_unselected_jobs() {
    let db = TestDb::postgres().await;
    let store = store(&db).await;
    let busy = Faults { reject: Some(RejectReason::Busy), ..Default::default() };
    let a = start(SimConfig::new("AAA", DataSource::Synthetic(spec(61))).with_faults(busy)).await;
    let b = start(SimConfig::new("BBB", DataSource::Synthetic(spec(62)))).await;
    let config = config(&format!(
        "{}{}{}{MAX_4}",
        archive("a", "AAA", a.port(), 1, ""),
        archive("b", "BBB", b.port(), 2, ""),
        destination(1, false)
    ));
    let planner = Planner::new(store.clone(), config);
    let exam = claimed(&store, exam_event("o1", PATIENT, "CT", "CHEST", scheduled(), "routine")).await;

    let first = planner.plan_exam(&exam).await.unwrap();
    assert!(first.gaps.contains_key("a") && first.replan_at.is_some(), "{:?}", first.gaps);
    let jobs = assert_obeyed(&store, exam.id, "plan 1").await;
    assert_eq!(jobs.len(), 4);
    assert!(jobs.iter().all(|j| j.archive == "b"));
    // the mover starts one of them (a mover syncs the archives' slots at start)
    store.sync_archive_slots(&[("a".into(), 2), ("b".into(), 2)]).await.unwrap();
    let started = store.claim_jobs("mover", &["b".into()], 1, Duration::from_secs(60)).await.unwrap();
    let started = started[0].study_instance_uid.clone();

    a.set_faults(Faults::default());
    let row = store.exam(exam.id).await.unwrap().unwrap();
    let second = planner.plan_exam(&row.exam).await.unwrap();
    assert!(second.gaps.is_empty(), "{:?}", second.gaps);
    let jobs = assert_obeyed(&store, exam.id, "plan 2").await;
    // the scenario happened: a's newer studies displaced some of b's selected ones
    let on_a = second.selected().iter().filter(|(arch, _)| arch == "a").count();
    assert!(on_a >= 1, "{:?}", second.selected());
    let skipped = jobs.iter().filter(|j| j.state == priorfetch_store::JobState::Skipped).count();
    assert!(skipped >= 1, "{jobs:#?}");
    assert_eq!(live(&jobs).len(), 4);
    assert!(
        live(&jobs).iter().any(|j| j.study_instance_uid == started && j.state == priorfetch_store::JobState::Running)
    );
    assert_eq!(second.selected().len(), 4, "the report shows the plan as recorded");

    // re-planning again changes nothing
    let third = planner.plan_exam(&store.exam(exam.id).await.unwrap().unwrap().exam).await.unwrap();
    assert_eq!(third.jobs_enqueued, 0);
    let again = assert_obeyed(&store, exam.id, "plan 3").await;
    assert_eq!(again.iter().map(|j| (j.id, j.state)).collect::<Vec<_>>(), {
        jobs.iter().map(|j| (j.id, j.state)).collect::<Vec<_>>()
    });
    a.shutdown().await;
    b.shutdown().await;
}
