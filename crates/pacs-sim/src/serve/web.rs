//! DICOMweb over HTTP from the same data: QIDO-RS (`/studies`, `/studies/{uid}/instances`)
//! WADO-RS (`/studies/{uid}`, one instance) and STOW-RS (`stow.rs`), with faults: match caps (a silent clip,
//! a clip with `Warning: 299`, or 413), 429/503 with `Retry-After`, a body cut mid-part,
//! slow answers, and HTTP basic authentication.

use super::*;
use bytes::Bytes;
use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
use dicom_dictionary_std::StandardDataDictionary;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper::{Request, Response, StatusCode};
use std::sync::atomic::Ordering;
use tokio::net::TcpListener;

pub(super) type Body = BoxBody<Bytes, std::io::Error>;

const ROOT: &str = "/dicom-web";
const BOUNDARY: &str = "pacs-sim-boundary";

/// Serves DICOMweb on `listener` until `shutdown`.
pub(crate) async fn serve_web(listener: TcpListener, shared: Arc<Shared>, shutdown: CancellationToken) {
    loop {
        let (socket, _) = tokio::select! {
            accepted = listener.accept() => match accepted { Ok(a) => a, Err(_) => continue },
            _ = shutdown.cancelled() => return,
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(req, &shared).await) }
            });
            let io = hyper_util::rt::TokioIo::new(socket);
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
        });
    }
}

fn plain(status: StatusCode, text: &str) -> Response<Body> {
    let body = Full::new(Bytes::from(text.to_string())).map_err(|never| match never {}).boxed();
    Response::builder().status(status).body(body).unwrap_or_default()
}

async fn answer(req: Request<hyper::body::Incoming>, shared: &Arc<Shared>) -> Response<Body> {
    let faults = shared.faults();
    if let Some((user, password)) = &shared.config.web_user {
        let expected = format!("Basic {}", base64(&format!("{user}:{password}")));
        let given = req.headers().get(hyper::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        if given != Some(expected.as_str()) {
            return plain(StatusCode::UNAUTHORIZED, "authentication required");
        }
    }
    if let Some(busy) = faults.web_busy {
        let n = shared.web_requests.fetch_add(1, Ordering::SeqCst);
        if n < busy.times {
            let mut r = plain(StatusCode::from_u16(busy.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE), "busy");
            if let Ok(v) = hyper::header::HeaderValue::from_str(&busy.retry_after_secs.to_string()) {
                r.headers_mut().insert(hyper::header::RETRY_AFTER, v);
            }
            return r;
        }
    }
    delay(&faults).await;
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    if req.method() == hyper::Method::POST {
        let store_path = path.strip_prefix(ROOT).map(|p| p.trim_matches('/'));
        if !store_path.is_some_and(|p| p == "studies" || (p.starts_with("studies/") && !p[8..].contains('/'))) {
            return plain(StatusCode::METHOD_NOT_ALLOWED, "STOW-RS is POST /studies[/{uid}]");
        }
        let content_type =
            req.headers().get(hyper::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let answer = super::stow::stow(&content_type, req.into_body(), shared, &faults).await;
        return super::stow::response(answer);
    }
    let Some(rest) = path.strip_prefix(ROOT) else { return plain(StatusCode::NOT_FOUND, "not a DICOMweb path") };
    let parts: Vec<&str> = rest.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["studies"] => qido(shared, Level::Study, None, &query, &faults),
        ["studies", study, "instances"] => qido(shared, Level::Image, Some(study), &query, &faults),
        ["studies", study] => wado(shared, study, None, &faults),
        ["studies", study, "series", _, "instances", instance] => wado(shared, study, Some(instance), &faults),
        _ => plain(StatusCode::NOT_FOUND, "unknown DICOMweb resource"),
    }
}

/// The keys a QIDO-RS query string asks for, as C-FIND keys (return keys included).
fn keys_of_query(level: Level, study: Option<&str>, query: &str) -> (Vec<(Tag, VR, String)>, usize, usize) {
    let (mut limit, mut offset) = (usize::MAX, 0);
    let defaults: &[&str] = match level {
        Level::Image => &["SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"],
        _ => &[
            "StudyInstanceUID",
            "StudyDate",
            "PatientID",
            "AccessionNumber",
            "ModalitiesInStudy",
            "StudyDescription",
            "NumberOfStudyRelatedInstances",
        ],
    };
    let mut keys: Vec<(Tag, VR, String)> = Vec::new();
    let mut add = |name: &str, value: String| {
        if let Some(entry) = StandardDataDictionary.by_name(name) {
            let vr = match entry.vr() {
                VirtualVr::Exact(vr) => vr,
                _ => VR::LO,
            };
            keys.retain(|(t, _, _)| *t != entry.tag());
            keys.push((entry.tag(), vr, value));
        }
    };
    for name in defaults {
        add(name, String::new());
    }
    if let Some(study) = study {
        add("StudyInstanceUID", study.to_string());
    }
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = decode(value);
        match name {
            "limit" => limit = value.parse().unwrap_or(usize::MAX),
            "offset" => offset = value.parse().unwrap_or(0),
            "includefield" => add(&value, String::new()),
            "fuzzymatching" => {}
            // a QIDO list (`a,b`) is a C-FIND list (`a\b`)
            _ => add(name, value.replace(',', "\\")),
        }
    }
    (keys, limit, offset)
}

