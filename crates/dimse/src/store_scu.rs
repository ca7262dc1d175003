//! C-STORE SCU: send Part-10 files (or data set bytes) on an association, ours (a C-MOVE
//! sub-operation association, a relay) or a peer's (C-GET sub-operations served by an SCP).
//!
//! A Part-10 file is not parsed beyond its File Meta group: the data set bytes go on the
//! wire as they are, unless the peer accepted the SOP class only in another native
//! transfer syntax, in which case the data set is transcoded (dicom-object reads and
//! rewrites it).

use crate::association::{Association, ContextRequest, EXPLICIT_VR_LE, IMPLICIT_VR_LE};
use crate::command::{Command, field, tags};
use crate::error::DimseError;
use crate::peer::AeTitle;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

pub const EXPLICIT_VR_BE: &str = "1.2.840.10008.1.2.2";

/// The uncompressed transfer syntaxes we can transcode between.
pub fn is_native(ts: &str) -> bool {
    matches!(ts, EXPLICIT_VR_LE | IMPLICIT_VR_LE | EXPLICIT_VR_BE)
}

/// A Part-10 file: its File Meta identification and where its data set lies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part10 {
    pub path: PathBuf,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub transfer_syntax: String,
    /// Byte offset of the data set (right after the File Meta group).
    pub dataset_offset: u64,
    /// Bytes of the data set.
    pub dataset_len: u64,
}

/// What a Part-10 header says, parsed from its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMeta {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub transfer_syntax: String,
    /// Offset of the data set from the start of the file.
    pub dataset_offset: usize,
}

impl FileMeta {
    /// Parses the preamble, `DICM` and the File Meta group (always Explicit VR LE) from
    /// the start of a file. Every length is checked: bad input is an error.
    pub fn parse(bytes: &[u8]) -> Result<FileMeta, DimseError> {
        let bad = |what: &str| DimseError::Protocol(format!("not a DICOM Part-10 file: {what}"));
        if bytes.len() < 132 || &bytes[128..132] != b"DICM" {
            return Err(bad("no DICM prefix after the 128-byte preamble"));
        }
        let mut pos = 132usize;
        let (mut class, mut instance, mut ts) = (None, None, None);
        while pos + 8 <= bytes.len() {
            let group = u16::from_le_bytes([bytes[pos], bytes[pos + 1]]);
            if group != 0x0002 {
                break;
            }
            let element = u16::from_le_bytes([bytes[pos + 2], bytes[pos + 3]]);
            let vr = [bytes[pos + 4], bytes[pos + 5]];
            let (length, header) = if matches!(&vr, b"OB" | b"OW" | b"OF" | b"SQ" | b"UT" | b"UN" | b"UC" | b"UR") {
                let b = bytes.get(pos + 8..pos + 12).ok_or_else(|| bad("meta element truncated"))?;
                (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize, 12)
            } else {
                (u16::from_le_bytes([bytes[pos + 6], bytes[pos + 7]]) as usize, 8)
            };
            let value = bytes
                .get(pos + header..(pos + header).saturating_add(length))
                .filter(|v| v.len() == length)
                .ok_or_else(|| bad("meta element longer than the file"))?;
            let text = || String::from_utf8_lossy(value).trim_end_matches(['\0', ' ']).trim().to_string();
            match element {
                0x0002 => class = Some(text()),
                0x0003 => instance = Some(text()),
                0x0010 => ts = Some(text()),
                _ => {}
            }
            pos += header + length;
        }
        Ok(FileMeta {
            sop_class_uid: class.filter(|s| !s.is_empty()).ok_or_else(|| bad("no (0002,0002) SOP class"))?,
            sop_instance_uid: instance.filter(|s| !s.is_empty()).ok_or_else(|| bad("no (0002,0003) SOP instance"))?,
            transfer_syntax: ts.filter(|s| !s.is_empty()).ok_or_else(|| bad("no (0002,0010) transfer syntax"))?,
            dataset_offset: pos,
        })
    }
}

impl Part10 {
    /// Reads the header of a Part-10 file (the first 64 KiB at most); the data set is left
    /// on disk.
    pub fn open(path: &Path) -> Result<Part10, DimseError> {
        let io = |e: std::io::Error| DimseError::Io(format!("reading {}: {e}", path.display()));
        let mut file = std::fs::File::open(path).map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
        let mut head = vec![0u8; size.min(64 * 1024) as usize];
        file.read_exact(&mut head).map_err(io)?;
        let meta = FileMeta::parse(&head).map_err(|e| match e {
            DimseError::Protocol(m) => DimseError::Protocol(format!("{}: {m}", path.display())),
            other => other,
        })?;
        Ok(Part10 {
            path: path.to_path_buf(),
            sop_class_uid: meta.sop_class_uid,
            sop_instance_uid: meta.sop_instance_uid,
            transfer_syntax: meta.transfer_syntax,
            dataset_offset: meta.dataset_offset as u64,
            dataset_len: size - meta.dataset_offset as u64,
        })
    }

