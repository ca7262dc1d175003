//! C-GET over DICOM TLS next to plain TCP: one plain Orthanc and one with `DicomTlsEnabled`
//! (client certificates required) hold the same study; priorfetch's C-GET over TLS and over
//! TCP alternate with DCMTK's getscu over TCP (getscu has no TLS in DCMTK 3.6.7; Debian's
//! build gives `+tls` to echoscu, findscu and storescu only). Prints medians, MB/s, the cost
//! of TLS, and the ratios to getscu.
//!
//! Run with `scripts/bench-retrieve` (after the plain retrieve benchmark). Environment:
//! `BENCH_INSTANCES` (default 320), `BENCH_ROWS` (512: about 170 MB), `BENCH_ROUNDS` (5).

use priorfetch_dimse::{AeTitle, Peer, ScuOptions};
use priorfetch_testkit::bench::{BenchStudy, bench_study, dir_bytes, env_or, median};
use priorfetch_testkit::dicom::{Orthanc, OrthancTls, store_files, store_files_with};
use priorfetch_testkit::tls::TestPki;
use priorfetch_tls::{ClientTls, TlsConfig};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const OUR_AE: &str = "PRIORFETCH";

fn clear(dir: &Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let _ = std::fs::remove_file(e.path());
    }
}

fn getscu(called: &str, port: u16, study_key: &str, out: &Path) {
    let output = Command::new("getscu")
        .args(["-S", "-aet", OUR_AE, "-aec", called, "-k", "QueryRetrieveLevel=STUDY", "-k", study_key, "-od"])
        .arg(out)
        .args(["127.0.0.1", &port.to_string()])
        .env("TCP_NODELAY", "1")
        .output()
        .expect("getscu (run scripts/test once to install DCMTK)");
    assert!(output.status.success(), "getscu failed: {}", String::from_utf8_lossy(&output.stderr));
}

fn main() {
    let rounds = env_or::<usize>("BENCH_ROUNDS", 5);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let BenchStudy { dir: data, spec, instances: n, mb } = bench_study("BENCHTLS", 902);

    let pki = TestPki::new();
    let orthanc_id = pki.issue("orthanc", &["localhost", "127.0.0.1"]);
    let ours = pki.issue("priorfetch", &["priorfetch.test"]);
    let tls = OrthancTls { cert: orthanc_id.cert, key: orthanc_id.key, ca: pki.ca.clone(), require_client_cert: true };
    let plain = Orthanc::start("PLAIN", OUR_AE, &[], None);
    let secure = Orthanc::start_tls("SECURE", OUR_AE, &[], &tls);
    let path = |p: &Path| p.to_str().expect("utf-8 path").to_string();
    let (key, cert, ca) = (path(&ours.key), path(&ours.cert), path(&pki.ca));
    let dcmtk_tls = ["+tls", key.as_str(), cert.as_str(), "-pw", "+cf", ca.as_str()];
    store_files(&plain.ae, plain.port, data.path());
    store_files_with(&secure.ae, secure.port, data.path(), &dcmtk_tls);
    eprintln!("{n} instances, {mb:.0} MB in a plain and a TLS Orthanc");
    drop(data);

    let client = ClientTls::load(
        &TlsConfig {
            ca: Some(pki.ca.clone()),
            cert: Some(ours.cert.clone()),
            key: Some(ours.key.clone()),
            ..Default::default()
        },
        "bench",
        "127.0.0.1",
    )
    .expect("client TLS");
    let mut options = ScuOptions::new(AeTitle::parse(OUR_AE).expect("ae"));
    options.dimse_timeout = Duration::from_secs(60);
    let tls_options = ScuOptions { tls: Some(client), ..options.clone() };
    let study_key = format!("StudyInstanceUID={}", spec.study_uid);
    let out = tempfile::tempdir().expect("temp dir");

    let ours_get = |peer: Peer, options: ScuOptions, times: &mut Vec<f64>| {
        clear(out.path());
        let (dir, uid) = (out.path().to_path_buf(), spec.study_uid.clone());
        let t = Instant::now();
        runtime
            .block_on(async move {
                tokio::spawn(async move { priorfetch_dimse::get::get_study_into(&peer, &options, &uid, &dir).await })
                    .await
                    .expect("task")
            })
            .expect("our C-GET");
        times.push(t.elapsed().as_secs_f64());
        assert_eq!(dir_bytes(out.path()).0, n, "our C-GET files");
    };
    let theirs_get = |called: &str, port: u16, times: &mut Vec<f64>| {
        clear(out.path());
        let t = Instant::now();
        getscu(called, port, &study_key, out.path());
        times.push(t.elapsed().as_secs_f64());
        assert_eq!(dir_bytes(out.path()).0, n, "getscu files");
    };

    let (mut ours_plain, mut ours_tls, mut dcmtk_plain) = (vec![], vec![], vec![]);
    let plain_peer = Peer::new("PLAIN", "127.0.0.1", plain.port).expect("peer");
    let secure_peer = Peer::new("SECURE", "127.0.0.1", secure.port).expect("peer");
    for round in 0..rounds {
        if round % 2 == 1 {
            theirs_get("PLAIN", plain.port, &mut dcmtk_plain);
            ours_get(secure_peer.clone(), tls_options.clone(), &mut ours_tls);
        }
        ours_get(plain_peer.clone(), options.clone(), &mut ours_plain);
        if round % 2 == 0 {
            ours_get(secure_peer.clone(), tls_options.clone(), &mut ours_tls);
            theirs_get("PLAIN", plain.port, &mut dcmtk_plain);
        }
    }
    let (op, ot, dp) = (median(ours_plain), median(ours_tls), median(dcmtk_plain));
    println!("C-GET of {n} instances, {mb:.0} MB from Orthanc; {rounds} rounds, medians");
    println!("{:<34} {:>8} {:>9}", "", "seconds", "MB/s");
    println!("{:<34} {:>8.2} {:>9.0}", "priorfetch C-GET, plain", op, mb / op);
    println!("{:<34} {:>8.2} {:>9.0}", "priorfetch C-GET, TLS (mutual)", ot, mb / ot);
    println!("{:<34} {:>8.2} {:>9.0}", "getscu, plain", dp, mb / dp);
    println!("TLS / plain time, priorfetch: {:.2}", ot / op);
    println!("throughput ratio priorfetch / getscu (plain): plain {:.2}; over TLS {:.2}", dp / op, dp / ot);
}
