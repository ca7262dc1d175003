//! Rule matching and prior selection on hand-made candidates.

use chrono::{NaiveDate, TimeZone, Utc};
use priorfetch_domain::*;
use priorfetch_domain::{PriorSelection, RuleConfig, RuleMatch};
use proptest::prelude::*;
use std::collections::HashMap;
use std::time::Duration;

const YEAR: u64 = 365 * 86400;

fn exam(modality: &str, body: &str) -> Exam {
    Exam {
        id: 1,
        patient_id: "MRN1".into(),
        issuer: None,
        identifiers: Vec::new(),
        accession_number: Some("ACC-NOW".into()),
        study_instance_uid: Some("9.9".into()),
        scheduled_at: Some(Utc.with_ymd_and_hms(2026, 12, 3, 9, 0, 0).unwrap()),
        modality: Some(modality.into()),
        body_part: Some(body.into()),
        procedure_code: Some("CTCHEST".into()),
        procedure_text: Some("CT Chest with contrast".into()),
        priority: ExamPriority::Routine,
    }
}

fn rule(name: &str, m: RuleMatch, p: PriorSelection) -> RuleConfig {
    RuleConfig { name: name.into(), matches: m, priors: p }
}

fn sel(same: bool, modalities: &[&str], body: &[&str], years: u64, max: u32, desc: Option<&str>) -> PriorSelection {
    PriorSelection {
        same_modality: same,
        modalities: modalities.iter().map(|s| s.to_string()).collect(),
        body_part: body.iter().map(|s| s.to_string()).collect(),
        lookback: Duration::from_secs(years * YEAR),
        max,
        description: desc.map(str::to_string),
    }
}

fn study(archive: &str, prio: i32, uid: &str, date: &str, mods: &[&str], body: &[&str], n: Option<u32>) -> StudyMatch {
    StudyMatch {
        archive: archive.into(),
        archive_priority: prio,
        study_instance_uid: uid.into(),
        study_date_raw: Some(date.into()),
        accession_number: Some(format!("A{uid}")),
        modalities: mods.iter().map(|s| s.to_string()).collect(),
        body_parts: body.iter().map(|s| s.to_string()).collect(),
        description: Some(format!("{} study", mods.join(" "))),
        instances: n,
    }
}

fn window(e: &Exam, r: &Rule) -> DateRange {
    DateRange::lookback(e.scheduled_at.unwrap(), r.lookback, NaiveDate::from_ymd_opt(2026, 12, 2).unwrap())
}

fn selected(d: &[Decision]) -> Vec<(String, String)> {
    d.iter().filter(|d| d.selected).map(|d| (d.study.archive.clone(), d.study.study_instance_uid.clone())).collect()
}

fn reason<'a>(d: &'a [Decision], archive: &str, uid: &str) -> &'a str {
    &d.iter().find(|d| d.study.archive == archive && d.study.study_instance_uid == uid).unwrap().reason
}

#[test]
fn first_matching_rule_wins_and_default_catches_the_rest() {
    let rules = RuleSet::compile(&[
        rule(
            "ct-chest",
            RuleMatch { modality: vec!["ct".into()], body_part: vec!["CHEST".into()], ..Default::default() },
            sel(true, &[], &[], 5, 3, None),
        ),
        rule(
            "by-text",
            RuleMatch { procedure_text: Some("mammo".into()), ..Default::default() },
            sel(true, &[], &[], 5, 3, None),
        ),
        rule(
            "by-code",
            RuleMatch { procedure_code: vec!["MRHEAD".into()], ..Default::default() },
            sel(true, &[], &[], 5, 3, None),
        ),
        rule("default", RuleMatch::default(), sel(true, &[], &[], 2, 1, None)),
    ])
    .unwrap();
    assert_eq!(rules.pick(&exam("CT", "chest")).unwrap().name, "ct-chest");
    assert_eq!(rules.pick(&exam("MR", "CHEST")).unwrap().name, "default");
    let mut mammo = exam("MG", "BREAST");
    mammo.procedure_text = Some("Screening MAMMOGRAPHY bilateral".into());
    assert_eq!(rules.pick(&mammo).unwrap().name, "by-text");
    let mut head = exam("MR", "HEAD");
    head.procedure_code = Some("mrhead".into());
    assert_eq!(rules.pick(&head).unwrap().name, "by-code");
    // a rule that needs a field the exam lacks does not match
    let mut bare = exam("CT", "CHEST");
    bare.body_part = None;
    assert_eq!(rules.pick(&bare).unwrap().name, "default");
    assert!(RuleSet::compile(&[]).unwrap().pick(&bare).is_none());
    assert!(
        RuleSet::compile(&[rule(
            "bad",
            RuleMatch { procedure_text: Some("(".into()), ..Default::default() },
            sel(true, &[], &[], 1, 1, None)
        )])
        .is_err()
    );
}

