//! C-FIND: matches at the requested level, with match caps and foreign-match faults; and the items a retrieve selects.

use super::*;

pub(super) async fn find(
    assoc: &mut ServerAssociation,
    pc: u8,
    command: &Command,
    shared: &Arc<Shared>,
) -> Result<Flow, DimseError> {
    Counters::add(&shared.counters.finds, 1);
    let faults = shared.faults().for_queries();
    let sop = command.string(ct::AFFECTED_SOP_CLASS_UID).unwrap_or_default();
    let identifier = read_identifier(assoc, pc, command).await?;
    let ts = context_ts(assoc, pc).unwrap_or_else(|| IMPLICIT_VR_LE.to_string());
    let Some((identifier, level)) = identifier.and_then(|i| level_of(&i, &sop).map(|l| (i, l))) else {
        delay(&faults).await;
        assoc.send(pc, &response(field::C_FIND_RSP, command, 0xA900), None).await?;
        return Ok(Flow::Continue);
    };
    let keys = keys_of(&identifier);
    let charset = identifier.element_opt(SPECIFIC_CHARACTER_SET).ok().flatten().map(|_| "ISO_IR 100");
    let mut found: Vec<Vec<u8>> = Vec::new();
    {
        let index = shared.index.read().map_err(|_| DimseError::Protocol("index lock poisoned".into()))?;
        let case = shared.config.case_matching;
        let mut failure = None;
        for_each_record(&index.studies, level, &shared.config.ae_title, |record| {
            if failure.is_none() && record.matches(&keys, case) {
                match encode(&response_identifier(level, &keys, record, charset), &ts) {
                    Ok(bytes) => found.push(bytes),
                    Err(e) => failure = Some(e),
                }
            }
        });
        if let Some(e) = failure {
            return Err(e);
        }
        if shared.config.foreign_matches
            && let Some(foreign) = foreign_match(&index.studies, level, &shared.config.ae_title, &keys, charset, &ts)?
        {
            // first, so match caps do not hide it
            found.insert(0, foreign);
        }
    }
    let (send, final_status) = match faults.match_cap {
        Some(cap) if found.len() > cap.limit => match cap.behaviour {
            CapBehaviour::Refuse => (0, 0xA700),
            CapBehaviour::Truncate => (cap.limit, 0x0000),
            CapBehaviour::Cancel => (cap.limit, 0xFE00),
        },
        _ => (found.len(), 0x0000),
    };
    let message_id = command.u16(ct::MESSAGE_ID).unwrap_or(0);
    let mut cancelled = false;
    let mut pending = response(field::C_FIND_RSP, command, 0xFF00);
    pending.with_data_set();
    for bytes in found.iter().take(send) {
        delay_or_cancel(assoc, message_id, &faults, &mut cancelled).await?;
        if cancelled {
            break;
        }
        assoc.send(pc, &pending, Some(bytes)).await?;
        Counters::add(&shared.counters.find_matches, 1);
    }
    if !cancelled {
        delay_or_cancel(assoc, message_id, &faults, &mut cancelled).await?;
    }
    let final_status = if cancelled {
        Counters::add(&shared.counters.cancels, 1);
        0xFE00
    } else {
        final_status
    };
    let mut last = response(field::C_FIND_RSP, command, final_status);
    if final_status == 0xA700 {
        last.put_text_comment("too many matches: narrow the query");
    }
    assoc.send(pc, &last, None).await?;
    Ok(Flow::Continue)
}

/// `SimConfig::foreign_matches`: the first record of another patient that matches the
/// query's other keys, encoded as a match (with its real PatientID).
fn foreign_match(
    studies: &[Study],
    level: Level,
    our_ae: &str,
    keys: &[(Tag, VR, String)],
    charset: Option<&str>,
    ts: &str,
) -> Result<Option<Vec<u8>>, DimseError> {
    let Some((_, _, queried)) = keys.iter().find(|(t, _, v)| *t == PATIENT_ID && !v.is_empty()) else {
        return Ok(None);
    };
    let others: Vec<(Tag, VR, String)> = keys.iter().filter(|(t, _, _)| !PATIENT_KEYS.contains(t)).cloned().collect();
    let mut out = None;
    for_each_record(studies, level, our_ae, |r| {
        if out.is_none()
            && r.value(PATIENT_ID).is_some_and(|p| p != *queried)
            && r.matches(&others, crate::CaseMatching::Sensitive)
        {
            out = Some(encode(&response_identifier(level, keys, r, charset), ts));
        }
    });
    out.transpose()
}

pub(super) trait Comment {
    fn put_text_comment(&mut self, text: &str);
}

impl Comment for Command {
    fn put_text_comment(&mut self, text: &str) {
        self.put_ae(ct::ERROR_COMMENT, text);
    }
}

/// One instance to send, with what its synthetic encoding needs.
pub(super) struct Item {
    pub(super) instance: Arc<Instance>,
    pub(super) study_uid: String,
    pub(super) study_attrs: Arc<Attrs>,
    pub(super) series_attrs: Arc<Attrs>,
}

pub(super) fn select_items(shared: &Shared, level: Level, keys: &[(Tag, VR, String)]) -> Vec<Item> {
    let Ok(index) = shared.index.read() else { return Vec::new() };
    let case = shared.config.case_matching;
    let mut items = Vec::new();
    let mut matched_studies: HashSet<usize> = HashSet::new();
    let mut matched_series: HashSet<(usize, usize)> = HashSet::new();
    let mut matched_instances: HashSet<String> = HashSet::new();
    // Studies with any match, in index order: only those are copied into items.
    let mut hit: std::collections::BTreeSet<usize> = Default::default();
    for (si, study) in index.studies.iter().enumerate() {
        let all: Vec<&Study> = if level == Level::Patient {
            index.studies.iter().filter(|o| o.patient_id() == study.patient_id()).collect()
        } else {
            Vec::new()
        };
        let record = Record {
            study,
            patient_studies: &all,
            series: None,
            instance: None,
            level: level.min(Level::Study),
            our_ae: "",
        };
        if level <= Level::Study {
            if record.matches(keys, case) {
                matched_studies.insert(si);
                hit.insert(si);
            }
            continue;
        }
        for (k, series) in study.series.iter().enumerate() {
            let record = Record { series: Some(series), level, ..record };
            if level == Level::Series {
                if record.matches(keys, case) {
                    matched_series.insert((si, k));
                    hit.insert(si);
                }
                continue;
            }
            for i in &series.instances {
                if (Record { instance: Some(i), ..record }).matches(keys, case) {
                    matched_instances.insert(i.sop_instance_uid.clone());
                    hit.insert(si);
                }
            }
        }
    }
    for si in hit {
        let study = &index.studies[si];
        let study_attrs = Arc::new(study.attrs.clone());
        for (k, series) in study.series.iter().enumerate() {
            let take_series = matched_studies.contains(&si) || matched_series.contains(&(si, k));
            let series_attrs = Arc::new(series.attrs.clone());
            for i in &series.instances {
                if take_series || matched_instances.contains(&i.sop_instance_uid) {
                    items.push(Item {
                        instance: i.clone(),
                        study_uid: study.uid().to_string(),
                        study_attrs: study_attrs.clone(),
                        series_attrs: series_attrs.clone(),
                    });
                }
            }
        }
    }
    items
}
