//! One association: C-ECHO, C-FIND, C-MOVE, C-GET and C-STORE, with the configured faults.

use crate::config::{CapBehaviour, Faults};
use crate::index::{Attrs, Instance, PATIENT_KEYS, Source, Study, tags::*};
use crate::matching::matches;
use crate::server::{ReceivedInstance, ServerOptions, Shared};
use crate::stats::Counters;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use priorfetch_dimse::association::{EXPLICIT_VR_LE, IMPLICIT_VR_LE};
use priorfetch_dimse::command::{Command, field, tags as ct};
use priorfetch_dimse::scp::{ServerAssociation, accepted, echo_response, next_command};
use priorfetch_dimse::{AeTitle, Association, DimseError, Peer, ScuOptions, StoreStatusKind, storage_contexts};
use std::collections::HashSet;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Identifiers larger than this are refused (a query is a few hundred bytes).
const MAX_IDENTIFIER: usize = 1 << 20;
/// Instances received larger than this are refused (they are kept in memory).
const MAX_RECEIVED: usize = 512 << 20;

/// What a handler wants done with the association afterwards.
enum Flow {
    Continue,
    Abort,
}

pub(crate) async fn serve(
    socket: TcpStream,
    options: &ServerOptions,
    shared: &Arc<Shared>,
    shutdown: &CancellationToken,
) -> Result<(), DimseError> {
    let timeout = shared.config.idle_timeout;
    let established = match tokio::time::timeout(timeout, options.establish_async(socket)).await {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => {
            Counters::add(&shared.counters.rejected, 1);
            return Err(DimseError::Io(format!("association not established: {e}")));
        }
        Err(_) => {
            return Err(DimseError::Timeout { peer: "peer".into(), what: "an association request", after: timeout });
        }
    };
    Counters::add(&shared.counters.associations, 1);
    let our_ae = AeTitle::parse(&shared.config.ae_title).map_err(DimseError::Protocol)?;
    let (mut assoc, calling_ae) = accepted(established, our_ae, timeout);
    while let Some((pc, command)) = next_command(&mut assoc, shutdown).await? {
        let flow = match command.command_field() {
            Some(field::C_ECHO_RQ) => {
                Counters::add(&shared.counters.echoes, 1);
                assoc.send(pc, &echo_response(&command), None).await?;
                Flow::Continue
            }
            Some(field::C_FIND_RQ) => find(&mut assoc, pc, &command, shared).await?,
            Some(field::C_MOVE_RQ) => retrieve(&mut assoc, pc, &command, shared, true).await?,
            Some(field::C_GET_RQ) => retrieve(&mut assoc, pc, &command, shared, false).await?,
            Some(field::C_STORE_RQ) => store(&mut assoc, pc, &command, shared, &calling_ae).await?,
            // a C-CANCEL for an operation that already ended
            Some(field::C_CANCEL_RQ) => Flow::Continue,
            other => {
                warn!(command = other.unwrap_or(0), "unsupported command: aborting the association");
                Flow::Abort
            }
        };
        if let Flow::Abort = flow {
            Counters::add(&shared.counters.aborts, 1);
            assoc.abort().await;
            return Ok(());
        }
    }
    Ok(())
}

fn context_ts(assoc: &ServerAssociation, pc: u8) -> Option<String> {
    assoc.accepted_contexts().into_iter().find(|(id, _, _)| *id == pc).map(|(_, _, ts)| ts)
}

async fn read_identifier(
    assoc: &mut ServerAssociation,
    pc: u8,
    command: &Command,
) -> Result<Option<InMemDicomObject>, DimseError> {
    if !command.has_data_set() {
        return Ok(None);
    }
    let mut bytes = Vec::new();
    let mut too_big = false;
    assoc
        .receive_data(|chunk| {
            if bytes.len() + chunk.len() > MAX_IDENTIFIER {
                too_big = true;
            } else {
                bytes.extend_from_slice(chunk);
            }
            Ok(())
        })
        .await?;
    let Some(ts) = context_ts(assoc, pc) else { return Ok(None) };
    if too_big {
        return Ok(None);
    }
    Ok(priorfetch_dimse::scu::decode_identifier(bytes, &ts).await.ok())
}

