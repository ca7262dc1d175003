//! `priorfetch echo | find | retrieve` against a real Orthanc and DCMTK storescp.

use priorfetch_testkit::dicom::{Orthanc, StudySpec, Storescp, store_files, write_study};
use std::process::Command;

fn priorfetch(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_priorfetch"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .env("PRIORFETCH__SERVICE__AE_TITLE", "PRIORFETCH")
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn echo_find_and_retrieve_from_the_command_line() {
    let data = tempfile::tempdir().unwrap();
    let spec = StudySpec::small("CLI1", 21);
    write_study(data.path(), &spec);
    let dest = Storescp::start("DEST");
    let orthanc = Orthanc::start("ORTHANC1", "PRIORFETCH", &[dest.destination()], None);
    store_files(&orthanc.ae, orthanc.port, data.path());
    let archive = format!("ORTHANC1@127.0.0.1:{}", orthanc.port);

    let (code, stdout, stderr) = priorfetch(&["echo", &archive]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("C-ECHO ok"), "{stdout}");

    let wrong = format!("WRONG@127.0.0.1:{}", orthanc.port);
    let (code, _, stderr) = priorfetch(&["echo", &wrong]);
    assert_eq!(code, 1);
    assert!(stderr.contains("hint:") && stderr.contains("archives[].ae_title"), "{stderr}");

    let (code, stdout, stderr) =
        priorfetch(&["find", &archive, "-k", "PatientID=CLI1", "-k", "StudyInstanceUID", "-k", "AccessionNumber", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let line: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(line["StudyInstanceUID"], spec.study_uid.as_str());
    assert_eq!(line["AccessionNumber"], spec.accession.as_str());
    assert!(stderr.contains("1 match"), "{stderr}");

    let (code, _, stderr) = priorfetch(&["find", &archive, "-k", "NoSuchKeyword=1"]);
    assert_eq!(code, 2, "{stderr}");

    let (code, stdout, stderr) = priorfetch(&["retrieve", &archive, "--study", &spec.study_uid, "--dest", "DEST", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(summary["completed"], spec.instance_count() as u64);
    assert_eq!(dest.files().len(), spec.instance_count());

    // C-GET into a folder
    let out = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = priorfetch(&[
        "retrieve", &archive, "--study", &spec.study_uid, "--method", "get", "--out", out.path().to_str().unwrap(), "--json",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!((summary["method"].as_str(), summary["completed"].as_u64()), (Some("get"), Some(spec.instance_count() as u64)));
    let files = std::fs::read_dir(out.path()).unwrap().filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "dcm")).count();
    assert_eq!(files, spec.instance_count());

    // success with nothing moved is not a success
    let (code, _, stderr) = priorfetch(&["retrieve", &archive, "--study", "1.2.3.999", "--dest", "DEST"]);
    assert_eq!(code, 1, "{stderr}");
}

/// `priorfetch store-scp` receives from DCMTK storescu, refuses a calling AE not allowed,
/// and stops on SIGTERM.
#[test]
fn store_scp_receives_from_storescu_and_enforces_the_allow_list() {
    let data = tempfile::tempdir().unwrap();
    let spec = StudySpec::small("SCP1", 22);
    write_study(data.path(), &spec);
    let out = tempfile::tempdir().unwrap();
    let port = priorfetch_testkit::ports::free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_priorfetch"))
        .args(["store-scp", "--port", &port.to_string(), "--ae", "PFSTORE", "--allow", "STORESCU"])
        .args(["--out", out.path().to_str().unwrap()])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < std::time::Duration::from_secs(20), "store-scp did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    store_files("PFSTORE", port, data.path());
    let refused = Command::new("storescu")
        .args(["-aet", "INTRUDER", "-aec", "PFSTORE", "+sd", "127.0.0.1", &port.to_string(), data.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!refused.status.success(), "a calling AE not on the allow-list is rejected");
    let stored = std::fs::read_dir(out.path()).unwrap().filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "dcm")).count();
    assert_eq!(stored, spec.instance_count());
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(20), "did not stop on SIGTERM");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success());
}
