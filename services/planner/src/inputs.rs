//! Rule inputs that do not degrade silently. At plan time (so a config change reaches
//! exams already stored), a modality or body part the exam lacks is filled from
//! `[[procedure_map]]` by its procedure code, compared without regard to case; the first
//! entry that sets the field wins. What then is still missing is said in the plan: a rule
//! whose `match` tests an input the exam lacks cannot apply (the next rule decides), and
//! `same_modality` without an exam modality adds nothing (the rule's `modalities`, or any
//! modality, are considered). Behaviour is unchanged; it is recorded, and `explain` shows it.

use priorfetch_config::ProcedureMapping;
use priorfetch_domain::{Exam, Rule, RuleSet};
use serde::Serialize;

/// One statement of the plan about the exam's inputs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InputNote {
    /// The exam field: `modality`, `body_part`, `procedure_code`, `procedure_text`.
    pub input: &'static str,
    /// The value filled in (from the procedure map).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Where the value came from: `procedure_map`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<&'static str>,
    /// The procedure code that was looked up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub procedure_code: Option<String>,
    /// The exam lacks the input (after the procedure map).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub missing: bool,
    /// The rule the missing input affected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// In words, for `explain`.
    pub note: String,
}

fn blank(value: Option<&str>) -> bool {
    value.is_none_or(|v| v.trim().is_empty())
}

/// Which field of a procedure map entry fills an exam field.
type ValueOf = fn(&ProcedureMapping) -> Option<&String>;