    /// The data set bytes, as stored.
    pub fn read_dataset(&self) -> Result<Vec<u8>, DimseError> {
        let io = |e: std::io::Error| DimseError::Io(format!("reading {}: {e}", self.path.display()));
        let mut file = std::fs::File::open(&self.path).map_err(io)?;
        file.seek(SeekFrom::Start(self.dataset_offset)).map_err(io)?;
        let mut out = Vec::with_capacity(self.dataset_len as usize);
        file.read_to_end(&mut out).map_err(io)?;
        Ok(out)
    }
}

/// Presentation contexts to store instances of these (SOP class, transfer syntax) pairs:
/// one per SOP class, offering the instances' own syntaxes first, then Explicit and
/// Implicit VR LE (which we can transcode native data into).
pub fn storage_contexts(pairs: impl IntoIterator<Item = (String, String)>) -> Vec<ContextRequest> {
    let mut contexts: Vec<ContextRequest> = Vec::new();
    for (class, ts) in pairs {
        let context = match contexts.iter_mut().find(|c| c.abstract_syntax == class) {
            Some(c) => c,
            None => {
                contexts.push(ContextRequest {
                    abstract_syntax: class,
                    transfer_syntaxes: Vec::new(),
                    scp_role: false,
                });
                contexts.last_mut().expect("just pushed")
            }
        };
        if !context.transfer_syntaxes.contains(&ts) {
            // the file's own syntax first: no transcoding when the peer takes it
            let at = context.transfer_syntaxes.iter().take_while(|t| !is_fallback(t)).count();
            context.transfer_syntaxes.insert(at, ts);
        }
    }
    for c in &mut contexts {
        for ts in [EXPLICIT_VR_LE, IMPLICIT_VR_LE] {
            if !c.transfer_syntaxes.iter().any(|t| t == ts) {
                c.transfer_syntaxes.push(ts.to_string());
            }
        }
    }
    // PS3.8: at most 128 presentation contexts per association
    contexts.truncate(128);
    contexts
}

fn is_fallback(ts: &str) -> bool {
    ts == EXPLICIT_VR_LE || ts == IMPLICIT_VR_LE
}

/// Outcome class of a C-STORE response status (PS3.4 B.2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreStatusKind {
    Success,
    Warning,
    Failure,
}

/// A C-STORE response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreStatus {
    pub status: u16,
    pub kind: StoreStatusKind,
    /// (0000,0902) Error Comment, when the peer sent one.
    pub comment: Option<String>,
}

impl StoreStatus {
    pub fn from_status(status: u16, comment: Option<String>) -> StoreStatus {
        let kind = match status {
            0x0000 => StoreStatusKind::Success,
            0x0001 | 0x0107 | 0x0116 | 0xB000..=0xBFFF => StoreStatusKind::Warning,
            _ => StoreStatusKind::Failure,
        };
        StoreStatus { status, kind, comment }
    }

    pub fn is_success(&self) -> bool {
        self.kind == StoreStatusKind::Success
    }
}

/// A C-STORE-RQ sent and not yet answered (pipelining).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingStore {
    pub message_id: u16,
    pub sop_instance_uid: String,
}

/// Rewrites a native data set into another native transfer syntax.
pub fn transcode(dataset: &[u8], from: &str, to: &str) -> Result<Vec<u8>, DimseError> {
    let obj = crate::scu::decode_data_set(dataset, from)?;
    let mut out = Vec::with_capacity(dataset.len() + 1024);
    crate::scu::encode_identifier_into(&obj, to, &mut out)?;
    Ok(out)
}

