//! Patient identifiers stored with the exam, and the per-archive identity and rule inputs
//! of a plan, on Postgres and SQLite through the same test bodies.

use chrono::{Duration as Days, Utc};
use priorfetch_store::{ExamPriority, ExamStatus, NewExam, PatientIdentifier, PlanRecord, Store};
use priorfetch_testkit::db::{TestDb, init_test_log};
use std::time::Duration;

async fn store(db: &TestDb) -> Store {
    init_test_log();
    let store = Store::connect(&db.url, "", 8).await.expect("connect");
    store.migrate().await.expect("migrate");
    store
}

priorfetch_testkit::both_databases!(identifiers_are_stored_and_updated, plan_records_archives_and_inputs);

fn id(id: &str, issuer: &str) -> PatientIdentifier {
    PatientIdentifier::new(id, Some(issuer.to_string()))
}

fn exam(key: &str, identifiers: Vec<PatientIdentifier>) -> NewExam {
    NewExam {
        event_key: key.into(),
        patient_id: "N-100".into(),
        issuer: Some("HOSP_N".into()),
        identifiers,
        accession_number: Some(format!("ACC-{key}")),
        study_instance_uid: None,
        scheduled_at: Some(Utc::now() + Days::hours(2)),
        modality: None,
        body_part: None,
        procedure_code: Some("CTCH".into()),
        procedure_text: None,
        priority: ExamPriority::Routine,
        trace_parent: None,
    }
}

async fn identifiers_are_stored_and_updated(db: TestDb) {
    let store = store(&db).await;
    // the list as sent (primary second), and an exam sent with the primary only
    let both = store.insert_exam(&exam("e1", vec![id("S-200", "HOSP_S"), id("N-100", "HOSP_N")])).await.unwrap().id();
    let alone = store.insert_exam(&exam("e2", Vec::new())).await.unwrap().id();
    let record = store.exam(both).await.unwrap().unwrap();
    assert_eq!(record.exam.identifiers, vec![id("S-200", "HOSP_S"), id("N-100", "HOSP_N")]);
    assert_eq!((record.exam.patient_id.as_str(), record.exam.issuer.as_deref()), ("N-100", Some("HOSP_N")));
    assert_eq!(store.exam(alone).await.unwrap().unwrap().exam.identifiers, vec![id("N-100", "HOSP_N")]);
    // claims read them too (Postgres: raw RETURNING *)
    let claimed = store.claim_exams("w", 10, Duration::from_secs(60)).await.unwrap();
    let claimed = claimed.iter().find(|e| e.exam.id == both).expect("claimed");
    assert_eq!(claimed.exam.identifiers.len(), 2);

    // an update with identifiers replaces the list (the primary stays in it); one
    // without any keeps what was stored
    store.set_exam_status(both, ExamStatus::Planned).await.unwrap();
    store.update_exam(both, &exam("e3", vec![id("E-300", "HOSP_E")])).await.unwrap();
    let updated = store.exam(both).await.unwrap().unwrap();
    assert_eq!(updated.exam.identifiers, vec![id("N-100", "HOSP_N"), id("E-300", "HOSP_E")]);
    assert_eq!(updated.status, ExamStatus::Received, "re-planned with the new identifiers");
    store.update_exam(both, &exam("e4", Vec::new())).await.unwrap();
    assert_eq!(store.exam(both).await.unwrap().unwrap().exam.identifiers.len(), 2);
}

async fn plan_records_archives_and_inputs(db: TestDb) {
    let store = store(&db).await;
    let exam_id = store.insert_exam(&exam("p1", Vec::new())).await.unwrap().id();
    store.claim_exams("w", 10, Duration::from_secs(60)).await.unwrap();
    let archives = serde_json::json!({
        "north": { "patient": { "issuer": "HOSP_N", "id_hash": "0badcafe", "chosen_by": "patient_id_issuer" } },
        "east": { "skipped": "no patient identifier of issuer 'HOSP_E'" },
    });
    let inputs = serde_json::json!([{ "input": "modality", "value": "CT", "from": "procedure_map" }]);
    let plan = PlanRecord {
        exam_id,
        rule: Some("default".into()),
        queries: serde_json::json!({}),
        gaps: serde_json::json!({}),
        archives: archives.clone(),
        inputs: inputs.clone(),
        replan_at: None,
        priors: Vec::new(),
        jobs: Vec::new(),
        max_jobs: Some(1),
        refusal: None,
    };
    store.record_plan(&plan).await.unwrap();
    let stored = store.exam_plan(exam_id).await.unwrap().unwrap();
    assert_eq!((stored.archives, stored.inputs), (Some(archives), Some(inputs.clone())));
    // a re-plan replaces them
    let replan = PlanRecord { archives: serde_json::json!({}), ..plan };
    store.record_plan(&replan).await.unwrap();
    let stored = store.exam_plan(exam_id).await.unwrap().unwrap();
    assert_eq!((stored.archives, stored.inputs, stored.attempts), (Some(serde_json::json!({})), Some(inputs), 2));
}
