//! C-GET: storage sub-operations arrive on this association (we take the SCP role for
//! the storage SOP classes we propose) and are streamed to a [`StoreSink`]: each
//! instance goes to disk fragment by fragment, never whole in memory.

use crate::association::{Association, ContextRequest, EXPLICIT_VR_LE, IMPLICIT_VR_LE};
use crate::command::{Command, field, tags};
use crate::error::{DimseError, is_pending, status_meaning};
use crate::scu::{QueryModel, RetrieveOutcome, SubOperations};
use dicom_object::InMemDicomObject;
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Instant;
use tokio::sync::watch;

/// Storage SOP classes proposed when the caller does not know the study's
/// (SOPClassesInStudy): the common image classes of prior studies.
pub const COMMON_STORAGE_CLASSES: &[&str] = &[
    "1.2.840.10008.5.1.4.1.1.1",     // CR
    "1.2.840.10008.5.1.4.1.1.1.1",   // DX for presentation
    "1.2.840.10008.5.1.4.1.1.1.1.1", // DX for processing
    "1.2.840.10008.5.1.4.1.1.1.2",   // MG for presentation
    "1.2.840.10008.5.1.4.1.1.2",     // CT
    "1.2.840.10008.5.1.4.1.1.2.1",   // enhanced CT
    "1.2.840.10008.5.1.4.1.1.4",     // MR
    "1.2.840.10008.5.1.4.1.1.4.1",   // enhanced MR
    "1.2.840.10008.5.1.4.1.1.6.1",   // US
    "1.2.840.10008.5.1.4.1.1.3.1",   // US multi-frame
    "1.2.840.10008.5.1.4.1.1.7",     // secondary capture
    "1.2.840.10008.5.1.4.1.1.12.1",  // XA
    "1.2.840.10008.5.1.4.1.1.20",    // NM
    "1.2.840.10008.5.1.4.1.1.128",   // PET
    "1.2.840.10008.5.1.4.1.1.88.11", // basic text SR
    "1.2.840.10008.5.1.4.1.1.88.22", // enhanced SR
    "1.2.840.10008.5.1.4.1.1.104.1", // encapsulated PDF
    "1.2.840.10008.5.1.4.1.1.11.1",  // grayscale softcopy presentation state
];

/// Presentation contexts for C-GET: the GET model plus each storage class with the SCP role.
pub fn get_contexts(model: QueryModel, storage_classes: &[&str]) -> Vec<ContextRequest> {
    let mut contexts = vec![ContextRequest::new(model.get_uid())];
    for class in storage_classes.iter().take(120) {
        contexts.push(ContextRequest {
            abstract_syntax: class.to_string(),
            transfer_syntaxes: vec![EXPLICIT_VR_LE.to_string(), IMPLICIT_VR_LE.to_string()],
            scp_role: true,
        });
    }
    contexts
}

/// C-FIND (to list a study's instances) plus C-GET of the common storage classes on one
/// association: what a retrieve by C-GET asks for.
pub fn find_and_get_contexts(model: QueryModel) -> Vec<ContextRequest> {
    let mut contexts = vec![ContextRequest::new(model.find_uid())];
    contexts.extend(get_contexts(model, COMMON_STORAGE_CLASSES));
    contexts
}

/// A whole study by C-GET (Study Root) into `dir` on one association, released after:
/// what the benchmarks time.
pub async fn get_study_into(
    peer: &crate::peer::Peer,
    options: &crate::association::ScuOptions,
    study_uid: &str,
    dir: &Path,
) -> Result<RetrieveOutcome, DimseError> {
    let contexts = get_contexts(QueryModel::StudyRoot, COMMON_STORAGE_CLASSES);
    let mut assoc = Association::connect(peer, options, &contexts).await?;
    let mut sink = DirSink::new(dir).map_err(|e| DimseError::Io(format!("{}: {e}", dir.display())))?;
    let tag = dicom_core::Tag(0x0020, 0x000D);
    let query = crate::scu::identifier("STUDY", &[(tag, dicom_core::VR::UI, study_uid)]);
    let outcome = assoc.retrieve_get(QueryModel::StudyRoot, &query, &mut sink, |_| {}, None).await;
    assoc.release().await;
    outcome
}

