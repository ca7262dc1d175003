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

    // success with nothing moved is not a success
    let (code, _, stderr) = priorfetch(&["retrieve", &archive, "--study", "1.2.3.999", "--dest", "DEST"]);
    assert_eq!(code, 1, "{stderr}");
}