fn text_of(obj: &InMemDicomObject, tag: Tag) -> String {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_str().ok().map(|s| s.trim_matches(|c: char| c == ' ' || c == '\0').to_string()))
        .unwrap_or_default()
}

/// The query keys: (tag, VR, value), without the level and character set.
fn keys_of(obj: &InMemDicomObject) -> Vec<(Tag, VR, String)> {
    obj.iter()
        .filter(|e| {
            let t = e.header().tag;
            t != QUERY_RETRIEVE_LEVEL && t != SPECIFIC_CHARACTER_SET && t.1 != 0x0000 && e.header().vr != VR::SQ
        })
        .map(|e| {
            let value =
                e.to_str().map(|s| s.trim_matches(|c: char| c == ' ' || c == '\0').to_string()).unwrap_or_default();
            (e.header().tag, e.header().vr, value)
        })
        .collect()
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Level {
    Patient,
    Study,
    Series,
    Image,
}

fn level_of(obj: &InMemDicomObject, sop_class: &str) -> Option<Level> {
    let patient_root = sop_class.starts_with("1.2.840.10008.5.1.4.1.2.1.");
    match text_of(obj, QUERY_RETRIEVE_LEVEL).to_ascii_uppercase().as_str() {
        "PATIENT" if patient_root => Some(Level::Patient),
        "STUDY" => Some(Level::Study),
        "SERIES" => Some(Level::Series),
        "IMAGE" => Some(Level::Image),
        _ => None,
    }
}

/// One candidate record of a query: the study, and the series/instance at deeper levels.
struct Record<'a> {
    study: &'a Study,
    /// All studies of the patient (patient level).
    patient_studies: &'a [&'a Study],
    series: Option<&'a crate::index::Series>,
    instance: Option<&'a Instance>,
    level: Level,
    our_ae: &'a str,
}

impl Record<'_> {
    fn value(&self, tag: Tag) -> Option<String> {
        if tag == RETRIEVE_AE_TITLE {
            return Some(self.our_ae.to_string());
        }
        if tag == QUERY_RETRIEVE_LEVEL {
            return None;
        }
        if let Some(i) = self.instance
            && let Some(v) = i.attrs.get(&tag)
        {
            return Some(v.clone());
        }
        if let Some(s) = self.series {
            if let Some(v) = s.attrs.get(&tag) {
                return Some(v.clone());
            }
            if tag == SERIES_RELATED_INSTANCES {
                return Some(s.instances.len().to_string());
            }
        }
        if self.level == Level::Patient {
            return match tag {
                PATIENT_RELATED_STUDIES => Some(self.patient_studies.len().to_string()),
                PATIENT_RELATED_SERIES => {
                    Some(self.patient_studies.iter().map(|s| s.series.len()).sum::<usize>().to_string())
                }
                PATIENT_RELATED_INSTANCES => {
                    Some(self.patient_studies.iter().map(|s| s.instance_count()).sum::<usize>().to_string())
                }
                t if PATIENT_KEYS.contains(&t) => self.study.attrs.get(&t).cloned(),
                _ => None,
            };
        }
        self.study.attrs.get(&tag).cloned().or_else(|| self.study.computed(tag))
    }

    fn matches(&self, keys: &[(Tag, VR, String)], case: crate::CaseMatching) -> bool {
        keys.iter().all(|(tag, vr, q)| matches(*vr, q, self.value(*tag).as_deref(), case))
    }
}

