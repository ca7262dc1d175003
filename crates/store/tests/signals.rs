//! The queries behind the readiness and queue signals (`src/signals.rs`), on Postgres and
//! SQLite through the same test bodies; on Postgres also their plans on a queue holding
//! many finished rows.

use chrono::{DateTime, Duration as Days, Utc};
use priorfetch_store::{Counts, ExamPriority, ExamStatus, Finish, JobState, NewExam, NewJob, PlanRecord, PriorRecord};
use priorfetch_store::{HeartbeatOptions, Readiness, RetrieveMethod, RetryPolicy, Store, UpcomingExams};
use priorfetch_testkit::db::{TestDb, init_test_log};
use sea_orm::{ConnectionTrait, DbBackend, Statement, Value};
use std::time::Duration;

priorfetch_testkit::both_databases!(
    upcoming_exams_by_readiness,
    readiness_against_scheduled_time,
    open_jobs_by_archive_with_due_and_oldest,
    live_workers_are_those_not_expired,
);

const LEASE: Duration = Duration::from_secs(60);

async fn store(db: &TestDb) -> Store {
    init_test_log();
    let store = Store::connect(&db.url, "", 8).await.expect("connect");
    store.migrate().await.expect("migrate");
    store.sync_archive_slots(&[("a".into(), 4), ("b".into(), 4)]).await.expect("slots");
    store
}

fn exam(key: &str, scheduled_in: Days) -> NewExam {
    NewExam {
        event_key: key.into(),
        patient_id: "MRN1".into(),
        issuer: None,
        identifiers: Vec::new(),
        accession_number: Some(format!("ACC-{key}")),
        study_instance_uid: None,
        scheduled_at: Some(Utc::now() + scheduled_in),
        modality: Some("CT".into()),
        body_part: None,
        procedure_code: None,
        procedure_text: None,
        priority: ExamPriority::Routine,
        trace_parent: None,
    }
}

fn job(exam_id: i64, uid: &str, archive: &str, not_before_in: Days) -> NewJob {
    NewJob {
        exam_id,
        study_instance_uid: uid.into(),
        archive: archive.into(),
        method: RetrieveMethod::Move,
        destination: "DEST".into(),
        priority: 5,
        not_before: Utc::now() + not_before_in,
        deadline: None,
        max_attempts: 3,
        expected_instances: Some(6),
    }
}

/// An exam scheduled `scheduled_in` from now, planned with one job per `(uid, archive,
/// not_before_in)` (none: planned with nothing to fetch). Returns the exam id.
async fn planned(s: &Store, key: &str, scheduled_in: Days, jobs: &[(&str, &str, Days)]) -> i64 {
    let id = s.insert_exam(&exam(key, scheduled_in)).await.unwrap().id();
    s.set_exam_status(id, ExamStatus::Planning).await.unwrap(); // as a planner's claim does
    let priors = jobs
        .iter()
        .map(|(uid, archive, _)| PriorRecord {
            archive: archive.to_string(),
            study_instance_uid: uid.to_string(),
            study_date: Some("20250101".into()),
            modalities: Some("CT".into()),
            description: None,
            expected_instances: Some(6),
            selected: true,
            reason: "selected by rule 'default'".into(),
        })
        .collect();
    let plan = PlanRecord {
        exam_id: id,
        rule: Some("default".into()),
        queries: serde_json::json!({}),
        gaps: serde_json::json!({}),
        archives: serde_json::json!({}),
        inputs: serde_json::json!([]),
        replan_at: None,
        priors,
        jobs: jobs.iter().map(|(uid, archive, nb)| job(id, uid, archive, *nb)).collect(),
        max_jobs: None,
        refusal: None,
    };
    s.record_plan(&plan).await.unwrap();
    id
}

/// Claims the exam's due jobs as `worker` and ends each in `state`, then rolls the exam up.
async fn finish_all(s: &Store, exam_id: i64, state: JobState) {
    let archives = vec!["a".to_string(), "b".to_string()];
    for j in s.claim_jobs("t/mover", &archives, 50, LEASE).await.unwrap() {
        let counts = Counts { remaining: Some(0), completed: 6, failed: 0, warning: 0 };
        let end = Finish { state, counts, last_status: Some(0), error: None };
        assert!(s.finish_job(j.id, "t/mover", &end).await.unwrap());
    }
    s.roll_up_exam(exam_id).await.unwrap();
}

