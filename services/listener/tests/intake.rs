//! Update and cancel events act on the exam and its open jobs (real Postgres).

use chrono::Utc;
use priorfetch_events::DecodeOptions;
use priorfetch_listener::{Intake, Verdict};
use priorfetch_store::{ExamStatus, JobState, RetrieveMethod};
use priorfetch_store::{NewJob, Store};
use priorfetch_testkit::db::TestDb;

fn event(id: &str, kind: &str, when: Option<&str>) -> Vec<u8> {
    let mut v = serde_json::json!({ "event_id": id, "type": kind, "patient": { "id": "MRN7" },
        "accession_number": "ACC7", "modality": "CT" });
    if let Some(when) = when {
        v["scheduled_at"] = when.into();
    }
    v.to_string().into_bytes()
}

#[tokio::test]
async fn update_reschedules_and_cancel_ends_exam_and_jobs() {
    let db = TestDb::postgres().await;
    let store = Store::connect(&db.url, "", 4).await.unwrap();
    store.migrate().await.unwrap();
    let intake = Intake::new(
        store.clone(),
        DecodeOptions { source: "http".into(), hl7: Default::default(), sender_in_key: false },
    );

    let first = event("e1", "exam.scheduled", Some("2026-11-23T09:30:00+01:00"));
    let Verdict::Accepted(exam_id) = intake.process(&[&first]).await.unwrap()[0] else { panic!("accepted") };
    store.set_exam_status(exam_id, priorfetch_store::ExamStatus::Planned).await.unwrap();
    store.sync_archive_slots(&[("a".into(), 1)]).await.unwrap();
    let job = |study: &str| NewJob {
        exam_id,
        study_instance_uid: study.into(),
        archive: "a".into(),
        method: RetrieveMethod::Move,
        destination: "DEST".into(),
        priority: 1,
        not_before: Utc::now(),
        deadline: None,
        max_attempts: 3,
        expected_instances: None,
    };
    store.enqueue_jobs(&[job("1.1"), job("1.2")]).await.unwrap();

    // an update moves the exam and sends it back to planning; queued jobs are dropped
    let update = event("e2", "exam.updated", Some("2026-11-24T14:00:00+01:00"));
    assert_eq!(intake.process(&[&update]).await.unwrap(), vec![Verdict::Updated]);
    let exam = store.exam(exam_id).await.unwrap().unwrap();
    assert_eq!(exam.exam.scheduled_at.unwrap().to_rfc3339(), "2026-11-24T13:00:00+00:00");
    assert_eq!(exam.status, ExamStatus::Received, "re-planned");
    assert!(store.jobs_of_exam(exam_id).await.unwrap().iter().all(|j| j.state == JobState::Cancelled));

    // new jobs after re-planning; one running when the cancel arrives
    store.enqueue_jobs(&[NewJob { study_instance_uid: "1.3".into(), ..job("x") }]).await.unwrap();
    let running = store.claim_jobs("mover", &["a".to_string()], 1, std::time::Duration::from_secs(60)).await.unwrap();
    assert_eq!(running.len(), 1);
    let cancel = event("e3", "exam.cancelled", None);
    assert_eq!(intake.process(&[&cancel]).await.unwrap(), vec![Verdict::Cancelled]);
    assert_eq!(store.exam(exam_id).await.unwrap().unwrap().status, ExamStatus::Cancelled);
    assert!(
        !store
            .update_progress(running[0].id, "mover", Default::default(), std::time::Duration::from_secs(60))
            .await
            .unwrap(),
        "the running retrieve learns of the cancel"
    );
    // a cancel for an order never seen is counted, not an error
    let stray = serde_json::json!({ "event_id": "e4", "type": "exam.cancelled", "patient": { "id": "NOPE" }, "accession_number": "X" });
    assert_eq!(intake.process(&[stray.to_string().as_bytes()]).await.unwrap(), vec![Verdict::Unmatched]);
}