/// Calls `each` for every record of the level (in index order).
fn for_each_record<'a>(studies: &'a [Study], level: Level, our_ae: &'a str, mut each: impl FnMut(&Record<'_>)) {
    if level == Level::Patient {
        let mut seen: Vec<&str> = Vec::new();
        for s in studies {
            if seen.contains(&s.patient_id()) {
                continue;
            }
            seen.push(s.patient_id());
            let all: Vec<&Study> = studies.iter().filter(|o| o.patient_id() == s.patient_id()).collect();
            each(&Record { study: s, patient_studies: &all, series: None, instance: None, level, our_ae });
        }
        return;
    }
    for s in studies {
        if level == Level::Study {
            each(&Record { study: s, patient_studies: &[], series: None, instance: None, level, our_ae });
            continue;
        }
        for series in &s.series {
            if level == Level::Series {
                each(&Record { study: s, patient_studies: &[], series: Some(series), instance: None, level, our_ae });
                continue;
            }
            for i in &series.instances {
                each(&Record {
                    study: s,
                    patient_studies: &[],
                    series: Some(series),
                    instance: Some(i),
                    level,
                    our_ae,
                });
            }
        }
    }
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Patient => "PATIENT",
        Level::Study => "STUDY",
        Level::Series => "SERIES",
        Level::Image => "IMAGE",
    }
}

fn is_text_vr(vr: VR) -> bool {
    matches!(
        vr,
        VR::AE
            | VR::AS
            | VR::CS
            | VR::DA
            | VR::DS
            | VR::DT
            | VR::IS
            | VR::LO
            | VR::LT
            | VR::PN
            | VR::SH
            | VR::ST
            | VR::TM
            | VR::UC
            | VR::UI
            | VR::UR
            | VR::UT
    )
}

fn response_identifier(
    level: Level,
    keys: &[(Tag, VR, String)],
    record: &Record<'_>,
    charset: Option<&str>,
) -> InMemDicomObject {
    let mut obj = InMemDicomObject::new_empty();
    obj.put(DataElement::new(QUERY_RETRIEVE_LEVEL, VR::CS, PrimitiveValue::from(level_name(level))));
    if let Some(cs) = charset {
        obj.put(DataElement::new(SPECIFIC_CHARACTER_SET, VR::CS, PrimitiveValue::from(cs)));
    }
    for (tag, vr, _) in keys {
        let value = match record.value(*tag) {
            Some(v) if is_text_vr(*vr) && !v.is_empty() => {
                if v.contains('\\') {
                    PrimitiveValue::Strs(v.split('\\').map(str::to_string).collect())
                } else {
                    PrimitiveValue::from(v)
                }
            }
            _ => PrimitiveValue::Empty,
        };
        obj.put(DataElement::new(*tag, *vr, value));
    }
    obj
}

fn encode(obj: &InMemDicomObject, ts: &str) -> Result<Vec<u8>, DimseError> {
    let ts =
        TransferSyntaxRegistry.get(ts).ok_or_else(|| DimseError::Encode(format!("unknown transfer syntax {ts}")))?;
    let mut out = Vec::new();
    obj.write_dataset_with_ts(&mut out, ts).map_err(|e| DimseError::Encode(e.to_string()))?;
    Ok(out)
}

async fn delay(faults: &Faults) {
    if let Some(d) = faults.response_delay {
        tokio::time::sleep(d).await;
    }
}

/// Waits on the requesting association for a C-CANCEL-RQ of operation `message_id`.
/// Anything else arriving mid-operation is a protocol error (the association is dropped).
async fn cancel_request(assoc: &mut ServerAssociation, message_id: u16) -> Result<(), DimseError> {
    let (_, command) = assoc.receive_command().await?;
    match command.command_field() {
        Some(field::C_CANCEL_RQ) if command.u16(ct::MESSAGE_ID_BEING_RESPONDED_TO) == Some(message_id) => Ok(()),
        other => Err(DimseError::Protocol(format!(
            "unexpected command 0x{:04X} while an operation runs",
            other.unwrap_or(0)
        ))),
    }
}

