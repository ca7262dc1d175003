//! The console as `priorfetch` serves it (the admin server's own accept loop on
//! 127.0.0.1:0, console and API routes merged) over a fresh database, seeded with two
//! exams of one patient, a recorded plan (rule, C-FIND keys, chosen and skipped priors)
//! and failed jobs on two archives; plus a plain HTTP client that keeps the session
//! cookie by hand.

#![allow(dead_code)] // each test binary uses part of it

pub mod browser;

use chrono::{Duration, Utc};
use priorfetch_config::{Config, Sources};
use priorfetch_store::{ExamPriority, ExamStatus, NewExam, NewJob, PlanRecord, PriorRecord, RetrieveMethod, Store};
use priorfetch_testkit::db::TestDb;
use sea_orm::ConnectionTrait;
use serde_json::json;
use std::sync::Arc;

pub const VIEWER: &str = "viewer-token-0123456789abcdef";
pub const OPERATOR: &str = "operator-token-0123456789abcdef";
pub const SENDER: &str = "sender-token-0123456789abcdef";
pub const MRN: &str = "MRN-SECRET-4711";
pub const NAME: &str = "DOE^JANE";
pub const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
pub const HINT: &str = "the archive ran out of resources: lower max_associations";

pub struct App {
    pub base: String,
    pub store: Store,
    _stop: tokio::sync::watch::Sender<bool>,
}

/// What [`App::seed`] made.
pub struct Seeded {
    pub exam: i64,
    pub later: i64,
    /// Failed jobs of archive `lta` (two of `exam`, one of `later`).
    pub lta_failed: Vec<i64>,
    /// Failed jobs of archive `sta`.
    pub sta_failed: Vec<i64>,
    pub dead_letter: i64,
}

pub struct Options {
    pub tokens: bool,
    pub api: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options { tokens: true, api: true }
    }
}

impl App {
    pub async fn start() -> App {
        App::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> App {
        priorfetch_testkit::db::init_test_log();
        let db = TestDb::postgres().await;
        let store = Store::connect(&db.url, "", 4).await.unwrap();
        store.migrate().await.unwrap();
        let mut overlay = format!("[service]\nadmin_listen = '127.0.0.1:0'\n[database]\nurl = '{}'\n", db.url);
        if options.tokens {
            for (name, role, token) in
                [("wanda", "viewer", VIEWER), ("oscar", "operator", OPERATOR), ("ris", "sender", SENDER)]
            {
                overlay.push_str(&format!("[[admin.tokens]]\nname = '{name}'\nrole = '{role}'\ntoken = '{token}'\n"));
            }
        }
        if !options.api {
            overlay.push_str("[admin]\napi = false\n");
        }
        for (name, ae, port) in [("lta", "LTA", 11104), ("sta", "STA", 11105)] {
            overlay.push_str(&format!(
                "[[archives]]\nname = '{name}'\nae_title = '{ae}'\nhost = '127.0.0.1'\nport = {port}\n\
                 retrieve = 'move'\nmove_destination = 'DEST'\nmax_associations = 2\n"
            ));
        }
        let config = Arc::new(Config::load(Sources { file: None, overlay: Some(&overlay), env: false }).unwrap());
        store.sync_archive_slots(&[("lta".into(), 2), ("sta".into(), 2)]).await.unwrap();
        let routes = priorfetch_console::routes(store.clone(), config.clone())
            .merge(priorfetch_api::routes(store.clone(), config.clone()));
        let ready: priorfetch_telemetry::admin::ReadyCheck = Arc::new(|| Box::pin(async { Ok(()) }));
        let app = priorfetch_telemetry::admin::router(ready, routes);
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let (addr, _task) = priorfetch_telemetry::admin::serve("127.0.0.1:0".parse().unwrap(), app, async move {
            let _ = stopped.wait_for(|s| *s).await;
        })
        .await
        .unwrap();
        App { base: format!("http://{addr}"), store, _stop: stop }
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
            procedure_code: Some("CTCHEST".into()),
            procedure_text: Some("CT chest".into()),
            priority: ExamPriority::Routine,
            trace_parent: Some(format!("00-{TRACE}-00f067aa0ba902b7-01")),
        };
        self.store.insert_exam(&exam).await.unwrap().id()
    }

    /// Two exams of one patient; a plan for each (rule `ct-chest`, C-FIND keys with the
    /// patient's ID and name, priors chosen and skipped); jobs failed on `lta` (3) and
    /// `sta` (2); a dead letter whose payload names the patient.
    pub async fn seed(&self) -> Seeded {
        let exam = self.exam("json:ev-1", "ACC-1", Duration::hours(2)).await;
        let later = self.exam("json:ev-2", "ACC-2", Duration::hours(6)).await;
        self.plan(exam, &[("lta", "1.2.1"), ("lta", "1.2.2"), ("sta", "1.2.3"), ("sta", "1.2.4")]).await;
        self.plan(later, &[("lta", "2.2.1")]).await;
        let mut lta_failed = Vec::new();
        let mut sta_failed = Vec::new();
        for job in self
            .store
            .jobs_of_exam(exam)
            .await
            .unwrap()
            .into_iter()
            .chain(self.store.jobs_of_exam(later).await.unwrap())
        {
            self.fail(job.id).await;
            if job.archive == "lta" { lta_failed.push(job.id) } else { sta_failed.push(job.id) }
        }
        lta_failed.sort();
        sta_failed.sort();
        let payload = json!({"event_id": "bad-1", "patient": {"id": MRN, "name": NAME}}).to_string();
        self.store
            .insert_dead_letters(&[("http".into(), payload.into_bytes(), "invalid: scheduled_at missing".into())])
            .await
            .unwrap();
        let dead_letter = self.store.list_dead_letters(1).await.unwrap()[0].id;
        Seeded { exam, later, lta_failed, sta_failed, dead_letter }
    }

