//! QIDO-RS searches (`/studies`, `/studies/{uid}/series`), parsed from DICOM JSON, with
//! paging and every sign of truncation an archive gives: a `Warning: 299` header, 413,
//! an archive that ignores `offset`, or as many results as its known match cap (Orthanc
//! with `LimitFindResults` clips silently and applies `offset` inside the clipped set).

use crate::client::{DicomWebClient, DicomWebError};
use dicom_object::InMemDicomObject;

/// What to search.
#[derive(Debug, Clone)]
pub enum Level {
    Studies,
    /// The series of one study.
    Series(String),
    /// The instances of one study.
    Instances(String),
}

#[derive(Debug, Clone)]
pub struct Query {
    pub level: Level,
    /// Matching keys by keyword (`PatientID`, `StudyDate` with `from-to` ranges,
    /// `ModalitiesInStudy`); an empty value asks for the attribute back.
    pub keys: Vec<(String, String)>,
}

/// One page as the archive answered it.
#[derive(Debug)]
pub struct Page {
    pub matches: Vec<InMemDicomObject>,
    /// The archive said there is more (`Warning: 299`).
    pub warned: bool,
}

/// Every match, and whether the archive may hold more than it gave.
#[derive(Debug)]
pub struct Found {
    pub matches: Vec<InMemDicomObject>,
    /// Why the result may be incomplete; None when it is complete.
    pub truncated: Option<String>,
    /// The URLs sent (PHI in query strings: for the plan's explanation, not for logs).
    pub urls: Vec<String>,
}

/// Bound on pages per search, so a misbehaving archive cannot loop us.
const MAX_PAGES: usize = 1000;

impl DicomWebClient {
    /// The URL of one page.
    pub fn qido_url(&self, query: &Query, limit: usize, offset: usize) -> String {
        let path = match &query.level {
            Level::Studies => "/studies".to_string(),
            Level::Series(study) => format!("/studies/{}/series", encode(study)),
            Level::Instances(study) => format!("/studies/{}/instances", encode(study)),
        };
        let mut params: Vec<String> = Vec::new();
        for (key, value) in &query.keys {
            if value.is_empty() {
                params.push(format!("includefield={}", encode(key)));
            } else {
                params.push(format!("{}={}", encode(key), encode(value)));
            }
        }
        params.push(format!("limit={limit}"));
        if offset > 0 {
            params.push(format!("offset={offset}"));
        }
        format!("{}{}?{}", self.base, path, params.join("&"))
    }

    /// One page.
    pub async fn search(&self, query: &Query, limit: usize, offset: usize) -> Result<Page, DicomWebError> {
        let url = self.qido_url(query, limit, offset);
        let request = self.get(&url).header(reqwest::header::ACCEPT, "application/dicom+json");
        let response = match self.send(&url, request).await {
            Ok(r) => r,
            // "too many results": the archive refuses rather than clips
            Err(DicomWebError::Status { status: 413, .. }) => return Ok(Page { matches: Vec::new(), warned: true }),
            Err(e) => return Err(e),
        };
        let warned = response
            .headers()
            .get_all(reqwest::header::WARNING)
            .iter()
            .any(|v| v.to_str().is_ok_and(|w| w.trim_start().starts_with("299")));
        if response.status().as_u16() == 204 {
            return Ok(Page { matches: Vec::new(), warned });
        }
        let body = response.bytes().await.map_err(|e| crate::client::transport(&url, e))?;
        let matches = parse_matches(&body)
            .map_err(|reason| DicomWebError::Malformed { url: crate::client::redacted(&url), reason })?;
        Ok(Page { matches, warned })
    }