/// The exam with its missing modality and body part filled from the procedure map, and
/// a note per filled field.
pub fn fill(exam: &Exam, map: &[ProcedureMapping]) -> (Exam, Vec<InputNote>) {
    let mut filled = exam.clone();
    let mut notes = Vec::new();
    let Some(code) = exam.procedure_code.as_deref().map(str::trim).filter(|c| !c.is_empty()) else {
        return (filled, notes);
    };
    let entries =
        || map.iter().enumerate().filter(|(_, m)| m.codes.iter().any(|c| c.trim().eq_ignore_ascii_case(code)));
    let fields: [(&'static str, &mut Option<String>, ValueOf); 2] = [
        ("modality", &mut filled.modality, |m| m.modality.as_ref()),
        ("body_part", &mut filled.body_part, |m| m.body_part.as_ref()),
    ];
    for (input, slot, value_of) in fields {
        if !blank(slot.as_deref()) {
            continue;
        }
        let found = entries().find_map(|(i, m)| {
            value_of(m).map(|v| v.trim().to_ascii_uppercase()).filter(|v| !v.is_empty()).map(|v| (i, v))
        });
        if let Some((i, value)) = found {
            notes.push(InputNote {
                input,
                value: Some(value.clone()),
                from: Some("procedure_map"),
                procedure_code: Some(code.to_string()),
                missing: false,
                rule: None,
                note: format!("{input} {value} from procedure_map[{i}] (procedure code '{code}')"),
            });
            *slot = Some(value);
        }
    }
    (filled, notes)
}

/// Why the exam still lacks `input`, as a hint for the note.
fn why_missing(exam: &Exam, input: &str) -> String {
    let mappable = matches!(input, "modality" | "body_part");
    match exam.procedure_code.as_deref().map(str::trim).filter(|c| !c.is_empty()) {
        Some(code) if mappable => format!(" (procedure code '{code}' has no procedure_map entry with a {input})"),
        None if mappable => " (no procedure code to look up in procedure_map)".into(),
        _ => String::new(),
    }
}

fn missing_note(exam: &Exam, input: &'static str, rule: &Rule, note: String) -> InputNote {
    InputNote {
        input,
        value: None,
        from: None,
        procedure_code: exam.procedure_code.clone(),
        missing: true,
        rule: Some(rule.name.clone()),
        note: format!("no {input}{}: {note}", why_missing(exam, input)),
    }
}

/// The rule inputs the exam lacks and what the planner did instead: rules tried before
/// `picked` that only a missing input kept from applying, and the picked rule's
/// `same_modality` without an exam modality.
pub fn rule_gaps(rules: &RuleSet, picked: Option<&Rule>, exam: &Exam) -> Vec<InputNote> {
    let mut notes = Vec::new();
    let instead = match picked {
        Some(p) => format!("rule '{}' used instead", p.name),
        None => "no other rule applies: nothing to fetch".to_string(),
    };
    for rule in rules.rules.iter().take_while(|r| picked.is_none_or(|p| !std::ptr::eq(*r, p))) {
        for input in rule.missing_inputs(exam) {
            let note = format!("rule '{}' (match.{}) could not apply; {instead}", rule.name, input.as_str());
            notes.push(missing_note(exam, input.as_str(), rule, note));
        }
    }
    if let Some(rule) = picked
        && rule.same_modality
        && blank(exam.modality.as_deref())
    {
        let considered = if rule.modalities.is_empty() {
            "priors of any modality considered".to_string()
        } else {
            format!("only the rule's modalities {} considered", rule.modalities.join("/"))
        };
        let note = format!("rule '{}' same_modality could not apply; {considered}", rule.name);
        notes.push(missing_note(exam, "modality", rule, note));
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;
    use priorfetch_domain::{ExamPriority, PriorSelection, RuleConfig, RuleMatch};

    fn exam(modality: Option<&str>, code: Option<&str>) -> Exam {
        Exam {
            id: 1,
            patient_id: "P".into(),
            issuer: None,
            identifiers: Vec::new(),
            accession_number: None,
            study_instance_uid: None,
            scheduled_at: None,
            modality: modality.map(str::to_string),
            body_part: None,
            procedure_code: code.map(str::to_string),
            procedure_text: None,
            priority: ExamPriority::Routine,
        }
    }

    fn map() -> Vec<ProcedureMapping> {
        vec![
            ProcedureMapping { codes: vec!["XR-HAND".into()], modality: Some("DX".into()), body_part: None },
            ProcedureMapping {
                codes: vec!["ctch".into(), "CT-THX".into()],
                modality: Some("ct".into()),
                body_part: None,
            },
            ProcedureMapping {
                codes: vec!["CTCH".into()],
                modality: Some("MR".into()),
                body_part: Some("chest".into()),
            },
        ]
    }

    fn rules() -> RuleSet {
        let rule = |name: &str, body: &[&str], same: bool| RuleConfig {
            name: name.into(),
            matches: RuleMatch { body_part: body.iter().map(|s| s.to_string()).collect(), ..Default::default() },
            priors: PriorSelection {
                same_modality: same,
                modalities: Vec::new(),
                body_part: Vec::new(),
                lookback: std::time::Duration::from_secs(86400),
                max: 1,
                description: None,
            },
        };
        RuleSet::compile(&[rule("chest", &["CHEST"], true), rule("default", &[], true)]).unwrap()
    }

    #[test]
    fn fills_from_the_first_entry_setting_each_field() {
        let (filled, notes) = fill(&exam(None, Some("CtCh")), &map());
        assert_eq!((filled.modality.as_deref(), filled.body_part.as_deref()), (Some("CT"), Some("CHEST")));
        assert_eq!(notes.len(), 2);
        assert_eq!(notes[0].note, "modality CT from procedure_map[1] (procedure code 'CtCh')");
        assert_eq!(notes[1].note, "body_part CHEST from procedure_map[2] (procedure code 'CtCh')");
        // a value the exam has is kept
        let (kept, notes) = fill(&exam(Some("MR"), Some("XR-HAND")), &map());
        assert_eq!((kept.modality.as_deref(), notes.len()), (Some("MR"), 0));
        // unmapped, or no code: unchanged
        assert_eq!(fill(&exam(None, Some("OTHER")), &map()).0.modality, None);
        assert_eq!(fill(&exam(None, None), &map()).1, Vec::new());
    }

    #[test]
    fn missing_inputs_are_said_with_what_was_done() {
        let rules = rules();
        let e = exam(None, Some("OTHER"));
        let picked = rules.pick(&e);
        assert_eq!(picked.map(|r| r.name.as_str()), Some("default"));
        let notes = rule_gaps(&rules, picked, &e);
        let texts: Vec<&str> = notes.iter().map(|n| n.note.as_str()).collect();
        assert_eq!(
            texts,
            vec![
                "no body_part (procedure code 'OTHER' has no procedure_map entry with a body_part): rule 'chest' \
                 (match.body_part) could not apply; rule 'default' used instead",
                "no modality (procedure code 'OTHER' has no procedure_map entry with a modality): rule 'default' \
                 same_modality could not apply; priors of any modality considered",
            ]
        );
        // filled by the map: the chest rule applies, nothing to say
        let (filled, _) = fill(&exam(None, Some("CTCH")), &map());
        let picked = rules.pick(&filled);
        assert_eq!(picked.map(|r| r.name.as_str()), Some("chest"));
        assert!(rule_gaps(&rules, picked, &filled).is_empty());
        // a present input that does not fit is no gap
        let mut knee = filled.clone();
        knee.body_part = Some("KNEE".into());
        assert!(rule_gaps(&rules, rules.pick(&knee), &knee).is_empty());
    }
}