/// Claims the due jobs and puts each back for a retry after a failed attempt.
async fn fail_attempt(s: &Store) {
    let archives = vec!["a".to_string(), "b".to_string()];
    let policy =
        RetryPolicy { initial: Duration::from_secs(600), factor: 2.0, max: Duration::from_secs(600), jitter: 0.0 };
    for j in s.claim_jobs("t/mover", &archives, 50, LEASE).await.unwrap() {
        s.retry_job(j.id, "t/mover", "association rejected", None, Counts::default(), &policy).await.unwrap();
    }
}

/// A statement with bound values (so SQLite stores times as the store does).
async fn exec(s: &Store, sql: &str, values: Vec<Value>) {
    let sql = if s.is_postgres() { sql.to_string() } else { sql.replace('$', "?") };
    s.connection().execute_raw(Statement::from_sql_and_values(s.backend(), sql, values)).await.unwrap();
}

fn hours(h: i64) -> Days {
    Days::hours(h)
}

async fn upcoming_exams_by_readiness(db: TestDb) {
    let s = store(&db).await;
    let now = Utc::now();
    let upcoming = |s: Store| async move {
        let now = Utc::now();
        s.upcoming_exams(now, now + hours(12), now + hours(1)).await.unwrap()
    };
    // ready: every prior completed; and planned with nothing to fetch
    let done = planned(&s, "done", hours(3), &[("1.1", "a", -Days::seconds(1))]).await;
    finish_all(&s, done, JobState::Completed).await;
    planned(&s, "nothing", hours(3), &[]).await;
    // failed: its only prior failed
    let failed = planned(&s, "failed", hours(4), &[("2.1", "a", -Days::seconds(1))]).await;
    finish_all(&s, failed, JobState::Failed).await;
    // a failed attempt, waiting for its retry: at risk even 6 hours ahead
    planned(&s, "retrying", hours(6), &[("3.1", "b", -Days::seconds(1))]).await;
    fail_attempt(&s).await;
    // on track: jobs waiting for their lead time, or not planned yet
    planned(&s, "later", hours(5), &[("4.1", "a", hours(1))]).await;
    s.insert_exam(&exam("received", hours(8))).await.unwrap();
    assert_eq!(upcoming(s.clone()).await, UpcomingExams { ready: 2, fetching: 2, at_risk: 1, failed: 1 });

    // within the at-risk hour and not ready
    planned(&s, "soon", Days::minutes(30), &[("5.1", "a", Days::minutes(10))]).await;
    // not counted: cancelled, beyond the window, already past
    let cancelled = planned(&s, "cancelled", hours(2), &[("6.1", "a", hours(1))]).await;
    s.cancel_exam(cancelled).await.unwrap();
    planned(&s, "far", hours(20), &[("7.1", "a", hours(9))]).await;
    planned(&s, "past", -hours(1), &[("8.1", "a", hours(9))]).await;
    assert_eq!(upcoming(s.clone()).await, UpcomingExams { ready: 2, fetching: 2, at_risk: 2, failed: 1 });
    // a wider at-risk window takes in the exams on track too
    let wide = s.upcoming_exams(now, now + hours(12), now + hours(12)).await.unwrap();
    assert_eq!((wide.at_risk, wide.fetching), (4, 0));
}

async fn readiness_against_scheduled_time(db: TestDb) {
    let s = store(&db).await;
    let now = Utc::now();
    let set_time = |table: &'static str, column: &'static str, id: i64, at: DateTime<Utc>| {
        let s = s.clone();
        async move {
            let key = if table == "exam_plans" { "exam_id" } else { "id" };
            exec(&s, &format!("UPDATE {table} SET {column} = $1 WHERE {key} = $2"), vec![at.into(), id.into()]).await
        }
    };
    // in time: complete an hour before the exam
    let early = planned(&s, "early", -hours(2), &[("1.1", "a", -Days::seconds(1))]).await;
    finish_all(&s, early, JobState::Completed).await;
    set_time("exams", "ready_at", early, now - hours(3)).await;
    // in time: planned with nothing to fetch before the exam
    let nothing = planned(&s, "nothing", -hours(1), &[]).await;
    set_time("exam_plans", "planned_at", nothing, now - hours(5)).await;
    // late: complete only now, an hour after the exam
    let after = planned(&s, "after", -hours(1), &[("2.1", "a", -Days::seconds(1))]).await;
    finish_all(&s, after, JobState::Completed).await;
    // late: the exam's time passed with its prior still missing (not final yet)
    planned(&s, "missing", -Days::minutes(30), &[("3.1", "b", hours(1))]).await;
    s.insert_exam(&exam("unplanned", -Days::minutes(5))).await.unwrap();
    // failed
    let failed = planned(&s, "failed", -hours(3), &[("4.1", "a", -Days::seconds(1))]).await;
    finish_all(&s, failed, JobState::Partial).await;
    // not counted: cancelled, older than the window, still ahead
    let cancelled = planned(&s, "cancelled", -hours(2), &[("5.1", "a", hours(1))]).await;
    s.cancel_exam(cancelled).await.unwrap();
    planned(&s, "old", -hours(30), &[]).await;
    planned(&s, "ahead", hours(1), &[]).await;

    let now = Utc::now();
    let got = s.exam_readiness(now - hours(24), now).await.unwrap();
    assert_eq!(got, Readiness { in_time: 2, late: 3, failed: 1 });
    // the missing prior arrives after the exam: still late, now as a final status
    let missing = s.exam_by_key("missing").await.unwrap().unwrap().exam.id;
    exec(&s, "UPDATE retrieve_jobs SET not_before = $1 WHERE exam_id = $2", vec![now.into(), missing.into()]).await;
    finish_all(&s, missing, JobState::Completed).await;
    assert_eq!(s.exam(missing).await.unwrap().unwrap().status, ExamStatus::Complete);
    let got = s.exam_readiness(now - hours(24), Utc::now()).await.unwrap();
    assert_eq!(got, Readiness { in_time: 2, late: 3, failed: 1 });
}

