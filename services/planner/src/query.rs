//! The queries of one plan (C-FIND or QIDO-RS, see `finder.rs`): the patient's studies on one archive over the lookback
//! window (split in halves whenever the archive caps its matches), SERIES-level queries
//! for attributes an archive only has there, and the destination check.
//! Every query sent is logged with its keys for the plan's explanation.

use crate::finder::{FindError, Finder, Keys};
use crate::guard::{self, Identity};
use crate::metrics;
use dicom_core::{Tag, VR};
use dicom_object::InMemDicomObject;
use priorfetch_config::ArchiveConfig;
use priorfetch_domain::{DateRange, Exam, Needs, StudyMatch};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};
use tracing::Instrument;

/// Splits allowed per archive and plan: a runaway (an archive capping every range) ends
/// as a visible gap instead of thousands of queries.
const MAX_QUERIES: usize = 200;

/// The `archive` label and plan key of the destination check.
const DESTINATION: &str = "destination";

mod tag {
    use dicom_core::Tag;
    pub const STUDY_DATE: Tag = Tag(0x0008, 0x0020);
    pub const ACCESSION_NUMBER: Tag = Tag(0x0008, 0x0050);
    pub const MODALITIES_IN_STUDY: Tag = Tag(0x0008, 0x0061);
    pub const MODALITY: Tag = Tag(0x0008, 0x0060);
    pub const STUDY_DESCRIPTION: Tag = Tag(0x0008, 0x1030);
    pub const PATIENT_ID: Tag = Tag(0x0010, 0x0020);
    pub const ISSUER_OF_PATIENT_ID: Tag = Tag(0x0010, 0x0021);
    pub const BODY_PART_EXAMINED: Tag = Tag(0x0018, 0x0015);
    pub const STUDY_INSTANCE_UID: Tag = Tag(0x0020, 0x000D);
    pub const SERIES_INSTANCE_UID: Tag = Tag(0x0020, 0x000E);
    pub const NUMBER_OF_STUDY_RELATED_INSTANCES: Tag = Tag(0x0020, 0x1208);
}

/// One C-FIND as sent, and how it ended.
#[derive(Debug, Clone, Serialize)]
pub struct QueryLog {
    pub level: &'static str,
    /// Keyword -> value sent (empty = return key).
    pub keys: BTreeMap<&'static str, String>,
    /// ok, capped (split), truncated (single day, cannot split), or the error.
    pub outcome: String,
    pub matches: usize,
    pub millis: u64,
}

/// What one archive told us.
#[derive(Debug, Default)]
pub struct Findings {
    pub studies: Vec<StudyMatch>,
    pub queries: Vec<QueryLog>,
    /// The list is incomplete: why, and whether a later re-plan can help.
    pub gap: Option<(String, bool)>,
    /// Matches of another patient the archive returned, discarded.
    pub foreign: usize,
}

/// The patient keys [`study_keys`] sends to `archive`.
fn identity<'a>(exam: &'a Exam, archive: &ArchiveConfig) -> Identity<'a> {
    let issuer = exam.issuer.as_deref().filter(|i| archive.query_issuer && !i.trim().is_empty());
    Identity { patient_id: &exam.patient_id, issuer }
}

fn study_keys(exam: &Exam, range: &DateRange, archive: &ArchiveConfig, needs: Needs) -> Keys {
    let mut keys: Keys = vec![
        (tag::PATIENT_ID, VR::LO, "PatientID", exam.patient_id.clone()),
        (tag::STUDY_DATE, VR::DA, "StudyDate", range.to_dicom()),
        (tag::STUDY_INSTANCE_UID, VR::UI, "StudyInstanceUID", String::new()),
        (tag::ACCESSION_NUMBER, VR::SH, "AccessionNumber", String::new()),
        (tag::MODALITIES_IN_STUDY, VR::CS, "ModalitiesInStudy", String::new()),
        (tag::STUDY_DESCRIPTION, VR::LO, "StudyDescription", String::new()),
        (tag::NUMBER_OF_STUDY_RELATED_INSTANCES, VR::IS, "NumberOfStudyRelatedInstances", String::new()),
    ];
    if let Some(issuer) = identity(exam, archive).issuer {
        keys.insert(1, (tag::ISSUER_OF_PATIENT_ID, VR::LO, "IssuerOfPatientID", issuer.to_string()));
    }
    if needs.body_part {
        keys.push((tag::BODY_PART_EXAMINED, VR::CS, "BodyPartExamined", String::new()));
    }
    keys
}

