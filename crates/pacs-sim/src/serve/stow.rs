//! STOW-RS (`POST /dicom-web/studies`): a `multipart/related` body of Part-10 instances,
//! each recorded as a C-STORE would be. Answers 200 (all stored), 202 with the
//! FailedSOPSequence (some refused), or 409 (none stored), with the fault
//! `Faults::stow_refuse_every` refusing every n-th instance offered, the first time.

use super::store::{Offered, record};
use super::*;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::StatusCode;
use priorfetch_dicomweb::multipart::{Event, Reader, boundary_of};
use serde_json::{Value, json};

/// Bodies larger than this are refused (413): instances are kept in memory.
const MAX_BODY: usize = 1 << 30;

/// What STOW-RS answers: the HTTP status and the DICOM JSON body.
pub(super) struct StowAnswer {
    pub status: StatusCode,
    pub body: Value,
}

pub(super) async fn stow(
    content_type: &str,
    mut body: hyper::body::Incoming,
    shared: &Arc<Shared>,
    faults: &Faults,
) -> StowAnswer {
    let refuse = |status: StatusCode, why: &str| StowAnswer { status, body: json!({ "error": why }) };
    let Some(boundary) = boundary_of(content_type) else {
        return refuse(StatusCode::UNSUPPORTED_MEDIA_TYPE, "expected multipart/related with a boundary");
    };
    let mut reader = Reader::new(&boundary);
    let (mut parts, mut current, mut total) = (Vec::<Vec<u8>>::new(), Vec::new(), 0usize);
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { return refuse(StatusCode::BAD_REQUEST, "the body was cut") };
        let Ok(data) = frame.into_data() else { continue };
        total += data.len();
        if total > MAX_BODY {
            return refuse(StatusCode::PAYLOAD_TOO_LARGE, "body too large");
        }
        let events = match reader.feed_bytes(data) {
            Ok(events) => events,
            Err(e) => return refuse(StatusCode::BAD_REQUEST, &e.to_string()),
        };
        for event in events {
            match event {
                Event::Begin(_) => current.clear(),
                Event::Data(bytes) => current.extend_from_slice(&bytes),
                Event::End => parts.push(std::mem::take(&mut current)),
                Event::Done => {}
            }
        }
    }
    if reader.finish().is_err() {
        return refuse(StatusCode::BAD_REQUEST, "the multipart body is incomplete");
    }
    let (mut stored, mut failed) = (Vec::new(), Vec::new());
    for part in parts {
        let Some((meta, dataset)) = split_part10(&part) else {
            failed.push(reference("", "", 0xC000));
            continue;
        };
        let (class, uid) = (
            meta.media_storage_sop_class_uid().trim_end_matches('\0').to_string(),
            meta.media_storage_sop_instance_uid().trim_end_matches('\0').to_string(),
        );
        if refused_this_time(shared, faults, &uid) {
            failed.push(reference(&class, &uid, 0xA700));
            continue;
        }
        let offered = Offered {
            calling_ae: "STOW-RS",
            sop_class_uid: &class,
            sop_instance_uid: &uid,
            transfer_syntax: meta.transfer_syntax().trim_end_matches('\0').to_string(),
            move_originator: (None, None),
        };
        match record(shared, offered, dataset.to_vec()).await {
            0x0000 => stored.push(reference(&class, &uid, 0)),
            status => failed.push(reference(&class, &uid, status)),
        }
    }
    let status = match (stored.is_empty(), failed.is_empty()) {
        (_, true) => StatusCode::OK,
        (false, false) => StatusCode::ACCEPTED,
        (true, false) => StatusCode::CONFLICT,
    };
    let mut body = serde_json::Map::new();
    if !stored.is_empty() {
        body.insert("00081199".into(), json!({ "vr": "SQ", "Value": stored }));
    }
    if !failed.is_empty() {
        body.insert("00081198".into(), json!({ "vr": "SQ", "Value": failed }));
    }
    StowAnswer { status, body: Value::Object(body) }
}

/// The meta group and the data set bytes of a Part-10 instance.
fn split_part10(part: &[u8]) -> Option<(dicom_object::meta::FileMetaTable, &[u8])> {
    let mut rest = part.get(128..)?;
    let meta = dicom_object::meta::FileMetaTable::from_reader(&mut rest).ok()?;
    Some((meta, rest))
}

/// `Faults::stow_refuse_every`: the n-th, 2n-th, … instance offered (counted across
/// requests, so batching does not matter) is refused if it is the first offer of its UID;
/// offered again, it is stored.
fn refused_this_time(shared: &Shared, faults: &Faults, uid: &str) -> bool {
    let Some(every) = faults.stow_refuse_every.filter(|n| *n > 0) else { return false };
    let offered = shared.stow_offered.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
    if !offered.is_multiple_of(every) {
        return false;
    }
    let first = shared.stow_refused.lock().map(|mut seen| seen.insert(uid.to_string())).unwrap_or(false);
    if first {
        Counters::add(&shared.counters.failed_subops, 1);
    }
    first
}

/// One item of the ReferencedSOPSequence or the FailedSOPSequence.
fn reference(class: &str, uid: &str, failure: u16) -> Value {
    let mut item = json!({
        "00081150": { "vr": "UI", "Value": [class] },
        "00081155": { "vr": "UI", "Value": [uid] },
    });
    if failure != 0 {
        item["00081197"] = json!({ "vr": "US", "Value": [failure] });
    }
    item
}

/// The answer as an HTTP response.
pub(super) fn response(answer: StowAnswer) -> hyper::Response<super::web::Body> {
    let text = answer.body.to_string();
    let body = http_body_util::Full::new(Bytes::from(text)).map_err(|never| match never {}).boxed();
    let mut r = hyper::Response::builder().status(answer.status).body(body).unwrap_or_default();
    r.headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/dicom+json"));
    r
}
