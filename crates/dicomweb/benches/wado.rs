//! WADO-RS benchmark: priorfetch's streamed WADO-RS study retrieve against two reference
//! clients (`curl` saving the multipart body as one file; the `dicomweb-client` Python
//! package writing one file per instance, `scripts/wado_reference.py`) and against priorfetch's own C-GET of the
//! same study, on one Orthanc with its DICOMweb plugin; runs alternate so every side sees
//! the same machine state. Prints medians, MB/s, ratios and priorfetch's peak RSS.
//!
//! Two pairs isolate the file system: priorfetch dropping each part vs curl writing to
//! /dev/null is the client's own speed; priorfetch writing one file per instance (what the
//! spool needs) vs curl writing one body file adds the cost of creating 320 files.
//!
//! Run with `scripts/bench-wado`. Environment: `BENCH_INSTANCES` (default 320),
//! `BENCH_ROWS` (default 512: 512 KiB per instance, so about 170 MB), `BENCH_ROUNDS` (5).

use priorfetch_dicomweb::{Auth, ClientOptions, DicomWebClient, DirSink, Discard, Target};
use priorfetch_dimse::{AeTitle, Peer, ScuOptions};
use priorfetch_testkit::bench::{BenchStudy, bench_study, dir_bytes, env_or, median};
use priorfetch_testkit::dicom::{Orthanc, store_files};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn clear(dir: &Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let _ = std::fs::remove_file(e.path());
    }
}

fn vm_hwm_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
}

