//! Recovery after a worker dies (kill -9, OOM, lost host): its jobs, archive slots and
//! planning exams must be claimable again within 15 s, either because the same identity
//! restarts (hand-back at start-up) or because its heartbeat expires (rescuer). Against
//! a real Postgres, with the heartbeat and rescue settings of config/priorfetch.toml.

use chrono::{Duration as Days, Utc};
use priorfetch_store::housekeeping::Housekeeping;
use priorfetch_store::{ExamPriority, RetrieveMethod};
use priorfetch_store::{HeartbeatOptions, NewExam, NewJob, RescueScope, Store};
use priorfetch_testkit::db::{TestDb, init_test_log};
use std::str::FromStr;
use std::time::{Duration, Instant};

/// `queue.heartbeat`, `queue.dead_after` and `queue.lease` defaults.
const BEAT: HeartbeatOptions =
    HeartbeatOptions { every: Duration::from_secs(2), dead_after: Duration::from_secs(6), exam_lease: None };
const LEASE: Duration = Duration::from_secs(30);
const TARGET: Duration = Duration::from_secs(15);

async fn store() -> (TestDb, Store) {
    init_test_log();
    let db = TestDb::postgres().await;
    let store = Store::connect(&db.url, "", 8).await.expect("connect");
    store.migrate().await.expect("migrate");
    store.sync_archive_slots(&[("arch".into(), 2)]).await.expect("slots");
    (db, store)
}

fn new_exam(key: &str) -> NewExam {
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
        priority: ExamPriority::Stat,
        trace_parent: None,
    }
}

/// Two running jobs holding both slots of `arch`, claimed by `worker`; returns their exam.
async fn two_running_jobs(store: &Store, worker: &str) -> i64 {
    let exam = store.insert_exam(&new_exam("jobs")).await.unwrap().id();
    store.set_exam_status(exam, priorfetch_store::ExamStatus::Planned).await.unwrap(); // not for the planner
    let jobs: Vec<NewJob> = ["1.2.3", "1.2.4"].iter().map(|study| move_job(exam, study, 3)).collect();
    store.enqueue_jobs(&jobs).await.unwrap();
    assert_eq!(store.claim_jobs(worker, &["arch".into()], 2, LEASE).await.unwrap().len(), 2);
    exam
}

/// A due C-MOVE job from `arch` for one instance.
fn move_job(exam_id: i64, study: &str, max_attempts: i32) -> NewJob {
    NewJob {
        exam_id,
        study_instance_uid: study.into(),
        archive: "arch".into(),
        method: RetrieveMethod::Move,
        destination: "DEST".into(),
        priority: 0,
        not_before: Utc::now() - Days::seconds(1),
        deadline: None,
        max_attempts,
        expected_instances: Some(1),
    }
}

