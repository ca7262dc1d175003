//! A database cut while a retrieve runs: the outcome is kept in memory and written once
//! the database is back, which frees the job's archive slot at once instead of after the
//! lease. The mover's store talks to Postgres through a loopback proxy that the test cuts,
//! so only this mover loses the database; the test watches through its own connection.

mod common;

use common::*;
use pacs_sim::{DataSource, Faults, Sim, SimConfig, SyntheticSpec};
use priorfetch_store::JobState;
use priorfetch_store::Store;
use priorfetch_testkit::proxy::TcpProxy;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_that_cannot_be_written_lands_when_the_database_is_back() {
    let dest = Sim::start(SimConfig::new("DEST", DataSource::Empty), "127.0.0.1:0").await.unwrap();
    let spec = SyntheticSpec {
        patients: 1,
        seed: 3,
        instances_per_series: 4,
        studies_per_patient: (2, 2),
        series_per_study: (2, 2),
        ..Default::default()
    };
    let faults = Faults { response_delay: Some(Duration::from_millis(100)), ..Default::default() };
    let archive = Sim::start(
        SimConfig::new("ARCH", DataSource::Synthetic(spec))
            .with_destination("DEST", "127.0.0.1", dest.port())
            .with_faults(faults),
        "127.0.0.1:0",
    )
    .await
    .unwrap();
    let study = archive.index().into_iter().max_by_key(|s| s.instances).unwrap();

    let (db, watcher) = postgres().await;
    let server = priorfetch_testkit::db::postgres_server_url();
    let upstream = server.rsplit('@').next().unwrap().trim_end_matches('/').to_string();
    let proxy = TcpProxy::start(&upstream).await.unwrap();
    let proxied_url = db.url.replacen(&upstream, &proxy.addr().to_string(), 1);
    let store = Store::connect(&proxied_url, "", 4).await.expect("connect through the proxy");

    let spool = tempfile::tempdir().unwrap();
    let config = config(
        &db,
        spool.path(),
        &(archive_toml("arch", "ARCH", archive.port(), "move", "") + &destination_toml(dest.port(), false)),
    );
    let exam = exam(&watcher, "o1").await;
    let job = job(&watcher, exam, "arch", "move", &study.study_instance_uid, Some(study.instances as i32)).await;
    let mover = start_mover(&store, config, "w1");
    until(Duration::from_secs(30), "job running", async || {
        watcher.job(job).await.unwrap().is_some_and(|j| j.state == JobState::Running)
    })
    .await;

    proxy.cut();
    // The retrieve ends during the cut: every instance is at the destination...
    let arrived = |d: &pacs_sim::SimHandle| {
        d.received().iter().filter(|r| r.study_instance_uid == study.study_instance_uid).count()
    };
    until(Duration::from_secs(30), "retrieve done during the cut", async || arrived(&dest) == study.instances).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // ... but nothing could be recorded: the job still holds its slot.
    let during = watcher.job(job).await.unwrap().unwrap();
    assert_eq!(during.state, JobState::Running, "{during:?}");
    assert_eq!(watcher.running_jobs("arch").await.unwrap(), 1);

    proxy.restore();
    let restored = Instant::now();
    let done = finished(&watcher, job, Duration::from_secs(15)).await;
    let took = restored.elapsed();
    println!("outcome landed {took:?} after the database came back");
    assert_eq!(
        (done.state.as_str(), done.counts.completed as usize, done.attempt),
        ("completed", study.instances, 1),
        "{done:?}"
    );
    until(Duration::from_secs(5), "slot freed", async || watcher.running_jobs("arch").await.unwrap() == 0).await;
    let free = watcher.claim_jobs("probe", &["arch".into()], 1, Duration::from_secs(30)).await.unwrap();
    assert!(free.is_empty(), "nothing else to claim, and no error");
    assert!(took < Duration::from_secs(15), "{took:?}");
    mover.stop().await;
}
