//! The store's suite, run against a real Postgres (a fresh database per test) and SQLite
//! through the same test bodies: `store_tests!` instantiates each body for both.

use chrono::{Duration as Days, Utc};
use priorfetch_store::{Counts, Finish, Inserted, JobState, NewExam, NewJob, RetryOutcome, RetryPolicy, Store};
use priorfetch_store::{ExamPriority, ExamStatus, RetrieveMethod};
use priorfetch_testkit::db::{TestDb, init_test_log};
use std::time::Duration;

async fn store(db: &TestDb) -> Store {
    init_test_log();
    let store = Store::connect(&db.url, "", 8).await.expect("connect");
    store.migrate().await.expect("migrate");
    store
}

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

store_tests!(
    exam_insert_is_idempotent,
    enqueue_is_idempotent_and_claim_orders_by_priority_then_deadline,
    claim_respects_not_before_and_archive_filter,
    cap_holds_under_concurrent_claimers,
    progress_finish_and_lease_ownership,
    retry_backs_off_then_exhausts,
    cancel_exam_cancels_queued_and_running,
    a_row_edited_by_hand_fails_with_its_reason,
    rescuer_returns_expired_leases,
    purge_removes_old_finished_rows,
    enqueue_wakes_an_idle_worker,
    planner_claims_exams_once,
    migrations_are_idempotent,
);

fn exam(key: &str) -> NewExam {
    NewExam {
        event_key: key.into(),
        patient_id: "MRN1".into(),
        issuer: Some("HOSP".into()),
        identifiers: Vec::new(),
        accession_number: Some(format!("ACC-{key}")),
        study_instance_uid: None,
        scheduled_at: Some(Utc::now() + Days::hours(2)),
        modality: Some("CT".into()),
        body_part: Some("CHEST".into()),
        procedure_code: None,
        procedure_text: None,
        priority: ExamPriority::Routine,
        trace_parent: None,
    }
}

fn job(exam_id: i64, study: &str, archive: &str, priority: i32, deadline_h: i64) -> NewJob {
    NewJob {
        exam_id,
        study_instance_uid: study.into(),
        archive: archive.into(),
        method: RetrieveMethod::Move,
        destination: "DEST".into(),
        priority,
        not_before: Utc::now() - Days::seconds(1),
        deadline: Some(Utc::now() + Days::hours(deadline_h)),
        max_attempts: 3,
        expected_instances: Some(10),
    }
}

const LEASE: Duration = Duration::from_secs(60);