async fn busy_slots(store: &Store) -> i64 {
    use sea_orm::ConnectionTrait;
    let stmt = sea_orm::Statement::from_string(
        store.backend(),
        "SELECT count(*) AS n FROM archive_slots WHERE job_id IS NOT NULL",
    );
    let row = store.connection().query_one_raw(stmt).await.unwrap().unwrap();
    row.try_get::<i64>("", "n").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_workers_jobs_slots_and_exams_are_claimable_again_within_15_s() {
    let (_db, store) = store().await;
    // The survivor's housekeeping, on the default rescue schedule (every 2 s).
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let housekeeping = Housekeeping {
        rescue: cron::Schedule::from_str("*/2 * * * * *").unwrap(),
        purge: cron::Schedule::from_str("0 0 3 1 1 *").unwrap(),
        retention: Duration::from_secs(3600),
    };
    let rescuer = tokio::spawn(housekeeping.run(store.clone(), stop_rx));

    let (mover_beat, _) = store.start_worker("host-a/mover", BEAT).await;
    let (planner_beat, _) =
        store.start_worker("host-a/planner", HeartbeatOptions { exam_lease: Some(LEASE), ..BEAT }).await;
    two_running_jobs(&store, "host-a/mover").await;
    let planned = store.insert_exam(&new_exam("planning")).await.unwrap().id();
    assert_eq!(store.claim_exams("host-a/planner", 10, LEASE).await.unwrap().len(), 1);
    tokio::time::sleep(Duration::from_secs(3)).await; // alive for a while: beats arrive

    // kill -9: the heartbeats stop, the leases (30 s) are still valid.
    drop((mover_beat, planner_beat));
    let died = Instant::now();
    assert!(store.claim_jobs("host-b/mover", &["arch".into()], 2, LEASE).await.unwrap().is_empty());
    let (mut jobs, mut exams) = (0, 0);
    while (jobs < 2 || exams < 1) && died.elapsed() < Duration::from_secs(25) {
        jobs += store.claim_jobs("host-b/mover", &["arch".into()], 2, LEASE).await.unwrap().len();
        exams += store
            .claim_exams("host-b/planner", 10, LEASE)
            .await
            .unwrap()
            .iter()
            .filter(|e| e.exam.id == planned)
            .count();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let took = died.elapsed();
    let _ = stop.send(true);
    let _ = rescuer.await;
    println!("dead worker's 2 jobs, 2 slots and 1 exam claimable again after {took:?}");
    assert_eq!((jobs, exams), (2, 1), "after {took:?}");
    assert!(took < TARGET, "recovery took {took:?}");
    // The last beat was at most 2 s before the kill, so it expires 4-6 s after it.
    assert!(took >= Duration::from_secs(3), "rescued before its heartbeat could have expired: {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_worker_hands_back_its_predecessors_claims_at_once() {
    let (_db, store) = store().await;
    let (first_life, _) = store.start_worker("host-a/mover", BEAT).await;
    let exam = two_running_jobs(&store, "host-a/mover").await;
    // One of them was cancelled by an operator while running: its slot stays taken until
    // its worker sends C-CANCEL, which the crashed worker never will.
    let cancelled = store.jobs_of_exam(exam).await.unwrap()[0].id;
    assert!(store.cancel_job(cancelled).await.unwrap());
    let (planner_life, _) = store.start_worker("host-a/planner", BEAT).await;
    let planned = store.insert_exam(&new_exam("planning")).await.unwrap().id();
    assert_eq!(store.claim_exams("host-a/planner", 10, LEASE).await.unwrap().len(), 1);
    drop((first_life, planner_life)); // kill -9

    let restarted = Instant::now();
    let (_second_life, report) = store.start_worker("host-a/mover", BEAT).await;
    let (_planner_again, planner_report) = store.start_worker("host-a/planner", BEAT).await;
    let report = report.unwrap();
    let claimed = store.claim_jobs("host-a/mover", &["arch".into()], 2, LEASE).await.unwrap();
    let took = restarted.elapsed();
    println!("restart handed back {report:?} and the exam in {took:?}");
    assert_eq!((report.retried, report.slots_freed), (1, 2), "{report:?}");
    assert_eq!(planner_report.unwrap().exams_released, 1);
    assert_eq!(claimed.len(), 1, "the job that was running is claimable; the cancelled one stays cancelled");
    assert_ne!(claimed[0].id, cancelled);
    assert_eq!(busy_slots(&store).await, 1, "only the new claim holds a slot");
    let exam_row = store.exam(planned).await.unwrap().unwrap();
    assert_eq!((exam_row.status.as_str(), exam_row.worker), ("received", None));
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn right_after_its_own_outage_the_rescuer_judges_by_leases_only() {
    let (_db, store) = store().await;
    let short = HeartbeatOptions { dead_after: Duration::from_millis(300), ..BEAT };
    store.beat("host-a/mover", &short).await.unwrap();
    two_running_jobs(&store, "host-a/mover").await;
    tokio::time::sleep(Duration::from_millis(500)).await; // its heartbeat lapsed, the lease did not
    let leases_only = store.rescue(RescueScope::Expired { dead_workers: false }).await.unwrap();
    assert_eq!((leases_only.retried, leases_only.slots_freed), (0, 0), "a lapsed heartbeat alone is not enough then");
    let full = store.rescue_expired().await.unwrap();
    assert_eq!((full.retried, full.slots_freed), (2, 2));
    assert_eq!(busy_slots(&store).await, 0);
}

/// kill -9 between a job's finish and the exam's roll-up, or a last job failed by the
/// rescuer: the exam must still end final (not `fetching` for good), counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exams_whose_last_job_ended_without_a_roll_up_are_settled_once() {
    use priorfetch_store::{Counts, ExamStatus, Finish, JobState};
    let (_db, store) = store().await;
    let exam = two_running_jobs(&store, "host-a/mover").await;
    let jobs = store.jobs_of_exam(exam).await.unwrap();
    let done = Finish { state: JobState::Completed, counts: Counts::default(), last_status: Some(0), error: None };
    assert!(store.finish_job(jobs[0].id, "host-a/mover", &done).await.unwrap());
    assert_eq!(store.roll_up_exam(exam).await.unwrap(), None, "one job still open");
    assert_eq!(store.exam(exam).await.unwrap().unwrap().status, ExamStatus::Fetching);
    // The second finish lands; the process dies before its roll-up.
    assert!(store.finish_job(jobs[1].id, "host-a/mover", &done).await.unwrap());
    assert_eq!(store.exam(exam).await.unwrap().unwrap().status, ExamStatus::Fetching);

    let settled = store.settle_exams(100).await.unwrap();
    assert_eq!(settled.iter().map(|r| (r.exam_id, r.status)).collect::<Vec<_>>(), [(exam, ExamStatus::Complete)]);
    assert_eq!(store.exam(exam).await.unwrap().unwrap().status, ExamStatus::Complete);
    assert!(store.settle_exams(100).await.unwrap().is_empty(), "settled once");

    // A running job out of attempts whose worker died: the rescuer fails it, and the
    // settle rolls its exam up as failed.
    let other = store.insert_exam(&new_exam("rescued")).await.unwrap().id();
    store.set_exam_status(other, ExamStatus::Fetching).await.unwrap();
    store.enqueue_jobs(&[move_job(other, "1.2.9", 1)]).await.unwrap();
    assert_eq!(store.claim_jobs("host-b/mover", &["arch".into()], 1, LEASE).await.unwrap().len(), 1);
    let report = store.reclaim_worker("host-b/mover").await.unwrap();
    assert_eq!(report.failed, 1, "{report:?}");
    let settled = store.settle_exams(100).await.unwrap();
    assert_eq!(settled.iter().map(|r| (r.exam_id, r.status)).collect::<Vec<_>>(), [(other, ExamStatus::Failed)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_rescuer_at_a_time_across_replicas() {
    use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};
    let (db, store) = store().await;
    let exam = store.insert_exam(&new_exam("leader")).await.unwrap().id();
    store.set_exam_status(exam, priorfetch_store::ExamStatus::Planned).await.unwrap();
    store.enqueue_jobs(&[move_job(exam, "1.2.7", 3)]).await.unwrap();
    assert_eq!(
        store.claim_jobs("host-a/mover", &["arch".into()], 1, Duration::from_millis(10)).await.unwrap().len(),
        1
    );
    tokio::time::sleep(Duration::from_millis(100)).await; // the lease expired

    // Another replica's rescuer is mid-tick: it holds the rescuer's advisory lock.
    let other = Database::connect(format!("{}?max_connections=1", db.url)).await.unwrap();
    let lock =
        |f: &str| Statement::from_string(DbBackend::Postgres, format!("SELECT {f}({})", 0x7066_7265_7363_7565_i64));
    other.execute_raw(lock("pg_advisory_lock")).await.unwrap();
    let expired = RescueScope::Expired { dead_workers: false };
    assert_eq!(store.rescue(expired).await.unwrap().retried, 0, "this tick is the other rescuer's");
    other.execute_raw(lock("pg_advisory_unlock")).await.unwrap();
    assert_eq!(store.rescue(expired).await.unwrap().retried, 1, "the next tick rescues");

    // The retention purge likewise: one replica per tick.
    let done = priorfetch_store::Finish {
        state: priorfetch_store::JobState::Completed,
        counts: Default::default(),
        last_status: None,
        error: None,
    };
    store.enqueue_jobs(&[move_job(exam, "1.2.8", 3)]).await.unwrap();
    let claimed = store.claim_jobs("host-b/mover", &["arch".into()], 10, LEASE).await.unwrap();
    assert!(!claimed.is_empty());
    for job in &claimed {
        assert!(store.finish_job(job.id, "host-b/mover", &done).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let purge_lock =
        |f: &str| Statement::from_string(DbBackend::Postgres, format!("SELECT {f}({})", 0x7066_7075_7267_6500_i64));
    other.execute_raw(purge_lock("pg_advisory_lock")).await.unwrap();
    assert_eq!(store.purge_finished(Duration::from_millis(10)).await.unwrap().jobs, 0, "the other replica purges");
    other.execute_raw(purge_lock("pg_advisory_unlock")).await.unwrap();
    let purged = store.purge_finished(Duration::from_millis(10)).await.unwrap().jobs;
    assert_eq!(purged, claimed.len() as u64, "the next tick purges");
}
