//! Claim benchmark on a real Postgres: `scripts/bench-claim` (prints figures; not a test).
//!
//! Fills `retrieve_jobs` with 1,000,000 open jobs over 20 archives (caps of 8), then
//! `WORKERS` claimers, each with its own connection pool as separate processes would
//! have, claim and finish jobs as fast as they can. Reports claim latency p50/p99/max
//! and claim+finish throughput, for claims of 1 job and of 10 jobs.

use chrono::Utc;
use priorfetch_testkit::bench::env_or;
use priorfetch_store::{Counts, Finish, JobState, Store};
use sea_orm::ConnectionTrait;
use std::time::{Duration, Instant};

const ROWS: i64 = 1_000_000;
const ARCHIVES: usize = 20;
const CAP: u32 = 8;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rows: i64 = env_or("BENCH_ROWS", ROWS);
    let workers: usize = env_or("BENCH_WORKERS", 4);
    let per_run: usize = env_or("BENCH_JOBS", 20_000);
    let db = priorfetch_testkit::db::TestDb::postgres().await;
    let store = Store::connect(&db.url, "", 4).await?;
    store.migrate().await?;
    // BENCH_ASYNC_COMMIT=1: commits do not wait for the WAL flush, to show how much of a
    // claim is the disk's fsync rather than the query.
    let async_commit = std::env::var("BENCH_ASYNC_COMMIT").is_ok_and(|v| v == "1");
    let name = db.url.rsplit('/').next().unwrap_or_default().to_string();
    if async_commit {
        store.connection().execute_unprepared(&format!("ALTER DATABASE {name} SET synchronous_commit = off")).await?;
    }
    if let Ok(mode) = std::env::var("BENCH_PLAN_CACHE_MODE") {
        store.connection().execute_unprepared(&format!("ALTER DATABASE {name} SET plan_cache_mode = {mode}")).await?;
    }
    let archives: Vec<String> = (0..ARCHIVES).map(|i| format!("archive-{i}")).collect();
    store.sync_archive_slots(&archives.iter().map(|a| (a.clone(), CAP)).collect::<Vec<_>>()).await?;

    let started = Instant::now();
    let conn = store.connection();
    conn.execute_unprepared(
        "INSERT INTO exams (event_key, patient_id, priority, status, created_at, updated_at) \
         VALUES ('bench', 'P', 'routine', 'planned', now(), now())",
    )
    .await?;
    conn.execute_unprepared(&format!(
        "INSERT INTO retrieve_jobs (exam_id, study_instance_uid, archive, method, destination, state, priority, \
           not_before, deadline, attempt, max_attempts, completed, failed, warning, errors, created_at, updated_at) \
         SELECT (SELECT id FROM exams LIMIT 1), '1.2.' || g, 'archive-' || (g % {ARCHIVES}), 'move', 'DEST', \
           'available', (g % 5)::int, now() - interval '1 minute', now() + (g % 1000) * interval '1 minute', \
           0, 6, 0, 0, 0, '[]'::jsonb, now(), now() \
         FROM generate_series(1, {rows}) g"
    ))
    .await?;
    conn.execute_unprepared("ANALYZE retrieve_jobs").await?;
    println!("bench-claim: {rows} open jobs over {ARCHIVES} archives (cap {CAP} each) loaded in {:.1} s", started.elapsed().as_secs_f64());
    println!(
        "bench-claim: {workers} claimers, each its own connection pool; {per_run} jobs claimed+finished per run; synchronous_commit={}",
        if async_commit { "off" } else { "on" }
    );

    for batch in [1u32, 10] {
        let mut tasks = Vec::new();
        let begin = Instant::now();
        for w in 0..workers {
            let st = Store::connect(&db.url, "", 2).await?;
            let archives = archives.clone();
            let quota = per_run / workers;
            tasks.push(tokio::spawn(async move {
                let mut hist = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
                let worker = format!("bench-{w}");
                let mut done = 0;
                while done < quota {
                    let t = Instant::now();
                    let jobs = st.claim_jobs(&worker, &archives, batch, Duration::from_secs(300)).await?;
                    hist.record(t.elapsed().as_micros() as u64).ok();
                    for j in jobs {
                        let finish = Finish {
                            state: JobState::Completed,
                            counts: Counts { remaining: Some(0), completed: 1, failed: 0, warning: 0 },
                            last_status: Some(0),
                            error: None,
                        };
                        st.finish_job(j.id, &worker, &finish).await?;
                        done += 1;
                    }
                }
                anyhow::Ok((hist, done))
            }));
        }
        let mut all = hdrhistogram::Histogram::<u64>::new(3)?;
        let mut jobs = 0;
        for t in tasks {
            let (h, n) = t.await??;
            all.add(h)?;
            jobs += n;
        }
        let secs = begin.elapsed().as_secs_f64();
        println!(
            "bench-claim: batch={batch:<3} claims={:<6} jobs={jobs:<6} claim p50={:.2} ms p99={:.2} ms max={:.2} ms | \
             claims/s={:.0} claim+finish jobs/s={:.0}",
            all.len(),
            all.value_at_quantile(0.5) as f64 / 1000.0,
            all.value_at_quantile(0.99) as f64 / 1000.0,
            all.max() as f64 / 1000.0,
            all.len() as f64 / secs,
            jobs as f64 / secs,
        );
    }
    let _ = Utc::now();
    Ok(())
}