/// Where received instances go.
pub trait StoreSink {
    /// Awaited before each instance is taken: a sink with no room left pauses here, and
    /// the archive's association then backs up in TCP (backpressure by awaiting).
    fn ready(&mut self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(std::future::ready(()))
    }
    /// A new instance starts; returns a writer for its data set (in `transfer_syntax`).
    fn begin(
        &mut self,
        sop_class: &str,
        sop_instance: &str,
        transfer_syntax: &str,
    ) -> std::io::Result<Box<dyn Write + Send>>;
    /// The instance's data set was fully written (or `ok` is false: discard it).
    fn finish(&mut self, sop_instance: &str, ok: bool) -> std::io::Result<()>;
}

/// Writes each instance as a Part-10 file `<SOPInstanceUID>.dcm` in a folder, under a
/// temporary name until complete, so a reader never sees half a file.
pub struct DirSink {
    dir: PathBuf,
    pending: Option<(PathBuf, PathBuf)>,
    pub stored: Vec<PathBuf>,
}

impl DirSink {
    pub fn new(dir: &Path) -> std::io::Result<DirSink> {
        std::fs::create_dir_all(dir)?;
        Ok(DirSink { dir: dir.to_path_buf(), pending: None, stored: Vec::new() })
    }
}

pub(crate) fn safe_file_name(uid: &str) -> String {
    uid.chars().filter(|c| c.is_ascii_digit() || *c == '.').take(64).collect()
}

impl StoreSink for DirSink {
    fn begin(
        &mut self,
        sop_class: &str,
        sop_instance: &str,
        transfer_syntax: &str,
    ) -> std::io::Result<Box<dyn Write + Send>> {
        let name = safe_file_name(sop_instance);
        if name.is_empty() {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "SOP instance UID is empty or not a UID"));
        }
        let temp = self.dir.join(format!(".{name}.part"));
        let done = self.dir.join(format!("{name}.dcm"));
        let mut file = std::io::BufWriter::with_capacity(256 * 1024, std::fs::File::create(&temp)?);
        let meta = dicom_object::FileMetaTableBuilder::new()
            .media_storage_sop_class_uid(sop_class)
            .media_storage_sop_instance_uid(sop_instance)
            .transfer_syntax(transfer_syntax)
            .build()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
        file.write_all(&[0u8; 128])?;
        file.write_all(b"DICM")?;
        meta.write(&mut file).map_err(|e| std::io::Error::other(e.to_string()))?;
        self.pending = Some((temp, done));
        Ok(Box::new(file))
    }

    fn finish(&mut self, _sop_instance: &str, ok: bool) -> std::io::Result<()> {
        if let Some((temp, done)) = self.pending.take() {
            if ok {
                std::fs::rename(&temp, &done)?;
                self.stored.push(done);
            } else {
                let _ = std::fs::remove_file(&temp);
            }
        }
        Ok(())
    }
}

