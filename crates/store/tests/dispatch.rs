//! Deadline-aware dispatch in the store, against a real Postgres and SQLite: claim orders
//! (deadline vs FIFO), boosts of jobs whose exam is near, and failovers to another archive
//! the plan found holding the same study.

use chrono::{Duration as Days, Utc};
use priorfetch_store::{ClaimOrder, ExamPriority, NewExam, NewJob, PlanRecord, PriorRecord, RetrieveMethod, Store};
use priorfetch_testkit::db::{TestDb, init_test_log};
use std::collections::HashSet;
use std::time::Duration;

priorfetch_testkit::both_databases!(
    fifo_claims_oldest_first_deadline_by_priority_then_deadline,
    a_boost_puts_near_exams_first,
    a_waiting_job_fails_over_to_a_free_archive_holding_the_study,
    a_failed_attempt_fails_over_once_per_archive,
);

const LEASE: Duration = Duration::from_secs(60);

async fn store(db: &TestDb) -> Store {
    init_test_log();
    let store = Store::connect(&db.url, "", 8).await.expect("connect");
    store.migrate().await.expect("migrate");
    store
}

async fn exam(s: &Store, key: &str) -> i64 {
    let exam = NewExam {
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
    };
    s.insert_exam(&exam).await.expect("exam").id()
}

fn job(exam_id: i64, study: &str, archive: &str, priority: i32, deadline_min: i64) -> NewJob {
    NewJob {
        exam_id,
        study_instance_uid: study.into(),
        archive: archive.into(),
        method: RetrieveMethod::Move,
        destination: "DEST".into(),
        priority,
        not_before: Utc::now() - Days::seconds(1),
        deadline: Some(Utc::now() + Days::minutes(deadline_min)),
        max_attempts: 3,
        expected_instances: Some(4),
    }
}