fn archives(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

async fn exam_insert_is_idempotent(db: TestDb) {
    let s = store(&db).await;
    let first = s.insert_exam(&exam("e1")).await.unwrap();
    let Inserted::New(id) = first else { panic!("first insert is new: {first:?}") };
    assert_eq!(s.insert_exam(&exam("e1")).await.unwrap(), Inserted::Duplicate(id));
    // a batch with a repeat inside it and one already stored
    let out = s.insert_exams(&[exam("e2"), exam("e1"), exam("e2"), exam("e3")]).await.unwrap();
    assert!(matches!(out[0], Inserted::New(_)));
    assert_eq!(out[1], Inserted::Duplicate(id));
    assert_eq!(out[2], Inserted::Duplicate(out[0].id()));
    assert!(matches!(out[3], Inserted::New(_)));
    let stored = s.exam_by_key("e3").await.unwrap().unwrap();
    assert_eq!(stored.status, ExamStatus::Received);
    assert_eq!(stored.exam.id, out[3].id());
}

async fn enqueue_is_idempotent_and_claim_orders_by_priority_then_deadline(db: TestDb) {
    let s = store(&db).await;
    s.sync_archive_slots(&[("a".into(), 10)]).await.unwrap();
    let e = s.insert_exam(&exam("e")).await.unwrap().id();
    let jobs = vec![job(e, "1.1", "a", 5, 3), job(e, "1.2", "a", 1, 9), job(e, "1.3", "a", 1, 2)];
    assert_eq!(s.enqueue_jobs(&jobs).await.unwrap(), 3);
    assert_eq!(s.enqueue_jobs(&jobs).await.unwrap(), 0, "same (exam, study, destination) is a no-op");
    let claimed = s.claim_jobs("w1", &archives(&["a"]), 10, LEASE).await.unwrap();
    let order: Vec<&str> = claimed.iter().map(|j| j.study_instance_uid.as_str()).collect();
    assert_eq!(order, ["1.3", "1.2", "1.1"]);
    assert!(
        claimed.iter().all(|j| j.state == JobState::Running && j.attempt == 1 && j.worker.as_deref() == Some("w1"))
    );
    assert!(s.claim_jobs("w2", &archives(&["a"]), 10, LEASE).await.unwrap().is_empty(), "claimed once");
}

async fn claim_respects_not_before_and_archive_filter(db: TestDb) {
    let s = store(&db).await;
    s.sync_archive_slots(&[("a".into(), 5), ("b".into(), 5)]).await.unwrap();
    let e = s.insert_exam(&exam("e")).await.unwrap().id();
    let mut later = job(e, "2.1", "a", 1, 5);
    later.not_before = Utc::now() + Days::hours(1);
    s.enqueue_jobs(&[later, job(e, "2.2", "b", 1, 5)]).await.unwrap();
    assert_eq!(s.job_counts().await.unwrap().iter().find(|(st, _)| *st == JobState::Scheduled).map(|c| c.1), Some(1));
    assert!(s.claim_jobs("w", &archives(&["a"]), 10, LEASE).await.unwrap().is_empty(), "not due yet");
    let got = s.claim_jobs("w", &archives(&["a", "b"]), 10, LEASE).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].archive, "b");
    // an archive without slots (not configured) is never claimed from
    let mut orphan = job(e, "2.3", "unknown", 1, 5);
    orphan.not_before = Utc::now() - Days::seconds(5);
    s.enqueue_jobs(&[orphan]).await.unwrap();
    assert!(s.claim_jobs("w", &archives(&["unknown"]), 10, LEASE).await.unwrap().is_empty());
}

