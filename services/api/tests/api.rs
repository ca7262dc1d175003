//! The operator API over real HTTP on 127.0.0.1 (the admin server's own accept loop),
//! against a fresh Postgres database: tokens and roles, PHI redaction, filters, the bulk
//! retry and its audit row, exam look-up by accession, dead-letter replay exactly once.

use chrono::{Duration, Utc};
use priorfetch_config::{Config, Sources};
use priorfetch_store::{ExamPriority, NewExam, NewJob, RetrieveMethod, Store};
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};
use std::sync::Arc;

const VIEWER: &str = "viewer-token-0123456789";
const OPERATOR: &str = "operator-token-0123456789";
const SENDER: &str = "sender-token-0123456789";
const MRN: &str = "MRN-SECRET-4711";

struct App {
    base: String,
    store: Store,
    http: reqwest::Client,
    _stop: tokio::sync::watch::Sender<bool>,
}

impl App {
    async fn start(tokens: bool) -> App {
        App::start_with(tokens, true).await
    }

    /// As `priorfetch` wires it (`cmd::serve_admin`): with `open_probes = false` the probe
    /// paths need a token too.
    async fn start_with(tokens: bool, config_probes_open: bool) -> App {
        priorfetch_testkit::db::init_test_log();
        let db = priorfetch_testkit::db::TestDb::postgres().await;
        let store = Store::connect(&db.url, "", 4).await.unwrap();
        store.migrate().await.unwrap();
        let mut overlay = format!("[service]\nadmin_listen = '127.0.0.1:0'\n[database]\nurl = '{}'\n", db.url);
        if tokens {
            for (name, role, token) in
                [("wanda", "viewer", VIEWER), ("oscar", "operator", OPERATOR), ("ris", "sender", SENDER)]
            {
                overlay.push_str(&format!("[[admin.tokens]]\nname = '{name}'\nrole = '{role}'\ntoken = '{token}'\n"));
            }
        }
        if !config_probes_open {
            overlay.push_str("[admin]\nopen_probes = false\n");
        }
        let config = Config::load(Sources { file: None, overlay: Some(&overlay), env: false }).unwrap();
        let probe_config = config.clone();
        let intake = priorfetch_listener::http_intake(&config, store.clone());
        let routes =
            priorfetch_api::routes(store.clone(), Arc::new(config)).merge(priorfetch_listener::http::routes(intake));
        let ready: priorfetch_telemetry::admin::ReadyCheck = Arc::new(|| Box::pin(async { Ok(()) }));
        let mut app = priorfetch_telemetry::admin::router(ready, routes);
        if !config_probes_open {
            let access = priorfetch_api::access::Access::new(&probe_config);
            app = app.layer(axum::middleware::from_fn_with_state(access, priorfetch_api::access::probe_guard));
        }
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let (addr, _task) = priorfetch_telemetry::admin::serve("127.0.0.1:0".parse().unwrap(), app, async move {
            let _ = stopped.wait_for(|s| *s).await;
        })
        .await
        .unwrap();
        App { base: format!("http://{addr}"), store, http: reqwest::Client::new(), _stop: stop }
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        let mut request = self.http.post(format!("{}{path}", self.base)).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn exam(&self, key: &str, accession: &str, scheduled_in: Duration) -> i64 {
        let exam = NewExam {
            event_key: key.into(),
            patient_id: MRN.into(),
            issuer: Some("HOSP".into()),
            identifiers: Vec::new(),
            accession_number: Some(accession.into()),
            study_instance_uid: None,
            scheduled_at: Some(Utc::now() + scheduled_in),
            modality: Some("CT".into()),
            body_part: Some("CHEST".into()),
            procedure_code: None,
            procedure_text: Some("CT chest".into()),
            priority: ExamPriority::Routine,
            trace_parent: None,
        };
        self.store.insert_exam(&exam).await.unwrap().id()
    }

    /// A job of `exam` on `archive`, then put by hand into `state`, last changed `ago`.
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
            expected_instances: Some(4),
        };
        self.store.enqueue_jobs(&[job]).await.unwrap();
        let id =
            self.store.jobs_of_exam(exam).await.unwrap().iter().find(|j| j.study_instance_uid == study).unwrap().id;
        let at = (Utc::now() - ago).to_rfc3339();
        let finished = matches!(state, "failed" | "completed");
        let sql = format!(
            "UPDATE retrieve_jobs SET state = '{state}', attempt = 3, updated_at = '{at}', last_status = {status}, \
             last_error = {error}, finished_at = {finished_at} WHERE id = {id}",
            status = if state == "failed" { "42754" } else { "NULL" },
            error = if state == "failed" { "'archive out of resources'" } else { "NULL" },
            finished_at = if finished { format!("'{at}'") } else { "NULL".into() },
        );
        self.store.connection().execute_unprepared(&sql).await.unwrap();
        id
    }
}

