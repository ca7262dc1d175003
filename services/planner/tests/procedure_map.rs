//! `[[procedure_map]]` and rule inputs that do not degrade silently, against a real
//! archive (Orthanc): an exam without a modality gets it from its procedure code at plan
//! time, so the CT rule applies and only CT priors are selected; with an unmapped code
//! the plan says which rule input was missing and what the planner did instead.

mod common;

use chrono::Utc;
use common::*;
use priorfetch_planner::Planner;
use priorfetch_testkit::db::TestDb;
use priorfetch_testkit::dicom::{Orthanc, load_studies};

const RULES: &str = r#"
[[rules]]
name = "ct-chest"
match = { modality = ["CT"] }
priors = { same_modality = true, body_part = ["CHEST"], lookback = "5y", max = 5 }

[[rules]]
name = "default"
priors = { same_modality = true, lookback = "5y", max = 5 }

[[procedure_map]]
codes = ["ctch", "CT-THORAX"]
modality = "CT"
body_part = "CHEST"
"#;

fn uid(n: u32) -> String {
    format!("1.2.826.0.1.3680043.10.543.99.{n}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modality_from_the_procedure_map_and_missing_inputs_in_the_plan() {
    let db = TestDb::sqlite();
    let store = store(&db).await;
    let arch = Orthanc::start("ARCH", OUR_AE, &[], None);
    let p = "PMAP1";
    load_studies(
        "ARCH",
        arch.port,
        &[study(p, &uid(1), &years_ago(1.0), "CT", "CHEST"), study(p, &uid(2), &years_ago(0.5), "MR", "HEAD")],
    );
    let config = config(&format!("{}{}{RULES}", archive("arch", "ARCH", arch.port, 1, ""), destination(1, false)));
    let planner = Planner::new(store.clone(), config);
    let scheduled = Utc::now() + chrono::Duration::hours(2);
    let without_modality = |key: &str, code: &str| {
        let mut event = exam_event(key, p, "CT", "CHEST", scheduled, "routine");
        (event.modality, event.body_part, event.procedure_code) = (None, None, Some(code.to_string()));
        event
    };

    // mapped (case-insensitively): the CT rule applies; only the CT prior is selected
    let exam = claimed(&store, without_modality("m1", "CTCH")).await;
    let report = planner.plan_exam(&exam).await.unwrap();
    assert_eq!(report.rule.as_deref(), Some("ct-chest"));
    assert_eq!(report.selected(), vec![("arch".into(), uid(1))]);
    let mr = report.decisions.iter().find(|d| d.study.study_instance_uid == uid(2)).unwrap();
    assert!(mr.reason.contains("modalities MR not in CT"), "{}", mr.reason);
    let plan = priorfetch_planner::api::explain(&store, exam.id).await.unwrap().unwrap()["plan"].clone();
    let inputs = plan["inputs"].as_array().unwrap();
    assert_eq!(inputs.len(), 2, "{inputs:#?}");
    assert_eq!((inputs[0]["input"].as_str(), inputs[0]["value"].as_str()), (Some("modality"), Some("CT")));
    assert_eq!(
        (inputs[0]["from"].as_str(), inputs[0]["procedure_code"].as_str()),
        (Some("procedure_map"), Some("CTCH"))
    );
    assert_eq!(inputs[1]["value"], "CHEST");
    // the stored exam is unchanged: the map applies at plan time, a config change reaches it
    assert_eq!(store.exam(exam.id).await.unwrap().unwrap().exam.modality, None);

    // unmapped: the CT rule cannot apply, the default rule's same_modality adds nothing;
    // both priors are selected, and the plan says so
    let exam = claimed(&store, without_modality("m2", "XR-HAND")).await;
    let report = planner.plan_exam(&exam).await.unwrap();
    assert_eq!(report.rule.as_deref(), Some("default"));
    assert_eq!(report.selected(), vec![("arch".into(), uid(1)), ("arch".into(), uid(2))]);
    let notes: Vec<&str> = report.inputs.iter().map(|n| n.note.as_str()).collect();
    assert_eq!(
        notes,
        vec![
            "no modality (procedure code 'XR-HAND' has no procedure_map entry with a modality): rule 'ct-chest' \
             (match.modality) could not apply; rule 'default' used instead",
            "no modality (procedure code 'XR-HAND' has no procedure_map entry with a modality): rule 'default' \
             same_modality could not apply; priors of any modality considered",
        ]
    );
    let plan = priorfetch_planner::api::explain(&store, exam.id).await.unwrap().unwrap()["plan"].clone();
    let inputs = plan["inputs"].as_array().unwrap();
    assert_eq!(inputs.len(), 2);
    assert!(inputs.iter().all(|n| n["missing"] == true && n["input"] == "modality"), "{inputs:#?}");
    assert_eq!((inputs[0]["rule"].as_str(), inputs[1]["rule"].as_str()), (Some("ct-chest"), Some("default")));
}
