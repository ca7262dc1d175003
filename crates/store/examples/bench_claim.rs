//! Claim benchmark on a real Postgres: `scripts/bench-claim` (prints figures; not a test).
//!
//! Fills `retrieve_jobs` with 1,000,000 open jobs over 20 archives (caps of 8), then
//! `WORKERS` claimers, each with its own connection pool as separate processes would
//! have, claim and finish jobs as fast as they can. Reports claim latency p50/p99/max
//! and claim+finish throughput for each claim size in `BENCH_BATCHES` (default 1 and 10 jobs).

use priorfetch_store::{Counts, Finish, JobState, Store};
use priorfetch_testkit::bench::env_or;
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
    // A table that has been in service is vacuumed (all-visible, hint bits set); a freshly
    // bulk-loaded one is not, and its first readers would pay for that instead.
    conn.execute_unprepared("VACUUM ANALYZE retrieve_jobs").await?;
    // The migration tunes autovacuum for the queue tables, but a server may have it off
    // (this machine's CI Postgres does): then each run starts after a VACUUM, as
    // autovacuum would have run between them.
    let autovacuum = conn
        .query_one_raw(sea_orm::Statement::from_string(sea_orm::DbBackend::Postgres, "SHOW autovacuum"))
        .await?
        .and_then(|r| r.try_get_by_index::<String>(0).ok())
        .unwrap_or_default();
    let batches: Vec<u32> = std::env::var("BENCH_BATCHES")
        .unwrap_or_else(|_| "1,10".into())
        .split(',')
        .filter_map(|b| b.trim().parse().ok())
        .collect();
    println!(
        "bench-claim: {rows} open jobs over {ARCHIVES} archives (cap {CAP} each) loaded in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    println!(
        "bench-claim: {workers} claimers, each its own connection pool; {per_run} jobs claimed+finished per run; synchronous_commit={}; autovacuum={autovacuum}{}",
        if async_commit { "off" } else { "on" },
        if autovacuum == "on" { "" } else { " (VACUUM before each run instead)" }
    );

    for batch in batches {
        if autovacuum != "on" {
            conn.execute_unprepared("VACUUM retrieve_jobs, archive_slots").await?;
        }
        // Each run starts right after a checkpoint, not in the middle of one (needs a
        // superuser or pg_checkpoint; without it runs merely vary more).
        let _ = conn.execute_unprepared("CHECKPOINT").await;
        let mut tasks = Vec::new();
        let (cpu_before, own_before) = (cpu_ticks(), own_cpu_ticks());
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
        let cpu = cpu_ticks().zip(cpu_before).map(|(after, before)| after.since(&before));
        let own = own_cpu_ticks().zip(own_before).map(|(after, before)| after - before).unwrap_or_default();
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
        if let Some(cpu) = cpu {
            // Whether the machine or the design is the limit: near 100% busy, more claims
            // per second need less CPU per job, not more claimers.
            println!(
                "bench-claim: batch={batch:<3} cpu busy {:.0}% of {} cores ({:.0}% in iowait), {:.2} ms of CPU per job, \
                 {:.2} ms of it in the claimers (the rest: Postgres, the OS)",
                cpu.busy_share() * 100.0,
                cpu.cores,
                cpu.iowait_share() * 100.0,
                cpu.busy_seconds() * 1000.0 / jobs.max(1) as f64,
                own as f64 * 10.0 / jobs.max(1) as f64,
            );
        }
    }
    Ok(())
}

/// Machine-wide CPU time from `/proc/stat` (Linux), in clock ticks.
#[derive(Debug, Clone, Copy)]
struct CpuTicks {
    busy: u64,
    idle: u64,
    iowait: u64,
    cores: usize,
}

impl CpuTicks {
    fn since(&self, before: &CpuTicks) -> CpuTicks {
        CpuTicks {
            busy: self.busy - before.busy,
            idle: self.idle - before.idle,
            iowait: self.iowait - before.iowait,
            cores: self.cores,
        }
    }
    fn total(&self) -> f64 {
        (self.busy + self.idle + self.iowait).max(1) as f64
    }
    fn busy_share(&self) -> f64 {
        self.busy as f64 / self.total()
    }
    fn iowait_share(&self) -> f64 {
        self.iowait as f64 / self.total()
    }
    /// Busy CPU seconds (USER_HZ is 100 on Linux).
    fn busy_seconds(&self) -> f64 {
        self.busy as f64 / 100.0
    }
}

/// This process's user + system CPU ticks (`/proc/self/stat` fields 14 and 15).
fn own_cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces: count from the closing parenthesis.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn cpu_ticks() -> Option<CpuTicks> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cores = stat.lines().filter(|l| l.starts_with("cpu") && !l.starts_with("cpu ")).count();
    let fields: Vec<u64> = stat.lines().next()?.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal ...
    let (idle, iowait) = (*fields.get(3)?, *fields.get(4)?);
    let busy = fields.iter().take(8).sum::<u64>() - idle - iowait;
    Some(CpuTicks { busy, idle, iowait, cores })
}
