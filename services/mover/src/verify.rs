//! Asking the destination what it holds: the check that turns "the archive said it sent
//! them" into "they are there".

use dicom_core::VR;
use dicom_dictionary_std::tags;
use priorfetch_dimse::scu::identifier;
use priorfetch_dimse::{Association, ContextRequest, DimseError, Peer, QueryModel, ScuOptions};
use std::ops::ControlFlow;

/// Instances of `study` at the destination: NumberOfStudyRelatedInstances from a
/// STUDY-level C-FIND, or, when the destination leaves it out (DCMTK's dcmqrscp does),
/// a count of its IMAGE-level matches.
pub async fn count_instances(peer: &Peer, options: &ScuOptions, study: &str) -> Result<u32, DimseError> {
    let model = QueryModel::StudyRoot;
    let mut assoc = Association::connect(peer, options, &[ContextRequest::new(model.find_uid())]).await?;
    let result = count_on(&mut assoc, study).await;
    assoc.release().await;
    result
}

/// Instances of `study` at a DICOMweb destination: its QIDO-RS instance list.
pub async fn count_by_qido(client: &priorfetch_dicomweb::DicomWebClient, study: &str) -> Result<u32, DimseError> {
    let query = priorfetch_dicomweb::Query {
        level: priorfetch_dicomweb::Level::Instances(study.to_string()),
        keys: vec![("SOPInstanceUID".into(), String::new())],
    };
    let found = client.search_all(&query, 1000, None).await.map_err(crate::wado::as_dimse)?;
    Ok(found.matches.len() as u32)
}

async fn count_on(assoc: &mut Association, study: &str) -> Result<u32, DimseError> {
    let query = identifier(
        "STUDY",
        &[(tags::STUDY_INSTANCE_UID, VR::UI, study), (tags::NUMBER_OF_STUDY_RELATED_INSTANCES, VR::IS, "")],
    );
    let mut found = None;
    let mut any = false;
    assoc
        .find(QueryModel::StudyRoot, &query, None, |m| {
            any = true;
            found = m
                .element(tags::NUMBER_OF_STUDY_RELATED_INSTANCES)
                .ok()
                .and_then(|e| e.to_str().ok())
                .and_then(|s| s.trim_end_matches('\0').trim().parse::<u32>().ok());
            ControlFlow::Continue(())
        })
        .await?;
    if !any {
        return Ok(0);
    }
    if let Some(n) = found {
        return Ok(n);
    }
    let query = identifier(
        "IMAGE",
        &[
            (tags::STUDY_INSTANCE_UID, VR::UI, study),
            (tags::SERIES_INSTANCE_UID, VR::UI, ""),
            (tags::SOP_INSTANCE_UID, VR::UI, ""),
        ],
    );
    let outcome = assoc.find(QueryModel::StudyRoot, &query, Some(100_000), |_| ControlFlow::Continue(())).await?;
    Ok(outcome.matches as u32)
}