#[test]
fn selection_filters_each_candidate_with_a_reason() {
    let e = exam("CT", "CHEST");
    let r = Rule::compile(0, &rule("ct", RuleMatch::default(), sel(true, &["CR"], &["CHEST"], 5, 2, Some("ct|cr"))))
        .unwrap();
    let studies = vec![
        study("a", 1, "1.1", "20260101", &["CT"], &["CHEST"], Some(10)),
        study("a", 1, "1.2", "20250101", &["CR"], &["CHEST"], Some(2)),
        study("a", 1, "1.3", "20240101", &["CT", "SR"], &["CHEST"], Some(5)), // beyond max 2
        study("a", 1, "1.4", "20260201", &["MR"], &["CHEST"], Some(5)),       // modality
        study("a", 1, "1.5", "20260301", &["CT"], &["HEAD"], Some(5)),        // body part
        study("a", 1, "1.6", "20100101", &["CT"], &["CHEST"], Some(5)),       // lookback
        study("a", 1, "9.9", "20261202", &["CT"], &["CHEST"], Some(5)),       // the exam itself
        study("a", 1, "1.7", "garbage", &["CT"], &["CHEST"], Some(5)),        // no date
        study("a", 1, "1.8", "20260401", &["CT"], &[], Some(5)),              // body part unknown
    ];
    let mut own_acc = study("a", 1, "1.9", "20260501", &["CT"], &["CHEST"], Some(5));
    own_acc.accession_number = Some("acc-now".into());
    let mut no_desc = study("a", 1, "1.10", "20260601", &["CT"], &["CHEST"], Some(5));
    no_desc.description = Some("something else".into());
    let mut all = studies;
    all.push(own_acc);
    all.push(no_desc);
    let d = select_priors(&e, &r, all, &window(&e, &r));
    assert_eq!(d.len(), 11);
    assert_eq!(selected(&d), vec![("a".into(), "1.1".into()), ("a".into(), "1.2".into())]);
    assert!(reason(&d, "a", "1.1").contains("selected by rule 'ct'"));
    assert!(reason(&d, "a", "1.3").contains("beyond max 2"), "{}", reason(&d, "a", "1.3"));
    assert!(reason(&d, "a", "1.4").contains("modalities MR not in CR/CT"), "{}", reason(&d, "a", "1.4"));
    assert!(reason(&d, "a", "1.5").contains("body part HEAD"));
    assert!(reason(&d, "a", "1.6").contains("outside the lookback"));
    assert!(reason(&d, "a", "9.9").contains("own study"));
    assert!(reason(&d, "a", "1.7").contains("no valid StudyDate"));
    assert!(reason(&d, "a", "1.8").contains("body part unknown"));
    assert!(reason(&d, "a", "1.9").contains("own accession"));
    assert!(reason(&d, "a", "1.10").contains("description does not match"));
}