fn ids(list: &Value, key: &str) -> Vec<i64> {
    let items = list[key].as_array().unwrap_or_else(|| panic!("no {key} in {list}"));
    let mut ids: Vec<i64> = items.iter().map(|j| j["id"].as_i64().unwrap()).collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_roles_redaction_and_the_audited_bulk_retry() {
    let app = App::start(true).await;
    let exam = app.exam("ev-1", "ACC-1", Duration::hours(2)).await;
    let later = app.exam("ev-2", "ACC-2", Duration::days(3)).await;
    let lta_1 = app.job(exam, "1.1", "lta", "failed", Duration::hours(1)).await;
    let lta_2 = app.job(exam, "1.2", "lta", "failed", Duration::hours(2)).await;
    let sta_1 = app.job(exam, "1.3", "sta", "failed", Duration::hours(1)).await;
    let done = app.job(exam, "1.4", "lta", "completed", Duration::hours(1)).await;
    let old = app.job(exam, "1.5", "lta", "failed", Duration::days(3)).await;
    let running = app.job(exam, "1.6", "lta", "running", Duration::minutes(1)).await;
    let waiting = app.job(later, "2.1", "lta", "scheduled", Duration::minutes(1)).await;

    // probes stay open; the API does not
    assert_eq!(app.get("/healthz", None).await.0, 200);
    assert_eq!(app.get("/metrics", None).await.0, 200);
    let (status, body) = app.get("/api/exams", None).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")));
    assert_eq!(app.get("/api/jobs", Some("not-a-token-at-all")).await.0, 401);
    assert_eq!(app.get("/api/jobs", Some(SENDER)).await.0, 403, "a sender may only post events");

    // a viewer reads, without PHI anywhere in the answer
    let (status, list) = app.get("/api/exams?accession=ACC-1", Some(VIEWER)).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(ids(&list, "exams"), vec![exam]);
    assert!(list["exams"][0]["patient"]["id"].is_null());
    assert_eq!(list["exams"][0]["patient"]["redacted"], true);
    assert!(!list.to_string().contains(MRN), "{list}");
    let (status, detail) = app.get("/api/exams/ACC-1", Some(VIEWER)).await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["exam"]["id"], exam);
    assert_eq!(detail["jobs"].as_array().unwrap().len(), 6);
    assert!(!detail.to_string().contains(MRN), "{detail}");
    assert_eq!(app.get(&format!("/api/exams?patient_id={MRN}"), Some(VIEWER)).await.0, 403);
    // ...and cannot act
    let (status, _) = app.post("/api/jobs/retry", Some(VIEWER), json!({"archive": "lta"})).await;
    assert_eq!(status, 403);
    assert_eq!(app.post(&format!("/api/jobs/{lta_1}/retry"), Some(VIEWER), json!({})).await.0, 403);
    assert_eq!(app.store.job(lta_1).await.unwrap().unwrap().state.as_str(), "failed");

    // an operator sees the patient; the exam is found by ID or accession
    let (status, detail) = app.get("/api/exams/ACC-1", Some(OPERATOR)).await;
    assert_eq!(status, 200);
    assert_eq!(detail["exam"]["patient"]["id"], MRN);
    assert_eq!(detail["exam"]["patient"]["identifiers"][0]["issuer"], "HOSP");
    assert_eq!(app.get(&format!("/api/exams/{later}"), Some(OPERATOR)).await.1["exam"]["accession_number"], "ACC-2");
    assert_eq!(app.get("/api/exams/NO-SUCH-ACC", Some(OPERATOR)).await.0, 404);
    let (status, list) = app.get(&format!("/api/exams?patient_id={MRN}"), Some(OPERATOR)).await;
    assert_eq!((status, ids(&list, "exams")), (200, vec![exam, later]));

    // the schedule window
    let from = (Utc::now()).to_rfc3339();
    let to = (Utc::now() + Duration::days(1)).to_rfc3339();
    let query = format!("/api/exams?scheduled_from={}&scheduled_to={}", urlencode(&from), urlencode(&to));
    assert_eq!(ids(&app.get(&query, Some(VIEWER)).await.1, "exams"), vec![exam]);
    let (status, body) = app.get("/api/exams?scheduled_from=soonish", Some(VIEWER)).await;
    assert_eq!((status, body["param"].as_str()), (400, Some("scheduled_from")));

    // job filters and the status spelled out
    let (_, failed_lta) = app.get("/api/jobs?state=failed&archive=lta", Some(VIEWER)).await;
    assert_eq!(ids(&failed_lta, "jobs"), vec![lta_1, lta_2, old]);
    let (_, recent) = app.get("/api/jobs?state=failed&since=12h", Some(VIEWER)).await;
    assert_eq!(ids(&recent, "jobs"), vec![lta_1, lta_2, sta_1]);
    let (_, of_exam) = app.get(&format!("/api/jobs?exam={later}"), Some(VIEWER)).await;
    assert_eq!(ids(&of_exam, "jobs"), vec![waiting]);
    let (status, one) = app.get(&format!("/api/jobs/{lta_1}"), Some(VIEWER)).await;
    assert_eq!(status, 200);
    assert_eq!(one["last_status"], 42754);
    assert_eq!(one["last_status_text"], "0xA702 (out of resources: unable to perform sub-operations)");
    let (status, body) = app.get("/api/jobs?state=bogus", Some(VIEWER)).await;
    assert_eq!((status, body["param"].as_str()), (400, Some("state")));

    // bulk retry: exactly the failed jobs of lta changed in the last 12 hours
    let since = (Utc::now() - Duration::hours(12)).to_rfc3339();
    let filter = json!({"state": "failed", "archive": "lta", "since": since});
    let (status, body) = app.post("/api/jobs/retry", Some(OPERATOR), filter).await;
    assert_eq!((status, body.clone()), (200, json!({"requeued": 2})), "{body}");
    for id in [lta_1, lta_2] {
        let job = app.store.job(id).await.unwrap().unwrap();
        assert_eq!((job.state.as_str(), job.attempt, job.finished_at), ("available", 0, None), "job {id}");
        assert!(job.not_before <= Utc::now());
    }
    for (id, state) in [(sta_1, "failed"), (old, "failed"), (done, "completed"), (running, "running")] {
        assert_eq!(app.store.job(id).await.unwrap().unwrap().state.as_str(), state, "job {id} untouched");
    }
    let (status, audit) = app.get("/api/audit", Some(OPERATOR)).await;
    assert_eq!(status, 200);
    let row = &audit["audit"][0];
    assert_eq!((row["actor"].as_str(), row["action"].as_str()), (Some("oscar"), Some("jobs.bulk_retry")));
    assert_eq!((row["target"]["state"].as_str(), row["target"]["archive"].as_str()), (Some("failed"), Some("lta")));
    assert!(row["target"]["since"].as_str().is_some_and(|s| s.starts_with(&since[..16])), "{row}");
    assert_eq!(row["outcome"], "requeued 2");
    assert_eq!(app.get("/api/audit", Some(VIEWER)).await.0, 403);
    let (status, _) = app.post("/api/jobs/retry", Some(OPERATOR), json!({"state": "running"})).await;
    assert_eq!(status, 400, "running jobs are never bulk-retried");
    let (status, _) = app.post("/api/jobs/retry", Some(OPERATOR), json!({"colour": "red"})).await;
    assert_eq!(status, 400, "unknown filter keys are refused, not ignored");

    // one job: retry and cancel, audited
    assert_eq!(app.post(&format!("/api/jobs/{sta_1}/retry"), Some(OPERATOR), json!({})).await.0, 200);
    assert_eq!(app.store.job(sta_1).await.unwrap().unwrap().state.as_str(), "available");
    assert_eq!(app.post(&format!("/api/jobs/{waiting}/cancel"), Some(OPERATOR), json!({})).await.0, 200);
    assert_eq!(app.store.job(waiting).await.unwrap().unwrap().state.as_str(), "cancelled");
    assert_eq!(app.post(&format!("/api/jobs/{done}/cancel"), Some(OPERATOR), json!({})).await.0, 409);
    let audit = app.store.audit_log(10).await.unwrap();
    let actions: Vec<(&str, &str, &str)> =
        audit.iter().map(|a| (a.actor.as_str(), a.action.as_str(), a.outcome.as_str())).collect();
    assert_eq!(
        actions[..3],
        [
            ("oscar", "jobs.cancel", "refused: no such job, or finished"),
            ("oscar", "jobs.cancel", "cancelled"),
            ("oscar", "jobs.retry", "requeued"),
        ]
    );
    assert_eq!(audit[1].target, json!({"job": waiting}));
    assert!(audit.iter().all(|a| !a.target.to_string().contains(MRN)));

    // reschedule: a failed job re-opened for later; operators only; times checked
    let path = format!("/api/jobs/{old}/reschedule");
    assert_eq!(app.post(&path, Some(VIEWER), json!({"at": "in 2h"})).await.0, 403);
    let (status, body) = app.post(&path, Some(OPERATOR), json!({"at": "soonish"})).await;
    assert_eq!((status, body["param"].as_str()), (400, Some("at")));
    let (status, body) = app.post(&path, Some(OPERATOR), json!({"at": "in 2h"})).await;
    assert_eq!((status, body["outcome"].as_str()), (200, Some("rescheduled")), "{body}");
    let job = app.store.job(old).await.unwrap().unwrap();
    assert_eq!(job.state.as_str(), "scheduled");
    let ahead = job.not_before - Utc::now();
    assert!(ahead > Duration::minutes(119) && ahead <= Duration::hours(2), "{ahead}");
    let done_path = format!("/api/jobs/{done}/reschedule");
    assert_eq!(app.post(&done_path, Some(OPERATOR), json!({"at": "in 2h"})).await.0, 409);
    let audit = app.store.audit_log(2).await.unwrap();
    assert_eq!((audit[1].action.as_str(), audit[1].outcome.as_str()), ("jobs.reschedule", "rescheduled"));
}

