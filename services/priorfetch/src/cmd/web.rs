//! `find` and `retrieve` against a DICOMweb archive (a configured `protocol = "dicomweb"`
//! archive, or a URL): QIDO-RS and WADO-RS, printing what the DIMSE forms print.

use super::out::outln;
use crate::Failure;
use dicom_core::Tag;
use priorfetch_config::{Config, Protocol};
use priorfetch_dicomweb::{Auth, ClientOptions, DicomWebClient, DirSink, Level, Query, Target};
use std::process::ExitCode;
use std::time::Instant;

/// The DICOMweb client ARCHIVE names, if it names one: an `http(s)://` URL, or a configured
/// archive with `protocol = "dicomweb"`. The `--tls*` flags go over its `tls` block (HTTPS).
pub fn client_for(
    config: &Config,
    archive: &str,
    tls: &super::tls::ClientTlsArgs,
) -> Result<Option<DicomWebClient>, Failure> {
    let client = if archive.starts_with("http://") || archive.starts_with("https://") {
        let options = ClientOptions { tls: tls.settings(None), ..Default::default() };
        DicomWebClient::new(archive, Auth::None, &options)
    } else {
        match config.archive(archive) {
            Some(a) if a.protocol == Protocol::Dicomweb => {
                let a = priorfetch_config::ArchiveConfig { tls: tls.settings(a.tls.as_ref()), ..a.clone() };
                DicomWebClient::for_archive(&a, &ClientOptions::default())
            }
            _ => return Ok(None),
        }
    };
    client.map(Some).map_err(|e| anyhow::anyhow!("{e}").into())
}

fn report(e: &priorfetch_dicomweb::DicomWebError) -> ExitCode {
    eprintln!("error: {e}\nhint: {}", e.hint());
    ExitCode::from(1)
}

/// QIDO-RS with the `-k` keys; `columns` are (tag, keyword) in the order asked.
pub async fn find(
    client: &DicomWebClient,
    level: &str,
    keys: &[(Tag, String, String)],
    json: bool,
) -> Result<ExitCode, Failure> {
    let study = keys.iter().find(|(_, _, name)| name == "StudyInstanceUID").map(|(_, v, _)| v.clone());
    let level = match (level, study) {
        ("STUDY", _) => Level::Studies,
        ("SERIES", Some(uid)) if !uid.is_empty() => Level::Series(uid),
        ("IMAGE", Some(uid)) if !uid.is_empty() => Level::Instances(uid),
        _ => {
            return Err(super::dicom::usage(format!(
                "--level {level} over DICOMweb needs STUDY, or -k StudyInstanceUID=<uid> for SERIES and IMAGE"
            )));
        }
    };
    let query = Query { level, keys: keys.iter().map(|(_, v, name)| (name.clone(), v.clone())).collect() };
    let found = match client.search_all(&query, 200, None).await {
        Ok(f) => f,
        Err(e) => return Ok(report(&e)),
    };
    let mut matches = super::dicom::Matches::new(keys.iter().map(|(t, _, name)| (*t, name.clone())).collect(), json);
    for m in &found.matches {
        matches.add(m)?;
    }
    matches.finish()?;
    match &found.truncated {
        Some(why) => eprintln!("{} match(es); the list may be incomplete: {why}", found.matches.len()),
        None => eprintln!("{} match(es)", found.matches.len()),
    }
    Ok(ExitCode::SUCCESS)
}

/// WADO-RS of the study into `out`, one Part-10 file per instance.
pub async fn retrieve(
    client: &DicomWebClient,
    study: &str,
    out: &std::path::Path,
    json: bool,
) -> Result<ExitCode, Failure> {
    let mut sink = DirSink::new(out).map_err(|e| anyhow::anyhow!("--out {}: {e}", out.display()))?;
    let started = Instant::now();
    let result = client.retrieve(&Target::Study(study.to_string()), "*", &mut sink).await;
    let seconds = started.elapsed().as_secs_f64();
    match result {
        Ok(got) => {
            if json {
                let summary = serde_json::json!({
                    "archive": client.base_url(), "method": "wado", "destination": out.display().to_string(),
                    "completed": got.instances, "failed": 0, "bytes": got.bytes, "seconds": seconds,
                });
                outln!("{summary}")?;
            } else {
                outln!(
                    "WADO-RS to {}: completed {} ({} bytes) in {seconds:.1} s",
                    out.display(),
                    got.instances,
                    got.bytes
                )?;
            }
            if got.instances == 0 {
                eprintln!("warning: the archive sent no instance: check the study UID");
                return Ok(ExitCode::from(1));
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Ok(report(&e)),
    }
}