/// The response delay, cut short by a C-CANCEL (which sets `cancelled`).
async fn delay_or_cancel(
    assoc: &mut ServerAssociation,
    message_id: u16,
    faults: &Faults,
    cancelled: &mut bool,
) -> Result<(), DimseError> {
    if *cancelled {
        delay(faults).await;
        return Ok(());
    }
    tokio::select! {
        _ = delay(faults) => Ok(()),
        r = cancel_request(assoc, message_id) => {
            r?;
            *cancelled = true;
            Ok(())
        }
    }
}

/// Runs `work` to completion (a sub-operation is never cut in half) while watching the
/// requesting association for a C-CANCEL, which sets `cancelled`.
async fn watching_for_cancel<F: std::future::Future>(
    assoc: &mut ServerAssociation,
    message_id: u16,
    work: F,
    cancelled: &mut bool,
) -> Result<F::Output, DimseError> {
    tokio::pin!(work);
    loop {
        if *cancelled {
            return Ok(work.await);
        }
        tokio::select! {
            out = &mut work => return Ok(out),
            r = cancel_request(assoc, message_id) => {
                r?;
                *cancelled = true;
            }
        }
    }
}

fn response(command_field: u16, rq: &Command, status: u16) -> Command {
    let mut rsp = Command::new(command_field);
    rsp.put_u16(ct::MESSAGE_ID_BEING_RESPONDED_TO, rq.u16(ct::MESSAGE_ID).unwrap_or(0))
        .put_uid(ct::AFFECTED_SOP_CLASS_UID, &rq.string(ct::AFFECTED_SOP_CLASS_UID).unwrap_or_default())
        .put_u16(ct::STATUS, status);
    rsp
}

async fn find(
    assoc: &mut ServerAssociation,
    pc: u8,
    command: &Command,
    shared: &Arc<Shared>,
) -> Result<Flow, DimseError> {
    Counters::add(&shared.counters.finds, 1);
    let faults = shared.faults();
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

trait Comment {
    fn put_text_comment(&mut self, text: &str);
}

impl Comment for Command {
    fn put_text_comment(&mut self, text: &str) {
        self.put_ae(ct::ERROR_COMMENT, text);
    }
}

/// One instance to send, with what its synthetic encoding needs.
struct Item {
    instance: Arc<Instance>,
    study_uid: String,
    study_attrs: Arc<Attrs>,
    series_attrs: Arc<Attrs>,
}

fn select_items(shared: &Shared, level: Level, keys: &[(Tag, VR, String)]) -> Vec<Item> {
    let Ok(index) = shared.index.read() else { return Vec::new() };
    let case = shared.config.case_matching;
    let mut items = Vec::new();
    let mut matched_studies: Vec<usize> = Vec::new();
    let mut matched_series: Vec<(usize, usize)> = Vec::new();
    let mut matched_instances: HashSet<String> = HashSet::new();
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
                matched_studies.push(si);
            }
            continue;
        }
        for (k, series) in study.series.iter().enumerate() {
            let record = Record { series: Some(series), level, ..record };
            if level == Level::Series {
                if record.matches(keys, case) {
                    matched_series.push((si, k));
                }
                continue;
            }
            for i in &series.instances {
                if (Record { instance: Some(i), ..record }).matches(keys, case) {
                    matched_instances.insert(i.sop_instance_uid.clone());
                }
            }
        }
    }
    for (si, study) in index.studies.iter().enumerate() {
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

/// Is this instance's sub-operation one that fails? Deterministic per instance and seed.
fn fails(seed: u64, uid: &str, ratio: f64) -> bool {
    if ratio <= 0.0 {
        return false;
    }
    let h = crate::synthetic::mix(&[
        seed,
        uid.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3)),
    ]);
    (h as f64 / u64::MAX as f64) < ratio
}

#[derive(Default)]
struct Progress {
    remaining: usize,
    completed: u16,
    failed: u16,
    warning: u16,
    failed_uids: Vec<String>,
    cancelled: bool,
}

