//! One received data set: its head is checked before anything touches the disk (SOP
//! Class and Instance UIDs present, valid, and equal to the command's), then it streams
//! to a temporary file that is published as `<SOPInstanceUID>.dcm` without ever
//! replacing another file. A refused or broken data set leaves no file behind.
//!
//! The same SOP Instance UID received again: byte-identical content is a success (a
//! re-sent sub-operation); different content is refused with 0x0111 and the first file
//! is kept, because silently keeping either would lose or hide data a human must look at.

use super::ServerAssociation;
use crate::dataset_guard::{Leading, leading_uids};
use crate::error::DimseError;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// The head we wait for before deciding: the SOP UIDs come right at the start of any
/// real data set (group 0008 has only short elements before them).
const HEAD_LIMIT: usize = 64 * 1024;

/// Failure statuses of a C-STORE we refuse (PS3.4 B.2.3, PS3.7 C).
pub const CANNOT_UNDERSTAND: u16 = 0xC000;
pub const DOES_NOT_MATCH: u16 = 0xA900;
pub const OUT_OF_RESOURCES: u16 = 0xA700;
pub const DUPLICATE: u16 = 0x0111;

/// How receiving one data set ended (the network failing is the `Err` of [`receive`]).
#[derive(Debug)]
pub enum Received {
    /// Published; `size` is the data set's byte count. `again`: an identical copy existed.
    Stored { path: PathBuf, size: u64, again: bool },
    /// Not stored: a failure status and an error comment for the sender.
    Refused { status: u16, comment: String },
}

/// What the data set is, as the command announced it.
pub struct Expected<'a> {
    pub sop_class: &'a str,
    pub sop_instance: &'a str,
    pub transfer_syntax: &'a str,
}

enum Sink {
    Head(Vec<u8>),
    Writing(BufWriter<File>),
    Refused(u16, String),
}

/// Receives the data set that follows a C-STORE-RQ into `dir`; `temp` is this transfer's
/// unique temporary name.
pub async fn receive(
    assoc: &mut ServerAssociation,
    dir: &Path,
    temp: &Path,
    expected: &Expected<'_>,
) -> Result<Received, DimseError> {
    let mut sink = Sink::Head(Vec::new());
    let size = assoc
        .receive_data(|chunk| {
            sink = match std::mem::replace(&mut sink, Sink::Head(Vec::new())) {
                Sink::Head(mut head) => {
                    head.extend_from_slice(chunk);
                    decide(head, temp, expected, false)
                }
                Sink::Writing(mut w) => match w.write_all(chunk) {
                    Ok(()) => Sink::Writing(w),
                    Err(e) => Sink::Refused(OUT_OF_RESOURCES, format!("cannot write: {}", e.kind())),
                },
                refused => refused,
            };
            Ok(())
        })
        .await;
    let size = match size {
        Ok(size) => size,
        Err(e) => {
            drop(sink);
            let _ = std::fs::remove_file(temp);
            return Err(e);
        }
    };
    if let Sink::Head(head) = sink {
        sink = decide(head, temp, expected, true);
    }
    let outcome = match sink {
        Sink::Writing(mut w) => match w.flush() {
            Ok(()) => {
                drop(w);
                publish(temp, &dir.join(format!("{}.dcm", expected.sop_instance)), size)
            }
            Err(e) => Received::Refused { status: OUT_OF_RESOURCES, comment: format!("cannot write: {}", e.kind()) },
        },
        Sink::Refused(status, comment) => Received::Refused { status, comment },
        Sink::Head(_) => Received::Refused { status: CANNOT_UNDERSTAND, comment: "data set not read".into() },
    };
    if matches!(outcome, Received::Refused { .. }) {
        let _ = std::fs::remove_file(temp);
    }
    Ok(outcome)
}

/// With enough of the head: refuse, keep waiting, or open the file and write the head.
fn decide(head: Vec<u8>, temp: &Path, expected: &Expected<'_>, complete: bool) -> Sink {
    let refuse = |status, comment: &str| Sink::Refused(status, comment.to_string());
    match leading_uids(&head, expected.transfer_syntax, complete) {
        Ok(Leading::NeedMore) if head.len() < HEAD_LIMIT => Sink::Head(head),
        Ok(Leading::NeedMore) => refuse(CANNOT_UNDERSTAND, "no SOP Instance UID in the first 64 KiB"),
        Err(_) if head.is_empty() => refuse(CANNOT_UNDERSTAND, "empty data set"),
        Err(_) => refuse(CANNOT_UNDERSTAND, "data set head unreadable or SOP UIDs invalid"),
        Ok(Leading::Found { sop_class, sop_instance }) => {
            if sop_class != expected.sop_class {
                return refuse(DOES_NOT_MATCH, "SOP Class UID differs from the command's");
            }
            if sop_instance != expected.sop_instance {
                return refuse(DOES_NOT_MATCH, "SOP Instance UID differs from the command's");
            }
            let opened =
                super::store::open_part10(temp, expected.sop_class, expected.sop_instance, expected.transfer_syntax);
            match opened.and_then(|mut w| w.write_all(&head).map(|_| w)) {
                Ok(w) => Sink::Writing(w),
                Err(e) => Sink::Refused(OUT_OF_RESOURCES, format!("cannot write: {}", e.kind())),
            }
        }
    }
}

/// Publishes `temp` as `done` without replacing anything: a hard link fails when `done`
/// exists (atomic), then the temporary name goes. Where hard links are not supported, a
/// rename after an existence check.
fn publish(temp: &Path, done: &Path, size: u64) -> Received {
    let linked = match std::fs::hard_link(temp, done) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(_) if done.exists() => Ok(false),
        Err(_) => std::fs::rename(temp, done).map(|_| true),
    };
    let outcome = match linked {
        Ok(true) => Received::Stored { path: done.to_path_buf(), size, again: false },
        Ok(false) => match same_content(temp, done) {
            Ok(true) => Received::Stored { path: done.to_path_buf(), size, again: true },
            Ok(false) => Received::Refused {
                status: DUPLICATE,
                comment: "another instance with this SOP Instance UID is stored".into(),
            },
            Err(e) => Received::Refused { status: OUT_OF_RESOURCES, comment: format!("cannot compare: {}", e.kind()) },
        },
        Err(e) => Received::Refused { status: OUT_OF_RESOURCES, comment: format!("cannot publish: {}", e.kind()) },
    };
    let _ = std::fs::remove_file(temp);
    outcome
}

fn same_content(a: &Path, b: &Path) -> std::io::Result<bool> {
    let (mut fa, mut fb) = (File::open(a)?, File::open(b)?);
    if fa.metadata()?.len() != fb.metadata()?.len() {
        return Ok(false);
    }
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let n = fa.read(&mut ba)?;
        if n == 0 {
            return Ok(true);
        }
        fb.read_exact(&mut bb[..n])?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publishing_never_replaces_a_different_file() {
        let dir = tempfile::tempdir().unwrap();
        let done = dir.path().join("1.2.3.dcm");
        let temp = dir.path().join(".a.part");
        std::fs::write(&temp, b"first").unwrap();
        assert!(matches!(publish(&temp, &done, 5), Received::Stored { again: false, .. }));
        std::fs::write(&temp, b"first").unwrap();
        assert!(matches!(publish(&temp, &done, 5), Received::Stored { again: true, .. }));
        std::fs::write(&temp, b"other").unwrap();
        assert!(matches!(publish(&temp, &done, 5), Received::Refused { status: DUPLICATE, .. }));
        assert_eq!(std::fs::read(&done).unwrap(), b"first");
        assert!(!temp.exists(), "the temporary file is always removed");
    }
}
