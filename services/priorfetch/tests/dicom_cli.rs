//! `priorfetch echo | find | retrieve` against a real Orthanc and DCMTK storescp.

use priorfetch_testkit::dicom::{Orthanc, Storescp, StudySpec, store_files, write_study};
use std::process::Command;

fn priorfetch(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_priorfetch"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .env("PRIORFETCH__SERVICE__AE_TITLE", "PRIORFETCH")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
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

    let (code, stdout, stderr) = priorfetch(&[
        "find",
        &archive,
        "-k",
        "PatientID=CLI1",
        "-k",
        "StudyInstanceUID",
        "-k",
        "AccessionNumber",
        "--json",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let line: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(line["StudyInstanceUID"], spec.study_uid.as_str());
    assert_eq!(line["AccessionNumber"], spec.accession.as_str());
    assert!(stderr.contains("1 match"), "{stderr}");

    let (code, _, stderr) = priorfetch(&["find", &archive, "-k", "NoSuchKeyword=1"]);
    assert_eq!(code, 2, "{stderr}");

    let (code, stdout, stderr) =
        priorfetch(&["retrieve", &archive, "--study", &spec.study_uid, "--dest", "DEST", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(summary["completed"], spec.instance_count() as u64);
    assert_eq!(dest.files().len(), spec.instance_count());

    // C-GET into a folder
    let out = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = priorfetch(&[
        "retrieve",
        &archive,
        "--study",
        &spec.study_uid,
        "--method",
        "get",
        "--out",
        out.path().to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(
        (summary["method"].as_str(), summary["completed"].as_u64()),
        (Some("get"), Some(spec.instance_count() as u64))
    );
    let files = std::fs::read_dir(out.path())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "dcm"))
        .count();
    assert_eq!(files, spec.instance_count());

    // success with nothing moved is not a success
    let (code, _, stderr) = priorfetch(&["retrieve", &archive, "--study", "1.2.3.999", "--dest", "DEST"]);
    assert_eq!(code, 1, "{stderr}");
}

/// Starts `priorfetch store-scp --ae PFSTORE` on a free port with `extra` arguments, and
/// waits until it listens.
fn start_store_scp(out: &std::path::Path, extra: &[&str]) -> (std::process::Child, u16) {
    let port = priorfetch_testkit::ports::free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_priorfetch"))
        .args(["store-scp", "--port", &port.to_string(), "--ae", "PFSTORE"])
        .args(extra)
        .args(["--out", out.to_str().unwrap()])
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
    (child, port)
}

fn dcm_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "dcm"))
        .count()
}

fn storescu(calling: &str, port: u16, dir: &std::path::Path) -> bool {
    Command::new("storescu")
        .args(["-aet", calling, "-aec", "PFSTORE", "+sd", "127.0.0.1", &port.to_string(), dir.to_str().unwrap()])
        .output()
        .unwrap()
        .status
        .success()
}

/// SIGTERM, then the exit status (bounded).
fn terminate(mut child: std::process::Child) -> std::process::ExitStatus {
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(20), "did not stop on SIGTERM");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// `priorfetch store-scp` receives from DCMTK storescu, refuses a calling AE not allowed,
/// and stops on SIGTERM.
#[test]
fn store_scp_receives_from_storescu_and_enforces_the_allow_list() {
    let data = tempfile::tempdir().unwrap();
    let spec = StudySpec::small("SCP1", 22);
    write_study(data.path(), &spec);
    let out = tempfile::tempdir().unwrap();
    let (child, port) = start_store_scp(out.path(), &["--allow", "STORESCU"]);
    store_files("PFSTORE", port, data.path());
    assert!(!storescu("INTRUDER", port, data.path()), "a calling AE not on the allow-list is rejected");
    assert_eq!(dcm_files(out.path()), spec.instance_count());
    assert!(terminate(child).success());
}

/// With no archive configured and no `--allow`, store-scp refuses to start (exit 2, the
/// fix named) rather than accept anyone; `--allow-any` is the explicit opt-in.
#[test]
fn store_scp_needs_an_allow_list_or_allow_any() {
    let out = tempfile::tempdir().unwrap();
    let port = priorfetch_testkit::ports::free_port().to_string();
    let (code, _, stderr) = priorfetch(&["store-scp", "--port", &port, "--out", out.path().to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--allow-any") && stderr.contains("--allow CALLING_AE"), "{stderr}");
    let (code, _, stderr) = priorfetch(&["store-scp", "--port", &port, "--allow", "A", "--allow-any"]);
    assert_eq!(code, 2, "--allow and --allow-any conflict: {stderr}");

    let data = tempfile::tempdir().unwrap();
    let spec = StudySpec::small("SCP2", 23);
    write_study(data.path(), &spec);
    let (child, port) = start_store_scp(out.path(), &["--allow-any"]);
    assert!(storescu("ANYONE", port, data.path()), "--allow-any accepts any calling AE");
    assert_eq!(dcm_files(out.path()), spec.instance_count());
    assert!(terminate(child).success());
}

/// The same commands against Orthanc's DICOMweb plugin, named by URL: QIDO-RS and WADO-RS.
#[test]
fn find_and_retrieve_a_dicomweb_archive_by_url() {
    let data = tempfile::tempdir().unwrap();
    let spec = StudySpec::small("CLIWEB1", 22);
    write_study(data.path(), &spec);
    let orthanc = Orthanc::start_dicomweb("ORTHANCWEB", "PRIORFETCH", None);
    store_files(&orthanc.ae, orthanc.port, data.path());
    let url = orthanc.dicomweb_url();

    let (code, stdout, stderr) = priorfetch(&[
        "find",
        &url,
        "-k",
        "PatientID=CLIWEB1",
        "-k",
        "StudyInstanceUID",
        "-k",
        "AccessionNumber",
        "--json",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let line: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(line["StudyInstanceUID"], spec.study_uid.as_str());
    assert_eq!(line["AccessionNumber"], spec.accession.as_str());
    assert!(stderr.contains("1 match"), "{stderr}");

    let out = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) =
        priorfetch(&["retrieve", &url, "--study", &spec.study_uid, "--out", out.path().to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(
        (summary["method"].as_str(), summary["completed"].as_u64()),
        (Some("wado"), Some(spec.instance_count() as u64))
    );
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), spec.instance_count(), "one file per instance");

    let wrong = format!("http://127.0.0.1:{}/nope", orthanc.http_port);
    let (code, _, stderr) =
        priorfetch(&["retrieve", &wrong, "--study", &spec.study_uid, "--out", out.path().to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stderr.contains("hint: check base_url"), "{stderr}");
}

/// The data set of a Part-10 file: what follows the file meta group.
fn data_set(path: &std::path::Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    let group = u32::from_le_bytes(bytes[140..144].try_into().unwrap()) as usize;
    bytes[144 + group..].to_vec()
}

#[test]
fn retrieve_over_four_associations_from_the_command_line() {
    let data = tempfile::tempdir().unwrap();
    let mut spec = StudySpec::small("CLI4", 24);
    (spec.series, spec.instances_per_series) = (1, 120);
    let originals = write_study(data.path(), &spec);
    let dest = Storescp::start_with("DEST", &["--accept-all", "+uf"]);
    let orthanc = Orthanc::start("ORTHANC4", "PRIORFETCH", &[dest.destination()], None);
    store_files(&orthanc.ae, orthanc.port, data.path());
    let archive = format!("ORTHANC4@127.0.0.1:{}", orthanc.port);

    let out = tempfile::tempdir().unwrap();
    let folder = out.path().to_str().unwrap();
    let (code, stdout, stderr) = priorfetch(&[
        "retrieve",
        &archive,
        "--study",
        &spec.study_uid,
        "--method",
        "get",
        "--out",
        folder,
        "--associations",
        "4",
        "--json",
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!((summary["completed"].as_u64(), summary["failed"].as_u64()), (Some(120), Some(0)), "{summary}");
    // every instance once, its data set byte-identical to what the archive was loaded with
    assert_eq!(dcm_files(out.path()), 120);
    for original in &originals {
        let got = out.path().join(original.file_name().unwrap());
        assert!(data_set(&got) == data_set(original), "{} differs", got.display());
    }

    let (code, stdout, stderr) = priorfetch(&[
        "retrieve",
        &archive,
        "--study",
        &spec.study_uid,
        "--dest",
        "DEST",
        "--associations",
        "4",
        "--json",
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(summary["completed"].as_u64(), Some(120), "{summary}");
    assert_eq!(dest.files().len(), 120, "unique file names: an instance moved twice would be two files");
}
