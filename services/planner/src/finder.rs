//! Who answers an archive's queries: a DIMSE pool (C-FIND) or a DICOMweb client
//! (QIDO-RS), behind one `find` so the plan's fan-out, range splitting and explanation
//! are the same for both.

use crate::pool::Pool;
use dicom_core::{Tag, VR};
use dicom_object::InMemDicomObject;
use priorfetch_dicomweb::{DicomWebClient, DicomWebError, Level, Query};
use priorfetch_dimse::{DimseError, identifier};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Keys of one query: tag, VR, keyword, value (empty: return key).
pub type Keys = Vec<(Tag, VR, &'static str, String)>;

pub enum Finder {
    Dimse(Arc<Pool>),
    Web(WebFinder),
}

pub struct WebFinder {
    pub client: DicomWebClient,
    /// The archive's concurrency cap (`max_associations`), as for DIMSE.
    permits: Semaphore,
    /// The archive's known match cap (`max_matches`): reaching it is truncation.
    cap: Option<usize>,
}

impl WebFinder {
    pub fn new(client: DicomWebClient, max_requests: u32, cap: Option<u32>) -> WebFinder {
        WebFinder { client, permits: Semaphore::new(max_requests.max(1) as usize), cap: cap.map(|c| c as usize) }
    }
}

/// Why a query failed, protocol aside.
#[derive(Debug)]
pub struct FindError {
    pub text: String,
    pub hint: String,
    /// A later re-plan may succeed.
    pub retryable: bool,
    /// The archive refused because the query matches too much (DIMSE 0xA7xx).
    pub refused_too_many: bool,
    /// What the failure says about the archive being there (`priorfetch_archive_up`):
    /// false when it could not be reached or refused us, true when it answered (an error
    /// status), None when it says nothing (slow answer, our own shutdown).
    pub up: Option<bool>,
}

impl From<DimseError> for FindError {
    fn from(e: DimseError) -> FindError {
        FindError {
            text: e.to_string(),
            hint: e.hint().to_string(),
            retryable: e.is_retryable() || matches!(e, DimseError::Rejected { .. }),
            refused_too_many: matches!(e, DimseError::Status { status: 0xA700..=0xA7FF, .. }),
            up: match e {
                DimseError::Connect { .. }
                | DimseError::Io(_)
                | DimseError::Rejected { .. }
                | DimseError::Aborted { .. }
                | DimseError::Released { .. }
                | DimseError::Tls { .. } => Some(false),
                DimseError::Timeout { .. } | DimseError::Other { .. } => None,
                _ => Some(true),
            },
        }
    }
}

impl From<DicomWebError> for FindError {
    fn from(e: DicomWebError) -> FindError {
        FindError {
            text: e.to_string(),
            hint: e.hint().to_string(),
            retryable: e.is_transient(),
            refused_too_many: false,
            up: match &e {
                DicomWebError::Unreachable { .. }
                | DicomWebError::Unauthorized { .. }
                | DicomWebError::Busy { .. }
                | DicomWebError::Truncated { .. }
                | DicomWebError::Tls { .. } => Some(false),
                DicomWebError::Status { status, .. } => Some(*status < 500),
                DicomWebError::Malformed { .. } => Some(true),
                DicomWebError::Timeout { .. } | DicomWebError::Io(_) => None,
            },
        }
    }
}

/// QIDO asks for at most this many results per page when the archive's cap is unknown.
const PAGE: usize = 200;

impl Finder {
    /// All matches of one query at `level` (STUDY or SERIES), and whether the archive may
    /// hold more than it returned (truncated).
    pub async fn find(
        &self,
        level: &'static str,
        keys: &Keys,
        timeout: Duration,
    ) -> Result<(Vec<InMemDicomObject>, bool), FindError> {
        match self {
            Finder::Dimse(pool) => {
                let refs: Vec<(Tag, VR, &str)> = keys.iter().map(|(t, vr, _, v)| (*t, *vr, v.as_str())).collect();
                let (matches, outcome) = pool.find(&identifier(level, &refs), timeout).await?;
                Ok((matches, outcome.truncated))
            }
            Finder::Web(web) => {
                let _permit = web.permits.acquire().await.map_err(|_| FindError {
                    text: "planner shutting down".into(),
                    hint: String::new(),
                    retryable: true,
                    refused_too_many: false,
                    up: None,
                })?;
                let query = qido_query(level, keys);
                let page = web.cap.unwrap_or(PAGE).min(PAGE);
                let search = web.client.search_all(&query, page, web.cap);
                let found = tokio::time::timeout(timeout, search).await.map_err(|_| FindError {
                    text: format!("{}: no complete answer within {timeout:?}", web.client.base_url()),
                    hint: "the archive is slow; raise planner.cfind_timeout or check the network".into(),
                    retryable: true,
                    refused_too_many: false,
                    up: None,
                })??;
                Ok((found.matches, found.truncated.is_some()))
            }
        }
    }

    /// How the explanation names a truncated answer.
    pub fn truncation(&self) -> &'static str {
        match self {
            Finder::Dimse(_) => "truncated (0xFE00)",
            Finder::Web(_) => "truncated (QIDO-RS: Warning 299, ignored offset or the match cap)",
        }
    }
}

/// The same keys as a QIDO-RS search: a SERIES query names its study in the path.
fn qido_query(level: &str, keys: &Keys) -> Query {
    let study = keys.iter().find(|(_, _, name, v)| *name == "StudyInstanceUID" && !v.is_empty());
    let (level, skip) = match (level, study) {
        ("SERIES", Some((_, _, _, uid))) => (Level::Series(uid.clone()), Some("StudyInstanceUID")),
        _ => (Level::Studies, None),
    };
    let keys = keys
        .iter()
        .filter(|(_, _, name, _)| Some(*name) != skip)
        // a DIMSE UID list (`a\b`) is a comma list in QIDO
        .map(|(_, _, name, value)| (name.to_string(), value.replace('\\', ",")))
        .collect();
    Query { level, keys }
}
