//! `priorfetch doctor` against a real Orthanc, a closed port and a storescp destination.

use priorfetch_testkit::dicom::{Orthanc, Storescp, StudySpec, store_files, write_study};
use std::process::Command;

fn priorfetch(config: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_priorfetch"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("PRIORFETCH__SERVICE__AE_TITLE", "PRIORFETCH")
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn doctor_prints_one_line_per_finding_and_exits_by_severity() {
    let data = tempfile::tempdir().unwrap();
    write_study(data.path(), &StudySpec::small("DRCLI", 341));
    let dest = Storescp::start("DEST");
    let orthanc = Orthanc::start("ORTHANC1", "PRIORFETCH", &[dest.destination()], None);
    store_files(&orthanc.ae, orthanc.port, data.path());
    let closed = priorfetch_testkit::ports::free_port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("doctor.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[archives]]
name = "good"
ae_title = "ORTHANC1"
host = "127.0.0.1"
port = {}
move_destination = "DEST"

[[archives]]
name = "closed"
ae_title = "ARCH2"
host = "127.0.0.1"
port = {closed}
move_destination = "DEST"

[destination]
ae_title = "DEST"
host = "127.0.0.1"
port = {}
check_existing = false
"#,
            orthanc.port, dest.port
        ),
    )
    .unwrap();

    let (code, stdout, stderr) = priorfetch(&config, &["doctor"]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    let line = |target: &str, check: &str| {
        stdout
            .lines()
            .find(|l| l.split_whitespace().take(2).eq([target, check]))
            .unwrap_or_else(|| panic!("no {target} {check} line in:\n{stdout}"))
            .to_string()
    };
    assert!(line("good", "association").contains(" OK "), "{stdout}");
    assert!(line("good", "match-cap").contains(" OK "), "{stdout}");
    let refused = line("closed", "reach");
    assert!(
        refused.contains(" FAIL ") && refused.contains("refused") && refused.contains("— fix: check archives[1].port"),
        "{stdout}"
    );
    assert!(line("closed", "echo").contains(" SKIP "), "{stdout}");
    assert!(line("destination", "echo").contains(" OK "), "{stdout}");

    let (code, stdout, stderr) = priorfetch(&config, &["doctor", "good", "--json", "--move-probe"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let findings: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(findings.len(), 9, "{stdout}"); // two query findings
    assert!(findings.iter().all(|f| f["severity"] == "ok" && f["target"] == "good"), "{stdout}");
    assert!(findings.iter().any(|f| f["check"] == "move-destination"), "{stdout}");

    let wrong = format!("WRONG@127.0.0.1:{}", orthanc.port);
    let (code, stdout, _) = priorfetch(&config, &["doctor", &wrong]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("called AE title not recognized") && stdout.contains("archives[].ae_title"), "{stdout}");

    let (code, _, stderr) = priorfetch(&config, &["doctor", "no-such-archive"]);
    assert_eq!(code, 2, "{stderr}");
}
