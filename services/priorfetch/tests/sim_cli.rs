//! `priorfetch sim` standalone: prints its port, answers DCMTK echoscu/findscu, stops on
//! SIGTERM with a summary; a bad flag is a usage error (exit 2).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn priorfetch() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_priorfetch"));
    c.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    c
}

#[test]
fn sim_serves_dcmtk_and_stops_on_sigterm() {
    let mut child = priorfetch()
        .args([
            "sim",
            "--port",
            "0",
            "--ae",
            "CLISIM",
            "--synthetic",
            "3",
            "--seed",
            "5",
            "--match-cap",
            "2",
            "--cap-behaviour",
            "truncate",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.starts_with("sim CLISIM listening on 127.0.0.1:"), "{line}");
    let port = line.split(':').nth(1).unwrap().split_whitespace().next().unwrap().to_string();

    let echo = Command::new("echoscu")
        .args(["-aet", "PF", "-aec", "CLISIM", "127.0.0.1", &port])
        .env("TCP_NODELAY", "1")
        .output()
        .unwrap();
    assert!(echo.status.success(), "{}", String::from_utf8_lossy(&echo.stderr));
    let out = tempfile::tempdir().unwrap();
    let find = Command::new("findscu")
        .args(["-S", "-aet", "PF", "-aec", "CLISIM", "-X", "-od", out.path().to_str().unwrap()])
        .args(["-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID", "127.0.0.1", &port])
        .env("TCP_NODELAY", "1")
        .output()
        .unwrap();
    assert!(find.status.success(), "{}", String::from_utf8_lossy(&find.stderr));
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 2, "the match cap truncates to 2");

    let kill = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert!(status.success(), "{rest}");
    assert!(rest.contains("2 associations, 1 finds"), "{rest}");
}

#[test]
fn bad_flags_are_usage_errors() {
    let out = priorfetch().args(["sim", "--port", "0", "--synthetic", "1", "--reject", "sometimes"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--reject"));
}