fn main() {
    let rounds = env_or::<usize>("BENCH_ROUNDS", 5);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let BenchStudy { dir: data, spec, instances: n, mb } = bench_study("BENCHWADO", 901);
    let orthanc = Orthanc::start_dicomweb("ORTHANCWEB", "PRIORFETCH", None);
    let started = Instant::now();
    store_files(&orthanc.ae, orthanc.port, data.path());
    eprintln!("{n} instances, {mb:.0} MB loaded into Orthanc in {:.1} s", started.elapsed().as_secs_f64());
    drop(data);
    let rss_before = vm_hwm_mib();

    let client = DicomWebClient::new(&orthanc.dicomweb_url(), Auth::None, &ClientOptions::default()).expect("client");
    let target = Target::Study(spec.study_uid.clone());
    let url = client.wado_url(&target);
    let peer = Peer::new(&orthanc.ae, "127.0.0.1", orthanc.port).expect("peer");
    let mut options = ScuOptions::new(AeTitle::parse("PRIORFETCH").expect("ae"));
    options.dimse_timeout = Duration::from_secs(60);
    let out = tempfile::tempdir().expect("temp dir");

    let (mut ours, mut curl, mut cget, mut python) = (vec![], vec![], vec![], vec![]);
    let (mut ours_net, mut curl_net) = (vec![], vec![]);
    let reference = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/wado_reference.py");
    for round in 0..rounds {
        // curl saving the body to `to` (one file, or /dev/null)
        let curl_to = |to: &Path, times: &mut Vec<f64>| {
            let t = Instant::now();
            let status = Command::new("curl")
                .args(["-sS", "--fail", "-o"])
                .arg(to)
                .arg("-H")
                .arg("Accept: multipart/related; type=\"application/dicom\"; transfer-syntax=*")
                .arg(&url)
                .status()
                .expect("curl (apt-get install curl)");
            assert!(status.success(), "curl failed");
            times.push(t.elapsed().as_secs_f64());
        };
        let run_curl = |times: &mut Vec<f64>| {
            clear(out.path());
            curl_to(&out.path().join("body.multipart"), times);
        };
        let run_python = |times: &mut Vec<f64>| {
            clear(out.path());
            let t = Instant::now();
            let output = Command::new("python3")
                .args([reference, client.base_url(), spec.study_uid.as_str(), out.path().to_str().unwrap()])
                .output()
                .expect("python3");
            assert!(output.status.success(), "dicomweb-client: {}", String::from_utf8_lossy(&output.stderr));
            times.push(t.elapsed().as_secs_f64());
            assert_eq!(dir_bytes(out.path()).0, n, "dicomweb-client files");
        };
        // network and parsing only: our parts discarded, curl's body to /dev/null
        let run_curl_net = |times: &mut Vec<f64>| curl_to(Path::new("/dev/null"), times);
        let run_ours_net = |times: &mut Vec<f64>| {
            let (c, t2) = (client.clone(), target.clone());
            let t = Instant::now();
            let got = runtime
                .block_on(async move { tokio::spawn(async move { c.retrieve(&t2, "*", &mut Discard).await }).await })
                .expect("task")
                .expect("our WADO-RS");
            times.push(t.elapsed().as_secs_f64());
            assert_eq!(got.instances, n, "our WADO-RS instances");
        };
        if round % 2 == 0 {
            run_ours_net(&mut ours_net);
            run_curl_net(&mut curl_net);
        } else {
            run_curl_net(&mut curl_net);
            run_ours_net(&mut ours_net);
        }
        if round % 2 == 1 {
            run_curl(&mut curl);
            run_python(&mut python);
        }
        clear(out.path());
        let t = Instant::now();
        // On a worker thread, as the mover runs it: a future driven by `block_on` on the
        // main thread pays a cross-thread wake-up per body chunk (measured 3-4x slower).
        let (c, t2, dir) = (client.clone(), target.clone(), out.path().to_path_buf());
        let got = runtime
            .block_on(async move {
                tokio::spawn(async move {
                    let mut sink = DirSink::new(&dir).expect("sink");
                    c.retrieve(&t2, "*", &mut sink).await
                })
                .await
                .expect("task")
            })
            .expect("our WADO-RS");
        ours.push(t.elapsed().as_secs_f64());
        assert_eq!(got.instances, n, "our WADO-RS instances");
        if round % 2 == 0 {
            run_curl(&mut curl);
            run_python(&mut python);
        }
        clear(out.path());
        let t = Instant::now();
        let (peer2, options2, dir, uid) =
            (peer.clone(), options.clone(), out.path().to_path_buf(), spec.study_uid.clone());
        runtime
            .block_on(async move {
                tokio::spawn(async move { priorfetch_dimse::get::get_study_into(&peer2, &options2, &uid, &dir).await })
                    .await
                    .expect("task")
            })
            .expect("our C-GET");
        cget.push(t.elapsed().as_secs_f64());
        assert_eq!(dir_bytes(out.path()).0, n, "our C-GET files");
    }
    let (ours, curl, cget, python) = (median(ours), median(curl), median(cget), median(python));
    let (ours_net, curl_net) = (median(ours_net), median(curl_net));
    println!("study: {n} instances, {mb:.0} MB; {rounds} rounds, medians");
    println!("{:<34} {:>8} {:>9}", "", "seconds", "MB/s");
    println!("{:<34} {:>8.2} {:>9.0}", "priorfetch WADO-RS (to files)", ours, mb / ours);
    println!("{:<34} {:>8.2} {:>9.0}", "curl WADO-RS (body to one file)", curl, mb / curl);
    println!("{:<34} {:>8.2} {:>9.0}", "dicomweb-client (to files)", python, mb / python);
    println!("{:<34} {:>8.2} {:>9.0}", "priorfetch C-GET (to files)", cget, mb / cget);
    println!("{:<34} {:>8.2} {:>9.0}", "priorfetch WADO-RS (parts dropped)", ours_net, mb / ours_net);
    println!("{:<34} {:>8.2} {:>9.0}", "curl WADO-RS (to /dev/null)", curl_net, mb / curl_net);
    println!("throughput ratio WADO-RS priorfetch / curl, network and parsing: {:.2}", curl_net / ours_net);
    println!("throughput ratio WADO-RS priorfetch / curl, to files: {:.2}", curl / ours);
    println!("throughput ratio WADO-RS priorfetch / dicomweb-client: {:.2}", python / ours);
    println!("throughput ratio WADO-RS / C-GET (priorfetch): {:.2}", cget / ours);
    println!("peak RSS of priorfetch: {:.0} MiB (before the retrieves: {rss_before:.0} MiB)", vm_hwm_mib());
}
