//! Recording plans and re-plans, on Postgres and SQLite through the same test bodies.

use chrono::{Duration as Days, Utc};
use priorfetch_store::{ExamPriority, JobState, RetrieveMethod};
use priorfetch_store::{ExamStatus, NewExam, NewJob, PlanRecord, PriorRecord, Store};
use priorfetch_testkit::db::{TestDb, init_test_log};
use std::time::Duration;

async fn store(db: &TestDb) -> Store {
    init_test_log();
    let store = Store::connect(&db.url, "", 8).await.expect("connect");
    store.migrate().await.expect("migrate");
    // one retrieve slot per test archive, so a claim can start a job as a mover would
    store.sync_archive_slots(&[("a".into(), 4), ("b".into(), 4)]).await.expect("slots");
    store
}

priorfetch_testkit::both_databases!(
    plan_is_recorded_in_one_go_and_replaces_priors,
    replans_are_claimed_when_due_and_only_once,
    cancelled_exam_gets_no_jobs,
    replans_never_exceed_max_nor_keep_jobs_of_skipped_priors,
    refused_plan_fails_the_exam_and_cancels_its_jobs,
    an_update_requeues_the_jobs_it_cancelled,
);

fn exam(key: &str) -> NewExam {
    NewExam {
        event_key: key.into(),
        patient_id: "MRN1".into(),
        issuer: None,
        identifiers: Vec::new(),
        accession_number: Some(format!("ACC-{key}")),
        study_instance_uid: None,
        scheduled_at: Some(Utc::now() + Days::hours(2)),
        modality: Some("CT".into()),
        body_part: None,
        procedure_code: None,
        procedure_text: None,
        priority: ExamPriority::Routine,
        trace_parent: None,
    }
}

fn prior(archive: &str, uid: &str, selected: bool) -> PriorRecord {
    PriorRecord {
        archive: archive.into(),
        study_instance_uid: uid.into(),
        study_date: Some("20250101".into()),
        modalities: Some("CT".into()),
        description: None,
        expected_instances: Some(6),
        selected,
        reason: if selected { "selected by rule 'default'".into() } else { "skipped: beyond max".into() },
    }
}

fn job(exam_id: i64, uid: &str) -> NewJob {
    NewJob {
        exam_id,
        study_instance_uid: uid.into(),
        archive: "a".into(),
        method: RetrieveMethod::Move,
        destination: "DEST".into(),
        priority: 5,
        not_before: Utc::now(),
        deadline: None,
        max_attempts: 3,
        expected_instances: Some(6),
    }
}

fn plan(
    exam_id: i64,
    priors: Vec<PriorRecord>,
    jobs: Vec<NewJob>,
    replan_at: Option<chrono::DateTime<Utc>>,
) -> PlanRecord {
    PlanRecord {
        exam_id,
        rule: Some("default".into()),
        queries: serde_json::json!({ "a": [{ "keys": { "PatientID": "MRN1" }, "matches": 2 }] }),
        gaps: if replan_at.is_some() { serde_json::json!({ "b": "unreachable" }) } else { serde_json::json!({}) },
        archives: serde_json::json!({}),
        inputs: serde_json::json!([]),
        replan_at,
        priors,
        jobs,
        max_jobs: None,
        refusal: None,
    }
}

async fn plan_is_recorded_in_one_go_and_replaces_priors(db: TestDb) {
    let store = store(&db).await;
    let id = store.insert_exam(&exam("e1")).await.unwrap().id();
    let claimed = store.claim_exams("w", 10, Duration::from_secs(60)).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let new = store
        .record_plan(&plan(id, vec![prior("a", "1.1", true), prior("a", "1.2", false)], vec![job(id, "1.1")], None))
        .await
        .unwrap();
    assert_eq!(new, 1);
    assert_eq!(store.exam(id).await.unwrap().unwrap().status, ExamStatus::Planned);
    let priors = store.priors_of_exam(id).await.unwrap();
    assert_eq!(priors.len(), 2);
    assert!(priors[0].selected && priors[0].study_instance_uid == "1.1");
    let p = store.exam_plan(id).await.unwrap().unwrap();
    assert_eq!((p.rule.as_deref(), p.attempts, p.replan_at), (Some("default"), 1, None));
    assert_eq!(p.queries["a"][0]["keys"]["PatientID"], "MRN1");
    // a second plan replaces the priors, counts the attempt, keeps the existing job; a
    // job without a selected prior in the plan (1.4) is never created
    let new = store
        .record_plan(&plan(
            id,
            vec![prior("a", "1.1", true), prior("a", "1.3", true)],
            vec![job(id, "1.1"), job(id, "1.3"), job(id, "1.4")],
            None,
        ))
        .await
        .unwrap();
    assert_eq!(new, 1);
    assert_eq!(store.priors_of_exam(id).await.unwrap().len(), 2);
    assert_eq!(store.exam_plan(id).await.unwrap().unwrap().attempts, 2);
    assert_eq!(store.jobs_of_exam(id).await.unwrap().len(), 2);
}