    /// Every page, following `offset` while pages are full. `cap` is the archive's known
    /// match cap (`max_matches`): reaching it counts as truncation.
    pub async fn search_all(&self, query: &Query, page: usize, cap: Option<usize>) -> Result<Found, DicomWebError> {
        let page = page.max(1);
        let mut found = Found { matches: Vec::new(), truncated: None, urls: Vec::new() };
        let mut first_of_previous: Option<Vec<u8>> = None;
        for n in 0..MAX_PAGES {
            let offset = n * page;
            found.urls.push(self.qido_url(query, page, offset));
            let got = self.search(query, page, offset).await?;
            let first = got.matches.first().map(identity);
            if n > 0 && first.is_some() && first == first_of_previous {
                found.truncated = Some("the archive ignores `offset`: later pages repeat the first".into());
                break;
            }
            first_of_previous = first;
            let full = got.matches.len() >= page;
            let warned = got.warned;
            found.matches.extend(got.matches);
            if warned && !full {
                found.truncated = Some("the archive answered `Warning: 299` (more results than it returns)".into());
                break;
            }
            if !full {
                break;
            }
            if n + 1 == MAX_PAGES {
                found.truncated = Some(format!("more than {MAX_PAGES} pages"));
            }
        }
        if found.truncated.is_none()
            && let Some(cap) = cap.filter(|c| found.matches.len() >= *c)
        {
            found.truncated = Some(format!("{} results reach the archive's match cap ({cap})", found.matches.len()));
        }
        Ok(found)
    }
}

/// A QIDO body: a JSON array of DICOM JSON objects.
pub fn parse_matches(body: &[u8]) -> Result<Vec<InMemDicomObject>, String> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(Vec::new());
    }
    let items: Vec<serde_json::Value> = serde_json::from_slice(body).map_err(|e| format!("not a JSON array: {e}"))?;
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| dicom_json::from_value(item).map_err(|e| format!("result {i} is not DICOM JSON: {e}")))
        .collect()
}

/// What tells two matches apart (their UIDs), for the repeated-page check.
fn identity(obj: &InMemDicomObject) -> Vec<u8> {
    use dicom_dictionary_std::tags;
    let mut id = Vec::new();
    for tag in [tags::STUDY_INSTANCE_UID, tags::SERIES_INSTANCE_UID, tags::SOP_INSTANCE_UID] {
        if let Ok(e) = obj.element(tag) {
            id.extend_from_slice(e.to_str().map(|s| s.into_owned()).unwrap_or_default().as_bytes());
        }
        id.push(b'|');
    }
    id
}

/// Percent-encoding of a query value or path segment (unreserved characters kept).
fn encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, UNRESERVED_KEPT).to_string()
}

/// RFC 3986: everything but the unreserved characters is percent-encoded.
const UNRESERVED_KEPT: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn dicom_json_results_parse() {
        let body = br#"[{"0020000D":{"vr":"UI","Value":["1.2.3"]},"00100020":{"vr":"LO","Value":["P1"]}}]"#;
        let found = parse_matches(body).unwrap();
        assert_eq!(found.len(), 1);
        let uid = found[0].element(dicom_dictionary_std::tags::STUDY_INSTANCE_UID).unwrap().to_str().unwrap();
        assert_eq!(uid, "1.2.3");
        assert!(parse_matches(b"").unwrap().is_empty());
        assert!(parse_matches(b"{}").is_err());
        assert!(parse_matches(b"[1]").is_err());
        assert_eq!(encode("20200101-20201231"), "20200101-20201231");
        assert_eq!(encode("MRN 1/ä,x"), "MRN%201%2F%C3%A4%2Cx");
    }

    proptest! {
        #[test]
        fn any_body_never_panics(body in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = parse_matches(&body);
        }

        #[test]
        fn json_shaped_bodies_never_panic(tag in "[0-9A-F]{8}", vr in "[A-Z]{2}", value in ".{0,40}") {
            let body = format!(r#"[{{"{tag}":{{"vr":"{vr}","Value":["{}"]}}}}]"#, value.replace(['\\', '"'], ""));
            let _ = parse_matches(body.as_bytes());
        }
    }
}
