//! Modality Worklist items to exam events: one [`ExamEvent`] per Scheduled Procedure Step
//! of an item. Pure code, no I/O: the C-FIND is `priorfetch_dimse::worklist`, the polling
//! and reconciling the listener's `worklist.rs`.
//!
//! Layout:
//! - `lib.rs`: [`map_item`] (the item's order and patient, then each step) and event keys.
//! - `read.rs`: attribute values, DICOM DA/TM and UTC offsets, each failure naming the
//!   attribute (`ScheduledProcedureStepStartDate (0040,0002)`).
//!
//! Keys are stable across polls: `mwl:<worklist>:<StudyInstanceUID or accession>:<SPS ID>`,
//! so a step seen again is the same exam, and a step that changed is an update of it.
//! Nothing here panics on input: every item yields events or errors.

mod read;

use chrono::{DateTime, FixedOffset, NaiveTime};
use dicom_object::InMemDicomObject;
use priorfetch_events::{
    DecodeError, EventKind, ExamEvent, ExamPriority, Format, Patient, PatientIdentifier, Procedure,
};
use read::{attribute, items, text};

/// The attributes read (the same the C-FIND asks for).
use dicom_dictionary_std::tags as tag;

/// `message_type` of worklist events.
pub const MESSAGE_TYPE: &str = "MWL C-FIND";

/// How to map: the worklist's name (in keys) and the site's UTC offset for steps whose
/// item carries no Timezone Offset From UTC (0008,0201) (`intake.hl7.default_utc_offset`).
#[derive(Debug, Clone)]
pub struct MapOptions {
    pub worklist: String,
    pub default_offset: FixedOffset,
}

/// One Scheduled Procedure Step: its event, or why it cannot be one. `key` is known
/// whenever the study (UID or accession) and the step ID are, even for a bad step, so a
/// step that turned bad is not taken for one that left the worklist.
#[derive(Debug, Clone)]
pub struct StepEvent {
    pub key: Option<String>,
    pub event: Result<ExamEvent, DecodeError>,
}

/// `mwl:<worklist>:`, the start of every key of this worklist's exams.
pub fn key_prefix(worklist: &str) -> String {
    format!("mwl:{worklist}:")
}

/// The item as DICOM JSON, what a dead letter keeps of it (an empty object if it cannot
/// be written: the reason still says what was wrong).
pub fn item_payload(item: &InMemDicomObject) -> Vec<u8> {
    dicom_json::to_string(item).unwrap_or_else(|_| "{}".into()).into_bytes()
}

/// The events of one worklist item, one per item of its Scheduled Procedure Step Sequence
/// (0040,0100), each checked by [`priorfetch_events::validate`]. An item without steps
/// is one error.
pub fn map_item(item: &InMemDicomObject, options: &MapOptions) -> Vec<StepEvent> {
    let steps = items(item, tag::SCHEDULED_PROCEDURE_STEP_SEQUENCE);
    if steps.is_empty() {
        let field = attribute("ScheduledProcedureStepSequence", tag::SCHEDULED_PROCEDURE_STEP_SEQUENCE);
        let error = DecodeError::MissingField { field, what: "scheduled procedure step".into() };
        return vec![StepEvent { key: None, event: Err(error) }];
    }
    let order = order_of(item, options);
    steps
        .iter()
        .map(|step| {
            let key = step_key(item, step, options);
            let event = match &order {
                Ok(order) => step_event(order, step, key.as_deref()),
                Err(e) => Err(e.clone()),
            };
            StepEvent { key, event }
        })
        .collect()
}

/// What the steps of one item share: patient, study, requested procedure.
struct Order {
    patient: Patient,
    accession_number: Option<String>,
    study_instance_uid: Option<String>,
    offset: FixedOffset,
    procedure: Option<Procedure>,
    priority: ExamPriority,
}

