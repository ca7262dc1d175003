//! Planning benchmark: `scripts/bench-plan` (prints figures; not a test).
//!
//! Three Orthanc archives hold the studies of `BENCH_PATIENTS` patients (two per archive
//! per patient). `BENCH_EXAMS` exams (default 1,000) of those patients are inserted into a
//! fresh Postgres database and a running [`Planner`] plans them all (3 STUDY-level C-FINDs
//! per exam). Run twice: associations reused (the default) and one association per
//! C-FIND. Prints exams planned/s, C-FIND/s and associations opened.

use chrono::Utc;
use priorfetch_config::{Config, Sources};
use priorfetch_domain::ExamPriority;
use priorfetch_planner::{Planner, PlannerOptions, metrics};
use priorfetch_store::{ExamStatus, NewExam, Store};
use priorfetch_testkit::bench::env_or;
use priorfetch_testkit::dicom::{Orthanc, StudySpec, load_studies};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn cfinds(archives: &[&str]) -> u64 {
    archives
        .iter()
        .flat_map(|a| {
            ["ok", "capped", "failed"].map(|o| metrics::CFIND_DURATION.with_label_values(&[*a, o]).get_sample_count())
        })
        .sum()
}

async fn round(config: Arc<Config>, reuse: bool, exams: usize, patients: usize) -> anyhow::Result<()> {
    let db = priorfetch_testkit::db::TestDb::postgres().await;
    let store = Store::connect(&db.url, "", 8).await?;
    store.migrate().await?;
    let scheduled = Utc::now() + chrono::Duration::hours(24);
    let events: Vec<NewExam> = (0..exams)
        .map(|i| NewExam {
            event_key: format!("bench-{i}"),
            patient_id: format!("BENCH{}", i % patients),
            issuer: None,
            identifiers: Vec::new(),
            accession_number: Some(format!("BACC{i}")),
            study_instance_uid: None,
            scheduled_at: Some(scheduled),
            modality: Some("CT".into()),
            body_part: Some("CHEST".into()),
            procedure_code: None,
            procedure_text: None,
            priority: ExamPriority::Routine,
            trace_parent: None,
        })
        .collect();
    store.insert_exams(&events).await?;
    let names = ["arch-a", "arch-b", "arch-c"];
    let before = cfinds(&names);
    let planner = Planner::with_options(store.clone(), config, PlannerOptions { reuse_associations: reuse });
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let task = tokio::spawn(planner.clone().run(shutdown));
    loop {
        let counts = store.exam_counts().await?;
        let planned = counts.iter().find(|(s, _)| *s == ExamStatus::Planned).map_or(0, |(_, n)| *n);
        if planned as usize >= exams {
            break;
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(600), "only {planned} of {exams} planned in 10 min");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    stop.send(true)?;
    task.await?;
    let finds = cfinds(&names) - before;
    let opened: u64 = planner.associations_opened().values().sum();
    let jobs = store.job_counts().await?.iter().map(|(_, n)| *n).sum::<i64>();
    println!(
        "{:<28} {:>6} exams in {:>6.2} s: {:>7.1} exams planned/s, {:>7.1} C-FIND/s ({finds} C-FINDs, {opened} associations, {jobs} jobs)",
        if reuse { "associations reused" } else { "one association per C-FIND" },
        exams,
        elapsed,
        exams as f64 / elapsed,
        finds as f64 / elapsed
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let exams = env_or::<usize>("BENCH_EXAMS", 1000);
    let patients = env_or::<usize>("BENCH_PATIENTS", 50);
    let concurrency = env_or::<usize>("BENCH_CONCURRENCY", 8);
    let our_ae = "PRIORFETCH";
    let mut archives = Vec::new();
    let mut toml = String::new();
    for (i, (name, ae)) in [("arch-a", "ARCHA"), ("arch-b", "ARCHB"), ("arch-c", "ARCHC")].into_iter().enumerate() {
        let orthanc = Orthanc::start(ae, our_ae, &[], None);
        let specs: Vec<StudySpec> = (0..patients)
            .flat_map(|p| {
                (0..2).map(move |k| {
                    let n = (i * 100_000 + p * 10 + k) as u32;
                    StudySpec {
                        study_date: (Utc::now() - chrono::Duration::days(100 + 200 * (k + i) as i64))
                            .format("%Y%m%d")
                            .to_string(),
                        modality: "CT".into(),
                        series: 1,
                        instances_per_series: 1,
                        rows: 8,
                        columns: 8,
                        ..StudySpec::small(&format!("BENCH{p}"), n)
                    }
                })
            })
            .collect();
        load_studies(ae, orthanc.port, &specs);
        toml.push_str(&format!(
            "[[archives]]\nname = '{name}'\nae_title = '{ae}'\nhost = '127.0.0.1'\nport = {}\npriority = {}\nmove_destination = 'DEST'\nmax_associations = 2\n",
            orthanc.port,
            i + 1
        ));
        archives.push(orthanc);
    }
    toml.push_str(&format!("[destination]\ncheck_existing = false\n[planner]\nconcurrency = {concurrency}\n"));
    let config = Arc::new(Config::load(Sources { overlay: Some(&toml), ..Default::default() })?);
    println!(
        "{exams} exams, {patients} patients, 3 Orthanc archives (2 studies per patient each), planner concurrency {concurrency}, max_associations 2"
    );
    // BENCH_REUSE_FIRST=0 runs the one-association round first (order effects: caches).
    let order = if std::env::var("BENCH_REUSE_FIRST").is_ok_and(|v| v == "0") { [false, true] } else { [true, false] };
    for reuse in order {
        round(config.clone(), reuse, exams, patients).await?;
    }
    // The C-FINDs alone (no database): the same 3 x exams queries through the pools.
    for reuse in [true, false] {
        cfinds_only(&config, reuse, exams, patients, concurrency).await;
    }
    Ok(())
}

async fn cfinds_only(config: &Config, reuse: bool, exams: usize, patients: usize, concurrency: usize) {
    use futures::StreamExt;
    use priorfetch_domain::{DateRange, Exam, Needs};
    let mut options = priorfetch_dimse::ScuOptions::new(priorfetch_dimse::AeTitle::parse("PRIORFETCH").unwrap());
    options.connect_timeout = Duration::from_secs(10);
    let pools: Vec<_> = config
        .archives
        .iter()
        .map(|a| {
            let peer = priorfetch_dimse::Peer::new(&a.ae_title, &a.host, a.port as u16).unwrap();
            (
                a.clone(),
                priorfetch_planner::pool::Pool::new(
                    &a.name,
                    peer,
                    options.clone(),
                    a.max_associations,
                    Duration::from_secs(2),
                    reuse,
                ),
            )
        })
        .collect();
    let finders: Vec<_> =
        pools.iter().map(|(a, p)| (a.clone(), priorfetch_planner::finder::Finder::Dimse(p.clone()))).collect();
    let now = Utc::now();
    let window = DateRange::lookback(now, Duration::from_secs(5 * 365 * 86400), now.date_naive());
    let started = Instant::now();
    let found: usize = futures::stream::iter(0..exams)
        .map(|i| {
            let finders = &finders;
            async move {
                let exam = Exam {
                    id: i as i64,
                    patient_id: format!("BENCH{}", i % patients),
                    issuer: None,
                    identifiers: Vec::new(),
                    accession_number: None,
                    study_instance_uid: None,
                    scheduled_at: None,
                    modality: Some("CT".into()),
                    body_part: None,
                    procedure_code: None,
                    procedure_text: None,
                    priority: ExamPriority::Routine,
                };
                let all = futures::future::join_all(finders.iter().map(|(a, f)| {
                    priorfetch_planner::query::find_studies(
                        f,
                        a,
                        &exam,
                        window,
                        Needs::default(),
                        Duration::from_secs(30),
                    )
                }))
                .await;
                all.iter().map(|f| f.studies.len()).sum::<usize>()
            }
        })
        .buffer_unordered(concurrency)
        .fold(0, |acc, n| async move { acc + n })
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    let opened: u64 = pools.iter().map(|(_, p)| p.associations_opened()).sum();
    println!(
        "C-FIND only, {:<26} {:>6} C-FINDs in {:>6.2} s: {:>7.1} C-FIND/s ({found} matches, {opened} associations)",
        if reuse { "associations reused:" } else { "one association each:" },
        exams * pools.len(),
        elapsed,
        (exams * pools.len()) as f64 / elapsed
    );
}
