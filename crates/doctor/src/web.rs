//! Checks of a DICOMweb archive (`protocol = "dicomweb"`), each with its fix:
//! reach (the server answers HTTP), query (QIDO-RS with the keys the planner sends: auth,
//! the root URL, a StudyDate range and ModalitiesInStudy), match-cap (does `offset` page,
//! or must `max_matches` be set), get (one instance by WADO-RS as stored).

use crate::finding::{Check, Finding, Report};
use crate::target::DoctorContext;
use dicom_dictionary_std::tags;
use priorfetch_config::ArchiveConfig;
use priorfetch_dicomweb::{ClientOptions, DicomWebClient, DicomWebError, Discard, Level, Query, Target};

pub async fn diagnose(archive: &ArchiveConfig, index: usize, ctx: &DoctorContext) -> Vec<Finding> {
    let key = format!("archives[{index}]");
    let mut report = Report::new(&archive.name);
    let options =
        ClientOptions { connect_timeout: ctx.connect_timeout, read_timeout: ctx.connect_timeout * 3, tls: None };
    let client = match DicomWebClient::for_archive(archive, &options) {
        Ok(c) => c,
        Err(e) => {
            report.fail(Check::Reach, e.to_string(), format!("set {key}.base_url to the DICOMweb root"));
            return report.findings;
        }
    };
    let broad = Query { level: Level::Studies, keys: vec![("StudyInstanceUID".into(), String::new())] };
    let first = match client.search(&broad, 2, 0).await {
        Ok(page) => {
            report.ok(Check::Reach, format!("{} answers HTTP", client.base_url()));
            page
        }
        Err(e) => {
            let (check, fix) = fix_of(&e, &key);
            report.fail(check, e.to_string(), fix);
            if check == Check::Reach {
                report.skip_after(Check::Reach, &[Check::Query, Check::MatchCap, Check::Get], "no HTTP answer");
            } else {
                report.skip_after(Check::Query, &[Check::MatchCap, Check::Get], "QIDO-RS refused");
            }
            return report.findings;
        }
    };
    // the keys a plan sends: PatientID, a StudyDate range, ModalitiesInStudy returned
    let planned = Query {
        level: Level::Studies,
        keys: vec![
            ("PatientID".into(), "PRIORFETCH-DOCTOR".into()),
            ("StudyDate".into(), "19000101-20991231".into()),
            ("ModalitiesInStudy".into(), String::new()),
        ],
    };
    match client.search(&planned, 10, 0).await {
        Ok(_) => report.ok(Check::Query, "QIDO-RS accepts PatientID, a StudyDate range and ModalitiesInStudy"),
        Err(e) => report.fail(Check::Query, e.to_string(), fix_of(&e, &key).1),
    }
    match_cap(&client, &broad, &first.matches, archive.max_matches, &key, &mut report).await;
    wado_probe(&client, &first.matches, &mut report).await;
    report.findings
}

/// What to change for an error, and the check it belongs to.
fn fix_of(e: &DicomWebError, key: &str) -> (Check, String) {
    match e {
        DicomWebError::Unreachable { .. } | DicomWebError::Timeout { .. } => {
            (Check::Reach, format!("check {key}.base_url (scheme, host, port) and the firewall"))
        }
        DicomWebError::Unauthorized { .. } => (Check::Query, format!("check {key}.auth (user and password, or token)")),
        DicomWebError::Status { status: 404, .. } => {
            (Check::Query, format!("set {key}.base_url to the DICOMweb root, e.g. http://host:8042/dicom-web"))
        }
        other => (Check::Query, other.hint().to_string()),
    }
}

/// Does `offset` page through results? An archive that repeats the first page, or clips
/// silently, needs `max_matches` so the planner splits date ranges instead.
async fn match_cap(
    client: &DicomWebClient,
    broad: &Query,
    first: &[dicom_object::InMemDicomObject],
    max_matches: Option<u32>,
    key: &str,
    report: &mut Report,
) {
    if first.len() < 2 {
        report.skip(Check::MatchCap, "fewer than 2 studies on the archive: paging cannot be measured");
        return;
    }
    let uid = |m: &dicom_object::InMemDicomObject| {
        m.element(tags::STUDY_INSTANCE_UID).ok().and_then(|e| e.to_str().ok()).map(|s| s.into_owned())
    };
    match client.search(broad, 2, 1).await {
        Ok(page) if page.matches.first().map(uid) == first.first().map(uid) => report.fail(
            Check::MatchCap,
            "the archive ignores `offset`: a search cannot be paged",
            format!("set {key}.max_matches to the archive's result limit so date ranges are split instead"),
        ),
        Ok(_) if max_matches.is_none() => report.warn(
            Check::MatchCap,
            "`offset` pages results; a silent result limit (Orthanc's LimitFindResults) cannot be seen from here",
            format!("if the archive limits results, set {key}.max_matches to that limit"),
        ),
        Ok(_) => report.ok(Check::MatchCap, "`offset` pages results, and max_matches is set"),
        Err(e) => report.warn(Check::MatchCap, format!("paging not measured: {e}"), e.hint()),
    }
}

/// One instance of a sample study by WADO-RS as stored (`transfer-syntax=*`), discarded.
async fn wado_probe(client: &DicomWebClient, sample: &[dicom_object::InMemDicomObject], report: &mut Report) {
    let Some(study) =
        sample.first().and_then(|m| m.element(tags::STUDY_INSTANCE_UID).ok()?.to_str().ok().map(|s| s.into_owned()))
    else {
        report.skip(Check::Get, "no study on the archive to fetch");
        return;
    };
    let query = Query {
        level: Level::Instances(study.clone()),
        keys: vec![("SeriesInstanceUID".into(), String::new()), ("SOPInstanceUID".into(), String::new())],
    };
    let text = |m: &dicom_object::InMemDicomObject, tag| m.element(tag).ok()?.to_str().ok().map(|s| s.into_owned());
    let instance = match client.search(&query, 1, 0).await {
        Ok(page) => page
            .matches
            .first()
            .and_then(|m| Some((text(m, tags::SERIES_INSTANCE_UID)?, text(m, tags::SOP_INSTANCE_UID)?))),
        Err(e) => {
            report.fail(Check::Get, format!("QIDO-RS of a study's instances: {e}"), e.hint());
            return;
        }
    };
    let Some((series, instance)) = instance else {
        report.skip(Check::Get, "the sample study lists no instance");
        return;
    };
    let mut sink = Discard;
    match client.retrieve(&Target::Instance { study, series, instance }, "*", &mut sink).await {
        Ok(got) if got.instances == 1 => {
            report.ok(Check::Get, format!("WADO-RS sent one instance as stored ({} bytes)", got.bytes))
        }
        Ok(got) => report.fail(
            Check::Get,
            format!("WADO-RS sent {} instances for one", got.instances),
            "check the archive's WADO-RS configuration",
        ),
        Err(e) => report.fail(Check::Get, format!("WADO-RS: {e}"), e.hint()),
    }
}