impl Progress {
    fn put(&self, rsp: &mut Command, with_remaining: bool) {
        if with_remaining {
            rsp.put_u16(ct::REMAINING, self.remaining.min(u16::MAX as usize) as u16);
        }
        rsp.put_u16(ct::COMPLETED, self.completed).put_u16(ct::FAILED, self.failed).put_u16(ct::WARNING, self.warning);
    }

    fn fail(&mut self, uid: &str) {
        self.failed = self.failed.saturating_add(1);
        self.failed_uids.push(uid.to_string());
    }
}

async fn retrieve(
    assoc: &mut ServerAssociation,
    pc: u8,
    command: &Command,
    shared: &Arc<Shared>,
    is_move: bool,
) -> Result<Flow, DimseError> {
    let rsp_field = if is_move { field::C_MOVE_RSP } else { field::C_GET_RSP };
    Counters::add(if is_move { &shared.counters.moves } else { &shared.counters.gets }, 1);
    let faults = shared.faults();
    let sop = command.string(ct::AFFECTED_SOP_CLASS_UID).unwrap_or_default();
    let identifier = read_identifier(assoc, pc, command).await?;
    let ts = context_ts(assoc, pc).unwrap_or_else(|| IMPLICIT_VR_LE.to_string());
    let parsed = identifier.and_then(|i| level_of(&i, &sop).map(|l| (keys_of(&i), l)));
    let Some((keys, level)) = parsed.filter(|(keys, _)| keys.iter().any(|(_, _, v)| !v.is_empty())) else {
        delay(&faults).await;
        assoc.send(pc, &response(rsp_field, command, 0xA900), None).await?;
        return Ok(Flow::Continue);
    };
    // the destination is checked before anything else, as archives do
    let destination = if is_move {
        let ae = command.string(ct::MOVE_DESTINATION).unwrap_or_default();
        match shared.config.destinations.iter().find(|d| d.ae == ae) {
            Some(d) => Some(d.clone()),
            None => {
                debug!(destination = %ae, "unknown move destination");
                delay(&faults).await;
                let mut rsp = response(rsp_field, command, 0xA801);
                rsp.put_text_comment("move destination unknown");
                assoc.send(pc, &rsp, None).await?;
                return Ok(Flow::Continue);
            }
        }
    } else {
        None
    };
    let items = select_items(shared, level, &keys);
    // attempts per study: retrieve faults may apply only to the first N of them
    let active_studies: HashSet<String> = {
        let mut attempts = shared.attempts.lock().map_err(|_| DimseError::Protocol("lock poisoned".into()))?;
        let mut studies: Vec<&str> = items.iter().map(|i| i.study_uid.as_str()).collect();
        studies.dedup();
        let mut active = HashSet::new();
        for s in studies {
            let n = attempts.entry(s.to_string()).or_insert(0);
            *n += 1;
            if faults.faults_first_attempts.is_none_or(|first| *n <= first) {
                active.insert(s.to_string());
            }
        }
        active
    };
    let faulty = !active_studies.is_empty();
    if faulty && faults.out_of_resources {
        delay(&faults).await;
        let mut rsp = response(rsp_field, command, 0xA702);
        Progress::default().put(&mut rsp, false);
        rsp.put_text_comment("out of resources");
        assoc.send(pc, &rsp, None).await?;
        return Ok(Flow::Continue);
    }
    if faulty && faults.empty_success {
        delay(&faults).await;
        let mut rsp = response(rsp_field, command, 0x0000);
        Progress::default().put(&mut rsp, false);
        assoc.send(pc, &rsp, None).await?;
        return Ok(Flow::Continue);
    }
    let abort_after = faults.abort_after_suboperations.filter(|_| faulty).map(|n| n as usize);
    let mut progress = Progress { remaining: items.len(), ..Default::default() };
    let message_id = command.u16(ct::MESSAGE_ID).unwrap_or(0);
    let our_ae = AeTitle::parse(&shared.config.ae_title).map_err(DimseError::Protocol)?;
    let mut target: Option<Association> = None;
    if let Some(d) = &destination {
        let peer = Peer::new(&d.ae, &d.host, d.port).map_err(DimseError::Protocol)?;
        let contexts =
            storage_contexts(items.iter().map(|i| (i.instance.sop_class_uid.clone(), item_ts(i).to_string())));
        let options = ScuOptions::new(our_ae.clone());
        match Association::connect(&peer, &options, &contexts).await {
            Ok(a) => target = Some(a),
            Err(e) => {
                warn!(destination = %d.ae, error = %e, "cannot reach the move destination");
                for i in &items {
                    progress.fail(&i.instance.sop_instance_uid);
                }
                progress.remaining = 0;
            }
        }
    }
    let window = shared.config.store_window.max(1);
    let mut done = 0usize;
    let originator = is_move.then(|| (assoc.peer.ae_title.clone(), message_id));
    while progress.remaining > 0 && !progress.cancelled {
        if abort_after.is_some_and(|n| done >= n) {
            if let Some(t) = target.take() {
                t.release().await;
            }
            return Ok(Flow::Abort);
        }
        let start = items.len() - progress.remaining;
        let mut end = (start + window).min(items.len());
        if let Some(n) = abort_after {
            end = end.min(start.max(n));
        }
        let batch = &items[start..end];
        if batch.is_empty() {
            break;
        }
        let result = match target.as_mut() {
            Some(t) => {
                // the requesting association is idle meanwhile: a C-CANCEL may arrive on it
                let mut cancelled = false;
                let work = send_batch(
                    t,
                    batch,
                    shared,
                    &faults,
                    &active_studies,
                    originator.as_ref().map(|(a, id)| (a, *id)),
                    &mut progress,
                    false,
                );
                let watched = watching_for_cancel(assoc, message_id, work, &mut cancelled).await;
                let result = match watched {
                    Ok(r) => r,
                    Err(e) => {
                        if let Some(mut t) = target.take() {
                            t.abort().await;
                        }
                        return Err(e);
                    }
                };
                progress.cancelled |= cancelled;
                result
            }
            None => send_batch(assoc, batch, shared, &faults, &active_studies, None, &mut progress, true).await,
        };
        progress.remaining -= batch.len();
        done += batch.len();
        if let Err(e) = result {
            // the destination broke: everything left fails
            if let Some(mut t) = target.take() {
                warn!(error = %e, "move destination association failed");
                t.abort().await;
                for i in &items[items.len() - progress.remaining..] {
                    progress.fail(&i.instance.sop_instance_uid);
                }
                progress.remaining = 0;
            } else {
                return Err(e);
            }
        }
        if abort_after.is_some_and(|n| done >= n) {
            if let Some(t) = target.take() {
                t.release().await;
            }
            return Ok(Flow::Abort);
        }
        if progress.remaining > 0 && !progress.cancelled {
            let mut cancelled = false;
            if let Err(e) = delay_or_cancel(assoc, message_id, &faults, &mut cancelled).await {
                if let Some(mut t) = target.take() {
                    t.abort().await;
                }
                return Err(e);
            }
            if cancelled {
                progress.cancelled = true;
                break;
            }
            let mut rsp = response(rsp_field, command, 0xFF00);
            progress.put(&mut rsp, true);
            assoc.send(pc, &rsp, None).await?;
        }
    }
    if let Some(t) = target.take() {
        t.release().await;
    }
    Counters::add(&shared.counters.failed_subops, progress.failed as u64);
    let status = if progress.cancelled {
        Counters::add(&shared.counters.cancels, 1);
        0xFE00
    } else if progress.failed > 0 && progress.completed == 0 && progress.warning == 0 {
        0xA702
    } else if progress.failed > 0 || progress.warning > 0 {
        0xB000
    } else {
        0x0000
    };
    if !progress.cancelled {
        delay(&faults).await;
    }
    let mut rsp = response(rsp_field, command, status);
    progress.put(&mut rsp, progress.cancelled);
    let data = if progress.failed_uids.is_empty() {
        None
    } else {
        let mut obj = InMemDicomObject::new_empty();
        obj.put(DataElement::new(
            FAILED_SOP_INSTANCE_UID_LIST,
            VR::UI,
            PrimitiveValue::Strs(progress.failed_uids.iter().cloned().collect()),
        ));
        rsp.with_data_set();
        Some(encode(&obj, &ts)?)
    };
    assoc.send(pc, &rsp, data.as_deref()).await?;
    Ok(Flow::Continue)
}