fn order_of(item: &InMemDicomObject, options: &MapOptions) -> Result<Order, DecodeError> {
    let patient_id = text(item, tag::PATIENT_ID).ok_or_else(|| DecodeError::MissingField {
        field: attribute("PatientID", tag::PATIENT_ID),
        what: "patient id".into(),
    })?;
    let primary = PatientIdentifier::new(patient_id, text(item, tag::ISSUER_OF_PATIENT_ID));
    let others: Vec<PatientIdentifier> = items(item, tag::OTHER_PATIENT_I_DS_SEQUENCE)
        .iter()
        .filter_map(|o| Some(PatientIdentifier::new(text(o, tag::PATIENT_ID)?, text(o, tag::ISSUER_OF_PATIENT_ID))))
        .collect();
    let patient = Patient {
        id: primary.id.clone(),
        issuer: primary.issuer.clone(),
        identifiers: PatientIdentifier::all(primary, &others),
        name: None,
        birth_date: None,
    };
    let study_instance_uid = text(item, tag::STUDY_INSTANCE_UID);
    if let Some(uid) = &study_instance_uid
        && !read::is_uid(uid)
    {
        return Err(DecodeError::BadValue {
            field: attribute("StudyInstanceUID", tag::STUDY_INSTANCE_UID),
            reason: "not a DICOM UID (digits and dots, at most 64 characters)".into(),
        });
    }
    let accession_number = text(item, tag::ACCESSION_NUMBER);
    if study_instance_uid.is_none() && accession_number.is_none() {
        return Err(DecodeError::MissingField {
            field: attribute("StudyInstanceUID", tag::STUDY_INSTANCE_UID),
            what: "study instance uid or accession number (0008,0050)".into(),
        });
    }
    let offset = match text(item, tag::TIMEZONE_OFFSET_FROM_UTC) {
        Some(o) => read::utc_offset(&o, &attribute("TimezoneOffsetFromUTC", tag::TIMEZONE_OFFSET_FROM_UTC))?,
        None => options.default_offset,
    };
    let code = items(item, tag::REQUESTED_PROCEDURE_CODE_SEQUENCE).first();
    let procedure = Procedure {
        code: code.and_then(|c| text(c, tag::CODE_VALUE)),
        text: text(item, tag::REQUESTED_PROCEDURE_DESCRIPTION)
            .or_else(|| code.and_then(|c| text(c, tag::CODE_MEANING))),
    };
    let priority = match text(item, tag::REQUESTED_PROCEDURE_PRIORITY).map(|p| p.to_ascii_uppercase()).as_deref() {
        Some("STAT") => ExamPriority::Stat,
        Some("HIGH") => ExamPriority::Urgent,
        _ => ExamPriority::Routine,
    };
    Ok(Order {
        patient,
        accession_number,
        study_instance_uid,
        offset,
        procedure: (procedure.code.is_some() || procedure.text.is_some()).then_some(procedure),
        priority,
    })
}

/// The step's key, when its study and step ID are known. Read from the item itself, not
/// the order, so a step whose order is bad still has one.
fn step_key(item: &InMemDicomObject, step: &InMemDicomObject, options: &MapOptions) -> Option<String> {
    let study = text(item, tag::STUDY_INSTANCE_UID).or_else(|| text(item, tag::ACCESSION_NUMBER))?;
    let sps_id = text(step, tag::SCHEDULED_PROCEDURE_STEP_ID)?;
    Some(format!("{}{study}:{sps_id}", key_prefix(&options.worklist)))
}