async fn replans_are_claimed_when_due_and_only_once(db: TestDb) {
    let store = store(&db).await;
    let due = store.insert_exam(&exam("due")).await.unwrap().id();
    let later = store.insert_exam(&exam("later")).await.unwrap().id();
    store.claim_exams("w", 10, Duration::from_secs(60)).await.unwrap();
    store.record_plan(&plan(due, vec![], vec![], Some(Utc::now() - Days::seconds(1)))).await.unwrap();
    let at = Utc::now() + Days::hours(1);
    store.record_plan(&plan(later, vec![], vec![], Some(at))).await.unwrap();
    let next = store.next_replan_at().await.unwrap().unwrap();
    assert!(next <= Utc::now(), "{next}");
    let claimed = store.claim_replans(10, Duration::from_secs(60)).await.unwrap();
    assert_eq!(claimed.iter().map(|e| e.exam.id).collect::<Vec<_>>(), vec![due]);
    // the claim leases it: not claimable again until the lease ends
    assert!(store.claim_replans(10, Duration::from_secs(60)).await.unwrap().is_empty());
    // the new plan without gaps clears it
    store.record_plan(&plan(due, vec![], vec![], None)).await.unwrap();
    let p = store.exam_plan(due).await.unwrap().unwrap();
    assert_eq!((p.attempts, p.replan_at), (2, None));
    // the exam stays planned through a re-plan
    assert_eq!(store.exam(due).await.unwrap().unwrap().status, ExamStatus::Planned);
    let next = store.next_replan_at().await.unwrap().unwrap();
    assert!((next - at).num_seconds().abs() < 2, "{next} vs {at}");
}

async fn cancelled_exam_gets_no_jobs(db: TestDb) {
    let store = store(&db).await;
    let id = store.insert_exam(&exam("c")).await.unwrap().id();
    store.claim_exams("w", 10, Duration::from_secs(60)).await.unwrap();
    store.cancel_exam(id).await.unwrap();
    let new = store
        .record_plan(&plan(id, vec![prior("a", "1.1", true)], vec![job(id, "1.1")], Some(Utc::now())))
        .await
        .unwrap();
    assert_eq!(new, 0);
    assert!(store.jobs_of_exam(id).await.unwrap().is_empty());
    assert_eq!(store.exam(id).await.unwrap().unwrap().status, ExamStatus::Cancelled);
    let p = store.exam_plan(id).await.unwrap().unwrap();
    assert_eq!(p.replan_at, None);
    assert!(!store.priors_of_exam(id).await.unwrap()[0].selected);
    // release of a planning exam puts it back; of a cancelled one, nothing
    store.release_exam(id).await.unwrap();
    assert_eq!(store.exam(id).await.unwrap().unwrap().status, ExamStatus::Cancelled);
}

fn on(archive: &str, uid: &str, exam_id: i64) -> NewJob {
    NewJob { archive: archive.into(), ..job(exam_id, uid) }
}

/// Jobs that ran or may run: not skipped, not cancelled.
async fn live_jobs(store: &Store, id: i64) -> Vec<priorfetch_store::Job> {
    let all = store.jobs_of_exam(id).await.unwrap();
    all.into_iter().filter(|j| j.state != JobState::Skipped && j.state != JobState::Cancelled).collect()
}

