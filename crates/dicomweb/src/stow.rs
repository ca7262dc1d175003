//! STOW-RS: Part-10 files POSTed to `/studies` as one `multipart/related` body per batch.
//! 200: all stored. 202: some failed, named in the answer's FailedSOPSequence (those are
//! retried alone). 409: none stored. An answer that names nothing counts every file of the
//! batch as failed, so nothing is taken as stored without the archive saying so.

use crate::client::{DicomWebClient, DicomWebError, redacted};
use dicom_core::Tag;
use dicom_object::InMemDicomObject;
use std::collections::HashSet;
use std::path::PathBuf;

const FAILED_SOP_SEQUENCE: Tag = Tag(0x0008, 0x1198);
const REFERENCED_SOP_INSTANCE_UID: Tag = Tag(0x0008, 0x1155);

/// One file to send, with the SOP Instance UID it holds.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub path: PathBuf,
    pub sop_instance_uid: String,
}

/// What the archive said about a batch.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Stored {
    pub stored: Vec<String>,
    pub failed: Vec<String>,
    /// The HTTP status, for the log.
    pub status: u16,
}

impl DicomWebClient {
    /// POSTs the files as one STOW-RS request.
    pub async fn store(&self, files: &[Outgoing]) -> Result<Stored, DicomWebError> {
        let url = format!("{}/studies", self.base);
        let boundary = format!("priorfetch-{:016x}", std::process::id() as u64 ^ files.len() as u64 ^ 0x5157_5354);
        let mut body = Vec::new();
        for f in files {
            let bytes = std::fs::read(&f.path).map_err(|e| DicomWebError::Io(format!("{}: {e}", f.path.display())))?;
            body.extend_from_slice(format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").as_bytes());
            body.extend_from_slice(&bytes);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        let request = self
            .post(&url)
            .header(
                reqwest::header::CONTENT_TYPE,
                format!("multipart/related; type=\"application/dicom\"; boundary={boundary}"),
            )
            .header(reqwest::header::ACCEPT, "application/dicom+json")
            .body(body);
        let response = match self.send(&url, request).await {
            Ok(r) => r,
            Err(DicomWebError::Status { status: 409, body, .. }) => {
                return Ok(judge(files, 409, body.as_bytes()));
            }
            Err(e) => return Err(e),
        };
        let status = response.status().as_u16();
        let answer = response.bytes().await.map_err(|e| crate::client::transport(&redacted(&url), e))?;
        Ok(judge(files, status, &answer))
    }
}

/// Sorts the batch into stored and failed by the status and the FailedSOPSequence.
fn judge(files: &[Outgoing], status: u16, answer: &[u8]) -> Stored {
    let all = || files.iter().map(|f| f.sop_instance_uid.clone()).collect::<Vec<_>>();
    if status == 200 {
        return Stored { stored: all(), failed: Vec::new(), status };
    }
    let named: Option<HashSet<String>> = dicom_json::from_slice::<InMemDicomObject>(answer).ok().map(|obj| {
        obj.element(FAILED_SOP_SEQUENCE)
            .ok()
            .and_then(|e| e.items().map(|items| items.to_vec()))
            .unwrap_or_default()
            .iter()
            .filter_map(|item| {
                item.element(REFERENCED_SOP_INSTANCE_UID)
                    .ok()?
                    .to_str()
                    .ok()
                    .map(|s| s.trim_end_matches('\0').to_string())
            })
            .collect()
    });
    match named {
        Some(failed) if status == 202 && !failed.is_empty() => {
            let (failed, stored) = files.iter().map(|f| f.sop_instance_uid.clone()).partition(|u| failed.contains(u));
            Stored { stored, failed, status }
        }
        _ => Stored { stored: Vec::new(), failed: all(), status },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(uids: &[&str]) -> Vec<Outgoing> {
        uids.iter().map(|u| Outgoing { path: PathBuf::new(), sop_instance_uid: u.to_string() }).collect()
    }

    #[test]
    fn a_202_names_the_failures_and_the_rest_is_stored() {
        let answer = br#"{"00081198":{"vr":"SQ","Value":[{"00081155":{"vr":"UI","Value":["1.2.2"]},"00081197":{"vr":"US","Value":[272]}}]}}"#;
        let got = judge(&files(&["1.2.1", "1.2.2", "1.2.3"]), 202, answer);
        assert_eq!((got.stored, got.failed), (vec!["1.2.1".to_string(), "1.2.3".into()], vec!["1.2.2".to_string()]));
    }

    #[test]
    fn an_answer_that_names_nothing_stores_nothing() {
        for (status, answer) in [(202, &b""[..]), (409, b"conflict"), (202, b"{}")] {
            let got = judge(&files(&["1.2.1", "1.2.2"]), status, answer);
            assert!(got.stored.is_empty(), "{status}");
            assert_eq!(got.failed.len(), 2);
        }
        assert_eq!(judge(&files(&["1.2.1"]), 200, b"").stored, ["1.2.1"]);
    }
}