fn step_event(order: &Order, step: &InMemDicomObject, key: Option<&str>) -> Result<ExamEvent, DecodeError> {
    let Some(key) = key else {
        return Err(DecodeError::MissingField {
            field: attribute("ScheduledProcedureStepID", tag::SCHEDULED_PROCEDURE_STEP_ID),
            what: "scheduled procedure step id".into(),
        });
    };
    let event = ExamEvent {
        event_key: key.to_string(),
        kind: EventKind::Scheduled,
        patient: order.patient.clone(),
        accession_number: order.accession_number.clone(),
        study_instance_uid: order.study_instance_uid.clone(),
        scheduled_at: Some(start_of(step, order.offset)?),
        priority: order.priority,
        modality: text(step, tag::MODALITY).map(|m| m.to_ascii_uppercase()),
        body_part: text(step, tag::BODY_PART_EXAMINED).map(|b| b.to_ascii_uppercase()),
        procedure: order.procedure.clone().or_else(|| {
            text(step, tag::SCHEDULED_PROCEDURE_STEP_DESCRIPTION).map(|t| Procedure { code: None, text: Some(t) })
        }),
        // The events crate knows JSON and HL7 only; nothing branches on the format.
        format: Format::Json,
        message_type: MESSAGE_TYPE.to_string(),
    };
    priorfetch_events::validate(&event).map_err(in_dicom_terms)?;
    Ok(event)
}

/// SPS Start Date (required) and Time (midnight when absent), local in `offset`.
fn start_of(step: &InMemDicomObject, offset: FixedOffset) -> Result<DateTime<FixedOffset>, DecodeError> {
    let date_field = attribute("ScheduledProcedureStepStartDate", tag::SCHEDULED_PROCEDURE_STEP_START_DATE);
    let time_field = attribute("ScheduledProcedureStepStartTime", tag::SCHEDULED_PROCEDURE_STEP_START_TIME);
    let date = text(step, tag::SCHEDULED_PROCEDURE_STEP_START_DATE)
        .ok_or_else(|| DecodeError::MissingField { field: date_field.clone(), what: "scheduled date".into() })?;
    let date = read::date(&date, &date_field)?;
    let time = match text(step, tag::SCHEDULED_PROCEDURE_STEP_START_TIME) {
        Some(t) => read::time(&t, &time_field)?,
        None => NaiveTime::MIN,
    };
    read::local(date, time, offset, &date_field)
}

/// The validator names event fields (`patient.id`); a worklist's dead letter names the
/// DICOM attribute the value came from.
fn in_dicom_terms(error: DecodeError) -> DecodeError {
    let rename = |field: &str| -> String {
        let (keyword, tag) = match field.split('[').next().unwrap_or(field) {
            "patient.id" => ("PatientID", tag::PATIENT_ID),
            "patient.issuer" => ("IssuerOfPatientID", tag::ISSUER_OF_PATIENT_ID),
            "patient.identifiers" => ("OtherPatientIDsSequence", tag::OTHER_PATIENT_I_DS_SEQUENCE),
            "accession_number" => ("AccessionNumber", tag::ACCESSION_NUMBER),
            "study_instance_uid" => ("StudyInstanceUID", tag::STUDY_INSTANCE_UID),
            "modality" => ("Modality", tag::MODALITY),
            "body_part" => ("BodyPartExamined", tag::BODY_PART_EXAMINED),
            "procedure.code" => ("RequestedProcedureCodeSequence", tag::REQUESTED_PROCEDURE_CODE_SEQUENCE),
            "procedure.text" => ("RequestedProcedureDescription", tag::REQUESTED_PROCEDURE_DESCRIPTION),
            "scheduled_at" => ("ScheduledProcedureStepStartDate", tag::SCHEDULED_PROCEDURE_STEP_START_DATE),
            "event key" => ("ScheduledProcedureStepID", tag::SCHEDULED_PROCEDURE_STEP_ID),
            _ => return field.to_string(),
        };
        attribute(keyword, tag)
    };
    match error {
        DecodeError::MissingField { field, what } => DecodeError::MissingField { field: rename(&field), what },
        DecodeError::BadValue { field, reason } => DecodeError::BadValue { field: rename(&field), reason },
        DecodeError::BadDate { field, what, value } => DecodeError::BadDate { field: rename(&field), what, value },
        other => other,
    }
}
