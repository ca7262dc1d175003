//! Prior selection. Every candidate study ends up with a decision and a reason, so an
//! operator can see why a study was or was not fetched.
//!
//! Order of work: copies of a study on several archives are merged (deduped by
//! StudyInstanceUID) and the copy to fetch is chosen (lowest archive `priority` among
//! the copies with the most instances, i.e. complete); then the rule's filters run on
//! the merged study (current exam, lookback, modality, body part, description); the
//! eligible studies, most recent first, are selected up to the rule's `max`.

use crate::exam::Exam;
use crate::range::DateRange;
use crate::rules::Rule;
use crate::study::StudyMatch;
use std::collections::{BTreeMap, HashMap};

/// One decision per study copy (archive, StudyInstanceUID).
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub study: StudyMatch,
    /// Fetch this copy. At most one copy of a study is selected.
    pub selected: bool,
    pub reason: String,
}

/// Study attributes a rule needs that archives may return only at SERIES level (Orthanc
/// leaves BodyPartExamined empty at STUDY level; dcmqrscp omits ModalitiesInStudy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Needs {
    pub modalities: bool,
    pub body_part: bool,
}

impl Needs {
    pub fn of(rule: &Rule, exam: &Exam) -> Needs {
        Needs { modalities: !rule.wanted_modalities(exam).is_empty(), body_part: !rule.body_parts.is_empty() }
    }

    /// This copy lacks an attribute the rule filters on.
    pub fn missing_in(&self, study: &StudyMatch) -> bool {
        (self.modalities && study.modalities.is_empty()) || (self.body_part && study.body_parts.is_empty())
    }
}

