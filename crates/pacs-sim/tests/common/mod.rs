//! Shared by the simulator's tests: a small synthetic archive and DCMTK invocations.
#![allow(dead_code)]

use pacs_sim::{DataSource, Faults, Sim, SimConfig, SimHandle, SyntheticSpec};
use priorfetch_testkit::dicom::{ToolRun, run_tool};
use std::time::Duration;

pub fn spec() -> SyntheticSpec {
    SyntheticSpec {
        patients: 4,
        seed: 7,
        now: chrono::NaiveDate::from_ymd_opt(2026, 11, 1),
        studies_per_patient: (3, 5),
        instances_per_series: 3,
        ..Default::default()
    }
}

pub async fn start(spec: SyntheticSpec, destination: Option<(&str, u16)>, faults: Faults) -> SimHandle {
    let mut config = SimConfig::new("SIM", DataSource::Synthetic(spec)).with_faults(faults);
    if let Some((ae, port)) = destination {
        config = config.with_destination(ae, "127.0.0.1", port);
    }
    Sim::start(config, "127.0.0.1:0").await.expect("start the simulator")
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

pub async fn findscu(sim: &SimHandle, out: &std::path::Path, keys: &[&str]) -> ToolRun {
    let port = sim.port().to_string();
    let mut a = args(&["-d", "-S", "-aet", "PF", "-aec", sim.ae(), "-X", "-od", out.to_str().unwrap()]);
    for k in keys {
        a.push("-k".into());
        a.push(k.to_string());
    }
    a.push("127.0.0.1".into());
    a.push(port);
    run_tool("findscu", &a, Duration::from_secs(30)).await
}

pub async fn movescu(sim: &SimHandle, dest: &str, study_uid: &str) -> ToolRun {
    movescu_with(sim, dest, study_uid, &[]).await
}

pub async fn movescu_with(sim: &SimHandle, dest: &str, study_uid: &str, extra: &[&str]) -> ToolRun {
    let port = sim.port().to_string();
    let mut a = args(extra);
    a.extend(args(&[
        "-d",
        "-S",
        "-aet",
        "PF",
        "-aec",
        sim.ae(),
        "-aem",
        dest,
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        &format!("StudyInstanceUID={study_uid}"),
        "127.0.0.1",
        &port,
    ]));
    run_tool("movescu", &a, Duration::from_secs(60)).await
}

pub async fn getscu(sim: &SimHandle, out: &std::path::Path, study_uid: &str, extra: &[&str]) -> ToolRun {
    let port = sim.port().to_string();
    let mut a = args(&["-d", "-S", "-aet", "PF", "-aec", sim.ae(), "-od", out.to_str().unwrap()]);
    a.extend(args(extra));
    a.extend(args(&[
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        &format!("StudyInstanceUID={study_uid}"),
        "127.0.0.1",
        &port,
    ]));
    run_tool("getscu", &a, Duration::from_secs(60)).await
}

pub fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut f: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()).collect())
        .unwrap_or_default();
    f.sort();
    f
}

pub fn text(obj: &dicom_object::DefaultDicomObject, tag: dicom_core::Tag) -> String {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_str().ok().map(|s| s.trim_matches(|c: char| c == ' ' || c == '\0').to_string()))
        .unwrap_or_default()
}

/// Waits until `dir` holds `n` files (a C-MOVE destination writes after the response).
pub async fn wait_files(dir: &std::path::Path, n: usize) -> Vec<std::path::PathBuf> {
    for _ in 0..100 {
        if files(dir).len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    files(dir)
}