    async fn plan(&self, exam: i64, studies: &[(&str, &str)]) {
        let query = |archive: &str| {
            json!([{ "level": "STUDY", "outcome": "ok", "matches": 3, "millis": 12,
                     "keys": { "PatientID": MRN, "PatientName": NAME, "StudyDate": "20210101-",
                               "ModalitiesInStudy": "CT", "QueryRetrieveLevel": format!("STUDY@{archive}") } }])
        };
        let identity = json!({ "patient": { "issuer": "HOSP", "id_hash": "5f3a", "chosen_by": "primary" } });
        let mut priors: Vec<PriorRecord> = studies
            .iter()
            .map(|(archive, uid)| PriorRecord {
                archive: archive.to_string(),
                study_instance_uid: uid.to_string(),
                study_date: Some("20240105".into()),
                modalities: Some("CT".into()),
                description: Some("CT chest w/o".into()),
                expected_instances: Some(4),
                selected: true,
                reason: "same modality and body part, within 5y".into(),
            })
            .collect();
        priors.push(PriorRecord {
            archive: "sta".into(),
            study_instance_uid: format!("9.{exam}.9"),
            study_date: Some("20120101".into()),
            modalities: Some("MR".into()),
            description: Some("MR knee".into()),
            expected_instances: Some(40),
            selected: false,
            reason: "older than the rule's lookback (5y)".into(),
        });
        let jobs = studies
            .iter()
            .map(|(archive, uid)| NewJob {
                exam_id: exam,
                study_instance_uid: uid.to_string(),
                archive: archive.to_string(),
                method: RetrieveMethod::Move,
                destination: "DEST".into(),
                priority: 5,
                not_before: Utc::now(),
                deadline: None,
                max_attempts: 3,
                expected_instances: Some(4),
            })
            .collect();
        let plan = PlanRecord {
            exam_id: exam,
            rule: Some("ct-chest".into()),
            queries: json!({ "lta": query("lta"), "sta": query("sta") }),
            gaps: json!({}),
            archives: json!({ "lta": identity, "sta": identity }),
            inputs: json!([]),
            replan_at: None,
            priors,
            jobs,
            max_jobs: Some(5),
            refusal: None,
        };
        self.store.record_plan(&plan).await.unwrap();
        self.store.set_exam_status(exam, ExamStatus::Fetching).await.unwrap();
    }

    /// Job `id` failed for good after three attempts with 0xA702.
    async fn fail(&self, id: i64) {
        let at = (Utc::now() - Duration::minutes(30)).to_rfc3339();
        let sql = format!(
            "UPDATE retrieve_jobs SET state = 'failed', attempt = 3, updated_at = '{at}', finished_at = '{at}', \
             last_status = 42754, last_error = 'c-move ended with 0xA702; {HINT}' WHERE id = {id}"
        );
        self.store.connection().execute_unprepared(&sql).await.unwrap();
    }

    pub async fn state(&self, job: i64) -> String {
        self.store.job(job).await.unwrap().unwrap().state.as_str().to_string()
    }
}

/// An HTTP client that follows no redirect and sends the session cookie it was given.
pub struct Http {
    pub base: String,
    pub client: reqwest::Client,
    pub cookie: Option<String>,
}

impl Http {
    pub fn new(app: &App) -> Http {
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Http { base: app.base.clone(), client, cookie: None }
    }

    /// Logs in with `token`: the status and the `Set-Cookie` header (kept when given).
    pub async fn login(&mut self, token: &str) -> (u16, String, String) {
        let response = self
            .client
            .post(format!("{}/ui/login", self.base))
            .form(&[("token", token), ("next", "/ui/schedule")])
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let set_cookie =
            response.headers().get("set-cookie").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        if let Some(pair) = set_cookie.split(';').next().filter(|p| p.contains('=') && !p.ends_with('=')) {
            self.cookie = Some(pair.to_string());
        }
        (status, set_cookie, unescape(&response.text().await.unwrap()))
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let mut request = self.client.get(format!("{}{path}", self.base));
        if let Some(cookie) = &self.cookie {
            request = request.header("cookie", cookie);
        }
        let response = request.send().await.unwrap();
        (response.status().as_u16(), unescape(&response.text().await.unwrap()))
    }

    /// POSTs a form; answers the status, the `Location` and the body.
    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> (u16, String, String) {
        let mut request = self.client.post(format!("{}{path}", self.base)).form(form);
        if let Some(cookie) = &self.cookie {
            request = request.header("cookie", cookie);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let location = response.headers().get("location").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        (status, location, unescape(&response.text().await.unwrap()))
    }
}

/// HTML with the template engine's entities read back, so tests compare plain text.
pub fn unescape(html: &str) -> String {
    html.replace("&#x2f;", "/")
        .replace("&#x27;", "'")
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The value of the first hidden `csrf` field in a page.
pub fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a csrf field in the page") + "name=\"csrf\" value=\"".len();
    html[at..].split('"').next().unwrap().to_string()
}