async fn open_jobs_by_archive_with_due_and_oldest(db: TestDb) {
    let s = store(&db).await;
    let set = |uid: &'static str, state: &'static str, not_before: DateTime<Utc>| {
        let s = s.clone();
        async move {
            let sql = "UPDATE retrieve_jobs SET state = $1, not_before = $2 WHERE study_instance_uid = $3";
            exec(&s, sql, vec![state.into(), not_before.into(), uid.into()]).await
        }
    };
    let now = Utc::now();
    // a: not due yet; due for 10 minutes (available); due for 2 minutes (a due
    // `scheduled` job, claimed directly); a finished job that is not counted
    planned(&s, "a", hours(10), &[("1.1", "a", hours(1)), ("1.2", "a", -Days::minutes(10))]).await;
    planned(&s, "a2", hours(10), &[("1.3", "a", hours(1)), ("1.4", "a", hours(1))]).await;
    set("1.3", "scheduled", now - Days::minutes(2)).await;
    set("1.4", "completed", now - Days::minutes(20)).await;
    // b: one running (it holds a slot), one available, one waiting for its backoff
    planned(&s, "b", hours(10), &[("2.1", "b", -Days::seconds(1))]).await;
    assert_eq!(s.claim_jobs("t/mover", &["b".to_string()], 1, LEASE).await.unwrap().len(), 1);
    planned(&s, "b2", hours(10), &[("2.2", "b", -Days::minutes(3)), ("2.3", "b", hours(1))]).await;
    set("2.3", "retryable", now + Days::minutes(5)).await;
    // c (no slots: not configured any more): a retry due for 4 minutes
    planned(&s, "c", hours(10), &[("3.1", "c", hours(1))]).await;
    set("3.1", "retryable", now - Days::minutes(4)).await;

    let jobs = s.open_jobs(Utc::now()).await.unwrap();
    let archives: Vec<&str> = jobs.iter().map(|j| j.archive.as_str()).collect();
    assert_eq!(archives, ["a", "b", "c"]);
    let counts = |i: usize| (jobs[i].scheduled, jobs[i].available, jobs[i].running, jobs[i].retryable, jobs[i].due);
    assert_eq!(counts(0), (2, 1, 0, 0, 2), "a: {:?}", jobs[0]);
    assert_eq!(counts(1), (0, 1, 1, 1, 1), "b: {:?}", jobs[1]);
    assert_eq!(counts(2), (0, 0, 0, 1, 1), "c: {:?}", jobs[2]);
    let age = |i: usize| (Utc::now() - jobs[i].oldest_due.unwrap()).num_seconds();
    assert!((599..=700).contains(&age(0)), "a's oldest due job waits 10 minutes: {}", age(0));
    assert!((179..=280).contains(&age(1)), "b: {}", age(1));
    assert!((239..=340).contains(&age(2)), "c: {}", age(2));
}

async fn live_workers_are_those_not_expired(db: TestDb) {
    let s = store(&db).await;
    let beat =
        HeartbeatOptions { every: Duration::from_secs(2), dead_after: Duration::from_secs(60), exam_lease: None };
    for name in ["h1/mover/10", "north/planner", "h1/listener/11", "h2/mover/12"] {
        s.beat(name, &beat).await.unwrap();
    }
    exec(&s, "UPDATE workers SET expires_at = $1 WHERE name = 'h2/mover/12'", vec![(Utc::now() - hours(1)).into()])
        .await;
    let mut alive = s.live_workers(Utc::now()).await.unwrap();
    alive.sort();
    assert_eq!(alive, ["h1/listener/11", "h1/mover/10", "north/planner"]);
    let roles: Vec<_> = alive.iter().filter_map(|n| priorfetch_store::role_of_identity(n)).collect();
    assert_eq!(roles, ["listener", "mover", "planner"]);
}

