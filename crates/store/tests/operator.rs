//! The operator's queries against a real Postgres and SQLite: exam and job filters, the
//! bulk retry with its audit row in the same transaction, dead letters by ID and replay notes.

use chrono::{Duration, Utc};
use priorfetch_store::{
    AuditEntry, ExamFilter, ExamPriority, JobFilter, JobState, NewExam, NewJob, RetrieveMethod, Store,
};
use priorfetch_testkit::db::{TestDb, init_test_log};
use sea_orm::{ConnectionTrait, DbBackend, Statement};

priorfetch_testkit::both_databases!(filters_bulk_retry_and_audit, dead_letters_by_id_note_their_replay);

async fn store(db: &TestDb) -> Store {
    init_test_log();
    let store = Store::connect(&db.url, "", 4).await.expect("connect");
    store.migrate().await.expect("migrate");
    store
}

async fn exam(s: &Store, key: &str, accession: &str, patient: &str, scheduled_in: Duration) -> i64 {
    let exam = NewExam {
        event_key: key.into(),
        patient_id: patient.into(),
        issuer: None,
        identifiers: Vec::new(),
        accession_number: Some(accession.into()),
        study_instance_uid: None,
        scheduled_at: Some(Utc::now() + scheduled_in),
        modality: Some("CT".into()),
        body_part: None,
        procedure_code: None,
        procedure_text: None,
        priority: ExamPriority::Routine,
        trace_parent: None,
    };
    s.insert_exam(&exam).await.expect("exam").id()
}

/// A job put into `state`, last changed `ago`.
async fn job(s: &Store, exam: i64, study: &str, archive: &str, state: &str, ago: Duration) -> i64 {
    let new = NewJob {
        exam_id: exam,
        study_instance_uid: study.into(),
        archive: archive.into(),
        method: RetrieveMethod::Get,
        destination: "DEST".into(),
        priority: 5,
        not_before: Utc::now() + Duration::hours(2),
        deadline: None,
        max_attempts: 3,
        expected_instances: None,
    };
    s.enqueue_jobs(&[new]).await.unwrap();
    let id = s.jobs_of_exam(exam).await.unwrap().iter().find(|j| j.study_instance_uid == study).unwrap().id;
    // bound, not spliced: SQLite compares the stored text of times, so it must be the driver's
    let sql = match s.backend() {
        DbBackend::Postgres => "UPDATE retrieve_jobs SET state = $1, attempt = 3, updated_at = $2 WHERE id = $3",
        _ => "UPDATE retrieve_jobs SET state = ?, attempt = 3, updated_at = ? WHERE id = ?",
    };
    let values: [sea_orm::Value; 3] = [state.into(), (Utc::now() - ago).into(), id.into()];
    s.connection().execute_raw(Statement::from_sql_and_values(s.backend(), sql, values)).await.unwrap();
    id
}

async fn filters_bulk_retry_and_audit(db: TestDb) {
    let s = store(&db).await;
    let soon = exam(&s, "k1", "A1", "P1", Duration::hours(2)).await;
    let later = exam(&s, "k2", "A2", "P2", Duration::days(3)).await;
    let window = ExamFilter {
        scheduled_from: Some(Utc::now()),
        scheduled_to: Some(Utc::now() + Duration::days(1)),
        ..Default::default()
    };
    let found: Vec<i64> = s.find_exams(&window, 10).await.unwrap().iter().map(|e| e.exam.id).collect();
    assert_eq!(found, vec![soon]);
    let by_patient = ExamFilter { patient_id: Some("P2".into()), ..Default::default() };
    assert_eq!(s.find_exams(&by_patient, 10).await.unwrap()[0].exam.id, later);
    assert_eq!(s.exams_by_accession("A2").await.unwrap()[0].exam.id, later);

    let a = job(&s, soon, "1", "lta", "failed", Duration::hours(1)).await;
    let b = job(&s, later, "2", "lta", "failed", Duration::hours(5)).await;
    let c = job(&s, soon, "3", "sta", "failed", Duration::hours(1)).await;
    let d = job(&s, soon, "4", "lta", "failed", Duration::days(2)).await;
    let e = job(&s, soon, "5", "lta", "running", Duration::minutes(1)).await;
    let filter = JobFilter {
        state: Some(JobState::Failed),
        archive: Some("lta".into()),
        since: Some(Utc::now() - Duration::hours(12)),
        ..Default::default()
    };
    let mut listed: Vec<i64> = s.find_jobs(&filter, 10).await.unwrap().iter().map(|j| j.id).collect();
    listed.sort();
    assert_eq!(listed, vec![a, b]);
    let of_exam = JobFilter { exam_id: Some(later), ..Default::default() };
    assert_eq!(s.find_jobs(&of_exam, 10).await.unwrap().iter().map(|j| j.id).collect::<Vec<_>>(), vec![b]);

    let target = serde_json::to_value(&filter).unwrap();
    let entry = AuditEntry { actor: "oscar", action: "jobs.bulk_retry", target: target.clone() };
    assert_eq!(s.retry_jobs(&filter, &entry).await.unwrap(), 2);
    for (id, state, attempt) in [(a, "available", 0), (b, "available", 0), (c, "failed", 3), (d, "failed", 3)] {
        let j = s.job(id).await.unwrap().unwrap();
        assert_eq!((j.state.as_str(), j.attempt), (state, attempt), "job {id}");
    }
    // every state but running may be retried; a running job never is
    let all = JobFilter { archive: Some("lta".into()), ..Default::default() };
    s.retry_jobs(&all, &entry).await.unwrap();
    assert_eq!(s.job(e).await.unwrap().unwrap().state, JobState::Running);
    let audit = s.audit_log(10).await.unwrap();
    assert_eq!(audit.len(), 2);
    assert_eq!((audit[1].actor.as_str(), audit[1].outcome.as_str()), ("oscar", "requeued 2"));
    assert_eq!(audit[1].target, target);
    assert_eq!(audit[1].target["archive"], "lta");
}

async fn dead_letters_by_id_note_their_replay(db: TestDb) {
    let s = store(&db).await;
    s.insert_dead_letters(&[
        ("http".into(), b"{}".to_vec(), "one".into()),
        ("kafka".into(), b"[]".to_vec(), "two".into()),
    ])
    .await
    .unwrap();
    let letters = s.list_dead_letters(10).await.unwrap();
    assert_eq!(letters.iter().map(|l| l.reason.as_str()).collect::<Vec<_>>(), ["two", "one"], "newest first");
    let id = letters[1].id;
    assert!(letters[1].replayed_at.is_none());
    s.mark_replayed(id, "accepted exam 4").await.unwrap();
    let letter = s.dead_letter(id).await.unwrap().unwrap();
    assert_eq!(letter.replay_outcome.as_deref(), Some("accepted exam 4"));
    assert!(letter.replayed_at.is_some());
    assert!(s.dead_letter(id + 100).await.unwrap().is_none());
    s.record_audit(
        &AuditEntry { actor: "cli:me", action: "dead_letters.replay", target: serde_json::json!({"dead_letter": id}) },
        "accepted exam 4",
    )
    .await
    .unwrap();
    assert_eq!(s.audit_log(1).await.unwrap()[0].actor, "cli:me");
}