const FAILED_SOP_INSTANCE_UID_LIST: Tag = Tag(0x0008, 0x0058);

fn item_ts(item: &Item) -> &str {
    match &item.instance.source {
        Source::Synthetic => EXPLICIT_VR_LE,
        Source::File(f) => &f.transfer_syntax,
        Source::Received { transfer_syntax, .. } => transfer_syntax,
    }
}

/// Sends a window of C-STOREs, then collects their responses. On the requester's own
/// association (C-GET) a C-CANCEL may arrive among the responses.
#[allow(clippy::too_many_arguments)]
async fn send_batch<A>(
    target: &mut Association<A>,
    batch: &[Item],
    shared: &Shared,
    faults: &Faults,
    active_studies: &HashSet<String>,
    originator: Option<(&AeTitle, u16)>,
    progress: &mut Progress,
    same_association: bool,
) -> Result<(), DimseError>
where
    A: dicom_ul::association::AsyncAssociation<TcpStream> + Send,
{
    let mut sent = 0usize;
    for item in batch {
        let uid = &item.instance.sop_instance_uid;
        if active_studies.contains(&item.study_uid) && fails(shared.config.seed, uid, faults.failed_suboperation_ratio)
        {
            progress.fail(uid);
            continue;
        }
        let class = &item.instance.sop_class_uid;
        let (data, ts): (Arc<Vec<u8>>, String) = match &item.instance.source {
            Source::Synthetic => {
                let Some(spec) = &shared.synthetic else {
                    progress.fail(uid);
                    continue;
                };
                // encode straight into the syntax the peer takes: no transcoding
                let explicit = match target.storage_context(class, EXPLICIT_VR_LE) {
                    Ok((_, ts)) => ts != IMPLICIT_VR_LE,
                    Err(e) => {
                        debug!(error = %e, "no storage context for a sub-operation");
                        progress.fail(uid);
                        continue;
                    }
                };
                let bytes = spec.encode_instance(&item.study_attrs, &item.series_attrs, &item.instance, explicit);
                (Arc::new(bytes), if explicit { EXPLICIT_VR_LE.into() } else { IMPLICIT_VR_LE.into() })
            }
            Source::File(f) => {
                let f = f.clone();
                let ts = f.transfer_syntax.clone();
                match tokio::task::spawn_blocking(move || f.read_dataset()).await {
                    Ok(Ok(bytes)) => (Arc::new(bytes), ts),
                    _ => {
                        progress.fail(uid);
                        continue;
                    }
                }
            }
            Source::Received { dataset, transfer_syntax } => (dataset.clone(), transfer_syntax.clone()),
        };
        match target.send_store(class, uid, &ts, &data, originator).await {
            Ok(_) => {
                sent += 1;
                Counters::add(&shared.counters.bytes_sent, data.len() as u64);
            }
            Err(DimseError::NoContext { what, .. }) => {
                debug!(%what, "sub-operation not possible");
                progress.fail(uid);
            }
            Err(e) => return Err(e),
        }
    }
    let mut answered = 0usize;
    while answered < sent {
        let msg = target.receive().await?;
        match msg.command.command_field() {
            Some(field::C_STORE_RSP) => {
                answered += 1;
                let status = msg.command.status().unwrap_or(0xC000);
                let uid = msg.command.string(ct::AFFECTED_SOP_INSTANCE_UID).unwrap_or_default();
                match priorfetch_dimse::StoreStatus::from_status(status, None).kind {
                    StoreStatusKind::Success => {
                        progress.completed = progress.completed.saturating_add(1);
                        Counters::add(&shared.counters.stores_sent, 1);
                    }
                    StoreStatusKind::Warning => progress.warning = progress.warning.saturating_add(1),
                    StoreStatusKind::Failure => progress.fail(&uid),
                }
            }
            Some(field::C_CANCEL_RQ) if same_association => progress.cancelled = true,
            other => {
                return Err(DimseError::Protocol(format!("expected C-STORE-RSP, got 0x{:04X}", other.unwrap_or(0))));
            }
        }
    }
    Ok(())
}

