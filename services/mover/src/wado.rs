//! The WADO-RS leg of a retrieve: the archive's multipart body streams into the job's
//! relay (spool, then C-STORE to the destination) exactly like a C-GET's sub-operations.
//! A retry that names instances fetches only those (their series from a QIDO-RS search).

use crate::progress::Live;
use crate::relay::Relayed;
use crate::{Ctx, metrics};
use dicom_dictionary_std::tags;
use priorfetch_dicomweb::{DicomWebClient, DicomWebError, Level, Query, Target};
use priorfetch_dimse::DimseError;
use priorfetch_relay::JobSpool;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use tracing::warn;

pub(crate) async fn wado_and_relay(
    ctx: &Ctx,
    archive: &str,
    client: &DicomWebClient,
    study: &str,
    pending: Option<&[String]>,
    spool: JobSpool,
    live: Arc<Mutex<Live>>,
) -> Result<Relayed, DimseError> {
    let (relay, mut sink) = crate::relay::start(ctx, spool, &live)?;
    let targets = match pending {
        None => Ok(vec![Target::Study(study.to_string())]),
        Some(uids) => instance_targets(client, study, uids).await,
    };
    let mut fetch_error = None;
    match targets {
        Ok(targets) => {
            for target in &targets {
                if let Err(e) = client.retrieve(target, "*", &mut sink).await {
                    fetch_error = Some(e);
                    break;
                }
            }
        }
        Err(e) => fetch_error = Some(e),
    }
    let forwarded = relay.finish(sink).await;
    metrics::SUBOPERATIONS.with_label_values(&[archive, "relayed"]).inc_by(forwarded.confirmed.len() as u64);
    if forwarded.refused > 0 {
        metrics::SUBOPERATIONS.with_label_values(&[archive, "relay_failed"]).inc_by(forwarded.refused as u64);
    }
    if let Some(e) = forwarded.error {
        return Err(e);
    }
    // Instances the destination refused stay in the spool: the retry names them (and
    // offers them from the spool rather than fetching them again).
    let refused = forwarded.refused_instances;
    let mut result = Relayed {
        status: if refused.is_empty() { 0 } else { 0xB000 },
        relayed: forwarded.confirmed.len() as u32,
        failed: forwarded.refused,
        failed_instances: refused.clone(),
        cancelled_by_archive: false,
        bytes: forwarded.bytes_received,
        confirmed: Default::default(),
    };
    match fetch_error {
        None => Ok(result),
        // Cut mid-body: what arrived is kept and counted; the retry asks for the rest only.
        Some(DicomWebError::Truncated { complete, .. }) => {
            let missing = match pending {
                Some(uids) => uids.iter().filter(|u| !forwarded.confirmed.contains(*u)).cloned().collect(),
                None => missing_of_study(client, study, &forwarded.confirmed).await.map_err(as_dimse)?,
            };
            warn!(
                archive,
                complete,
                missing = missing.len(),
                "WADO-RS body cut mid-transfer; the retry asks for the rest only"
            );
            result.status = 0xB000;
            result.failed += missing.len() as u32;
            result.failed_instances.extend(missing.into_iter().filter(|u| !refused.contains(u)));
            Ok(result)
        }
        Some(e) => Err(as_dimse(e)),
    }
}

/// The study's instances (QIDO-RS) the destination has not confirmed.
async fn missing_of_study(
    client: &DicomWebClient,
    study: &str,
    confirmed: &HashSet<String>,
) -> Result<Vec<String>, DicomWebError> {
    let all = instances(client, study).await?;
    Ok(all.into_iter().map(|(_, sop)| sop).filter(|sop| !confirmed.contains(sop)).collect())
}

/// (series, SOP instance) of every instance of the study.
pub(crate) async fn instances(client: &DicomWebClient, study: &str) -> Result<Vec<(String, String)>, DicomWebError> {
    let query = Query {
        level: Level::Instances(study.to_string()),
        keys: vec![("SeriesInstanceUID".into(), String::new()), ("SOPInstanceUID".into(), String::new())],
    };
    let found = client.search_all(&query, 1000, None).await?;
    let text = |obj: &dicom_object::InMemDicomObject, tag| {
        obj.element(tag).ok().and_then(|e| e.to_str().ok()).map(|s| s.trim_end_matches('\0').trim().to_string())
    };
    Ok(found
        .matches
        .iter()
        .filter_map(|m| Some((text(m, tags::SERIES_INSTANCE_UID)?, text(m, tags::SOP_INSTANCE_UID)?)))
        .collect())
}

/// The named instances as WADO-RS targets: their series from one QIDO-RS search.
async fn instance_targets(client: &DicomWebClient, study: &str, uids: &[String]) -> Result<Vec<Target>, DicomWebError> {
    Ok(instances(client, study)
        .await?
        .into_iter()
        .filter(|(_, sop)| uids.contains(sop))
        .map(|(series, instance)| Target::Instance { study: study.to_string(), series, instance })
        .collect())
}

/// The mover judges every attempt by one error type: a DICOMweb failure keeps its own
/// classification and hint.
pub(crate) fn as_dimse(e: DicomWebError) -> DimseError {
    let wait = match &e {
        DicomWebError::Busy { retry_after, .. } => *retry_after,
        _ => None,
    };
    DimseError::Other { message: e.to_string(), hint: e.hint().to_string(), retryable: e.is_transient(), wait }
}