/// On a queue of 200,000 finished jobs and 100,000 past exams with their plans, the
/// signal queries read only the open rows: Postgres plans them on the claim's partial
/// index and on `exams_scheduled_idx`, never a sequential scan of those tables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_read_only_open_rows_postgres() {
    let db = TestDb::postgres().await;
    let s = store(&db).await;
    let conn = s.connection();
    conn.execute_unprepared(
        "INSERT INTO exams (event_key, patient_id, scheduled_at, priority, status, created_at, updated_at) \
         SELECT 'bulk-' || i, 'P', now() - interval '40 days' + i * interval '20 seconds', 'routine', 'complete', now(), now() \
         FROM generate_series(1, 100000) i",
    )
    .await
    .unwrap();
    conn.execute_unprepared(
        "INSERT INTO retrieve_jobs (exam_id, study_instance_uid, archive, method, destination, state, priority, \
           not_before, attempt, max_attempts, completed, failed, warning, errors, created_at, updated_at, finished_at, received) \
         SELECT (SELECT min(id) FROM exams) + (i % 100000), '1.2.' || i, CASE WHEN i % 2 = 0 THEN 'a' ELSE 'b' END, \
           'move', 'DEST', 'completed', 5, now() - interval '30 days', 1, 3, 6, 0, 0, '[]', now(), now(), now(), 6 \
         FROM generate_series(1, 200000) i",
    )
    .await
    .unwrap();
    conn.execute_unprepared(
        "INSERT INTO exam_plans (exam_id, queries, gaps, attempts, planned_at) \
         SELECT id, '{}', '{}', 1, now() - interval '41 days' FROM exams",
    )
    .await
    .unwrap();
    planned(&s, "open", hours(2), &[("9.1", "a", -Days::minutes(1)), ("9.2", "b", hours(1))]).await;
    conn.execute_unprepared("ANALYZE").await.unwrap();

    let now = Utc::now();
    let jobs = s.open_jobs(now).await.unwrap();
    assert_eq!(jobs.iter().map(|j| (j.scheduled + j.available, j.due)).collect::<Vec<_>>(), [(1, 1), (1, 0)]);
    let upcoming = s.upcoming_exams(now, now + hours(12), now + hours(1)).await.unwrap();
    assert_eq!(upcoming.fetching, 1);
    // the statements as the store sends them (generic plans, as the pool runs them)
    for (what, sql, index) in priorfetch_store::signal_statements() {
        let plan = explain(&s, &sql).await;
        assert!(plan.contains(index), "{what} uses {index}:\n{plan}");
        assert!(
            !["retrieve_jobs", "exams", "exam_plans"].iter().any(|t| plan.contains(&format!("Seq Scan on {t} "))),
            "{what} scans a whole table:\n{plan}"
        );
    }
}

/// EXPLAIN of a prepared statement's generic plan (the pool forces generic plans).
async fn explain(s: &Store, sql: &str) -> String {
    // the highest `$n`: a parameter may be used twice
    let params = sql
        .split('$')
        .skip(1)
        .filter_map(|rest| rest.chars().take_while(char::is_ascii_digit).collect::<String>().parse::<usize>().ok())
        .max()
        .unwrap_or(0);
    let types = if params == 0 { String::new() } else { format!("({})", vec!["timestamptz"; params].join(", ")) };
    let conn = s.connection();
    // one connection: PREPARE and EXECUTE must meet on the same session
    let txn = sea_orm::TransactionTrait::begin(conn).await.unwrap();
    txn.execute_unprepared("SET LOCAL plan_cache_mode = force_generic_plan").await.unwrap();
    txn.execute_unprepared(&format!("PREPARE signal_probe {types} AS {sql}")).await.unwrap();
    let args = vec!["now()"; params].join(", ");
    let args = if params == 0 { String::new() } else { format!("({args})") };
    let rows = txn
        .query_all_raw(Statement::from_string(DbBackend::Postgres, format!("EXPLAIN EXECUTE signal_probe{args}")))
        .await
        .unwrap();
    txn.execute_unprepared("DEALLOCATE signal_probe").await.unwrap();
    txn.commit().await.unwrap();
    rows.iter().map(|r| r.try_get_by_index::<String>(0).unwrap()).collect::<Vec<_>>().join("\n")
}