fn log_of(level: &'static str, keys: &Keys) -> BTreeMap<&'static str, String> {
    let mut log: BTreeMap<&'static str, String> = keys.iter().map(|(_, _, name, v)| (*name, v.clone())).collect();
    log.insert("QueryRetrieveLevel", level.to_string());
    log
}

fn text(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    let value = obj.element_opt(tag).ok().flatten()?.to_str().ok()?;
    let value = value.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    (!value.is_empty()).then(|| value.to_string())
}

fn list(obj: &InMemDicomObject, tag: Tag) -> Vec<String> {
    let Some(elem) = obj.element_opt(tag).ok().flatten() else { return Vec::new() };
    elem.to_multi_str()
        .map(|v| {
            v.iter()
                .map(|s| s.trim_matches(|c: char| c == '\0' || c.is_whitespace()).to_ascii_uppercase())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

fn study_from(obj: &InMemDicomObject, archive: &ArchiveConfig) -> Option<StudyMatch> {
    Some(StudyMatch {
        archive: archive.name.clone(),
        archive_priority: archive.priority,
        study_instance_uid: text(obj, tag::STUDY_INSTANCE_UID)?,
        study_date_raw: text(obj, tag::STUDY_DATE),
        accession_number: text(obj, tag::ACCESSION_NUMBER),
        modalities: list(obj, tag::MODALITIES_IN_STUDY),
        body_parts: list(obj, tag::BODY_PART_EXAMINED),
        description: text(obj, tag::STUDY_DESCRIPTION),
        instances: text(obj, tag::NUMBER_OF_STUDY_RELATED_INSTANCES).and_then(|n| n.parse().ok()),
    })
}

/// Runs one query (C-FIND or QIDO-RS) and logs it (metrics included).
async fn run(
    finder: &Finder,
    archive: &str,
    level: &'static str,
    keys: &Keys,
    timeout: Duration,
    queries: &mut Vec<QueryLog>,
) -> Result<(Vec<InMemDicomObject>, bool), FindError> {
    let log = log_of(level, keys);
    // One span per query in the exam's trace: archive, level, counts and a status word,
    // never the keys (they hold the patient ID and UIDs) nor the archive's error text.
    // The span's name is the protocol (`otel.name`): `cfind` or `qido`.
    let name = match finder {
        Finder::Dimse(_) => "cfind",
        Finder::Web(_) => "qido",
    };
    let span = tracing::info_span!(
        "query",
        otel.name = name,
        archive,
        level,
        matches = tracing::field::Empty,
        status = tracing::field::Empty,
        duration_ms = tracing::field::Empty,
        "otel.status_code" = tracing::field::Empty,
    );
    let started = Instant::now();
    let result = finder.find(level, keys, timeout).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let (outcome, count) = match &result {
        Ok((m, true)) => (finder.truncation().to_string(), m.len()),
        Ok((m, false)) => ("ok".to_string(), m.len()),
        Err(e) => (e.text.clone(), 0),
    };
    let metric_outcome = match &result {
        Ok((_, true)) => "capped",
        Ok(_) => "ok",
        Err(e) if e.refused_too_many => "capped",
        Err(_) => "failed",
    };
    let up = match &result {
        Ok(_) => Some(true),
        Err(e) => e.up,
    };
    // The destination check is not an archive's health.
    if let Some(up) = up.filter(|_| archive != DESTINATION) {
        priorfetch_telemetry::archive_health::record(archive, up);
    }
    metrics::CFIND_DURATION.with_label_values(&[archive, metric_outcome]).observe(elapsed.as_secs_f64());
    metrics::CFIND_MATCHES.with_label_values(&[archive]).inc_by(count as u64);
    span.record("matches", count);
    span.record("status", metric_outcome);
    span.record("duration_ms", elapsed.as_millis() as u64);
    if metric_outcome == "failed" {
        span.record("otel.status_code", "ERROR");
    }
    queries.push(QueryLog { level, keys: log, outcome, matches: count, millis: elapsed.as_millis() as u64 });
    result
}

/// The patient's studies on one archive in `window`. When the archive caps a query
/// (returns `max_matches` results, refuses with 0xA7xx, or stops with 0xFE00) the range
/// is split and both halves are queried, so the list is complete or the gap says why.
pub async fn find_studies(
    finder: &Finder,
    archive: &ArchiveConfig,
    exam: &Exam,
    window: DateRange,
    needs: Needs,
    timeout: Duration,
) -> Findings {
    let mut findings = Findings::default();
    let mut found: HashMap<String, StudyMatch> = HashMap::new();
    let mut ranges = vec![window];
    while let Some(range) = ranges.pop() {
        if findings.queries.len() >= MAX_QUERIES {
            findings.gap =
                Some((format!("stopped after {MAX_QUERIES} C-FINDs: the archive caps every date range"), false));
            break;
        }
        let keys = study_keys(exam, &range, archive, needs);
        let capped = match run(finder, &archive.name, "STUDY", &keys, timeout, &mut findings.queries).await {
            Ok((matches, truncated)) => {
                let capped = truncated || archive.max_matches.is_some_and(|cap| matches.len() >= cap as usize);
                if !capped || range.split().is_none() {
                    if capped {
                        // a single day still over the cap: keep what came, say so
                        findings.gap = Some((
                            format!(
                                "more studies on {} than the archive returns ({}): list incomplete",
                                range.from.format("%Y%m%d"),
                                matches.len()
                            ),
                            false,
                        ));
                    }
                    for m in &matches {
                        // another patient's study is never a candidate (wrong-patient guard)
                        let who = identity(exam, archive);
                        if !who
                            .admits(text(m, tag::PATIENT_ID).as_deref(), text(m, tag::ISSUER_OF_PATIENT_ID).as_deref())
                        {
                            findings.foreign += 1;
                            guard::discarded(
                                &archive.name,
                                text(m, tag::STUDY_INSTANCE_UID).as_deref(),
                                findings.foreign,
                            );
                            continue;
                        }
                        if let Some(s) = study_from(m, archive) {
                            found.entry(s.study_instance_uid.clone()).or_insert(s);
                        }
                    }
                }
                capped
            }
            Err(e) if e.refused_too_many => {
                if range.split().is_none() {
                    // One patient's single day is not over any real cap: the archive is
                    // out of resources, so stop here (instead of splitting every other
                    // range down to days, up to MAX_QUERIES) and re-plan later.
                    findings.gap = Some((format!("archive refuses even a one-day query ({})", range.to_dicom()), true));
                    break;
                }
                true
            }
            Err(e) => {
                findings.gap = Some((format!("{} (hint: {})", e.text, e.hint), e.retryable));
                break;
            }
        };
        if capped {
            if let Some(last) = findings.queries.last_mut() {
                last.outcome = format!("capped, range split: {}", last.outcome);
            }
            if let Some((a, b)) = range.split() {
                ranges.push(b);
                ranges.push(a);
            }
        }
    }
    findings.studies = found.into_values().collect();
    findings.studies.sort_by(|a, b| a.study_instance_uid.cmp(&b.study_instance_uid));
    findings
}

/// Fills modalities / body parts an archive did not return at STUDY level from a
/// SERIES-level query of the study (Orthanc: BodyPartExamined; dcmqrscp: ModalitiesInStudy).
pub async fn enrich(
    finder: &Finder,
    archive: &str,
    study: &mut StudyMatch,
    timeout: Duration,
    queries: &mut Vec<QueryLog>,
) -> Result<(), String> {
    let keys: Keys = vec![
        (tag::STUDY_INSTANCE_UID, VR::UI, "StudyInstanceUID", study.study_instance_uid.clone()),
        (tag::SERIES_INSTANCE_UID, VR::UI, "SeriesInstanceUID", String::new()),
        (tag::MODALITY, VR::CS, "Modality", String::new()),
        (tag::BODY_PART_EXAMINED, VR::CS, "BodyPartExamined", String::new()),
    ];
    let (series, _) = run(finder, archive, "SERIES", &keys, timeout, queries).await.map_err(|e| e.text)?;
    let add = |target: &mut Vec<String>, values: Vec<String>| {
        for v in values {
            if !target.contains(&v) {
                target.push(v);
            }
        }
    };
    let (mut modalities, mut body_parts) = (Vec::new(), Vec::new());
    for s in &series {
        add(&mut modalities, list(s, tag::MODALITY));
        add(&mut body_parts, list(s, tag::BODY_PART_EXAMINED));
    }
    if study.modalities.is_empty() {
        study.modalities = modalities;
    }
    if study.body_parts.is_empty() {
        study.body_parts = body_parts;
    }
    Ok(())
}

/// Instance counts the destination holds for these studies (absent: not there).
pub async fn at_destination(
    finder: &Finder,
    uids: &[String],
    timeout: Duration,
    queries: &mut Vec<QueryLog>,
) -> Result<HashMap<String, Option<u32>>, String> {
    let mut present = HashMap::new();
    // UID list matching; chunks keep identifiers small
    for chunk in uids.chunks(50) {
        let keys: Keys = vec![
            (tag::STUDY_INSTANCE_UID, VR::UI, "StudyInstanceUID", chunk.join("\\")),
            (tag::NUMBER_OF_STUDY_RELATED_INSTANCES, VR::IS, "NumberOfStudyRelatedInstances", String::new()),
        ];
        let (matches, _) = run(finder, DESTINATION, "STUDY", &keys, timeout, queries).await.map_err(|e| e.text)?;
        for m in &matches {
            if let Some(uid) = text(m, tag::STUDY_INSTANCE_UID) {
                present.insert(uid, text(m, tag::NUMBER_OF_STUDY_RELATED_INSTANCES).and_then(|n| n.parse().ok()));
            }
        }
    }
    Ok(present)
}