impl Association {
    /// C-GET of what the identifier selects; instances are streamed into `sink`.
    pub async fn retrieve_get(
        &mut self,
        model: QueryModel,
        query: &InMemDicomObject,
        sink: &mut (dyn StoreSink + Send),
        mut on_progress: impl FnMut(&SubOperations),
        mut cancel: Option<watch::Receiver<bool>>,
    ) -> Result<RetrieveOutcome, DimseError> {
        let started = Instant::now();
        let sop = model.get_uid();
        let (pc, ts) = self.context_for(sop).ok_or_else(|| DimseError::NoContext {
            peer: self.peer.to_string(),
            what: "C-GET in this information model".into(),
        })?;
        let contexts = self.accepted_contexts();
        let id = self.next_message_id();
        let mut rq = Command::new(field::C_GET_RQ);
        rq.put_u16(tags::MESSAGE_ID, id)
            .put_uid(tags::AFFECTED_SOP_CLASS_UID, sop)
            .put_u16(tags::PRIORITY, 0)
            .with_data_set();
        let mut identifier = Vec::new();
        crate::scu::encode_identifier_into(query, &ts, &mut identifier)?;
        self.send(pc, &rq, Some(&identifier)).await?;
        let mut cancelled = false;
        loop {
            let (context_id, command) = tokio::select! {
                c = self.receive_command() => c?,
                _ = crate::scu::wait_true(&mut cancel), if !cancelled && cancel.is_some() => {
                    crate::scu::send_cancel(self, pc, id).await?;
                    cancelled = true;
                    continue;
                }
            };
            match command.command_field() {
                Some(field::C_STORE_RQ) => {
                    let class = command.string(tags::AFFECTED_SOP_CLASS_UID).unwrap_or_default();
                    let instance = command.string(tags::AFFECTED_SOP_INSTANCE_UID).unwrap_or_default();
                    let message_id = command.u16(tags::MESSAGE_ID).unwrap_or(0);
                    let ts = contexts.iter().find(|(cid, _, _)| *cid == context_id).map(|(_, _, t)| t.clone());
                    if ts.is_some() && command.has_data_set() {
                        sink.ready().await;
                    }
                    let status = match (ts, command.has_data_set()) {
                        (Some(ts), true) => match sink.begin(&class, &instance, &ts) {
                            Ok(mut writer) => {
                                let written = self.receive_data(|chunk| writer.write_all(chunk)).await;
                                let flushed = written.is_ok() && writer.flush().is_ok();
                                drop(writer);
                                let _ = sink.finish(&instance, flushed);
                                written?;
                                if flushed { 0x0000 } else { 0xA700 }
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "cannot store a C-GET sub-operation");
                                self.receive_data(|_| Ok(())).await?;
                                0xA700
                            }
                        },
                        (None, true) => {
                            self.receive_data(|_| Ok(())).await?;
                            0x0122
                        }
                        (_, false) => 0xC000,
                    };
                    let mut rsp = Command::new(field::C_STORE_RSP);
                    rsp.put_u16(tags::MESSAGE_ID_BEING_RESPONDED_TO, message_id)
                        .put_uid(tags::AFFECTED_SOP_CLASS_UID, &class)
                        .put_uid(tags::AFFECTED_SOP_INSTANCE_UID, &instance)
                        .put_u16(tags::STATUS, status);
                    self.send(context_id, &rsp, None).await?;
                }
                Some(field::C_GET_RSP) => {
                    let status =
                        command.status().ok_or_else(|| DimseError::Protocol("C-GET-RSP without status".into()))?;
                    let counts = SubOperations {
                        remaining: command.u16(tags::REMAINING),
                        completed: command.u16(tags::COMPLETED).unwrap_or(0),
                        failed: command.u16(tags::FAILED).unwrap_or(0),
                        warning: command.u16(tags::WARNING).unwrap_or(0),
                    };
                    let data = if command.has_data_set() {
                        let mut bytes = Vec::new();
                        self.receive_data(|c| {
                            bytes.extend_from_slice(c);
                            Ok(())
                        })
                        .await?;
                        Some(bytes)
                    } else {
                        None
                    };
                    if is_pending(status) {
                        on_progress(&counts);
                        continue;
                    }
                    let failed_instances = data.map(|d| crate::scu::failed_instance_list(&d, &ts)).unwrap_or_default();
                    let outcome = RetrieveOutcome {
                        status,
                        counts,
                        failed_instances,
                        cancelled: status == 0xFE00,
                        elapsed: started.elapsed(),
                    };
                    return match status {
                        0x0000 | 0x0001 | 0xB000..=0xBFFF | 0xFE00 => Ok(outcome),
                        _ => Err(DimseError::Status {
                            operation: "C-GET",
                            status,
                            meaning: status_meaning(status),
                            comment: command.string(tags::ERROR_COMMENT).map(|c| format!(": {c}")).unwrap_or_default(),
                            move_destination: None,
                            peer: self.peer.to_string(),
                        }),
                    };
                }
                other => {
                    return Err(DimseError::Protocol(format!(
                        "unexpected command 0x{:04X} during C-GET",
                        other.unwrap_or(0)
                    )));
                }
            }
        }
    }
}
