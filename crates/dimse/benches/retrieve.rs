//! Retrieve benchmark: priorfetch's SCU against DCMTK's tools on the same Orthanc, runs
//! alternated so both see the same machine state.
//!
//! - C-GET of a whole study (vs `getscu`), written to disk as Part-10 files.
//! - C-MOVE of the study to DCMTK `storescp` (vs `movescu`).
//! - study-level C-FINDs over one reused association (vs one `findscu` process per query).
//!
//! Run with `scripts/bench-retrieve`. Environment: `BENCH_INSTANCES` (default 320),
//! `BENCH_ROWS` (default 512, so 512x512x16-bit = 512 KiB per instance), `BENCH_ROUNDS`
//! (default 5), `BENCH_FINDS` (default 1000), `BENCH_FINDSCU_RUNS` (default 200),
//! `BENCH_SERIES` (default 4; the script runs 1 and 4).

use dicom_core::{Tag, VR};
use priorfetch_dimse::get::{COMMON_STORAGE_CLASSES, get_contexts};
use priorfetch_dimse::scu::query_contexts;
use priorfetch_dimse::{AeTitle, Association, DirSink, Peer, QueryModel, ScuOptions, identifier};
use priorfetch_testkit::bench::{dir_bytes, env_or, median};
use priorfetch_testkit::dicom::{Orthanc, Storescp, StudySpec, store_files, write_study};
use std::ops::ControlFlow;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const OUR_AE: &str = "PRIORFETCH";

fn clear(dir: &Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let _ = std::fs::remove_file(e.path());
    }
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn run_tool(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .env("TCP_NODELAY", "1")
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}: run scripts/test once to install DCMTK", args[0]));
    assert!(out.status.success(), "{} failed: {}", args[0], String::from_utf8_lossy(&out.stderr));
}

struct Row {
    name: &'static str,
    ours: f64,
    theirs: f64,
    unit: &'static str,
}

