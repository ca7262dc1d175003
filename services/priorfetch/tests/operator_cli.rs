//! `exams list|show`, `jobs list` filters, `jobs retry --filter`, `dead-letters list|replay`
//! and `config check`'s refusal of an open API: the binary against a fresh Postgres
//! database, its `--json` output parsed.

use chrono::{Duration, Utc};
use priorfetch_store::{ExamPriority, NewExam, NewJob, RetrieveMethod, Store};
use sea_orm::ConnectionTrait;
use serde_json::Value;
use std::process::{Command, Output};

const MRN: &str = "MRN-CLI-0815";

struct Db {
    _db: priorfetch_testkit::db::TestDb,
    url: String,
    store: Store,
}

impl Db {
    async fn new() -> Db {
        let db = priorfetch_testkit::db::TestDb::postgres().await;
        let store = Store::connect(&db.url, "", 2).await.unwrap();
        store.migrate().await.unwrap();
        Db { url: db.url.clone(), _db: db, store }
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_priorfetch"));
        cmd.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
        for (key, _) in std::env::vars() {
            if key.starts_with("PRIORFETCH__") {
                cmd.env_remove(key);
            }
        }
        cmd.args(args).env("PRIORFETCH__DATABASE__URL", &self.url).env("USER", "tester").output().unwrap()
    }

    /// Exit 0 and stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        stdout
    }

    fn json_lines(&self, args: &[&str]) -> Vec<Value> {
        self.ok(args).lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"))).collect()
    }

    async fn exam(&self, key: &str, accession: &str, scheduled_in: Duration) -> i64 {
        let exam = NewExam {
            event_key: key.into(),
            patient_id: MRN.into(),
            issuer: None,
            identifiers: Vec::new(),
            accession_number: Some(accession.into()),
            study_instance_uid: None,
            scheduled_at: Some(Utc::now() + scheduled_in),
            modality: Some("MR".into()),
            body_part: None,
            procedure_code: Some("MRHEAD".into()),
            procedure_text: None,
            priority: ExamPriority::Routine,
            trace_parent: None,
        };
        self.store.insert_exam(&exam).await.unwrap().id()
    }

    async fn job(&self, exam: i64, study: &str, archive: &str, state: &str, ago: Duration) -> i64 {
        let job = NewJob {
            exam_id: exam,
            study_instance_uid: study.into(),
            archive: archive.into(),
            method: RetrieveMethod::Move,
            destination: "DEST".into(),
            priority: 5,
            not_before: Utc::now() + Duration::hours(1),
            deadline: None,
            max_attempts: 3,
            expected_instances: None,
        };
        self.store.enqueue_jobs(&[job]).await.unwrap();
        let id =
            self.store.jobs_of_exam(exam).await.unwrap().iter().find(|j| j.study_instance_uid == study).unwrap().id;
        let sql = format!(
            "UPDATE retrieve_jobs SET state = '{state}', updated_at = '{}', last_status = {} WHERE id = {id}",
            (Utc::now() - ago).to_rfc3339(),
            if state == "failed" { "42754" } else { "NULL" }
        );
        self.store.connection().execute_unprepared(&sql).await.unwrap();
        id
    }
}