/// Records a plan whose candidates are `study` at each of `holders` (the first selected).
async fn plan(s: &Store, exam_id: i64, study: &str, holders: &[&str], deadline_min: i64) {
    let priors = holders
        .iter()
        .enumerate()
        .map(|(i, archive)| PriorRecord {
            archive: archive.to_string(),
            study_instance_uid: study.into(),
            study_date: Some("20200101".into()),
            modalities: Some("CT".into()),
            description: None,
            expected_instances: Some(4),
            selected: i == 0,
            reason: if i == 0 { "selected".into() } else { "duplicate".into() },
        })
        .collect();
    let record = PlanRecord {
        exam_id,
        rule: Some("default".into()),
        queries: serde_json::json!({}),
        gaps: serde_json::json!({}),
        archives: serde_json::json!({}),
        inputs: serde_json::json!([]),
        replan_at: None,
        priors,
        jobs: vec![job(exam_id, study, holders[0], 5, deadline_min)],
        max_jobs: None,
        refusal: None,
    };
    s.record_plan(&record).await.expect("plan");
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn preference() -> Vec<(String, RetrieveMethod)> {
    vec![
        ("sta".into(), RetrieveMethod::Move),
        ("vna".into(), RetrieveMethod::Get),
        ("lta".into(), RetrieveMethod::Move),
    ]
}

async fn fifo_claims_oldest_first_deadline_by_priority_then_deadline(db: TestDb) {
    let s = store(&db).await;
    s.sync_archive_slots(&[("a".into(), 10)]).await.unwrap();
    let e = exam(&s, "e").await;
    let jobs = [job(e, "1", "a", 5, 180), job(e, "2", "a", 1, 540), job(e, "3", "a", 1, 120)];
    s.enqueue_jobs(&jobs).await.unwrap();
    let fifo = s.claim_jobs_in_order("w", &names(&["a"]), 10, LEASE, ClaimOrder::Fifo).await.unwrap();
    let order: Vec<&str> = fifo.iter().map(|j| j.study_instance_uid.as_str()).collect();
    assert_eq!(order, ["1", "2", "3"], "FIFO: oldest first, priority and deadline ignored");

    let e2 = exam(&s, "e2").await;
    s.enqueue_jobs(&[job(e2, "1", "a", 5, 180), job(e2, "2", "a", 1, 540), job(e2, "3", "a", 1, 120)]).await.unwrap();
    let first = s.claim_jobs_in_order("w", &names(&["a"]), 1, LEASE, ClaimOrder::Fifo).await.unwrap();
    assert_eq!(first[0].study_instance_uid, "1");
    let rest = s.claim_jobs_in_order("w", &names(&["a"]), 10, LEASE, ClaimOrder::Deadline).await.unwrap();
    let order: Vec<&str> = rest.iter().map(|j| j.study_instance_uid.as_str()).collect();
    assert_eq!(order, ["3", "2"], "deadline: priority class, then the nearest deadline");
}

async fn a_boost_puts_near_exams_first(db: TestDb) {
    let s = store(&db).await;
    s.sync_archive_slots(&[("a".into(), 10)]).await.unwrap();
    let e = exam(&s, "e").await;
    // urgent but due in 5 h; routine but due in 30 min; routine due in 3 h
    s.enqueue_jobs(&[job(e, "urgent", "a", 1, 300), job(e, "near", "a", 5, 30), job(e, "later", "a", 5, 180)])
        .await
        .unwrap();
    assert_eq!(s.boost_due_soon(Duration::from_secs(3600)).await.unwrap(), 1, "only the job due within 1 h");
    assert_eq!(s.boost_due_soon(Duration::from_secs(3600)).await.unwrap(), 0, "boosted once");
    let got = s.claim_jobs_in_order("w", &names(&["a"]), 10, LEASE, ClaimOrder::Deadline).await.unwrap();
    let order: Vec<&str> = got.iter().map(|j| j.study_instance_uid.as_str()).collect();
    assert_eq!(order, ["near", "urgent", "later"]);
    assert_eq!(got[0].priority, 0);
}

async fn a_waiting_job_fails_over_to_a_free_archive_holding_the_study(db: TestDb) {
    let s = store(&db).await;
    s.sync_archive_slots(&[("sta".into(), 1), ("vna".into(), 1), ("lta".into(), 2)]).await.unwrap();
    // sta's only slot is busy
    let busy = exam(&s, "busy").await;
    s.enqueue_jobs(&[job(busy, "0", "sta", 5, 600)]).await.unwrap();
    assert_eq!(s.claim_jobs("w", &names(&["sta"]), 1, LEASE).await.unwrap().len(), 1);
    // near: held by sta and lta (vna does not hold it); far: due in 5 h; alone: only sta
    let near = exam(&s, "near").await;
    plan(&s, near, "S1", &["sta", "lta"], 20).await;
    let far = exam(&s, "far").await;
    plan(&s, far, "S2", &["sta", "lta"], 300).await;
    let alone = exam(&s, "alone").await;
    plan(&s, alone, "S3", &["sta"], 20).await;

    let moves = s.fail_over_waiting(Duration::from_secs(3600), &preference(), &HashSet::new()).await.unwrap();
    assert_eq!(moves.len(), 1, "{moves:?}");
    assert_eq!((moves[0].from.as_str(), moves[0].to.as_str()), ("sta", "lta"));
    assert!(s.fail_over_waiting(Duration::from_secs(3600), &preference(), &HashSet::new()).await.unwrap().is_empty());
    let on_lta = s.claim_jobs("w", &names(&["lta"]), 10, LEASE).await.unwrap();
    assert_eq!(on_lta.len(), 1);
    assert_eq!((on_lta[0].exam_id, on_lta[0].method), (near, RetrieveMethod::Move));
    assert!(on_lta[0].errors.iter().any(|e| e.error.contains("failover to lta")), "{:?}", on_lta[0].errors);
}

async fn a_failed_attempt_fails_over_once_per_archive(db: TestDb) {
    let s = store(&db).await;
    s.sync_archive_slots(&[("sta".into(), 1), ("vna".into(), 1), ("lta".into(), 1)]).await.unwrap();
    let e = exam(&s, "e").await;
    plan(&s, e, "S1", &["sta", "vna", "lta"], 20).await;
    let running = s.claim_jobs("w", &names(&["sta"]), 1, LEASE).await.unwrap().remove(0);
    // vna is away: the target is lta
    let away: HashSet<String> = ["sta".to_string(), "vna".to_string()].into();
    let target = s.failover_target(running.id, &preference(), &away).await.unwrap();
    assert_eq!(target, Some(("lta".into(), RetrieveMethod::Move)));
    // vna is back: the next in preference
    let target = s.failover_target(running.id, &preference(), &["sta".to_string()].into()).await.unwrap().unwrap();
    assert_eq!(target, ("vna".into(), RetrieveMethod::Get));
    assert!(s.fail_over_job(running.id, "w", &target, "attempt 1: refused").await.unwrap());
    assert!(!s.fail_over_job(running.id, "w", &target, "again").await.unwrap(), "no longer held");
    // sta's slot is free again; the job waits on vna with the C-GET method
    let moved = s.claim_jobs("w", &names(&["vna"]), 1, LEASE).await.unwrap().remove(0);
    assert_eq!((moved.id, moved.method, moved.attempt), (running.id, RetrieveMethod::Get, 2));
    let target = s.failover_target(moved.id, &preference(), &["vna".to_string()].into()).await.unwrap();
    assert_eq!(target, Some(("lta".into(), RetrieveMethod::Move)), "sta was tried: never back");
}