fn qido(shared: &Shared, level: Level, study: Option<&str>, query: &str, faults: &Faults) -> Response<Body> {
    Counters::add(&shared.counters.finds, 1);
    let (keys, limit, offset) = keys_of_query(level, study, query);
    let mut found: Vec<serde_json::Value> = Vec::new();
    {
        let Ok(index) = shared.index.read() else { return plain(StatusCode::INTERNAL_SERVER_ERROR, "index") };
        for_each_record(&index.studies, level, &shared.config.ae_title, |record| {
            if record.matches(&keys, shared.config.case_matching) {
                let obj = response_identifier(level, &keys, record, None);
                if let Ok(v) = dicom_json::to_value(&obj) {
                    found.push(v);
                }
            }
        });
    }
    let mut warning = false;
    if let Some(cap) = faults.match_cap.filter(|c| found.len() > c.limit) {
        match cap.behaviour {
            CapBehaviour::Refuse => return plain(StatusCode::PAYLOAD_TOO_LARGE, "too many results"),
            CapBehaviour::Truncate => found.truncate(cap.limit),
            CapBehaviour::Cancel => {
                found.truncate(cap.limit);
                warning = true;
            }
        }
    }
    let page: Vec<serde_json::Value> = found.into_iter().skip(offset).take(limit).collect();
    Counters::add(&shared.counters.find_matches, page.len() as u64);
    if page.is_empty() {
        return plain(StatusCode::NO_CONTENT, "");
    }
    let body = Full::new(Bytes::from(serde_json::Value::Array(page).to_string())).map_err(|never| match never {});
    let mut r = Response::new(body.boxed());
    r.headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/dicom+json"));
    if warning {
        r.headers_mut().insert(
            hyper::header::WARNING,
            hyper::header::HeaderValue::from_static(
                "299 pacs-sim \"There are additional results that can be requested\"",
            ),
        );
    }
    r
}

/// The Part-10 bytes of one instance (meta group, then the data set).
fn part10(shared: &Shared, study: &Study, series: &crate::index::Series, instance: &Instance) -> Option<Vec<u8>> {
    let (dataset, ts) = match &instance.source {
        Source::Synthetic => {
            let spec = shared.synthetic.as_ref()?;
            (spec.encode_instance(&study.attrs, &series.attrs, instance, true), EXPLICIT_VR_LE.to_string())
        }
        Source::File(f) => return std::fs::read(&f.path).ok(),
        Source::Received { dataset, transfer_syntax } => (dataset.to_vec(), transfer_syntax.clone()),
    };
    let meta = dicom_object::FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(instance.sop_class_uid.as_str())
        .media_storage_sop_instance_uid(instance.sop_instance_uid.as_str())
        .transfer_syntax(ts.as_str())
        .build()
        .ok()?;
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    meta.write(&mut out).ok()?;
    out.extend_from_slice(&dataset);
    Some(out)
}

fn wado(shared: &Shared, study_uid: &str, only: Option<&str>, faults: &Faults) -> Response<Body> {
    Counters::add(&shared.counters.gets, 1);
    let mut parts: Vec<Vec<u8>> = Vec::new();
    {
        let Ok(index) = shared.index.read() else { return plain(StatusCode::INTERNAL_SERVER_ERROR, "index") };
        let Some(study) = index.study(study_uid) else { return plain(StatusCode::NOT_FOUND, "no such study") };
        for series in &study.series {
            for instance in series.instances.iter().filter(|i| only.is_none_or(|u| i.sop_instance_uid == u)) {
                if let Some(bytes) = part10(shared, study, series, instance) {
                    parts.push(bytes);
                }
            }
        }
    }
    if parts.is_empty() {
        return plain(StatusCode::NOT_FOUND, "no such instance");
    }
    // the first whole-study body of each study is cut after N parts (once)
    let cut = match faults.web_cut_after_parts {
        Some(n) if only.is_none() => {
            shared.web_cut.lock().map(|mut done| done.insert(study_uid.to_string())).unwrap_or(false).then_some(n)
        }
        _ => None,
    };
    let mut frames: Vec<Result<Frame<Bytes>, std::io::Error>> = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        let mut chunk = format!("--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n").into_bytes();
        if cut == Some(i) {
            chunk.extend_from_slice(&p[..p.len() / 2]);
            frames.push(Ok(Frame::data(Bytes::from(chunk))));
            frames.push(Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "fault: body cut")));
            break;
        }
        chunk.extend_from_slice(p);
        chunk.extend_from_slice(b"\r\n");
        Counters::add(&shared.counters.bytes_sent, p.len() as u64);
        frames.push(Ok(Frame::data(Bytes::from(chunk))));
    }
    if cut.is_none_or(|n| n >= parts.len()) {
        frames.push(Ok(Frame::data(Bytes::from(format!("--{BOUNDARY}--\r\n")))));
    }
    // Each frame after a short pause, so what precedes a cut reaches the client before
    // the connection drops (as from a real server).
    let body = StreamBody::new(futures_util::StreamExt::then(futures_util::stream::iter(frames), |frame| async move {
        if frame.is_err() {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        frame
    }));
    let mut r = Response::new(BodyExt::boxed(body));
    let content_type = format!("multipart/related; type=\"application/dicom\"; boundary={BOUNDARY}");
    if let Ok(v) = hyper::header::HeaderValue::from_str(&content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// Percent-decoding of a query value (`+` is a space in a query string).
fn decode(text: &str) -> String {
    percent_encoding::percent_decode_str(&text.replace('+', " ")).decode_utf8_lossy().into_owned()
}

fn base64(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[cfg(test)]
mod tests {
    #[test]
    fn helpers() {
        assert_eq!(super::base64("pf:right"), "cGY6cmlnaHQ=");
        assert_eq!(super::base64("ab"), "YWI=");
        assert_eq!(super::decode("19000101-20991231%2C%20x+y"), "19000101-20991231, x y");
        assert_eq!(super::decode("%"), "%");
        assert_eq!(super::decode("%4"), "%4");
    }
}