async fn store(
    assoc: &mut ServerAssociation,
    pc: u8,
    command: &Command,
    shared: &Arc<Shared>,
    calling_ae: &str,
) -> Result<Flow, DimseError> {
    let class = command.string(ct::AFFECTED_SOP_CLASS_UID).unwrap_or_default();
    let uid = command.string(ct::AFFECTED_SOP_INSTANCE_UID).unwrap_or_default();
    let mut bytes = Vec::new();
    let mut too_big = false;
    if command.has_data_set() {
        assoc
            .receive_data(|chunk| {
                if bytes.len() + chunk.len() > MAX_RECEIVED {
                    too_big = true;
                } else if !too_big {
                    bytes.extend_from_slice(chunk);
                }
                Ok(())
            })
            .await?;
    }
    let ts = context_ts(assoc, pc);
    let status = match ts {
        None => 0x0122,
        Some(_) if too_big => 0xA700,
        Some(_) if bytes.is_empty() => 0xC000,
        Some(ts) => {
            let size = bytes.len();
            let dataset = Arc::new(bytes);
            match priorfetch_dimse::scu::decode_identifier(dataset.to_vec(), &ts).await {
                Ok(obj) => {
                    let attrs = crate::index::attrs_of(&obj);
                    let study_uid = attrs.get(&STUDY_INSTANCE_UID).cloned().unwrap_or_default();
                    let instance = Instance {
                        attrs: crate::index::pick(&attrs, crate::index::INSTANCE_KEYS.iter()),
                        sop_class_uid: class.clone(),
                        sop_instance_uid: uid.clone(),
                        source: Source::Received { dataset, transfer_syntax: ts.clone() },
                    };
                    if let Ok(mut index) = shared.index.write() {
                        index.add_instance(&attrs, instance);
                    }
                    if let Ok(mut received) = shared.received.lock() {
                        received.push(ReceivedInstance {
                            calling_ae: calling_ae.to_string(),
                            sop_class_uid: class.clone(),
                            sop_instance_uid: uid.clone(),
                            study_instance_uid: study_uid,
                            transfer_syntax: ts,
                            size,
                            move_originator_ae: command.string(ct::MOVE_ORIGINATOR_AE).filter(|s| !s.is_empty()),
                            move_originator_message_id: command.u16(ct::MOVE_ORIGINATOR_MESSAGE_ID),
                        });
                    }
                    Counters::add(&shared.counters.stores_received, 1);
                    0x0000
                }
                Err(e) => {
                    debug!(error = %e, "received data set cannot be parsed");
                    0xC000
                }
            }
        }
    };
    let mut rsp = Command::new(field::C_STORE_RSP);
    rsp.put_u16(ct::MESSAGE_ID_BEING_RESPONDED_TO, command.u16(ct::MESSAGE_ID).unwrap_or(0))
        .put_uid(ct::AFFECTED_SOP_CLASS_UID, &class)
        .put_uid(ct::AFFECTED_SOP_INSTANCE_UID, &uid)
        .put_u16(ct::STATUS, status);
    assoc.send(pc, &rsp, None).await?;
    Ok(Flow::Continue)
}
