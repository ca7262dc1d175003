//! Query/Retrieve SCU operations on an [`Association`]: C-ECHO, C-FIND (matches streamed
//! to a callback, C-CANCEL after N or on request), C-MOVE (progress surfaced, final
//! counts, Failed SOP Instance UID List, C-CANCEL).

use crate::association::{Association, ContextRequest, ScuOptions};
use crate::command::{Command, field, tags};
use crate::error::{DimseError, is_pending, status_meaning};
use crate::peer::{AeTitle, Peer};
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};
use tokio::sync::watch;

pub const VERIFICATION: &str = "1.2.840.10008.1.1";

/// Query/retrieve information model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryModel {
    StudyRoot,
    PatientRoot,
}

impl QueryModel {
    pub fn find_uid(self) -> &'static str {
        match self {
            QueryModel::StudyRoot => "1.2.840.10008.5.1.4.1.2.2.1",
            QueryModel::PatientRoot => "1.2.840.10008.5.1.4.1.2.1.1",
        }
    }
    pub fn move_uid(self) -> &'static str {
        match self {
            QueryModel::StudyRoot => "1.2.840.10008.5.1.4.1.2.2.2",
            QueryModel::PatientRoot => "1.2.840.10008.5.1.4.1.2.1.2",
        }
    }
    pub fn get_uid(self) -> &'static str {
        match self {
            QueryModel::StudyRoot => "1.2.840.10008.5.1.4.1.2.2.3",
            QueryModel::PatientRoot => "1.2.840.10008.5.1.4.1.2.1.3",
        }
    }
}

/// How a C-FIND ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindOutcome {
    pub matches: usize,
    pub status: u16,
    /// We sent C-CANCEL (after `cancel_after` matches, or on request).
    pub cancelled_by_us: bool,
    /// The archive ended with 0xFE00 although we did not cancel: it stopped at its match
    /// limit (Orthanc's LimitFindResults). The result list is incomplete.
    pub truncated: bool,
    /// Some pending responses were 0xFF01 (optional keys not supported).
    pub optional_keys_unsupported: bool,
}

/// Sub-operation counts of a C-MOVE/C-GET.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubOperations {
    pub remaining: Option<u16>,
    pub completed: u16,
    pub failed: u16,
    pub warning: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrieveOutcome {
    pub status: u16,
    pub counts: SubOperations,
    /// (0008,0058) from the final response, when the archive sends it.
    pub failed_instances: Vec<String>,
    pub cancelled: bool,
    pub elapsed: Duration,
}

/// Builds a query identifier: `QueryRetrieveLevel` plus keys (empty value = return key).
pub fn identifier(level: &str, keys: &[(Tag, VR, &str)]) -> InMemDicomObject {
    let mut obj = InMemDicomObject::new_empty();
    obj.put(DataElement::new(Tag(0x0008, 0x0052), VR::CS, PrimitiveValue::from(level)));
    for (tag, vr, value) in keys {
        let value = if value.is_empty() { PrimitiveValue::Empty } else { PrimitiveValue::from(*value) };
        obj.put(DataElement::new(*tag, *vr, value));
    }
    obj
}

fn encode_identifier(obj: &InMemDicomObject, ts_uid: &str) -> Result<Vec<u8>, DimseError> {
    let mut out = Vec::new();
    encode_identifier_into(obj, ts_uid, &mut out)?;
    Ok(out)
}

pub(crate) fn encode_identifier_into(
    obj: &InMemDicomObject,
    ts_uid: &str,
    out: &mut Vec<u8>,
) -> Result<(), DimseError> {
    let ts = TransferSyntaxRegistry
        .get(ts_uid)
        .ok_or_else(|| DimseError::Encode(format!("unknown transfer syntax {ts_uid}")))?;
    obj.write_dataset_with_ts(out, ts).map_err(|e| DimseError::Encode(e.to_string()))
}

