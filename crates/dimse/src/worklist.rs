//! Modality Worklist C-FIND (PS3.4 K.6, SOP class 1.2.840.10008.5.1.4.31): the Scheduled
//! Procedure Steps of a worklist SCP (a RIS, DCMTK `wlmscpfs`, Orthanc's worklist plugin),
//! on the same C-FIND machinery as Q/R (`scu.rs`). The items are returned as the SCP sent
//! them; turning them into exams is `priorfetch-worklist`'s job.

use crate::association::{Association, ContextRequest, ScuOptions};
use crate::error::DimseError;
use crate::peer::Peer;
use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_object::InMemDicomObject;
use std::ops::ControlFlow;

/// Modality Worklist Information Model – FIND.
pub const MODALITY_WORKLIST_FIND: &str = "1.2.840.10008.5.1.4.31";

/// Items taken from one C-FIND before we send C-CANCEL: a runaway worklist (a filter
/// that matches a whole year) cannot fill memory; the poll counts as incomplete.
pub const MAX_ITEMS_PER_QUERY: usize = 20_000;

/// One worklist C-FIND: the steps that start on `dates`, optionally of one station and
/// one modality (the SCP matches them inside the Scheduled Procedure Step Sequence).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorklistFilter {
    /// A DICOM date range, `20261123-20261124` (or one date).
    pub dates: String,
    /// Scheduled Station AE Title (0040,0001); None: any.
    pub station_ae: Option<String>,
    /// Modality (0008,0060); None: any.
    pub modality: Option<String>,
}

/// What a poll's C-FINDs returned.
#[derive(Debug, Default)]
pub struct WorklistAnswer {
    pub items: Vec<InMemDicomObject>,
    /// Some C-FIND ended early (the SCP's own limit, 0xFE00, or ours,
    /// [`MAX_ITEMS_PER_QUERY`]): a step missing from `items` may still be scheduled.
    pub incomplete: bool,
}

fn put(obj: &mut InMemDicomObject, tag: Tag, vr: VR, value: &str) {
    let value = if value.is_empty() { PrimitiveValue::Empty } else { PrimitiveValue::from(value) };
    obj.put(DataElement::new(tag, vr, value));
}

fn sequence(obj: &mut InMemDicomObject, tag: Tag, item: InMemDicomObject) {
    obj.put(DataElement::new(tag, VR::SQ, DataSetSequence::from(vec![item])));
}

/// The identifier of one worklist C-FIND. Only the Scheduled Procedure Step's date,
/// station and modality are matching keys; the rest are return keys. Patient name and
/// birth date are not asked for: nothing downstream stores them.
pub fn worklist_identifier(filter: &WorklistFilter) -> InMemDicomObject {
    use dicom_dictionary_std::tags::*;
    let mut step = InMemDicomObject::new_empty();
    put(&mut step, SCHEDULED_STATION_AE_TITLE, VR::AE, filter.station_ae.as_deref().unwrap_or(""));
    put(&mut step, SCHEDULED_PROCEDURE_STEP_START_DATE, VR::DA, &filter.dates);
    put(&mut step, SCHEDULED_PROCEDURE_STEP_START_TIME, VR::TM, "");
    put(&mut step, MODALITY, VR::CS, filter.modality.as_deref().unwrap_or(""));
    // Not an MWL attribute, but RIS often fill it (Orthanc returns it; DCMTK drops it).
    put(&mut step, BODY_PART_EXAMINED, VR::CS, "");
    put(&mut step, SCHEDULED_PROCEDURE_STEP_DESCRIPTION, VR::LO, "");
    put(&mut step, SCHEDULED_PROCEDURE_STEP_ID, VR::SH, "");
    let mut code = InMemDicomObject::new_empty();
    put(&mut code, CODE_VALUE, VR::SH, "");
    put(&mut code, CODING_SCHEME_DESIGNATOR, VR::SH, "");
    put(&mut code, CODE_MEANING, VR::LO, "");
    let mut other_id = InMemDicomObject::new_empty();
    put(&mut other_id, PATIENT_ID, VR::LO, "");
    put(&mut other_id, ISSUER_OF_PATIENT_ID, VR::LO, "");

    let mut obj = InMemDicomObject::new_empty();
    put(&mut obj, SPECIFIC_CHARACTER_SET, VR::CS, "");
    put(&mut obj, ACCESSION_NUMBER, VR::SH, "");
    put(&mut obj, TIMEZONE_OFFSET_FROM_UTC, VR::SH, "");
    put(&mut obj, PATIENT_ID, VR::LO, "");
    put(&mut obj, ISSUER_OF_PATIENT_ID, VR::LO, "");
    sequence(&mut obj, OTHER_PATIENT_I_DS_SEQUENCE, other_id);
    put(&mut obj, STUDY_INSTANCE_UID, VR::UI, "");
    put(&mut obj, REQUESTED_PROCEDURE_DESCRIPTION, VR::LO, "");
    sequence(&mut obj, REQUESTED_PROCEDURE_CODE_SEQUENCE, code);
    sequence(&mut obj, SCHEDULED_PROCEDURE_STEP_SEQUENCE, step);
    put(&mut obj, REQUESTED_PROCEDURE_ID, VR::SH, "");
    put(&mut obj, REQUESTED_PROCEDURE_PRIORITY, VR::SH, "");
    obj
}

/// The presentation context a worklist association needs.
pub fn worklist_contexts() -> Vec<ContextRequest> {
    vec![ContextRequest::new(MODALITY_WORKLIST_FIND)]
}

impl Association {
    /// One Modality Worklist C-FIND; each item goes to `on_match` as it arrives
    /// (`ControlFlow::Break` sends C-CANCEL, as [`Association::find`] does).
    pub async fn find_worklist(
        &mut self,
        query: &InMemDicomObject,
        cancel_after: Option<usize>,
        on_match: impl FnMut(InMemDicomObject) -> ControlFlow<()>,
    ) -> Result<crate::FindOutcome, DimseError> {
        self.find_in(MODALITY_WORKLIST_FIND, query, cancel_after, None, on_match).await
    }
}

/// Runs one C-FIND per filter on one association (plain or DICOM TLS, as `options.tls`
/// says) and returns every item. Any failure fails the whole answer: a partial worklist
/// must not look complete (the caller would cancel the steps it did not see).
pub async fn query_worklist(
    peer: &Peer,
    options: &ScuOptions,
    filters: &[WorklistFilter],
) -> Result<WorklistAnswer, DimseError> {
    let mut assoc = Association::connect(peer, options, &worklist_contexts()).await?;
    if assoc.context_for(MODALITY_WORKLIST_FIND).is_none() {
        assoc.release().await;
        return Err(DimseError::NoContext { peer: peer.to_string(), what: "Modality Worklist C-FIND".into() });
    }
    let mut answer = WorklistAnswer::default();
    for filter in filters {
        let query = worklist_identifier(filter);
        let mut items = Vec::new();
        let outcome = assoc
            .find_worklist(&query, Some(MAX_ITEMS_PER_QUERY), |item| {
                items.push(item);
                ControlFlow::Continue(())
            })
            .await;
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(e) => {
                assoc.abort().await;
                return Err(e);
            }
        };
        answer.incomplete |= outcome.truncated || outcome.cancelled_by_us;
        answer.items.extend(items);
    }
    assoc.release().await;
    Ok(answer)
}
