//! Recording plans and re-plans, on Postgres and SQLite through the same test bodies.

use chrono::{Duration as Days, Utc};
use priorfetch_store::{ExamStatus, NewExam, NewJob, PlanRecord, PriorRecord, Store};
use priorfetch_testkit::db::{TestDb, init_test_log};
use std::time::Duration;

async fn store(db: &TestDb) -> Store {
    init_test_log();
    let store = Store::connect(&db.url, "", 8).await.expect("connect");
    store.migrate().await.expect("migrate");
    store
}

priorfetch_testkit::both_databases!(
    plan_is_recorded_in_one_go_and_replaces_priors,
    replans_are_claimed_when_due_and_only_once,
    cancelled_exam_gets_no_jobs,
);

fn exam(key: &str) -> NewExam {
    NewExam {
        event_key: key.into(),
        patient_id: "MRN1".into(),
        issuer: None,
        accession_number: Some(format!("ACC-{key}")),
        study_instance_uid: None,
        scheduled_at: Some(Utc::now() + Days::hours(2)),
        modality: Some("CT".into()),
        body_part: None,
        procedure_code: None,
        procedure_text: None,
        priority: "routine".into(),
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
        method: "move".into(),
        destination: "DEST".into(),
        priority: 5,
        not_before: Utc::now(),
        deadline: None,
        max_attempts: 3,
        expected_instances: Some(6),
    }
}

fn plan(exam_id: i64, priors: Vec<PriorRecord>, jobs: Vec<NewJob>, replan_at: Option<chrono::DateTime<Utc>>) -> PlanRecord {
    PlanRecord {
        exam_id,
        rule: Some("default".into()),
        queries: serde_json::json!({ "a": [{ "keys": { "PatientID": "MRN1" }, "matches": 2 }] }),
        gaps: if replan_at.is_some() { serde_json::json!({ "b": "unreachable" }) } else { serde_json::json!({}) },
        replan_at,
        priors,
        jobs,
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
    assert_eq!(store.exam(id).await.unwrap().unwrap().status, ExamStatus::Planned.as_str());
    let priors = store.priors_of_exam(id).await.unwrap();
    assert_eq!(priors.len(), 2);
    assert!(priors[0].selected && priors[0].study_instance_uid == "1.1");
    let p = store.exam_plan(id).await.unwrap().unwrap();
    assert_eq!((p.rule.as_deref(), p.attempts, p.replan_at), (Some("default"), 1, None));
    assert_eq!(p.queries["a"][0]["keys"]["PatientID"], "MRN1");
    // a second plan replaces the priors, counts the attempt, keeps the existing job
    let new = store
        .record_plan(&plan(id, vec![prior("a", "1.1", true)], vec![job(id, "1.1"), job(id, "1.3")], None))
        .await
        .unwrap();
    assert_eq!(new, 1);
    assert_eq!(store.priors_of_exam(id).await.unwrap().len(), 1);
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
    assert_eq!(claimed.iter().map(|e| e.id).collect::<Vec<_>>(), vec![due]);
    // the claim leases it: not claimable again until the lease ends
    assert!(store.claim_replans(10, Duration::from_secs(60)).await.unwrap().is_empty());
    // the new plan without gaps clears it
    store.record_plan(&plan(due, vec![], vec![], None)).await.unwrap();
    let p = store.exam_plan(due).await.unwrap().unwrap();
    assert_eq!((p.attempts, p.replan_at), (2, None));
    // the exam stays planned through a re-plan
    assert_eq!(store.exam(due).await.unwrap().unwrap().status, "planned");
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
    assert_eq!(store.exam(id).await.unwrap().unwrap().status, "cancelled");
    let p = store.exam_plan(id).await.unwrap().unwrap();
    assert_eq!(p.replan_at, None);
    assert!(!store.priors_of_exam(id).await.unwrap()[0].selected);
    // release of a planning exam puts it back; of a cancelled one, nothing
    store.release_exam(id).await.unwrap();
    assert_eq!(store.exam(id).await.unwrap().unwrap().status, "cancelled");
}