/// 4 claimers drain 10,000 jobs (2,000 on SQLite), half of them of an archive capped at 2: every job claimed
/// exactly once, never more than 2 running. On Postgres each claimer has its own
/// connection pool, as separate processes would; SQLite is single-process (one writer
/// connection), so its 4 claimers are tasks sharing it.
async fn cap_holds_under_concurrent_claimers(db: TestDb) {
    let s = store(&db).await;
    // SQLite is the single-process backend (demo, one node): 2,000 keep the suite fast.
    let total = if s.is_postgres() { 10_000 } else { 2_000 };
    s.sync_archive_slots(&[("capped".into(), 2), ("other".into(), 50)]).await.unwrap();
    let e = s.insert_exam(&exam("e")).await.unwrap().id();
    let jobs: Vec<NewJob> = (0..total)
        .map(|i| job(e, &format!("1.2.{i}"), if i % 2 == 0 { "capped" } else { "other" }, (i % 7) as i32, 5))
        .collect();
    assert_eq!(s.enqueue_jobs(&jobs).await.unwrap(), total as u64);

    let claimers = if s.is_postgres() { 4 } else { 1 };
    let mut stores = Vec::new();
    for _ in 0..claimers {
        stores.push(if s.is_postgres() { store(&db).await } else { s.clone() });
    }
    let max_running = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    let mut tasks = Vec::new();
    for (w, st) in stores
        .into_iter()
        .enumerate()
        .flat_map(|(i, st)| (0..if claimers == 1 { 4 } else { 1 }).map(move |k| (i * 4 + k, st.clone())))
    {
        let max_running = max_running.clone();
        tasks.push(tokio::spawn(async move {
            let worker = format!("w{w}");
            let mut mine = Vec::new();
            let mut idle = 0;
            while idle < 50 {
                let got = st.claim_jobs(&worker, &archives(&["capped", "other"]), 8, LEASE).await.unwrap();
                if got.is_empty() {
                    idle += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                idle = 0;
                let running = st.running_jobs("capped").await.unwrap();
                max_running.fetch_max(running, std::sync::atomic::Ordering::SeqCst);
                for j in got {
                    let done = Finish {
                        state: JobState::Completed,
                        counts: Counts { remaining: Some(0), completed: 10, failed: 0, warning: 0 },
                        last_status: Some(0),
                        error: None,
                    };
                    assert!(st.finish_job(j.id, &worker, &done).await.unwrap());
                    mine.push(j.id);
                }
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let unique: std::collections::HashSet<i64> = all.iter().copied().collect();
    assert_eq!(all.len(), total, "every job claimed");
    assert_eq!(unique.len(), total, "no job claimed twice");
    let peak = max_running.load(std::sync::atomic::Ordering::SeqCst);
    assert!(peak <= 2, "cap of 2 exceeded: {peak} running");
}

async fn progress_finish_and_lease_ownership(db: TestDb) {
    let s = store(&db).await;
    s.sync_archive_slots(&[("a".into(), 1)]).await.unwrap();
    let e = s.insert_exam(&exam("e")).await.unwrap().id();
    s.enqueue_jobs(&[job(e, "3.1", "a", 1, 5), job(e, "3.2", "a", 1, 6)]).await.unwrap();
    let j = s.claim_jobs("w", &archives(&["a"]), 5, LEASE).await.unwrap().remove(0);
    assert!(s.claim_jobs("w2", &archives(&["a"]), 5, LEASE).await.unwrap().is_empty(), "slot busy");
    let c = Counts { remaining: Some(6), completed: 4, failed: 0, warning: 1 };
    assert!(s.update_progress(j.id, "w", c, LEASE).await.unwrap());
    assert!(!s.update_progress(j.id, "intruder", c, LEASE).await.unwrap(), "only the lease holder updates");
    let stored = s.job(j.id).await.unwrap().unwrap();
    assert_eq!((stored.counts.remaining, stored.counts.completed, stored.counts.warning), (Some(6), 4, 1));
    let partial = Finish {
        state: JobState::Partial,
        counts: Counts { remaining: Some(0), completed: 9, failed: 1, warning: 1 },
        last_status: Some(0xB000),
        error: Some("1 sub-operation failed".into()),
    };
    assert!(s.finish_job(j.id, "w", &partial).await.unwrap());
    assert!(!s.finish_job(j.id, "w", &partial).await.unwrap(), "finishing twice is refused");
    let stored = s.job(j.id).await.unwrap().unwrap();
    assert_eq!(stored.state, JobState::Partial);
    assert_eq!(stored.last_status, Some(0xB000));
    assert!(stored.finished_at.is_some() && stored.leased_until.is_none());
    assert_eq!(stored.errors.len(), 1);
    // the slot is free again
    assert_eq!(s.claim_jobs("w2", &archives(&["a"]), 5, LEASE).await.unwrap().len(), 1);
}

async fn retry_backs_off_then_exhausts(db: TestDb) {
    let s = store(&db).await;
    s.sync_archive_slots(&[("a".into(), 1)]).await.unwrap();
    let e = s.insert_exam(&exam("e")).await.unwrap().id();
    s.enqueue_jobs(&[job(e, "4.1", "a", 1, 5)]).await.unwrap();
    let instant = RetryPolicy { initial: Duration::ZERO, factor: 2.0, max: Duration::ZERO, jitter: 0.0 };
    let slow =
        RetryPolicy { initial: Duration::from_secs(30), factor: 2.0, max: Duration::from_secs(600), jitter: 0.0 };
    let j = s.claim_jobs("w", &archives(&["a"]), 1, LEASE).await.unwrap().remove(0);
    let before = Utc::now();
    let RetryOutcome::Retrying { not_before } =
        s.retry_job(j.id, "w", "association rejected", None, Counts::default(), &slow).await.unwrap()
    else {
        panic!("first failure retries")
    };
    let waited = (not_before - before).num_seconds();
    assert!((29..=31).contains(&waited), "backoff after attempt 1 is 30 s, got {waited}");
    assert!(s.claim_jobs("w", &archives(&["a"]), 1, LEASE).await.unwrap().is_empty(), "backing off");
    // make it due again (as time passing would), then fail twice more
    s.connection().execute_unprepared("UPDATE retrieve_jobs SET not_before = created_at").await.unwrap();
    let j = s.claim_jobs("w", &archives(&["a"]), 1, LEASE).await.unwrap().remove(0);
    assert_eq!(j.attempt, 2);
    assert!(matches!(
        s.retry_job(j.id, "w", "timeout", None, Counts::default(), &instant).await.unwrap(),
        RetryOutcome::Retrying { .. }
    ));
    let j = s.claim_jobs("w", &archives(&["a"]), 1, LEASE).await.unwrap().remove(0);
    assert_eq!(j.attempt, 3);
    let some = Counts { remaining: Some(0), completed: 3, failed: 7, warning: 0 };
    let out = s.retry_job(j.id, "w", "7 failed", Some(0xB000), some, &instant).await.unwrap();
    assert_eq!(out, RetryOutcome::Exhausted(JobState::Partial));
    let stored = s.job(j.id).await.unwrap().unwrap();
    assert_eq!(stored.state, JobState::Partial);
    let history: Vec<&str> = stored.errors.iter().map(|e| e.error.as_str()).collect();
    assert_eq!(history, ["association rejected", "timeout", "7 failed"]);
}

/// A method the store never writes (a row edited by hand) is not claimed again and again:
/// the job fails with a reason that names the row and the value, its slot comes back,
/// and the job behind it runs.
async fn a_row_edited_by_hand_fails_with_its_reason(db: TestDb) {
    let s = store(&db).await;
    s.sync_archive_slots(&[("a".into(), 1)]).await.unwrap();
    let e = s.insert_exam(&exam("e")).await.unwrap().id();
    s.enqueue_jobs(&[job(e, "6.1", "a", 1, 5), job(e, "6.2", "a", 2, 5)]).await.unwrap();
    s.connection()
        .execute_unprepared("UPDATE retrieve_jobs SET method = 'ftp' WHERE study_instance_uid = '6.1'")
        .await
        .unwrap();
    assert!(s.claim_jobs("w", &archives(&["a"]), 1, LEASE).await.unwrap().is_empty());
    let jobs = s.jobs_of_exam(e).await;
    let err = jobs.expect_err("the list names the unreadable row").to_string();
    assert!(err.contains("retrieve_jobs row") && err.contains("method 'ftp'"), "{err}");
    let next = s.claim_jobs("w", &archives(&["a"]), 1, LEASE).await.unwrap();
    assert_eq!(next.iter().map(|j| j.study_instance_uid.as_str()).collect::<Vec<_>>(), ["6.2"]);
    let failed = s.list_jobs(Some(JobState::Failed), 10).await.expect_err("still unreadable");
    assert!(failed.to_string().contains("method 'ftp'"), "{failed}");
    let counts = s.job_counts().await.unwrap();
    assert!(counts.contains(&(JobState::Failed, 1)) && counts.contains(&(JobState::Running, 1)), "{counts:?}");
}

async fn cancel_exam_cancels_queued_and_running(db: TestDb) {
    let s = store(&db).await;
    s.sync_archive_slots(&[("a".into(), 1)]).await.unwrap();
    let e = s.insert_exam(&exam("e")).await.unwrap().id();
    let other = s.insert_exam(&exam("other")).await.unwrap().id();
    s.enqueue_jobs(&[job(e, "5.1", "a", 1, 5), job(e, "5.2", "a", 2, 5), job(other, "5.3", "a", 3, 5)]).await.unwrap();
    let running = s.claim_jobs("w", &archives(&["a"]), 1, LEASE).await.unwrap().remove(0);
    let was_running = s.cancel_exam_jobs(e).await.unwrap();
    assert_eq!(was_running, vec![running.id]);
    assert!(
        !s.update_progress(running.id, "w", Counts::default(), LEASE).await.unwrap(),
        "worker learns of the cancel"
    );
    let done = Finish { state: JobState::Completed, counts: Counts::default(), last_status: None, error: None };
    assert!(!s.finish_job(running.id, "w", &done).await.unwrap(), "a cancelled job is not completed");
    let states: Vec<JobState> = s.jobs_of_exam(e).await.unwrap().into_iter().map(|j| j.state).collect();
    assert_eq!(states, [JobState::Cancelled, JobState::Cancelled]);
    // the other exam's job is untouched and its slot came back when the worker gave up
    let next = s.claim_jobs("w", &archives(&["a"]), 1, LEASE).await.unwrap();
    assert_eq!(next[0].exam_id, other);
}

async fn rescuer_returns_expired_leases(db: TestDb) {
    let s = store(&db).await;
    s.sync_archive_slots(&[("a".into(), 1)]).await.unwrap();
    let e = s.insert_exam(&exam("e")).await.unwrap().id();
    s.enqueue_jobs(&[job(e, "6.1", "a", 1, 5)]).await.unwrap();
    let j = s.claim_jobs("dead-worker", &archives(&["a"]), 1, Duration::from_millis(1)).await.unwrap().remove(0);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(s.claim_jobs("w", &archives(&["a"]), 1, LEASE).await.unwrap().is_empty(), "slot still held");
    let report = s.rescue_expired().await.unwrap();
    assert_eq!((report.retried, report.failed, report.slots_freed), (1, 0, 1));
    let stored = s.job(j.id).await.unwrap().unwrap();
    assert_eq!(stored.state, JobState::Retryable);
    assert!(stored.last_error.unwrap().contains("dead-worker"));
    let again = s.claim_jobs("w", &archives(&["a"]), 1, LEASE).await.unwrap();
    assert_eq!(again[0].id, j.id);
    assert_eq!(again[0].attempt, 2);
    assert!(!s.update_progress(j.id, "dead-worker", Counts::default(), LEASE).await.unwrap(), "the old worker lost it");
    // the old worker waking up and finishing must not free the new claim's slot
    let late = Finish { state: JobState::Completed, counts: Counts::default(), last_status: Some(0), error: None };
    assert!(!s.finish_job(j.id, "dead-worker", &late).await.unwrap());
    let retry = s
        .retry_job(
            j.id,
            "dead-worker",
            "late",
            None,
            Counts::default(),
            &RetryPolicy { initial: Duration::ZERO, factor: 1.0, max: Duration::ZERO, jitter: 0.0 },
        )
        .await
        .unwrap();
    assert_eq!(retry, RetryOutcome::NotOwned);
    let e2 = s.insert_exam(&exam("e2")).await.unwrap().id();
    s.enqueue_jobs(&[job(e2, "6.2", "a", 1, 5)]).await.unwrap();
    assert!(s.claim_jobs("w3", &archives(&["a"]), 1, LEASE).await.unwrap().is_empty(), "the cap of 1 still holds");
    // an exam stuck in planning is released too
    s.claim_exams("planner", 10, Duration::from_millis(1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(s.rescue_expired().await.unwrap().exams_released, 2, "e and e2 were stuck in planning");
}

async fn purge_removes_old_finished_rows(db: TestDb) {
    let s = store(&db).await;
    s.sync_archive_slots(&[("a".into(), 2)]).await.unwrap();
    let e = s.insert_exam(&exam("e")).await.unwrap().id();
    s.enqueue_jobs(&[job(e, "7.1", "a", 1, 5), job(e, "7.2", "a", 2, 5)]).await.unwrap();
    let j = s.claim_jobs("w", &archives(&["a"]), 1, LEASE).await.unwrap().remove(0);
    let done = Finish { state: JobState::Completed, counts: Counts::default(), last_status: Some(0), error: None };
    s.finish_job(j.id, "w", &done).await.unwrap();
    s.insert_dead_letters(&[("http".into(), b"{".to_vec(), "bad_json".into())]).await.unwrap();
    assert_eq!(s.purge_finished(Duration::from_secs(3600)).await.unwrap(), Default::default(), "nothing old yet");
    tokio::time::sleep(Duration::from_millis(30)).await;
    let report = s.purge_finished(Duration::from_millis(10)).await.unwrap();
    assert_eq!((report.jobs, report.dead_letters), (1, 1));
    assert_eq!(report.exams, 0, "the exam still has an open job");
    assert!(s.job(j.id).await.unwrap().is_none());
    assert_eq!(s.jobs_of_exam(e).await.unwrap().len(), 1);
}

async fn enqueue_wakes_an_idle_worker(db: TestDb) {
    let s = store(&db).await;
    // the enqueuer is another Store (another pool: another process on Postgres)
    let other = if s.is_postgres() { store(&db).await } else { s.clone() };
    let mut signal = s.work_signal().await;
    tokio::time::sleep(Duration::from_millis(200)).await; // LISTEN is up
    signal.mark_seen();
    let e = other.insert_exam(&exam("e")).await.unwrap().id();
    let started = std::time::Instant::now();
    assert!(signal.wait(Duration::from_secs(5)).await, "woken by the exam insert");
    signal.mark_seen();
    other.enqueue_jobs(&[job(e, "8.1", "a", 1, 5)]).await.unwrap();
    assert!(signal.wait(Duration::from_secs(5)).await, "woken by the enqueue");
    assert!(started.elapsed() < Duration::from_secs(2), "woken at once, not by polling");
    signal.mark_seen();
    assert!(!signal.wait(Duration::from_millis(100)).await, "no spurious wake-up");
}

async fn planner_claims_exams_once(db: TestDb) {
    let s = store(&db).await;
    let mut stat = exam("stat");
    stat.priority = ExamPriority::Stat;
    stat.scheduled_at = Some(Utc::now() + Days::hours(20));
    s.insert_exams(&[exam("r1"), stat, exam("r2")]).await.unwrap();
    let first = s.claim_exams("p1", 2, LEASE).await.unwrap();
    assert_eq!(first.len(), 2);
    assert!(first.iter().any(|e| e.event_key == "stat"), "STAT first");
    let second = s.claim_exams("p2", 5, LEASE).await.unwrap();
    assert_eq!(second.len(), 1);
    assert!(first.iter().all(|e| e.status == ExamStatus::Planning));
}

async fn migrations_are_idempotent(db: TestDb) {
    let s = store(&db).await;
    s.migrate().await.expect("second migrate is a no-op");
    s.ping().await.unwrap();
}

use sea_orm::ConnectionTrait;

/// The cron loop runs the rescuer on its schedule and stops on shutdown.
#[tokio::test]
async fn housekeeping_rescues_on_its_cron_schedule() {
    use std::str::FromStr;
    let db = TestDb::sqlite();
    let s = store(&db).await;
    s.sync_archive_slots(&[("a".into(), 1)]).await.unwrap();
    let e = s.insert_exam(&exam("e")).await.unwrap().id();
    s.enqueue_jobs(&[job(e, "9.1", "a", 1, 5)]).await.unwrap();
    let j = s.claim_jobs("gone", &archives(&["a"]), 1, Duration::from_millis(1)).await.unwrap().remove(0);
    let (tx, rx) = tokio::sync::watch::channel(false);
    let hk = priorfetch_store::housekeeping::Housekeeping {
        rescue: cron::Schedule::from_str("* * * * * *").unwrap(), // every second
        purge: cron::Schedule::from_str("0 0 0 1 1 * 2099").unwrap(),
        retention: Duration::from_secs(3600),
    };
    let task = tokio::spawn(hk.run(s.clone(), rx));
    let mut state = JobState::Running;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        state = s.job(j.id).await.unwrap().unwrap().state;
        if state == JobState::Retryable {
            break;
        }
    }
    assert_eq!(state, JobState::Retryable);
    tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(2), task).await.expect("stops on shutdown").unwrap();
}

#[tokio::test]
async fn operator_retry_and_cancel() {
    let db = TestDb::sqlite();
    let s = store(&db).await;
    s.sync_archive_slots(&[("a".into(), 1)]).await.unwrap();
    let e = s.insert_exam(&exam("e")).await.unwrap().id();
    s.enqueue_jobs(&[job(e, "10.1", "a", 1, 5), job(e, "10.2", "a", 1, 5)]).await.unwrap();
    let j = s.claim_jobs("w", &archives(&["a"]), 1, LEASE).await.unwrap().remove(0);
    assert!(!s.retry_now(j.id).await.unwrap(), "a running job is not reset");
    let failed = Finish {
        state: JobState::Failed,
        counts: Counts::default(),
        last_status: Some(0xA801),
        error: Some("unknown move destination".into()),
    };
    s.finish_job(j.id, "w", &failed).await.unwrap();
    assert!(s.retry_now(j.id).await.unwrap());
    let again = s.job(j.id).await.unwrap().unwrap();
    assert_eq!((again.state.as_str(), again.attempt), ("available", 0));
    let other = s.list_jobs(Some(JobState::Available), 10).await.unwrap();
    assert_eq!(other.len(), 2);
    assert!(s.cancel_job(other[0].id).await.unwrap());
    assert!(!s.cancel_job(other[0].id).await.unwrap(), "already cancelled");
}
