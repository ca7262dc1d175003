//! C-GET throughput served to DCMTK `getscu`: the simulator (the study's files from a
//! folder, and the same study generated) next to Orthanc holding the same files, runs
//! alternated so all see the same machine state. Medians of `BENCH_ROUNDS` runs.
//!
//! Run with `scripts/bench-sim`. Environment: `BENCH_INSTANCES` (default 300), `BENCH_ROWS`
//! (default 512: 512x512x16-bit = 512 KiB per instance), `BENCH_ROUNDS` (default 3).

use pacs_sim::{DataSource, Sim, SimConfig, SyntheticSpec};
use priorfetch_testkit::bench::{dir_bytes, env_or, median};
use priorfetch_testkit::dicom::{Orthanc, StudySpec, run_tool, store_files, write_study};
use std::time::{Duration, Instant};

/// One getscu C-GET of the study into a fresh folder: (seconds, instances, bytes).
async fn getscu(ae: &str, port: u16, study_uid: &str) -> (f64, usize, u64) {
    let out = tempfile::tempdir().unwrap();
    let args: Vec<String> = [
        "-S",
        "-aet",
        "PF",
        "-aec",
        ae,
        "-od",
        out.path().to_str().unwrap(),
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        &format!("StudyInstanceUID={study_uid}"),
        "127.0.0.1",
        &port.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let started = Instant::now();
    let run = run_tool("getscu", &args, Duration::from_secs(600)).await;
    let seconds = started.elapsed().as_secs_f64();
    assert!(run.success, "getscu from {ae} failed: {}", run.log);
    let (n, bytes) = dir_bytes(out.path());
    (seconds, n, bytes)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let instances = env_or::<usize>("BENCH_INSTANCES", 300);
    let rows = env_or::<usize>("BENCH_ROWS", 512) as u16;
    let rounds = env_or::<usize>("BENCH_ROUNDS", 3);
    let data = tempfile::tempdir().unwrap();
    let mut spec = StudySpec::small("BENCH1", 901);
    spec.series = 3;
    spec.instances_per_series = instances.div_ceil(3);
    spec.rows = rows;
    spec.columns = rows;
    let files = write_study(data.path(), &spec);
    eprintln!("study: {} instances of {rows}x{rows} 16-bit", files.len());
    let orthanc = Orthanc::start("ORTHANC", "PF", &[], None);
    store_files(&orthanc.ae, orthanc.port, data.path());
    let folder = Sim::start(SimConfig::new("SIMDISK", DataSource::Folder(data.path().to_path_buf())), "127.0.0.1:0")
        .await
        .unwrap();
    let synthetic_spec = SyntheticSpec {
        patients: 1,
        seed: 3,
        studies_per_patient: (1, 1),
        series_per_study: (3, 3),
        instances_per_series: instances.div_ceil(3),
        rows,
        columns: rows,
        ..Default::default()
    };
    let synthetic =
        Sim::start(SimConfig::new("SIMGEN", DataSource::Synthetic(synthetic_spec)), "127.0.0.1:0").await.unwrap();
    let generated_uid = synthetic.index()[0].study_instance_uid.clone();
    let targets: [(&str, u16, &str); 3] = [
        ("orthanc", orthanc.port, spec.study_uid.as_str()),
        ("sim (folder)", folder.port(), spec.study_uid.as_str()),
        ("sim (synthetic)", synthetic.port(), generated_uid.as_str()),
    ];
    let aes = ["ORTHANC", "SIMDISK", "SIMGEN"];
    // warm-up: page cache, Orthanc's index
    for (i, (_, port, uid)) in targets.iter().enumerate() {
        getscu(aes[i], *port, uid).await;
    }
    let mut results: Vec<Vec<(f64, usize, u64)>> = vec![Vec::new(); targets.len()];
    for _ in 0..rounds {
        for (i, (_, port, uid)) in targets.iter().enumerate() {
            results[i].push(getscu(aes[i], *port, uid).await);
        }
    }
    println!("C-GET served to getscu, {} instances, median of {rounds}:", files.len());
    let mut orthanc_mbs = 0.0;
    for (i, (name, _, _)) in targets.iter().enumerate() {
        let seconds = median(results[i].iter().map(|r| r.0).collect());
        let (n, bytes) = (results[i][0].1, results[i][0].2);
        let mbs = bytes as f64 / 1e6 / seconds;
        if i == 0 {
            orthanc_mbs = mbs;
        }
        println!(
            "  {name:<16} {seconds:>7.2} s  {:>8.1} MB/s  {:>8.1} instances/s  ({n} files, {:.1} MB)  x{:.2} vs orthanc",
            mbs,
            n as f64 / seconds,
            bytes as f64 / 1e6,
            mbs / orthanc_mbs
        );
    }
    folder.shutdown().await;
    synthetic.shutdown().await;
}
