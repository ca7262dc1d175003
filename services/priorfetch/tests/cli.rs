//! The binary's contract: exit codes, `config check` output, `migrate` on a real database.

use std::process::Command;

fn priorfetch() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_priorfetch"));
    // run from the repo root so the default config path resolves; isolate from the caller's env
    cmd.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    for (key, _) in std::env::vars() {
        if key.starts_with("PRIORFETCH__") {
            cmd.env_remove(key);
        }
    }
    cmd
}

fn write_config(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("priorfetch.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

#[test]
fn config_check_prints_resolved_config_with_secrets_redacted() {
    let out = priorfetch()
        .args(["config", "check"])
        .env("PRIORFETCH__DATABASE__PASSWORD", "hunter2")
        .env("PRIORFETCH__SERVICE__AE_TITLE", "FROMENV")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("ae_title = \"FROMENV\""), "env overrides the file: {stdout}");
    assert!(!stdout.contains("hunter2") && !stdout.contains("guest:guest"), "{stdout}");
    assert!(stdout.contains("[redacted]"));
}

#[test]
fn config_check_redacts_a_password_given_as_url_query_parameter() {
    let out = priorfetch()
        .args(["config", "check"])
        .env("PRIORFETCH__DATABASE__URL", "postgres://app@db:5432/pf?password=hunter2&sslmode=require")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!stdout.contains("hunter2"), "{stdout}");
    assert!(stdout.contains("password=[redacted]&sslmode=require"), "{stdout}");
}

#[test]
fn bad_config_exits_2_naming_each_key() {
    let cases = [
        (
            "[[archives]]\nname='a'\nae_title='A'\nhost='h'\nport=0\nretrieve='get'\n",
            "archives[0].port: must be 1..=65535",
        ),
        (
            "[[archives]]\nname='a'\nae_title='A'\nhost='h'\nport=104\n",
            "archives[0].move_destination: required when retrieve = \"move\"",
        ),
        ("[service]\nbogus = 1\n", "service.bogus: unknown key"),
        ("[queue]\nlease = 'forever'\n", "queue.lease:"),
        ("not toml at all [", "invalid configuration"),
    ];
    for (text, expected) in cases {
        let (_dir, path) = write_config(text);
        let out = priorfetch().args(["--config", path.to_str().unwrap(), "config", "check"]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {stderr}");
        assert!(stderr.contains(expected), "{text}: expected '{expected}' in {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let out = priorfetch().args(["--config", "/nonexistent.toml", "config", "check"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = priorfetch().args(["no-such-command"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn migrate_then_jobs_list_on_postgres() {
    let db = priorfetch_testkit::db::TestDb::postgres().await;
    let out = priorfetch().args(["migrate"]).env("PRIORFETCH__DATABASE__URL", &db.url).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let out = priorfetch().args(["jobs", "list"]).env("PRIORFETCH__DATABASE__URL", &db.url).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("totals: no jobs"));
    let out = priorfetch().args(["jobs", "show", "42"]).env("PRIORFETCH__DATABASE__URL", &db.url).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let out = priorfetch()
        .args(["migrate"])
        .env("PRIORFETCH__DATABASE__URL", "postgres://postgres@127.0.0.1:1/nowhere")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "an unreachable database is a runtime failure");
}

#[test]
fn the_demo_runs_and_every_expected_prior_arrives() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_priorfetch"))
        .args(["demo", "--exams", "12", "--quiet", "--timeout", "90"])
        .current_dir(std::env::temp_dir())
        .output()
        .expect("run priorfetch demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("12 exams") && stdout.contains("every expected prior is at the destination"), "{stdout}");
    assert!(!stdout.contains("SIM^PATIENT"), "no patient names in the demo's output");
}
