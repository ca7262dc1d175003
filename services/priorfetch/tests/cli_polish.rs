//! The CLI's manners (issue 19, part 5), against the archive simulator run as
//! `priorfetch sim`: a closed stdout ends a command quietly, unknown archive names list
//! the configured ones, `find` tables fit their values, logs carry no colour on a pipe,
//! and failure hints fit the operation. (Help text on every argument: `help_tests.rs`.)

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_priorfetch");
const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// `program` in the repo root, without the caller's priorfetch, log or colour settings.
fn command(program: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(REPO);
    for (key, _) in std::env::vars() {
        if key.starts_with("PRIORFETCH__") || key == "RUST_LOG" || key == "NO_COLOR" {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// (exit code, stdout, stderr)
fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

/// `priorfetch sim` with 6 synthetic patients on a free port; killed when dropped.
struct Sim {
    child: Child,
    /// AE@host:port
    peer: String,
}

impl Sim {
    fn start(ae: &str, extra: &[&str]) -> Sim {
        let mut child = command(BIN)
            .args(["sim", "--port", "0", "--ae", ae, "--synthetic", "6", "--seed", "3"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let address = line.split(" listening on ").nth(1).and_then(|r| r.split_whitespace().next());
        let address = address.unwrap_or_else(|| panic!("no address in '{line}'")).to_string();
        Sim { child, peer: format!("{ae}@{address}") }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn find_json_into_head_exits_cleanly_with_nothing_on_stderr() {
    // a delay per response, so that head has gone while matches still arrive
    let sim = Sim::start("PIPESIM", &["--delay", "30ms"]);
    let pipeline =
        format!("set -o pipefail; '{BIN}' find {} -k PatientID -k StudyInstanceUID --json | head -1", sim.peer);
    let (code, stdout, stderr) = run(command("bash").args(["-c", &pipeline]));
    assert_eq!(code, 0, "pipefail: priorfetch's own exit code; stderr: {stderr}");
    assert_eq!(stderr, "", "no panic, no broken-pipe message");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let first: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(first["StudyInstanceUID"].as_str().is_some_and(|u| !u.is_empty()), "{first}");
}

#[test]
fn echo_with_an_unknown_name_lists_the_configured_archives() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("priorfetch.toml");
    std::fs::write(
        &config,
        "[[archives]]\nname = 'north'\nae_title = 'NORTH'\nhost = '127.0.0.1'\nport = 104\nretrieve = 'get'\n\n\
         [[archives]]\nname = 'south'\nae_title = 'SOUTH'\nhost = '127.0.0.1'\nport = 105\nretrieve = 'get'\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    for sub in ["echo", "doctor"] {
        let (code, _, stderr) = run(command(BIN).args(["--config", config, sub, "nowhere"]));
        assert_eq!(code, 2, "{sub}: a usage error: {stderr}");
        assert!(
            stderr.contains("'nowhere'") && stderr.contains("configured archives: north, south"),
            "{sub}: {stderr}"
        );
    }
    let empty = dir.path().join("empty.toml");
    std::fs::write(&empty, "").unwrap();
    let (code, _, stderr) = run(command(BIN).args(["--config", empty.to_str().unwrap(), "echo", "nowhere"]));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("no archive is configured"), "{stderr}");
}

#[test]
fn find_table_columns_fit_their_values() {
    let sim = Sim::start("TABLESIM", &[]);
    let (code, stdout, stderr) =
        run(command(BIN).args(["find", &sim.peer, "-k", "PatientID", "-k", "StudyInstanceUID", "-k", "StudyDate"]));
    assert_eq!(code, 0, "{stderr}");
    let mut lines = stdout.lines();
    let header = lines.next().unwrap();
    let uid_at = header.find("StudyInstanceUID").unwrap();
    let date_at = header.find("StudyDate").unwrap();
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    assert!(rows.len() >= 6, "{stdout}");
    let widest = |i: usize, title: &str| rows.iter().map(|r| r[i].len()).chain([title.len()]).max().unwrap();
    assert_eq!(uid_at, widest(0, "PatientID") + 2, "{stdout}");
    assert!(widest(1, "") > 24, "a UID longer than the old fixed width: {stdout}");
    assert_eq!(date_at, uid_at + widest(1, "StudyInstanceUID") + 2, "the long UIDs widen their column: {stdout}");
    for (line, row) in stdout.lines().skip(1).zip(&rows) {
        assert_eq!(line.find(row[1]), Some(uid_at), "{line}");
        assert_eq!(&line[date_at..], row[2], "{line}");
    }
}

#[test]
fn logs_carry_no_colour_on_a_pipe_or_with_no_color() {
    let db = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", db.path().join("logs.db").display());
    let migrate = |program: &str| {
        let mut cmd = command(program);
        cmd.env("PRIORFETCH__DATABASE__URL", &url)
            .env("PRIORFETCH__TELEMETRY__LOG_FORMAT", "text")
            .env("PRIORFETCH__TELEMETRY__LOG_LEVEL", "info");
        cmd
    };
    let (code, _, stderr) = run(migrate(BIN).arg("migrate"));
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("migrations applied"), "{stderr}");
    assert!(!stderr.contains("\x1b["), "stderr is a pipe: {stderr:?}");

    // on a terminal (script(1) gives one) colours appear, unless NO_COLOR is set
    let on_tty = |no_color: Option<&str>| {
        let mut cmd = migrate("script");
        cmd.args(["-qec", &format!("'{BIN}' migrate"), "/dev/null"]);
        if let Some(value) = no_color {
            cmd.env("NO_COLOR", value);
        }
        let (code, out, err) = run(&mut cmd);
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("migrations applied"), "{out:?}");
        out
    };
    assert!(on_tty(None).contains("\x1b["), "a terminal gets colours");
    assert!(!on_tty(Some("1")).contains("\x1b["), "NO_COLOR=1 turns them off");
}

#[test]
fn failure_hints_fit_the_operation() {
    let dest_port = priorfetch_testkit::ports::free_port().to_string();
    let dest = format!("DEST=127.0.0.1:{dest_port}");
    let sim = Sim::start("HINTSIM", &["--destination", &dest, "--out-of-resources"]);
    let (code, stdout, stderr) = run(command(BIN).args(["find", &sim.peer, "-k", "StudyInstanceUID", "--json"]));
    assert_eq!(code, 0, "{stderr}");
    let first: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    let study = first["StudyInstanceUID"].as_str().unwrap().to_string();
    let retrieve = |extra: &[&str]| {
        let (code, _, stderr) = run(command(BIN).args(["retrieve", &sim.peer, "--study", &study]).args(extra));
        assert_eq!(code, 1, "{stderr}");
        assert!(stderr.contains("hint:"), "{stderr}");
        stderr
    };

    let out = tempfile::tempdir().unwrap();
    let get = retrieve(&["--method", "get", "--out", out.path().to_str().unwrap()]);
    assert!(get.contains("0xA702") && get.contains("C-GET"), "{get}");
    assert!(!get.to_lowercase().contains("move"), "no move-destination hint for a C-GET: {get}");

    let moved = retrieve(&["--dest", "DEST"]);
    assert!(moved.contains("0xA702") && moved.contains("AE table has for 'DEST'"), "{moved}");

    let unknown = retrieve(&["--dest", "NOWHERE"]);
    assert!(unknown.contains("0xA801") && unknown.contains("'NOWHERE'"), "{unknown}");
    assert!(unknown.contains("archives[].move_destination"), "{unknown}");
}