fn ids(values: &[Value]) -> Vec<i64> {
    let mut ids: Vec<i64> = values.iter().map(|v| v["id"].as_i64().unwrap()).collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn exams_list_by_window_and_show_by_accession() {
    let db = Db::new().await;
    let soon = db.exam("cli-1", "ACC-C1", Duration::hours(3)).await;
    let later = db.exam("cli-2", "ACC-C2", Duration::days(4)).await;

    let all = db.json_lines(&["exams", "list", "--json"]);
    assert_eq!(ids(&all), vec![soon, later]);
    assert_eq!(all[0]["id"], later, "newest first without a window");
    assert_eq!(all[0]["patient"]["id"], MRN, "the command line is an operator");

    let from = Utc::now().to_rfc3339();
    let window = db.json_lines(&["exams", "list", "--from", &from, "--to", "2d", "--json"]);
    assert!(window.is_empty(), "--to 2d is two days ago: nothing is scheduled before it");
    let to = (Utc::now() + Duration::days(1)).format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let window = db.json_lines(&["exams", "list", "--from", &from, "--to", &to, "--json"]);
    assert_eq!(ids(&window), vec![soon]);
    let table = db.ok(&["exams", "list", "--accession", "ACC-C2"]);
    assert!(table.contains("ACC-C2") && table.contains("MRHEAD") && !table.contains("ACC-C1"), "{table}");
    assert!(table.contains("1 exams"), "{table}");
    assert_eq!(ids(&db.json_lines(&["exams", "list", "--state", "received", "--json"])), vec![soon, later]);
    assert!(db.json_lines(&["exams", "list", "--state", "planned", "--json"]).is_empty());

    let shown: Value = serde_json::from_str(&db.ok(&["exams", "show", "ACC-C1", "--json"])).unwrap();
    assert_eq!(
        (shown["exam"]["id"].as_i64(), shown["exam"]["accession_number"].as_str()),
        (Some(soon), Some("ACC-C1"))
    );
    assert_eq!(shown["exam"]["status"], "received");
    assert!(shown["jobs"].as_array().unwrap().is_empty());
    let by_id: Value = serde_json::from_str(&db.ok(&["exams", "show", &later.to_string(), "--json"])).unwrap();
    assert_eq!(by_id["exam"]["accession_number"], "ACC-C2");

    let missing = db.run(&["exams", "show", "NO-SUCH"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no exam with ID or accession 'NO-SUCH'"));
    let bad = db.run(&["exams", "list", "--from", "soonish"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--from: 'soonish' is not"), "{bad:?}");
}

#[tokio::test]
async fn jobs_list_filters_and_retry_by_filter_audited() {
    let db = Db::new().await;
    let exam = db.exam("cli-j", "ACC-J", Duration::hours(5)).await;
    let other = db.exam("cli-k", "ACC-K", Duration::hours(6)).await;
    let lta_1 = db.job(exam, "1.1", "lta", "failed", Duration::hours(1)).await;
    let lta_2 = db.job(other, "1.2", "lta", "failed", Duration::hours(3)).await;
    let sta = db.job(exam, "1.3", "sta", "failed", Duration::hours(1)).await;
    let old = db.job(exam, "1.4", "lta", "failed", Duration::days(2)).await;
    let done = db.job(exam, "1.5", "lta", "completed", Duration::hours(1)).await;

    let lta = db.json_lines(&["jobs", "list", "--archive", "lta", "--state", "failed", "--json"]);
    assert_eq!(ids(&lta), vec![lta_1, lta_2, old]);
    assert_eq!(lta[0]["last_status_text"], "0xA702 (out of resources: unable to perform sub-operations)");
    assert_eq!(ids(&db.json_lines(&["jobs", "list", "--exam", &other.to_string(), "--json"])), vec![lta_2]);
    assert_eq!(ids(&db.json_lines(&["jobs", "list", "--since", "12h", "--json"])), vec![lta_1, lta_2, sta, done]);
    let until = (Utc::now() - Duration::days(1)).to_rfc3339();
    assert_eq!(ids(&db.json_lines(&["jobs", "list", "--until", &until, "--json"])), vec![old]);
    let table = db.ok(&["jobs", "list", "--archive", "sta"]);
    assert!(table.contains("0xA702 (out of resources"), "{table}");
    let shown = db.ok(&["jobs", "show", &lta_1.to_string()]);
    assert!(shown.contains("\"last_status_text\": \"0xA702 (out of resources"), "{shown}");

    let out = db.ok(&["jobs", "retry", "--filter", "state=failed,archive=lta,since=12h"]);
    assert_eq!(out.trim(), "requeued 2 jobs");
    for (id, state) in
        [(lta_1, "available"), (lta_2, "available"), (sta, "failed"), (old, "failed"), (done, "completed")]
    {
        assert_eq!(db.store.job(id).await.unwrap().unwrap().state.as_str(), state, "job {id}");
    }
    let audit = db.store.audit_log(5).await.unwrap();
    assert_eq!((audit[0].actor.as_str(), audit[0].action.as_str()), ("cli:tester", "jobs.bulk_retry"));
    assert_eq!(audit[0].target["archive"], "lta");
    assert_eq!(audit[0].outcome, "requeued 2");

    assert_eq!(db.ok(&["jobs", "retry", &sta.to_string()]).trim(), format!("job {sta} is available again"));
    assert_eq!(db.store.audit_log(1).await.unwrap()[0].action, "jobs.retry");
    let bad = db.run(&["jobs", "retry", "--filter", "colour=red"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown key 'colour'"));
    assert_eq!(db.run(&["jobs", "retry"]).status.code(), Some(2), "an ID or --filter is required");
    assert_eq!(db.run(&["jobs", "retry", "--filter", "state=running"]).status.code(), Some(2));
    assert_eq!(db.run(&["jobs", "list", "--state", "bogus"]).status.code(), Some(2));

    let out = db.ok(&["jobs", "reschedule", &old.to_string(), "--at", "in 3h"]);
    assert!(out.starts_with(&format!("job {old} rescheduled for ")), "{out}");
    let job = db.store.job(old).await.unwrap().unwrap();
    assert_eq!(job.state.as_str(), "scheduled");
    assert!(job.not_before - Utc::now() > Duration::minutes(179), "{}", job.not_before);
    assert_eq!(db.store.audit_log(1).await.unwrap()[0].action, "jobs.reschedule");
    assert_eq!(db.run(&["jobs", "reschedule", &done.to_string(), "--at", "in 3h"]).status.code(), Some(1));
    assert_eq!(db.run(&["jobs", "reschedule", &old.to_string(), "--at", "soonish"]).status.code(), Some(2));
}

#[tokio::test]
async fn dead_letters_list_and_replay_twice_record_one_exam() {
    let db = Db::new().await;
    let event = serde_json::json!({
        "event_id": "cli-replay-1", "type": "exam.scheduled", "patient": {"id": MRN},
        "accession_number": "ACC-DL", "scheduled_at": "2026-12-24T09:30:00+01:00", "modality": "CT",
    });
    let payload = serde_json::to_vec(&event).unwrap();
    db.store
        .insert_dead_letters(&[("rabbitmq".into(), payload.clone(), "rejected_by_database: timeout".into())])
        .await
        .unwrap();
    let listed = db.json_lines(&["dead-letters", "list", "--json"]);
    assert_eq!(listed.len(), 1);
    let id = listed[0]["id"].as_i64().unwrap();
    assert_eq!(listed[0]["source"], "rabbitmq");
    assert_eq!(listed[0]["payload_bytes"], payload.len());
    assert!(listed[0]["replayed_at"].is_null());

    let first: Value = serde_json::from_str(&db.ok(&["dead-letters", "replay", &id.to_string(), "--json"])).unwrap();
    assert_eq!(first["outcome"], "accepted");
    let exam = first["exam_id"].as_i64().unwrap();
    let second = db.ok(&["dead-letters", "replay", &id.to_string()]);
    assert_eq!(second.trim(), format!("dead letter {id}: duplicate (exam {exam})"));
    assert_eq!(db.store.count_exams().await.unwrap(), 1);
    assert_eq!(db.store.exams_by_accession("ACC-DL").await.unwrap()[0].exam.id, exam);

    let table = db.ok(&["dead-letters", "list"]);
    assert!(table.contains(&format!("duplicate exam {exam}")) && table.contains("rejected_by_database"), "{table}");
    let audit = db.store.audit_log(5).await.unwrap();
    assert_eq!(audit.len(), 2);
    assert!(audit.iter().all(|a| a.action == "dead_letters.replay" && a.actor == "cli:tester"));
    assert_eq!(db.run(&["dead-letters", "replay", "424242"]).status.code(), Some(1));
}

#[test]
fn config_check_refuses_an_api_open_to_the_network() {
    let dir = tempfile::tempdir().unwrap();
    let check = |text: &str| {
        let path = dir.path().join("pf.toml");
        std::fs::write(&path, text).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_priorfetch"));
        for (key, _) in std::env::vars() {
            if key.starts_with("PRIORFETCH__") {
                cmd.env_remove(key);
            }
        }
        let out = cmd.args(["--config", path.to_str().unwrap(), "config", "check"]).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    let (code, stderr) = check("[service]\nadmin_listen = '0.0.0.0:9464'\n");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("service.admin_listen: listens beyond loopback"), "{stderr}");
    assert_eq!(check("[service]\nadmin_listen = '127.0.0.1:9464'\n").0, Some(0));
    assert_eq!(check("[service]\nadmin_listen = '0.0.0.0:9464'\n[admin]\napi = false\n").0, Some(0));
    let with_token = "[service]\nadmin_listen = '0.0.0.0:9464'\n[[admin.tokens]]\nname = 'ops'\nrole = 'operator'\n\
                      token = 'a-long-random-operator-token'\n";
    let (code, stderr) = check(with_token);
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn explain_queries_the_archive_and_writes_nothing() {
    use std::io::{BufRead, BufReader};
    let mut sim = Command::new(env!("CARGO_BIN_EXE_priorfetch"))
        .args(["sim", "--port", "0", "--ae", "EXPSIM", "--synthetic", "3", "--seed", "5"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(sim.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let port: u16 = line.split(':').nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pf.toml");
    std::fs::write(
        &config,
        format!(
            "[[archives]]\nname = 'sim'\nae_title = 'EXPSIM'\nhost = '127.0.0.1'\nport = {port}\nretrieve = 'get'\n\
             [destination]\nae_title = 'DEST'\nhost = '127.0.0.1'\nport = 11112\ncheck_existing = false\n\
             [[rules]]\nname = 'any-prior'\nmatch = {{}}\npriors = {{ same_modality = false, lookback = '30y', max = 2 }}\n"
        ),
    )
    .unwrap();
    let explain = |patient: &str, json: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_priorfetch"));
        cmd.args(["--config", config.to_str().unwrap(), "explain", "--patient-id", patient, "--modality", "CT"]);
        if json {
            cmd.arg("--json");
        }
        // a database that does not exist: a dry run never opens the configured one
        let out = cmd.env("PRIORFETCH__DATABASE__URL", "postgres://postgres@127.0.0.1:1/nowhere").output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let explained: Value = serde_json::from_str(&explain("SIM-P0001", true)).unwrap();
    let summary = explain("SIM-P0001", false);
    let _ = sim.kill();
    let _ = sim.wait();
    assert_eq!(explained["rule"], "any-prior");
    let queries = explained["cfind"]["sim"].as_array().unwrap();
    assert!(queries.iter().any(|q| q["keys"]["PatientID"] == "SIM-P0001"), "{explained}");
    let priors = explained["priors"].as_array().unwrap();
    assert!(!priors.is_empty(), "the simulated patient has studies: {explained}");
    assert!(priors.iter().all(|p| p["archive"] == "sim" && !p["reason"].as_str().unwrap().is_empty()));
    let selected = priors.iter().filter(|p| p["selected"] == true).count();
    assert!((1..=2).contains(&selected), "max = 2: {explained}");
    let jobs = explained["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), selected);
    assert!(jobs.iter().all(|j| j["archive"] == "sim" && j["method"] == "get" && j["destination"] == "DEST"));
    assert!(
        summary.contains("rule: any-prior") && summary.contains(&format!("would enqueue {selected} jobs")),
        "{summary}"
    );
}

/// `curl` to the admin port: (status, body).
fn curl(port: u16, path: &str, token: Option<&str>, body: Option<&str>) -> (u16, String) {
    let mut command = Command::new("curl");
    command.args(["-s", "-o", "-", "-w", "\n%{http_code}", "--max-time", "10"]);
    if let Some(token) = token {
        command.args(["-H", &format!("authorization: Bearer {token}")]);
    }
    if let Some(body) = body {
        command.args(["-H", "content-type: application/json", "--data-binary", body]);
    }
    let output = command.arg(format!("http://127.0.0.1:{port}{path}")).output().expect("curl");
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (status.trim().parse().unwrap_or(0), body.to_string())
}

#[tokio::test]
async fn a_planner_process_serves_the_api_behind_its_tokens() {
    let db = Db::new().await;
    let exam = db.exam("proc-1", "ACC-P", Duration::days(20)).await;
    let failed = db.job(exam, "3.1", "lta", "failed", Duration::hours(1)).await;
    let port = priorfetch_testkit::ports::free_port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pf.toml");
    std::fs::write(
        &config,
        format!(
            "[service]\nadmin_listen = '127.0.0.1:{port}'\nshutdown_grace = '2s'\n\
             [admin]\nopen_probes = false\n\
             [[admin.tokens]]\nname = 'wanda'\nrole = 'viewer'\ntoken = 'viewer-token-0123456789'\n\
             [[admin.tokens]]\nname = 'oscar'\nrole = 'operator'\ntoken = 'operator-token-0123456789'\n"
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_priorfetch"))
        .args(["--config", config.to_str().unwrap(), "planner"])
        .env("PRIORFETCH__DATABASE__URL", &db.url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < std::time::Duration::from_secs(20), "planner did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let viewer = Some("viewer-token-0123456789");
    let operator = Some("operator-token-0123456789");
    assert_eq!(curl(port, "/metrics", None, None).0, 401, "open_probes = false");
    assert_eq!(curl(port, "/healthz", viewer, None).0, 200);
    assert_eq!(curl(port, "/api/exams", None, None).0, 401);
    let (status, body) = curl(port, "/api/exams/ACC-P", viewer, None);
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains(MRN), "{body}");
    assert_eq!(curl(port, "/api/jobs/retry", viewer, Some("{}")).0, 403);
    let (status, body) = curl(port, "/api/jobs/retry", operator, Some(r#"{"archive":"lta"}"#));
    assert_eq!((status, body.as_str()), (200, r#"{"requeued":1}"#));
    assert_eq!(db.store.job(failed).await.unwrap().unwrap().state.as_str(), "available");
    assert_eq!(db.store.audit_log(1).await.unwrap()[0].actor, "oscar");
    child.kill().unwrap();
    let _ = child.wait();
}