/// No live job belongs to a prior the recorded plan marks skipped, and at most `max` live.
async fn assert_obeyed(store: &Store, id: i64, max: usize, step: &str) {
    let live = live_jobs(store, id).await;
    assert!(live.len() <= max, "{step}: {} live jobs > max {max}: {live:#?}", live.len());
    let priors = store.priors_of_exam(id).await.unwrap();
    for p in priors.iter().filter(|p| !p.selected) {
        let selected_copy = priors.iter().any(|q| q.selected && q.study_instance_uid == p.study_instance_uid);
        assert!(
            selected_copy || !live.iter().any(|j| j.study_instance_uid == p.study_instance_uid),
            "{step}: a live job for the skipped prior {} ({})",
            p.study_instance_uid,
            p.reason
        );
    }
    for j in store.jobs_of_exam(id).await.unwrap().iter().filter(|j| j.state == JobState::Skipped) {
        assert_eq!(j.attempt, 0, "{step}: a skipped job never ran");
    }
}

/// The over-fetch after an outage: plan 1 sees only archive b (a unreachable) and picks
/// b's 4 priors; the mover starts one. Plan 2 sees a's 4 newer priors: b's unstarted
/// jobs are skipped, the started one stays (its prior kept selected) and counts, so only
/// 3 of a's are added. Plan 3 (a unreachable again) adds nothing; plan 4 re-selects a
/// skipped prior, whose row is queued again.
async fn replans_never_exceed_max_nor_keep_jobs_of_skipped_priors(db: TestDb) {
    let store = store(&db).await;
    let id = store.insert_exam(&exam("outage")).await.unwrap().id();
    store.claim_exams("w", 10, Duration::from_secs(60)).await.unwrap();
    let b: Vec<String> = (1..=4).map(|n| format!("2.{n}")).collect();
    let a: Vec<String> = (1..=4).map(|n| format!("1.{n}")).collect();
    let plan_of = |sel: &[(&str, &String, bool)]| {
        let priors = sel.iter().map(|(arch, uid, chosen)| prior(arch, uid, *chosen)).collect();
        let jobs = sel.iter().filter(|(_, _, chosen)| *chosen).map(|(arch, uid, _)| on(arch, uid, id)).collect();
        PlanRecord { max_jobs: Some(4), ..plan(id, priors, jobs, None) }
    };
    let first: Vec<_> = b.iter().map(|u| ("b", u, true)).collect();
    assert_eq!(store.record_plan(&plan_of(&first)).await.unwrap(), 4);
    assert_obeyed(&store, id, 4, "plan 1").await;
    let started = store.claim_jobs("mover", &["b".into()], 1, Duration::from_secs(60)).await.unwrap();
    assert_eq!(started.len(), 1);
    let started = started[0].study_instance_uid.clone();

    // plan 2: a is back with the 4 most recent priors, all of b beyond max
    let second: Vec<_> = a.iter().map(|u| ("a", u, true)).chain(b.iter().map(|u| ("b", u, false))).collect();
    let outcome = store.record_plan_outcome(&plan_of(&second)).await.unwrap();
    assert_eq!((outcome.jobs_inserted, outcome.jobs_stopped), (3, 3), "{outcome:#?}");
    assert_obeyed(&store, id, 4, "plan 2").await;
    let live = live_jobs(&store, id).await;
    assert_eq!(live.len(), 4);
    assert!(live.iter().any(|j| j.study_instance_uid == started && j.state == JobState::Running));
    let priors = store.priors_of_exam(id).await.unwrap();
    let of = |uid: &str| priors.iter().find(|p| p.study_instance_uid == uid).unwrap().clone();
    assert!(of(&started).selected && of(&started).reason.starts_with("kept:"), "{:?}", of(&started));
    assert!(!of("1.4").selected && of("1.4").reason.contains("beyond max 4"), "{:?}", of("1.4"));
    assert_eq!(priors.iter().filter(|p| p.selected).count(), 4);

    // plan 3: a unreachable again (its priors unseen): its open jobs stay and count
    let outcome = store.record_plan_outcome(&plan_of(&first)).await.unwrap();
    assert_eq!((outcome.jobs_inserted, outcome.jobs_stopped), (0, 0), "{outcome:#?}");
    assert_obeyed(&store, id, 4, "plan 3").await;

    // plan 4: every prior seen; 1.3 dropped, a skipped b prior selected again: its row is reused
    let again = b.iter().find(|x| **x != started).unwrap().clone();
    let fourth: Vec<_> = [("a", &a[0], true), ("a", &a[1], true), ("a", &a[2], false), ("a", &a[3], false)]
        .into_iter()
        .chain(b.iter().map(|u| ("b", u, *u == started || *u == again)))
        .collect();
    let outcome = store.record_plan_outcome(&plan_of(&fourth)).await.unwrap();
    assert_eq!((outcome.jobs_inserted, outcome.jobs_stopped), (1, 1), "{outcome:#?}");
    assert_obeyed(&store, id, 4, "plan 4").await;
    let jobs = store.jobs_of_exam(id).await.unwrap();
    let job_of = |uid: &str| jobs.iter().find(|j| j.study_instance_uid == uid).unwrap();
    assert_eq!(job_of(&again).state, JobState::Available);
    assert_eq!(job_of("1.3").state, JobState::Skipped);
    assert_eq!(jobs.len(), 7, "one row per study (1.4 never had one): skipped rows are reused");
}

