//! Extra slots of a split retrieve (`jobs/slots.rs`), on Postgres and SQLite: they come
//! out of the archive's `max_associations` like claims, the cap holds, and every way a job
//! gives back its slot gives back the extra ones too.

use chrono::{Duration as Days, Utc};
use priorfetch_store::{Counts, ExamPriority, Finish, JobState, NewExam, NewJob, RetrieveMethod, RetryPolicy, Store};
use priorfetch_testkit::db::{TestDb, init_test_log};
use std::time::Duration;

const LEASE: Duration = Duration::from_secs(30);

macro_rules! store_tests {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(priorfetch_testkit::db::TestDb::postgres().await).await }
            )*
        }
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(priorfetch_testkit::db::TestDb::sqlite()).await }
            )*
        }
    };
}

store_tests!(extra_slots_count_against_the_cap_and_go_back_with_the_job);

async fn setup(db: &TestDb) -> (Store, i64) {
    init_test_log();
    let s = Store::connect(&db.url, "", 8).await.expect("connect");
    s.migrate().await.expect("migrate");
    s.sync_archive_slots(&[("a".into(), 3)]).await.unwrap();
    let exam = NewExam {
        event_key: "e".into(),
        patient_id: "MRN1".into(),
        issuer: None,
        identifiers: Vec::new(),
        accession_number: None,
        study_instance_uid: None,
        scheduled_at: Some(Utc::now() + Days::hours(2)),
        modality: None,
        body_part: None,
        procedure_code: None,
        procedure_text: None,
        priority: ExamPriority::Routine,
        trace_parent: None,
    };
    let e = s.insert_exam(&exam).await.unwrap().id();
    let jobs: Vec<NewJob> = (1..=3)
        .map(|i| NewJob {
            exam_id: e,
            study_instance_uid: format!("9.{i}"),
            archive: "a".into(),
            method: RetrieveMethod::Get,
            destination: "DEST".into(),
            priority: i,
            not_before: Utc::now() - Days::seconds(1),
            deadline: None,
            max_attempts: 3,
            expected_instances: Some(500),
        })
        .collect();
    s.enqueue_jobs(&jobs).await.unwrap();
    (s, e)
}

async fn extra_slots_count_against_the_cap_and_go_back_with_the_job(db: TestDb) {
    let (s, _) = setup(&db).await;
    let a = vec!["a".to_string()];
    let big = s.claim_jobs("w1", &a, 1, LEASE).await.unwrap().remove(0);
    assert_eq!(s.claim_extra_slots(big.id, "intruder", "a", 3, LEASE).await.unwrap(), 0, "only the holder");
    assert_eq!(s.claim_extra_slots(big.id, "w1", "a", 3, LEASE).await.unwrap(), 2, "3 slots, 1 its own");
    assert_eq!(s.slots_held(big.id).await.unwrap(), 3);
    assert!(s.claim_jobs("w2", &a, 5, LEASE).await.unwrap().is_empty(), "the cap holds for other movers");
    // progress extends them with the job's own
    assert!(s.update_progress(big.id, "w1", Counts::default(), LEASE).await.unwrap());

    assert_eq!(s.release_extra_slots(big.id, "w1").await.unwrap(), 2);
    assert_eq!(s.slots_held(big.id).await.unwrap(), 1, "the job keeps its own");
    let other = s.claim_jobs("w2", &a, 5, LEASE).await.unwrap();
    assert_eq!(other.len(), 2, "the freed slots are claimable at once");
    assert_eq!(s.claim_extra_slots(big.id, "w1", "a", 3, LEASE).await.unwrap(), 0, "archive full");

    // a retry gives back every slot the job holds
    for j in &other {
        assert_eq!(s.claim_extra_slots(j.id, "w2", "a", 1, LEASE).await.unwrap(), 0);
    }
    let policy =
        RetryPolicy { initial: Duration::from_secs(60), factor: 2.0, max: Duration::from_secs(60), jitter: 0.0 };
    s.retry_job(other[0].id, "w2", "cut", None, Counts::default(), &policy).await.unwrap();
    assert_eq!(s.claim_extra_slots(big.id, "w1", "a", 3, LEASE).await.unwrap(), 1);
    assert_eq!(s.slots_held(big.id).await.unwrap(), 2);
    let done = Finish { state: JobState::Completed, counts: Counts::default(), last_status: Some(0), error: None };
    assert!(s.finish_job(big.id, "w1", &done).await.unwrap());
    assert_eq!(s.slots_held(big.id).await.unwrap(), 0, "finish frees the extra slots too");
}
