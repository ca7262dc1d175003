//! Shared set-up of the planner tests: configuration text, a store, exams.

#![allow(dead_code)]

use chrono::{DateTime, Utc};
use priorfetch_config::{Config, Sources};
use priorfetch_store::{NewExam, Store};
use priorfetch_testkit::db::{TestDb, init_test_log};
use priorfetch_testkit::dicom::StudySpec;
use std::sync::Arc;
use std::time::Duration;

pub const OUR_AE: &str = "PRIORFETCH";

pub async fn store(db: &TestDb) -> Store {
    init_test_log();
    let store = Store::connect(&db.url, "", 8).await.expect("connect");
    store.migrate().await.expect("migrate");
    store
}

pub fn config(overlay: &str) -> Arc<Config> {
    Arc::new(Config::load(Sources { overlay: Some(overlay), ..Default::default() }).expect("test config"))
}

pub fn archive(name: &str, ae: &str, port: u16, priority: i32, extra: &str) -> String {
    format!(
        "[[archives]]\nname = '{name}'\nae_title = '{ae}'\nhost = '127.0.0.1'\nport = {port}\npriority = {priority}\n\
         move_destination = 'DEST'\n{extra}\n"
    )
}

pub fn destination(port: u16, check: bool) -> String {
    format!("[destination]\nae_title = 'DEST'\nhost = '127.0.0.1'\nport = {port}\ncheck_existing = {check}\n")
}

pub fn study(patient: &str, uid: &str, date: &str, modality: &str, body: &str) -> StudySpec {
    StudySpec {
        patient_id: patient.into(),
        patient_name: format!("TEST^{patient}"),
        study_uid: uid.into(),
        accession: format!("A{}", uid.rsplit('.').next().unwrap_or("0")),
        study_date: date.into(),
        description: format!("{modality} {body}"),
        modality: modality.into(),
        body_part: body.into(),
        series: 1,
        instances_per_series: 2,
        rows: 8,
        columns: 8,
    }
}

pub fn exam_event(
    key: &str,
    patient: &str,
    modality: &str,
    body: &str,
    scheduled_at: DateTime<Utc>,
    priority: &str,
) -> NewExam {
    NewExam {
        event_key: key.into(),
        patient_id: patient.into(),
        issuer: Some("HOSP".into()),
        identifiers: Vec::new(),
        accession_number: Some(format!("ACC-{key}")),
        study_instance_uid: None,
        scheduled_at: Some(scheduled_at),
        modality: Some(modality.into()),
        body_part: Some(body.into()),
        procedure_code: None,
        procedure_text: Some(format!("{modality} {body}")),
        priority: priorfetch_domain::ExamPriority::parse(priority),
        trace_parent: None,
    }
}

/// Inserts the exam and claims it as the planner would.
pub async fn claimed(store: &Store, event: NewExam) -> priorfetch_domain::Exam {
    let id = store.insert_exam(&event).await.unwrap().id();
    let exams = store.claim_exams("test", 100, Duration::from_secs(60)).await.unwrap();
    exams.into_iter().map(|e| e.exam).find(|e| e.id == id).expect("claimed the exam")
}

/// A date `years` (fractional) before today, as DA.
pub fn years_ago(years: f64) -> String {
    (Utc::now() - chrono::Duration::days((years * 365.0) as i64)).format("%Y%m%d").to_string()
}