impl<A: crate::link::Link> Association<A> {
    /// The accepted context to store `sop_class` data in `transfer_syntax`: the same
    /// syntax if accepted, else another native one when the data is native (the caller
    /// then transcodes). `Err` names the class and syntax.
    pub fn storage_context(&self, sop_class: &str, transfer_syntax: &str) -> Result<(u8, String), DimseError> {
        let accepted: Vec<(u8, String)> = self
            .accepted_contexts()
            .into_iter()
            .filter(|(_, class, _)| class == sop_class)
            .map(|(id, _, ts)| (id, ts))
            .collect();
        if let Some(exact) = accepted.iter().find(|(_, ts)| ts == transfer_syntax) {
            return Ok(exact.clone());
        }
        if is_native(transfer_syntax)
            && let Some(other) = accepted.iter().find(|(_, ts)| is_native(ts))
        {
            return Ok(other.clone());
        }
        let what = if accepted.is_empty() {
            format!("storage of SOP class {sop_class}")
        } else {
            format!(
                "storage of SOP class {sop_class} in transfer syntax {transfer_syntax} (accepted only {}; compressed data is not transcoded)",
                accepted.iter().map(|(_, ts)| ts.as_str()).collect::<Vec<_>>().join(", ")
            )
        };
        Err(DimseError::NoContext { peer: self.peer.to_string(), what })
    }

    /// Sends a C-STORE-RQ and its data set without waiting for the response; collect it
    /// with [`Association::receive_store_response`]. Transcodes when needed.
    pub async fn send_store(
        &mut self,
        sop_class: &str,
        sop_instance: &str,
        transfer_syntax: &str,
        dataset: &[u8],
        move_originator: Option<(&AeTitle, u16)>,
    ) -> Result<PendingStore, DimseError> {
        let (pc, ts) = self.storage_context(sop_class, transfer_syntax)?;
        let transcoded;
        let data = if ts == transfer_syntax {
            dataset
        } else {
            let (bytes, from, to) = (dataset.to_vec(), transfer_syntax.to_string(), ts.clone());
            transcoded = tokio::task::spawn_blocking(move || transcode(&bytes, &from, &to))
                .await
                .map_err(|_| DimseError::Encode("transcoding task failed".into()))??;
            &transcoded[..]
        };
        let message_id = self.next_message_id();
        let mut rq = Command::new(field::C_STORE_RQ);
        rq.put_u16(tags::MESSAGE_ID, message_id)
            .put_uid(tags::AFFECTED_SOP_CLASS_UID, sop_class)
            .put_uid(tags::AFFECTED_SOP_INSTANCE_UID, sop_instance)
            .put_u16(tags::PRIORITY, 0)
            .with_data_set();
        if let Some((ae, id)) = move_originator {
            rq.put_ae(tags::MOVE_ORIGINATOR_AE, ae.as_str()).put_u16(tags::MOVE_ORIGINATOR_MESSAGE_ID, id);
        }
        self.send(pc, &rq, Some(data)).await?;
        Ok(PendingStore { message_id, sop_instance_uid: sop_instance.to_string() })
    }

    /// The next C-STORE-RSP: (message ID it answers, status).
    pub async fn receive_store_response(&mut self) -> Result<(u16, StoreStatus), DimseError> {
        let msg = self.receive().await?;
        if msg.command.command_field() != Some(field::C_STORE_RSP) {
            return Err(DimseError::Protocol(format!(
                "expected C-STORE-RSP, got command 0x{:04X}",
                msg.command.command_field().unwrap_or(0)
            )));
        }
        let status = msg.command.status().ok_or_else(|| DimseError::Protocol("C-STORE-RSP without status".into()))?;
        let comment = msg.command.string(tags::ERROR_COMMENT).filter(|c| !c.is_empty());
        let id = msg.command.u16(tags::MESSAGE_ID_BEING_RESPONDED_TO).unwrap_or(0);
        Ok((id, StoreStatus::from_status(status, comment)))
    }

    /// C-STORE of one data set, waiting for the response.
    pub async fn store_bytes(
        &mut self,
        sop_class: &str,
        sop_instance: &str,
        transfer_syntax: &str,
        dataset: &[u8],
        move_originator: Option<(&AeTitle, u16)>,
    ) -> Result<StoreStatus, DimseError> {
        let pending = self.send_store(sop_class, sop_instance, transfer_syntax, dataset, move_originator).await?;
        let (id, status) = self.receive_store_response().await?;
        if id != pending.message_id {
            return Err(DimseError::Protocol(format!(
                "C-STORE-RSP answers message {id}, expected {}",
                pending.message_id
            )));
        }
        Ok(status)
    }

    /// C-STORE of a Part-10 file.
    pub async fn store_file(
        &mut self,
        file: &Part10,
        move_originator: Option<(&AeTitle, u16)>,
    ) -> Result<StoreStatus, DimseError> {
        let path = file.clone();
        let dataset = tokio::task::spawn_blocking(move || path.read_dataset())
            .await
            .map_err(|_| DimseError::Io("reading task failed".into()))??;
        self.store_bytes(&file.sop_class_uid, &file.sop_instance_uid, &file.transfer_syntax, &dataset, move_originator)
            .await
    }
}
