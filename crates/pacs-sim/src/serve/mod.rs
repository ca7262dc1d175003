//! One association: C-ECHO, C-FIND, C-MOVE, C-GET and C-STORE, with the configured faults.
//! This file dispatches and holds the helpers; `find.rs` answers C-FIND (and selects what a
//! retrieve sends), `retrieve.rs` C-MOVE and C-GET, `store.rs` C-STORE; `web.rs` serves
//! the same data as DICOMweb (`stow.rs`: STOW-RS).

mod find;
mod retrieve;
mod store;
mod stow;
mod web;

use find::find;
use retrieve::retrieve;
use store::store;
pub(crate) use web::serve_web;

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
use priorfetch_dimse::link::ServerLink;
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
    let establish = async {
        match &shared.config.tls {
            None => options.establish_async(socket).await.map(ServerLink::Plain),
            Some(tls) => {
                let options = options.clone().tls_config(tls.config());
                options.establish_tls_async(socket).await.map(ServerLink::Tls)
            }
        }
    };
    let established = match tokio::time::timeout(timeout, establish).await {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => {
            Counters::add(&shared.counters.rejected, 1);
            if let Some(problem) = priorfetch_tls::diagnose(&e) {
                warn!(%problem, hint = %problem.hint("--tls-*"), "TLS handshake with a peer failed");
            }
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