/// (0008,0058) Failed SOP Instance UID List of a final C-MOVE/C-GET response identifier.
pub(crate) fn failed_instance_list(data: &[u8], ts_uid: &str) -> Vec<String> {
    decode_data_set(data, ts_uid)
        .ok()
        .and_then(|obj| {
            obj.element_opt(crate::command::tags::FAILED_SOP_INSTANCE_UID_LIST)
                .ok()
                .flatten()
                .and_then(|e| e.to_multi_str().ok().map(|v| v.to_vec()))
        })
        .unwrap_or_default()
        .into_iter()
        .map(|s| s.trim_end_matches('\0').to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

pub(crate) async fn send_cancel(assoc: &mut Association, pc: u8, message_id: u16) -> Result<(), DimseError> {
    let mut cancel = Command::new(field::C_CANCEL_RQ);
    cancel.put_u16(tags::MESSAGE_ID_BEING_RESPONDED_TO, message_id);
    assoc.send(pc, &cancel, None).await
}

/// Decodes an identifier received from an archive. The general DICOM parser can spin on
/// some malformed inputs (found by fuzzing the command-set path), so it runs on the
/// blocking pool under a deadline: a poisoned response fails the operation instead of
/// hanging it.
pub async fn decode_identifier(bytes: Vec<u8>, ts_uid: &str) -> Result<InMemDicomObject, DimseError> {
    decode_data_set_bounded(bytes, ts_uid).await
}

pub(crate) async fn decode_data_set_bounded(bytes: Vec<u8>, ts_uid: &str) -> Result<InMemDicomObject, DimseError> {
    let ts_uid = ts_uid.to_string();
    let task = tokio::task::spawn_blocking(move || decode_data_set(&bytes, &ts_uid));
    match tokio::time::timeout(Duration::from_secs(5), task).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(DimseError::Protocol("identifier decoding failed".into())),
        Err(_) => Err(DimseError::Protocol("identifier could not be decoded within 5 s (malformed data set)".into())),
    }
}

pub(crate) fn decode_data_set(bytes: &[u8], ts_uid: &str) -> Result<InMemDicomObject, DimseError> {
    let ts = TransferSyntaxRegistry
        .get(ts_uid)
        .ok_or_else(|| DimseError::Protocol(format!("unknown transfer syntax {ts_uid}")))?;
    // dicom-object trusts lengths: check the structure first (see dataset_guard.rs).
    crate::dataset_guard::check(bytes, ts_uid)?;
    InMemDicomObject::read_dataset_with_ts(bytes, ts)
        .map_err(|e| DimseError::Protocol(format!("malformed data set: {e}")))
}

/// C-ECHO on a fresh association; returns the round trip.
pub async fn echo(peer: &Peer, options: &ScuOptions) -> Result<Duration, DimseError> {
    let started = Instant::now();
    let mut assoc = Association::connect(peer, options, &[ContextRequest::new(VERIFICATION)]).await?;
    let (pc, _) = assoc
        .context_for(VERIFICATION)
        .ok_or_else(|| DimseError::NoContext { peer: peer.to_string(), what: "Verification (C-ECHO)".into() })?;
    let mut rq = Command::new(field::C_ECHO_RQ);
    let id = assoc.next_message_id();
    rq.put_u16(tags::MESSAGE_ID, id).put_uid(tags::AFFECTED_SOP_CLASS_UID, VERIFICATION);
    assoc.send(pc, &rq, None).await?;
    let rsp = assoc.receive().await?;
    let status = rsp.command.status().unwrap_or(0xFFFF);
    assoc.release().await;
    if status != 0 {
        return Err(DimseError::Status {
            operation: "C-ECHO",
            status,
            meaning: status_meaning(status),
            comment: String::new(),
            move_destination: None,
            peer: peer.to_string(),
        });
    }
    Ok(started.elapsed())
}

/// Contexts for querying and moving with a model.
pub fn query_contexts(model: QueryModel) -> Vec<ContextRequest> {
    vec![ContextRequest::new(model.find_uid()), ContextRequest::new(model.move_uid())]
}

fn comment(cmd: &Command) -> String {
    cmd.string(tags::ERROR_COMMENT).filter(|c| !c.is_empty()).map(|c| format!(": {c}")).unwrap_or_default()
}

impl Association {
    /// C-FIND. Each match is passed to `on_match` as it arrives; returning
    /// `ControlFlow::Break` (or reaching `cancel_after` matches) sends C-CANCEL, and the
    /// matches that still arrive are dropped. Can be called repeatedly on one association.
    pub async fn find(
        &mut self,
        model: QueryModel,
        query: &InMemDicomObject,
        cancel_after: Option<usize>,
        on_match: impl FnMut(InMemDicomObject) -> ControlFlow<()>,
    ) -> Result<FindOutcome, DimseError> {
        self.find_with_cancel(model, query, cancel_after, None, on_match).await
    }

    /// [`Association::find`], also sending C-CANCEL when `cancel` turns true (from another
    /// task, while no match arrives).
    pub async fn find_with_cancel(
        &mut self,
        model: QueryModel,
        query: &InMemDicomObject,
        cancel_after: Option<usize>,
        cancel: Option<watch::Receiver<bool>>,
        on_match: impl FnMut(InMemDicomObject) -> ControlFlow<()>,
    ) -> Result<FindOutcome, DimseError> {
        self.find_in(model.find_uid(), query, cancel_after, cancel, on_match).await
    }

    /// C-FIND in the information model whose FIND SOP class is `sop`: a Q/R model, or
    /// Modality Worklist (`worklist.rs`), which has no MOVE or GET class to pair with.
    pub(crate) async fn find_in(
        &mut self,
        sop: &str,
        query: &InMemDicomObject,
        cancel_after: Option<usize>,
        mut cancel: Option<watch::Receiver<bool>>,
        mut on_match: impl FnMut(InMemDicomObject) -> ControlFlow<()>,
    ) -> Result<FindOutcome, DimseError> {
        let (pc, ts) = self.context_for(sop).ok_or_else(|| DimseError::NoContext {
            peer: self.peer.to_string(),
            what: "C-FIND in this information model".into(),
        })?;
        let id = self.next_message_id();
        let mut rq = Command::new(field::C_FIND_RQ);
        rq.put_u16(tags::MESSAGE_ID, id)
            .put_uid(tags::AFFECTED_SOP_CLASS_UID, sop)
            .put_u16(tags::PRIORITY, 0)
            .with_data_set();
        self.send(pc, &rq, Some(&encode_identifier(query, &ts)?)).await?;
        let mut outcome = FindOutcome {
            matches: 0,
            status: 0,
            cancelled_by_us: false,
            truncated: false,
            optional_keys_unsupported: false,
        };
        loop {
            let msg = tokio::select! {
                msg = self.receive() => msg?,
                _ = wait_true(&mut cancel), if !outcome.cancelled_by_us && cancel.is_some() => {
                    self.cancel(pc, id).await?;
                    outcome.cancelled_by_us = true;
                    continue;
                }
            };
            if msg.command.command_field() != Some(field::C_FIND_RSP) {
                return Err(DimseError::Protocol(format!(
                    "expected C-FIND-RSP, got command 0x{:04X}",
                    msg.command.command_field().unwrap_or(0)
                )));
            }
            let status =
                msg.command.status().ok_or_else(|| DimseError::Protocol("C-FIND-RSP without status".into()))?;
            if is_pending(status) {
                outcome.optional_keys_unsupported |= status == 0xFF01;
                if outcome.cancelled_by_us {
                    continue;
                }
                if let Some(data) = msg.data {
                    outcome.matches += 1;
                    let flow = on_match(decode_data_set_bounded(data, &ts).await?);
                    if flow.is_break() || cancel_after.is_some_and(|n| outcome.matches >= n) {
                        self.cancel(pc, id).await?;
                        outcome.cancelled_by_us = true;
                    }
                }
                continue;
            }
            outcome.status = status;
            return match status {
                0x0000 => Ok(outcome),
                0xFE00 => {
                    outcome.truncated = !outcome.cancelled_by_us;
                    Ok(outcome)
                }
                _ => Err(DimseError::Status {
                    operation: "C-FIND",
                    status,
                    meaning: status_meaning(status),
                    comment: comment(&msg.command),
                    move_destination: None,
                    peer: self.peer.to_string(),
                }),
            };
        }
    }

    async fn cancel(&mut self, pc: u8, message_id: u16) -> Result<(), DimseError> {
        send_cancel(self, pc, message_id).await
    }

    /// C-MOVE of the instances the identifier selects to `destination`. Pending responses
    /// go to `on_progress`; `cancel` turning true sends C-CANCEL.
    pub async fn retrieve_move(
        &mut self,
        model: QueryModel,
        query: &InMemDicomObject,
        destination: &AeTitle,
        mut on_progress: impl FnMut(&SubOperations),
        mut cancel: Option<watch::Receiver<bool>>,
    ) -> Result<RetrieveOutcome, DimseError> {
        let started = Instant::now();
        let sop = model.move_uid();
        let (pc, ts) = self.context_for(sop).ok_or_else(|| DimseError::NoContext {
            peer: self.peer.to_string(),
            what: "C-MOVE in this information model".into(),
        })?;
        let id = self.next_message_id();
        let mut rq = Command::new(field::C_MOVE_RQ);
        rq.put_u16(tags::MESSAGE_ID, id)
            .put_uid(tags::AFFECTED_SOP_CLASS_UID, sop)
            .put_u16(tags::PRIORITY, 0)
            .put_ae(tags::MOVE_DESTINATION, destination.as_str())
            .with_data_set();
        self.send(pc, &rq, Some(&encode_identifier(query, &ts)?)).await?;
        let mut cancelled = false;
        loop {
            let msg = tokio::select! {
                msg = self.receive() => msg?,
                _ = wait_true(&mut cancel), if !cancelled && cancel.is_some() => {
                    self.cancel(pc, id).await?;
                    cancelled = true;
                    continue;
                }
            };
            if msg.command.command_field() != Some(field::C_MOVE_RSP) {
                return Err(DimseError::Protocol(format!(
                    "expected C-MOVE-RSP, got command 0x{:04X}",
                    msg.command.command_field().unwrap_or(0)
                )));
            }
            let status =
                msg.command.status().ok_or_else(|| DimseError::Protocol("C-MOVE-RSP without status".into()))?;
            let counts = SubOperations {
                remaining: msg.command.u16(tags::REMAINING),
                completed: msg.command.u16(tags::COMPLETED).unwrap_or(0),
                failed: msg.command.u16(tags::FAILED).unwrap_or(0),
                warning: msg.command.u16(tags::WARNING).unwrap_or(0),
            };
            if is_pending(status) {
                on_progress(&counts);
                continue;
            }
            let failed_instances = msg.data.map(|d| failed_instance_list(&d, &ts)).unwrap_or_default();
            let outcome = RetrieveOutcome {
                status,
                counts,
                failed_instances,
                cancelled: status == 0xFE00,
                elapsed: started.elapsed(),
            };
            return match status {
                0x0000 | 0xB000..=0xBFFF | 0x0001 | 0xFE00 => Ok(outcome),
                _ => Err(DimseError::Status {
                    operation: "C-MOVE",
                    status,
                    meaning: status_meaning(status),
                    comment: comment(&msg.command),
                    move_destination: Some(destination.to_string()),
                    peer: self.peer.to_string(),
                }),
            };
        }
    }
}

pub(crate) async fn wait_true(signal: &mut Option<watch::Receiver<bool>>) {
    match signal {
        Some(rx) => {
            if rx.wait_for(|v| *v).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}