/// A refused plan (unsafe patient keys) fails the exam, adds no job, cancels open and
/// running jobs of earlier plans, and is not re-planned.
async fn refused_plan_fails_the_exam_and_cancels_its_jobs(db: TestDb) {
    let store = store(&db).await;
    let id = store.insert_exam(&exam("refused")).await.unwrap().id();
    store.claim_exams("w", 10, Duration::from_secs(60)).await.unwrap();
    let priors = vec![prior("a", "1.1", true), prior("a", "1.2", true)];
    store.record_plan(&plan(id, priors, vec![job(id, "1.1"), job(id, "1.2")], None)).await.unwrap();
    assert_eq!(store.claim_jobs("mover", &["a".into()], 1, Duration::from_secs(60)).await.unwrap().len(), 1);
    let refused = PlanRecord {
        refusal: Some("PatientID contains '*'".into()),
        ..plan(id, vec![], vec![job(id, "1.3")], Some(Utc::now()))
    };
    let outcome = store.record_plan_outcome(&refused).await.unwrap();
    assert_eq!((outcome.jobs_inserted, outcome.jobs_stopped), (0, 2));
    assert_eq!(store.exam(id).await.unwrap().unwrap().status, ExamStatus::Failed);
    let jobs = store.jobs_of_exam(id).await.unwrap();
    assert_eq!(jobs.len(), 2);
    assert!(jobs.iter().all(|j| j.state == JobState::Cancelled && j.last_error.as_deref().unwrap().contains("'*'")));
    assert_eq!(store.exam_plan(id).await.unwrap().unwrap().replan_at, None);
}

/// A rescheduled exam: the update cancels its open jobs and sends it back to planning; the
/// re-plan selects the same priors, so the cancelled rows go back in the queue (the new
/// schedule's deadline with them) instead of the prior never coming.
async fn an_update_requeues_the_jobs_it_cancelled(db: TestDb) {
    let store = store(&db).await;
    let id = store.insert_exam(&exam("moved")).await.unwrap().id();
    store.claim_exams("w", 10, Duration::from_secs(60)).await.unwrap();
    store.record_plan(&plan(id, vec![prior("a", "1.1", true)], vec![job(id, "1.1")], None)).await.unwrap();
    let later = Utc::now() + chrono::Duration::hours(5);
    store.update_exam(id, &NewExam { scheduled_at: Some(later), ..exam("moved") }).await.unwrap();
    assert_eq!(store.jobs_of_exam(id).await.unwrap()[0].state, JobState::Cancelled);
    store.claim_exams("w", 10, Duration::from_secs(60)).await.unwrap();
    let again = NewJob { deadline: Some(later), ..job(id, "1.1") };
    let added = store.record_plan(&plan(id, vec![prior("a", "1.1", true)], vec![again], None)).await.unwrap();
    assert_eq!(added, 1, "the cancelled job is queued again");
    let jobs = store.jobs_of_exam(id).await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].state, JobState::Available);
    assert_eq!(jobs[0].deadline.map(|d| d.timestamp()), Some(later.timestamp()));
}