#[test]
fn duplicates_are_fetched_once_from_the_preferred_complete_copy() {
    let e = exam("CT", "CHEST");
    let r = Rule::compile(0, &rule("any", RuleMatch::default(), sel(false, &[], &[], 5, 10, None))).unwrap();
    let d = select_priors(
        &e,
        &r,
        vec![
            study("long-term", 2, "1.1", "20260101", &["CT"], &[], Some(10)),
            study("short-term", 1, "1.1", "20260101", &["CT"], &[], Some(10)),
            // the preferred archive's copy is incomplete: the complete one wins
            study("short-term", 1, "1.2", "20250101", &["CT"], &[], Some(4)),
            study("long-term", 2, "1.2", "20250101", &["CT"], &[], Some(8)),
            // counts unknown on one side: priority decides
            study("dcm", 3, "1.3", "20240101", &[], &[], None),
            study("long-term", 2, "1.3", "20240101", &["CT"], &[], Some(3)),
        ],
        &window(&e, &r),
    );
    let mut got = selected(&d);
    got.sort();
    assert_eq!(
        got,
        vec![
            ("long-term".into(), "1.2".into()),
            ("long-term".into(), "1.3".into()),
            ("short-term".into(), "1.1".into())
        ]
    );
    assert!(reason(&d, "short-term", "1.2").contains("incomplete here (4 of 8"), "{}", reason(&d, "short-term", "1.2"));
    assert!(reason(&d, "long-term", "1.1").contains("preferred copy on 'short-term'"));
}

#[test]
fn priors_complete_at_the_destination_are_skipped() {
    let e = exam("CT", "CHEST");
    let r = Rule::compile(0, &rule("any", RuleMatch::default(), sel(true, &[], &[], 5, 10, None))).unwrap();
    let mut d = select_priors(
        &e,
        &r,
        vec![
            study("a", 1, "1.1", "20260101", &["CT"], &[], Some(10)),
            study("a", 1, "1.2", "20250101", &["CT"], &[], Some(10)),
            study("a", 1, "1.3", "20240101", &["CT"], &[], Some(10)),
        ],
        &window(&e, &r),
    );
    let present = HashMap::from([("1.1".to_string(), Some(10)), ("1.2".to_string(), Some(3))]);
    skip_present(&mut d, &present);
    let got: Vec<_> = selected(&d).into_iter().map(|(_, u)| u).collect();
    assert_eq!(got, vec!["1.2", "1.3"]);
    assert!(reason(&d, "a", "1.1").contains("already complete at the destination"));
    assert!(reason(&d, "a", "1.2").contains("destination has 3 of 10"));
}

fn arb_study() -> impl Strategy<Value = StudyMatch> {
    (0..3usize, 0..12u32, 0..3000i64, prop::sample::select(vec!["CT", "MR", "CR"]), prop::option::of(1..20u32))
        .prop_map(|(a, uid, days, m, n)| {
            let date = NaiveDate::from_ymd_opt(2018, 1, 1).unwrap() + chrono::Duration::days(days);
            study(["a", "b", "c"][a], a as i32, &format!("1.{uid}"), &date.format("%Y%m%d").to_string(), &[m], &[], n)
        })
}

proptest! {
    /// Whatever the archives report: one decision per (archive, study) copy, at most one
    /// selected copy per study, at most `max` selected, the selected ones the most recent
    /// eligible, and a selected copy is never beaten by a complete copy of lower priority.
    #[test]
    fn selection_invariants(studies in prop::collection::vec(arb_study(), 0..30), max in 1u32..5) {
        let e = exam("CT", "CHEST");
        let r = Rule::compile(0, &rule("r", RuleMatch::default(), sel(true, &[], &[], 5, max, None))).unwrap();
        let copies: std::collections::HashSet<(String, String)> =
            studies.iter().map(|s| (s.archive.clone(), s.study_instance_uid.clone())).collect();
        let d = select_priors(&e, &r, studies.clone(), &window(&e, &r));
        prop_assert_eq!(d.len(), copies.len());
        let sel: Vec<&Decision> = d.iter().filter(|d| d.selected).collect();
        prop_assert!(sel.len() <= max as usize);
        let uids: std::collections::HashSet<&str> = sel.iter().map(|d| d.study.study_instance_uid.as_str()).collect();
        prop_assert_eq!(uids.len(), sel.len());
        let oldest_selected = sel.iter().filter_map(|d| d.study.study_date()).min();
        for x in d.iter().filter(|x| !x.selected && x.reason.starts_with("skipped: beyond max")) {
            prop_assert!(x.study.study_date() <= oldest_selected);
        }
        for s in &sel {
            let best = studies.iter().filter(|c| c.study_instance_uid == s.study.study_instance_uid).filter_map(|c| c.instances).max();
            prop_assert!(best.is_none() || s.study.instances == best);
        }
    }
}