fn same(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

/// The copy to fetch: among copies with the highest known instance count (complete), the
/// lowest archive priority; ties by archive name so plans are reproducible.
fn preferred(copies: &[StudyMatch]) -> usize {
    let most = copies.iter().filter_map(|c| c.instances).max();
    let complete = |c: &StudyMatch| most.is_none() || c.instances == most;
    (0..copies.len())
        .filter(|&i| complete(&copies[i]))
        .min_by(|&a, &b| {
            (copies[a].archive_priority, &copies[a].archive).cmp(&(copies[b].archive_priority, &copies[b].archive))
        })
        .unwrap_or(0)
}

/// The preferred copy, with attributes it lacks filled in from the other copies.
fn merged(copies: &[StudyMatch], pick: usize) -> StudyMatch {
    let mut m = copies[pick].clone();
    for c in copies {
        if m.modalities.is_empty() {
            m.modalities = c.modalities.clone();
        }
        if m.body_parts.is_empty() {
            m.body_parts = c.body_parts.clone();
        }
        if m.study_date().is_none() && c.study_date().is_some() {
            m.study_date_raw = c.study_date_raw.clone();
        }
        m.description = m.description.or_else(|| c.description.clone());
        m.accession_number = m.accession_number.or_else(|| c.accession_number.clone());
    }
    m
}

/// Why the rule does not want this study, or `None` when it is eligible.
fn filter(exam: &Exam, rule: &Rule, window: &DateRange, study: &StudyMatch) -> Option<String> {
    if exam.study_instance_uid.as_deref().is_some_and(|u| same(u, &study.study_instance_uid)) {
        return Some("skipped: the exam's own study".into());
    }
    if let (Some(a), Some(b)) = (exam.accession_number.as_deref(), study.accession_number.as_deref())
        && !a.trim().is_empty()
        && same(a, b)
    {
        return Some("skipped: the exam's own accession number".into());
    }
    match study.study_date() {
        None => return Some("skipped: no valid StudyDate".into()),
        Some(date) if !window.contains(date) => {
            return Some(format!(
                "skipped: StudyDate {} outside the lookback window {}",
                date.format("%Y%m%d"),
                window.to_dicom()
            ));
        }
        Some(_) => {}
    }
    let wanted = rule.wanted_modalities(exam);
    if !wanted.is_empty() {
        if study.modalities.is_empty() {
            return Some(format!("skipped: modalities unknown (rule wants {})", wanted.join("/")));
        }
        if !study.modalities.iter().any(|m| wanted.iter().any(|w| same(w, m))) {
            return Some(format!("skipped: modalities {} not in {}", study.modalities.join("/"), wanted.join("/")));
        }
    }
    if !rule.body_parts.is_empty() {
        if study.body_parts.is_empty() {
            return Some(format!("skipped: body part unknown (rule wants {})", rule.body_parts.join("/")));
        }
        if !study.body_parts.iter().any(|b| rule.body_parts.iter().any(|w| same(w, b))) {
            return Some(format!(
                "skipped: body part {} not in {}",
                study.body_parts.join("/"),
                rule.body_parts.join("/")
            ));
        }
    }
    if let Some(re) = &rule.description
        && !study.description.as_deref().is_some_and(|d| re.is_match(d))
    {
        return Some(format!("skipped: description does not match /{}/", re.as_str()));
    }
    None
}

/// Decides every copy of every candidate study. `window` is the rule's lookback window
/// (archives may ignore the StudyDate range, so it is checked here too).
pub fn select_priors(exam: &Exam, rule: &Rule, studies: Vec<StudyMatch>, window: &DateRange) -> Vec<Decision> {
    let mut groups: BTreeMap<String, Vec<StudyMatch>> = BTreeMap::new();
    for s in studies {
        let copies = groups.entry(s.study_instance_uid.trim().to_string()).or_default();
        // the same archive reporting a study twice is one copy (the fuller answer)
        match copies.iter_mut().find(|c| c.archive == s.archive) {
            Some(c) if s.instances > c.instances => *c = s,
            Some(_) => {}
            None => copies.push(s),
        }
    }
    struct Group {
        copies: Vec<StudyMatch>,
        pick: usize,
        study: StudyMatch,
        verdict: Option<String>,
    }
    let mut list: Vec<Group> = groups
        .into_values()
        .map(|copies| {
            let pick = preferred(&copies);
            let study = merged(&copies, pick);
            let verdict = filter(exam, rule, window, &study);
            Group { copies, pick, study, verdict }
        })
        .collect();
    // most recent first; undated last; ties by UID for reproducible plans
    list.sort_by(|a, b| {
        b.study
            .study_date()
            .cmp(&a.study.study_date())
            .then_with(|| a.study.study_instance_uid.cmp(&b.study.study_instance_uid))
    });
    let mut taken = 0u32;
    let mut out = Vec::new();
    for g in list {
        let (selected, reason) = match g.verdict {
            Some(why) => (false, why),
            None if taken < rule.max => {
                taken += 1;
                (true, format!("selected by rule '{}': prior {taken} of at most {}", rule.name, rule.max))
            }
            None => (
                false,
                format!("skipped: beyond max {} of rule '{}' (more recent priors selected)", rule.max, rule.name),
            ),
        };
        let chosen = g.copies[g.pick].archive.clone();
        for (i, copy) in g.copies.into_iter().enumerate() {
            if i == g.pick {
                out.push(Decision { study: g.study.clone(), selected, reason: reason.clone() });
            } else {
                let why = match (copy.instances, g.study.instances) {
                    (Some(have), Some(best)) if have < best => {
                        format!("duplicate: incomplete here ({have} of {best} instances), preferred copy on '{chosen}'")
                    }
                    _ => format!("duplicate: preferred copy on '{chosen}' (lower priority)"),
                };
                let why = if selected { why } else { format!("{why}; {reason}") };
                out.push(Decision { study: copy, selected: false, reason: why });
            }
        }
    }
    out
}

/// With `destination.check_existing`: selected studies the destination already holds
/// completely (instance count known on both sides and not lower) are skipped.
/// `present` maps StudyInstanceUID to the destination's instance count.
pub fn skip_present(decisions: &mut [Decision], present: &HashMap<String, Option<u32>>) {
    for d in decisions.iter_mut().filter(|d| d.selected) {
        let Some(count) = present.get(d.study.study_instance_uid.trim()) else { continue };
        match (count, d.study.instances) {
            (Some(have), Some(want)) if *have >= want => {
                d.selected = false;
                d.reason = format!("skipped: already complete at the destination ({have} instances); {}", d.reason);
            }
            (have, want) => {
                let have = have.map_or("?".to_string(), |n| n.to_string());
                let want = want.map_or("?".to_string(), |n| n.to_string());
                d.reason = format!("{} (destination has {have} of {want} instances: fetching)", d.reason);
            }
        }
    }
}