fn urlencode(text: &str) -> String {
    text.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_replayed_twice_records_its_exam_once() {
    let app = App::start(true).await;
    let event = json!({
        "event_id": "ris-replay-1", "type": "exam.scheduled",
        "patient": {"id": MRN, "issuer": "HOSP", "name": "DOE^JANE"},
        "accession_number": "ACC-R1", "scheduled_at": "2026-12-24T09:30:00+01:00", "modality": "CT",
    });
    // kept when the database refused it (say, a constraint since fixed)
    let payload = serde_json::to_vec(&event).unwrap();
    app.store
        .insert_dead_letters(&[("http".into(), payload.clone(), "rejected_by_database: value too long".into())])
        .await
        .unwrap();
    let letter = app.store.list_dead_letters(1).await.unwrap()[0].id;

    // a viewer sees the letter but not its payload, and may not replay it
    let (status, list) = app.get("/api/dead-letters", Some(VIEWER)).await;
    assert_eq!(status, 200);
    assert_eq!(list["dead_letters"][0]["id"], letter);
    assert_eq!(list["dead_letters"][0]["payload_bytes"], payload.len());
    assert!(list["dead_letters"][0]["payload"].is_null());
    assert!(!list.to_string().contains(MRN) && !list.to_string().contains("DOE"));
    assert_eq!(app.post(&format!("/api/dead-letters/{letter}/replay"), Some(VIEWER), json!({})).await.0, 403);

    let (status, first) = app.post(&format!("/api/dead-letters/{letter}/replay"), Some(OPERATOR), json!({})).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["outcome"], "accepted");
    let exam = first["exam_id"].as_i64().unwrap();
    let (_, second) = app.post(&format!("/api/dead-letters/{letter}/replay"), Some(OPERATOR), json!({})).await;
    assert_eq!((second["outcome"].as_str(), second["exam_id"].as_i64()), (Some("duplicate"), Some(exam)));
    // the sender redelivering it meets the same exam
    let response = app.http.post(format!("{}/api/events", app.base)).body(payload).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 202);
    let body: Value = response.json().await.unwrap();
    assert_eq!((body["outcome"].as_str(), body["exam_id"].as_i64()), (Some("duplicate"), Some(exam)));

    let exams = app.store.exams_by_accession("ACC-R1").await.unwrap();
    assert_eq!(exams.len(), 1);
    assert_eq!((exams[0].exam.id, exams[0].event_key.as_str()), (exam, "json:ris-replay-1"));
    assert_eq!(app.store.count_exams().await.unwrap(), 1);
    let (_, list) = app.get("/api/dead-letters", Some(OPERATOR)).await;
    assert_eq!(list["dead_letters"][0]["replay_outcome"], format!("duplicate exam {exam}"));
    assert!(list["dead_letters"][0]["payload"].as_str().unwrap().contains("ris-replay-1"));
    let audit = app.store.audit_log(10).await.unwrap();
    assert_eq!(audit.len(), 2);
    assert!(audit.iter().all(|a| a.action == "dead_letters.replay" && a.actor == "oscar"));
    assert_eq!(audit[1].outcome, format!("accepted exam {exam}"));
    assert_eq!(audit[0].target, json!({"dead_letter": letter}));

    assert_eq!(app.post("/api/dead-letters/999999/replay", Some(OPERATOR), json!({})).await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tokens_a_loopback_listener_serves_loopback_callers() {
    let app = App::start(false).await;
    let exam = app.exam("ev-9", "ACC-9", Duration::hours(1)).await;
    let (status, list) = app.get("/api/exams", None).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(ids(&list, "exams"), vec![exam]);
    assert_eq!(list["exams"][0]["patient"]["id"], MRN, "the local operator");
    let job = app.job(exam, "9.1", "lta", "failed", Duration::hours(1)).await;
    let (status, body) = app.post("/api/jobs/retry", None, json!({})).await;
    assert_eq!((status, body["requeued"].as_u64()), (200, Some(1)));
    assert_eq!(app.store.job(job).await.unwrap().unwrap().state.as_str(), "available");
    assert_eq!(app.store.audit_log(1).await.unwrap()[0].actor, "loopback");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_probes_need_a_token_of_any_role() {
    let app = App::start_with(true, false).await;
    assert_eq!(app.get("/metrics", None).await.0, 401);
    assert_eq!(app.get("/healthz", Some("not-a-token-at-all")).await.0, 401);
    assert_eq!(app.get("/healthz", Some(SENDER)).await.0, 200, "a scraper may hold any role");
    assert_eq!(app.get("/readyz", Some(VIEWER)).await.0, 200);
    assert_eq!(app.get("/api/jobs", Some(SENDER)).await.0, 403, "the API keeps its own rules");
    assert_eq!(app.get("/api/jobs", Some(VIEWER)).await.0, 200);
}
