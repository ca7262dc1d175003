//! Split-retrieve benchmark (`scripts/bench-retrieve`, third part): one study of
//! `BENCH_SERIES` series (1: split into IMAGE-level batches; more: split by series) on Orthanc behind a TCP proxy adding `BENCH_DELAY_MS` (5) each way, as an
//! off-site archive. DCMTK on one association against priorfetch's split retrieve
//! (`services/mover/src/split/`) over `BENCH_ASSOCIATIONS` (4), alternated:
//!
//! - C-GET through the proxy in front of the archive (vs `getscu`), into a folder;
//! - C-MOVE with the proxy in front of the destination, `storescp` (vs `movescu`);
//! - both again over loopback, no proxy: what the mover does by default with a large
//!   study (`mover.split_threshold`) against the same tools.
//!
//! Environment: `BENCH_INSTANCES` (320), `BENCH_ROWS` (512: 512 KiB per instance),
//! `BENCH_ROUNDS` (3), `BENCH_DELAY_MS` (5), `BENCH_ASSOCIATIONS` (4), `BENCH_SERIES` (1).

use priorfetch_dimse::get::{COMMON_STORAGE_CLASSES, get_contexts};
use priorfetch_dimse::scu::query_contexts;
use priorfetch_dimse::{AeTitle, Association, ContextRequest, DirSink, Peer, QueryModel, ScuOptions, StoreSink};
use priorfetch_mover::split::{self, Leg, Split};
use priorfetch_testkit::bench::{dir_bytes, env_or, median};
use priorfetch_testkit::dicom::{Destination, Orthanc, Storescp, StudySpec, store_files, write_study};
use priorfetch_testkit::proxy::DelayProxy;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

const OUR_AE: &str = "PRIORFETCH";

fn clear(dir: &Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let _ = std::fs::remove_file(e.path());
    }
}

fn run_tool(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .env("TCP_NODELAY", "1")
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}: run scripts/test once to install DCMTK", args[0]));
    assert!(out.status.success(), "{} failed: {}", args[0], String::from_utf8_lossy(&out.stderr));
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// One split retrieve; returns (seconds, instances the archive counted).
async fn ours(peer: &Peer, options: &ScuOptions, study: &str, via: Result<AeTitle, &Path>, n: usize) -> (f64, u32) {
    let model = QueryModel::StudyRoot;
    let contexts = match via {
        Ok(_) => query_contexts(model),
        Err(_) => {
            let mut c = vec![ContextRequest::new(model.find_uid())];
            c.extend(get_contexts(model, COMMON_STORAGE_CLASSES));
            c
        }
    };
    let t = Instant::now();
    let mut first = Association::connect(peer, options, &contexts).await.expect("associate");
    let instances = split::study_instances(&mut first, study).await.expect("c-find");
    let parts = split::plan(&instances, n);
    let leg = match via {
        Ok(dest) => Leg::Move(dest),
        Err(dir) => Leg::Get(
            (0..n).map(|_| Box::new(DirSink::new(dir).expect("out dir")) as Box<dyn StoreSink + Send>).collect(),
        ),
    };
    let (_keep, cancel) = tokio::sync::watch::channel(false);
    let split = Split {
        peer: peer.clone(),
        options: options.clone(),
        contexts,
        model,
        study: study.to_string(),
        archive: "bench".into(),
        cancel,
    };
    let out = split::run(split, first, parts, leg, n, Arc::new(|_| {})).await;
    assert!(out.refused.is_none() && out.error.is_none() && out.failed == 0, "{out:?}");
    (t.elapsed().as_secs_f64(), out.completed + out.warning)
}