fn main() {
    let instances = env_or::<usize>("BENCH_INSTANCES", 320);
    let rows = env_or::<usize>("BENCH_ROWS", 512) as u16;
    let rounds = env_or::<usize>("BENCH_ROUNDS", 5);
    let finds = env_or::<usize>("BENCH_FINDS", 1000);
    let findscu_runs = env_or::<usize>("BENCH_FINDSCU_RUNS", 200);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");

    // The study: one patient, `BENCH_SERIES` series (4 by default).
    let series = env_or::<usize>("BENCH_SERIES", 4).max(1);
    let data = tempfile::tempdir().expect("temp dir");
    let mut spec = StudySpec::small("BENCH", 900);
    spec.series = series;
    spec.instances_per_series = instances.div_ceil(series);
    spec.rows = rows;
    spec.columns = rows;
    let started = Instant::now();
    write_study(data.path(), &spec);
    let (n, bytes) = dir_bytes(data.path());
    let mb = bytes as f64 / 1e6;
    eprintln!("generated {n} instances in {series} series, {mb:.0} MB in {:.1} s", started.elapsed().as_secs_f64());

    let dest = Storescp::start("DEST");
    let orthanc = Orthanc::start("ORTHANC1", OUR_AE, &[dest.destination()], None);
    let started = Instant::now();
    store_files(&orthanc.ae, orthanc.port, data.path());
    eprintln!("loaded into Orthanc in {:.1} s", started.elapsed().as_secs_f64());
    let port = orthanc.port.to_string();
    let peer = Peer::new("ORTHANC1", "127.0.0.1", orthanc.port).expect("peer");
    let mut options = ScuOptions::new(AeTitle::parse(OUR_AE).expect("ae"));
    options.dimse_timeout = Duration::from_secs(60);
    let study_key = format!("StudyInstanceUID={}", spec.study_uid);
    let out = tempfile::tempdir().expect("temp dir");

    let (mut get_ours, mut get_theirs, mut move_ours, mut move_theirs) = (vec![], vec![], vec![], vec![]);
    for round in 0..rounds {
        // Odd rounds run DCMTK first, so neither side always inherits the other's dirty
        // page cache or Orthanc's warm caches.
        let dcmtk_first = round % 2 == 1;
        let getscu = |times: &mut Vec<f64>| {
            clear(out.path());
            let t = Instant::now();
            run_tool(&[
                "getscu",
                "-S",
                "-aet",
                OUR_AE,
                "-aec",
                "ORTHANC1",
                "-k",
                "QueryRetrieveLevel=STUDY",
                "-k",
                &study_key,
                "-od",
                out.path().to_str().unwrap(),
                "127.0.0.1",
                &port,
            ]);
            times.push(t.elapsed().as_secs_f64());
            assert_eq!(dir_bytes(out.path()).0, n, "getscu files");
        };
        let movescu = |times: &mut Vec<f64>| {
            clear(dest.out.path());
            let t = Instant::now();
            run_tool(&[
                "movescu",
                "-S",
                "-aet",
                OUR_AE,
                "-aec",
                "ORTHANC1",
                "-aem",
                "DEST",
                "-k",
                "QueryRetrieveLevel=STUDY",
                "-k",
                &study_key,
                "127.0.0.1",
                &port,
            ]);
            times.push(t.elapsed().as_secs_f64());
        };
        if dcmtk_first {
            getscu(&mut get_theirs);
        }
        // C-GET, ours
        clear(out.path());
        let t = Instant::now();
        let outcome = runtime.block_on(async {
            let mut assoc =
                Association::connect(&peer, &options, &get_contexts(QueryModel::StudyRoot, COMMON_STORAGE_CLASSES))
                    .await?;
            let mut sink = DirSink::new(out.path()).map_err(|e| priorfetch_dimse::DimseError::Io(e.to_string()))?;
            let query = identifier("STUDY", &[(Tag(0x0020, 0x000D), VR::UI, spec.study_uid.as_str())]);
            let o = assoc.retrieve_get(QueryModel::StudyRoot, &query, &mut sink, |_| {}, None).await;
            assoc.release().await;
            o
        });
        get_ours.push(t.elapsed().as_secs_f64());
        let outcome = outcome.expect("our C-GET");
        assert_eq!(outcome.counts.completed as usize, n, "our C-GET: {outcome:?}");
        assert_eq!(dir_bytes(out.path()).0, n);

        if !dcmtk_first {
            getscu(&mut get_theirs);
        }
        if dcmtk_first {
            movescu(&mut move_theirs);
        }

        // C-MOVE, ours
        clear(dest.out.path());
        let t = Instant::now();
        let outcome = runtime.block_on(async {
            let mut assoc = Association::connect(&peer, &options, &query_contexts(QueryModel::StudyRoot)).await?;
            let query = identifier("STUDY", &[(Tag(0x0020, 0x000D), VR::UI, spec.study_uid.as_str())]);
            let o = assoc
                .retrieve_move(QueryModel::StudyRoot, &query, &AeTitle::parse("DEST").expect("ae"), |_| {}, None)
                .await;
            assoc.release().await;
            o
        });
        move_ours.push(t.elapsed().as_secs_f64());
        let outcome = outcome.expect("our C-MOVE");
        assert_eq!(outcome.counts.completed as usize, n, "our C-MOVE: {outcome:?}");

        assert_eq!(dir_bytes(dest.out.path()).0, n, "storescp files after our C-MOVE");
        if !dcmtk_first {
            movescu(&mut move_theirs);
        }
        eprintln!(
            "round {round}: get {:.2}s / getscu {:.2}s, move {:.2}s / movescu {:.2}s",
            get_ours[round], get_theirs[round], move_ours[round], move_theirs[round]
        );
    }
    clear(out.path());
    clear(dest.out.path());

    // C-FIND: study level, by patient, over one association.
    let query = identifier(
        "STUDY",
        &[
            (Tag(0x0010, 0x0020), VR::LO, "BENCH"),
            (Tag(0x0020, 0x000D), VR::UI, ""),
            (Tag(0x0008, 0x0020), VR::DA, ""),
            (Tag(0x0008, 0x0061), VR::CS, ""),
        ],
    );
    let t = Instant::now();
    runtime
        .block_on(async {
            let mut assoc = Association::connect(&peer, &options, &query_contexts(QueryModel::StudyRoot)).await?;
            for _ in 0..finds {
                let o = assoc.find(QueryModel::StudyRoot, &query, None, |_| ControlFlow::Continue(())).await?;
                assert_eq!(o.matches, 1);
            }
            assoc.release().await;
            Ok::<_, priorfetch_dimse::DimseError>(())
        })
        .expect("our C-FINDs");
    let find_ours = finds as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for _ in 0..findscu_runs {
        run_tool(&[
            "findscu",
            "-S",
            "-aet",
            OUR_AE,
            "-aec",
            "ORTHANC1",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            "PatientID=BENCH",
            "-k",
            "StudyInstanceUID",
            "-k",
            "StudyDate",
            "-k",
            "ModalitiesInStudy",
            "127.0.0.1",
            &port,
        ]);
    }
    let find_theirs = findscu_runs as f64 / t.elapsed().as_secs_f64();

    let (go, gt, mo, mt) = (median(get_ours), median(get_theirs), median(move_ours), median(move_theirs));
    let table = [
        Row { name: "C-GET (s, median)", ours: go, theirs: gt, unit: "s" },
        Row { name: "C-MOVE to storescp (s, median)", ours: mo, theirs: mt, unit: "s" },
        Row { name: "C-FIND (queries/s)", ours: find_ours, theirs: find_theirs, unit: "q/s" },
    ];
    println!(
        "\nstudy: {n} instances in {series} series, {mb:.1} MB; {rounds} rounds; {finds} C-FINDs on one association vs {findscu_runs} findscu runs"
    );
    println!("{:<34} {:>12} {:>12} {:>10}", "operation", "priorfetch", "DCMTK", "ratio");
    for r in &table {
        // ratio > 1 means priorfetch is better (faster or more queries per second)
        let ratio = if r.unit == "s" { r.theirs / r.ours } else { r.ours / r.theirs };
        println!("{:<34} {:>10.3}{:<2} {:>10.3}{:<2} {:>9.2}x", r.name, r.ours, r.unit, r.theirs, r.unit, ratio);
    }
    println!(
        "C-GET throughput: priorfetch {:.0} inst/s {:.0} MB/s; getscu {:.0} inst/s {:.0} MB/s",
        n as f64 / go,
        mb / go,
        n as f64 / gt,
        mb / gt
    );
    println!(
        "C-MOVE throughput: priorfetch {:.0} inst/s {:.0} MB/s; movescu {:.0} inst/s {:.0} MB/s",
        n as f64 / mo,
        mb / mo,
        n as f64 / mt,
        mb / mt
    );
    println!(
        "priorfetch peak RSS (VmHWM, whole bench process incl. data generation): {:.1} MB",
        vm_hwm_kib() as f64 / 1024.0
    );
}