fn main() {
    let instances = env_or::<usize>("BENCH_INSTANCES", 320);
    let rows = env_or::<usize>("BENCH_ROWS", 512) as u16;
    let rounds = env_or::<usize>("BENCH_ROUNDS", 3);
    let delay = Duration::from_millis(env_or::<u64>("BENCH_DELAY_MS", 5));
    let n = env_or::<usize>("BENCH_ASSOCIATIONS", 4);
    let series = env_or::<usize>("BENCH_SERIES", 1).max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");

    let data = tempfile::tempdir().expect("temp dir");
    let mut spec = StudySpec::small("SPLIT", 901);
    (spec.series, spec.instances_per_series, spec.rows, spec.columns) =
        (series, instances.div_ceil(series), rows, rows);
    write_study(data.path(), &spec);
    let (count, bytes) = dir_bytes(data.path());
    let mb = bytes as f64 / 1e6;
    eprintln!("generated {count} instances ({series} series), {mb:.0} MB; {delay:?} each way, {n} associations");

    // --fork: one process per association, so parallel C-MOVE sub-operation associations
    // are served at once (a plain storescp takes them one after another)
    let dest = Storescp::start_with("DEST", &["--accept-all", "--fork"]);
    let _guard = runtime.enter();
    let dest_proxy = runtime.block_on(DelayProxy::start(&format!("127.0.0.1:{}", dest.port), delay)).expect("proxy");
    // Two names for one storescp: DEST behind the proxy (off-site), NEAR over loopback.
    let destinations = [
        Destination { ae: "DEST".into(), port: dest_proxy.addr().port() },
        Destination { ae: "NEAR".into(), port: dest.port },
    ];
    let orthanc = Orthanc::start("ORTHANC1", OUR_AE, &destinations, None);
    store_files(&orthanc.ae, orthanc.port, data.path());
    let archive_proxy =
        runtime.block_on(DelayProxy::start(&format!("127.0.0.1:{}", orthanc.port), delay)).expect("proxy");
    let mut options = ScuOptions::new(AeTitle::parse(OUR_AE).expect("ae"));
    options.dimse_timeout = Duration::from_secs(120);
    let peer_far = Peer::new("ORTHANC1", "127.0.0.1", archive_proxy.addr().port()).expect("peer");
    let peer_near = Peer::new("ORTHANC1", "127.0.0.1", orthanc.port).expect("peer");
    // C-GET pulls through the archive's port (the proxy for off-site); C-MOVE asks the
    // archive over loopback to send to a destination behind the proxy (off-site) or not.
    let routes = [
        Route { name: "loopback", get: peer_near.clone(), move_dest: "NEAR" },
        Route { name: "proxy", get: peer_far, move_dest: "DEST" },
    ];
    let out = tempfile::tempdir().expect("temp dir");
    let study_key = format!("StudyInstanceUID={}", spec.study_uid);
    let dcmtk = |tool: &str, peer: &Peer, dest: &str| {
        let port = peer.port.to_string();
        let mut args = vec![tool, "-S", "-aet", OUR_AE, "-aec", "ORTHANC1", "-k", "QueryRetrieveLevel=STUDY"];
        args.extend(["-k", study_key.as_str()]);
        match tool {
            "getscu" => args.extend(["-od", out.path().to_str().unwrap()]),
            _ => args.extend(["-aem", dest]),
        }
        args.extend(["127.0.0.1", port.as_str()]);
        let t = Instant::now();
        run_tool(&args);
        t.elapsed().as_secs_f64()
    };

    // Per route: C-GET (DCMTK, ours), C-MOVE (DCMTK, ours).
    let mut times: Vec<[Vec<f64>; 4]> = routes.iter().map(|_| Default::default()).collect();
    for round in 0..rounds {
        let dcmtk_first = round % 2 == 1;
        for (route, t) in routes.iter().zip(times.iter_mut()) {
            for step in 0..2 {
                clear(out.path());
                if (step == 0) == dcmtk_first {
                    t[0].push(dcmtk("getscu", &route.get, ""));
                    assert_eq!(dir_bytes(out.path()).0, count, "getscu files");
                } else {
                    let (s, got) = runtime.block_on(ours(&route.get, &options, &spec.study_uid, Err(out.path()), n));
                    assert_eq!((got as usize, dir_bytes(out.path()).0), (count, count), "our files");
                    t[1].push(s);
                }
            }
            for step in 0..2 {
                clear(dest.out.path());
                if (step == 0) == dcmtk_first {
                    t[2].push(dcmtk("movescu", &peer_near, route.move_dest));
                } else {
                    let dest_ae = AeTitle::parse(route.move_dest).expect("ae");
                    let (s, got) = runtime.block_on(ours(&peer_near, &options, &spec.study_uid, Ok(dest_ae), n));
                    assert_eq!(got as usize, count, "moved");
                    t[3].push(s);
                }
            }
            eprintln!(
                "round {round}, {}: get {:.2}/{:.2} s, move {:.2}/{:.2} s (DCMTK/ours)",
                route.name, t[0][round], t[1][round], t[2][round], t[3][round]
            );
        }
    }
    println!(
        "\nsplit retrieve, {count} instances, {mb:.0} MB, {series} series, {n} associations, {rounds} rounds, medians"
    );
    println!("{:<44} {:>10} {:>10} {:>8}", "", "DCMTK s", "ours s", "ratio");
    for (route, t) in routes.iter().zip(times) {
        let [get_theirs, get_ours, move_theirs, move_ours] = t;
        let (get, mov) = match route.name {
            "loopback" => ("C-GET, loopback".to_string(), "C-MOVE, loopback".to_string()),
            _ => (
                format!("C-GET, {delay:?} each way at the archive"),
                format!("C-MOVE, {delay:?} each way at the dest."),
            ),
        };
        for (name, theirs, ours) in
            [(get, median(get_theirs), median(get_ours)), (mov, median(move_theirs), median(move_ours))]
        {
            println!("{name:<44} {theirs:>10.2} {ours:>10.2} {:>8.2}", theirs / ours);
        }
    }
    println!("peak RSS of this process (priorfetch side): {} MB", vm_hwm_kib() / 1024);
}

/// Where one pair of comparisons runs: the C-GET peer, the C-MOVE destination's name.
struct Route {
    name: &'static str,
    get: Peer,
    move_dest: &'static str,
}
