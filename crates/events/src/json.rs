//! The JSON event (docs/architecture.md). Unknown fields are tolerated: interface engines add
//! their own.

use crate::error::DecodeError;
use crate::event::{EventKind, ExamEvent, Format, Patient, PatientIdentifier, Procedure};
use crate::validate::MAX_IDENTIFIERS;
use chrono::{DateTime, NaiveDate};
use priorfetch_domain::ExamPriority;
use serde_json::{Map, Value};

pub(crate) fn decode(text: &str) -> Result<ExamEvent, DecodeError> {
    let value: Value = serde_json::from_str(text).map_err(|e| DecodeError::BadJson(e.to_string()))?;
    let Value::Object(root) = value else { return Err(DecodeError::BadJson("top level is not an object".into())) };

    let event_id = required_str(&root, "event_id", "event_id", "event id")?;
    if event_id.len() > 200 {
        return Err(DecodeError::bad("event_id", "longer than 200 characters"));
    }
    let kind = match required_str(&root, "type", "type", "event type")? {
        "exam.scheduled" => EventKind::Scheduled,
        "exam.updated" => EventKind::Updated,
        "exam.cancelled" => EventKind::Cancelled,
        other => {
            return Err(DecodeError::bad(
                "type",
                format!(
                    "unknown type '{}' (exam.scheduled, exam.updated, exam.cancelled)",
                    other.chars().take(40).collect::<String>()
                ),
            ));
        }
    };
    let patient = match root.get("patient") {
        Some(Value::Object(p)) => p,
        Some(_) => return Err(DecodeError::bad("patient", "must be an object")),
        None => return Err(DecodeError::missing("patient", "patient object")),
    };
    let patient = patient_of(patient)?;
    let accession_number = optional_str(&root, "accession_number", "accession_number")?;
    let study_instance_uid = optional_str(&root, "study_instance_uid", "study_instance_uid")?;
    if let Some(uid) = &study_instance_uid {
        check_uid(uid, "study_instance_uid")?;
    }
    if accession_number.is_none() && study_instance_uid.is_none() {
        return Err(DecodeError::missing("accession_number", "accession_number or study_instance_uid"));
    }
    let scheduled_at = match optional_str(&root, "scheduled_at", "scheduled_at")? {
        Some(s) => Some(DateTime::parse_from_rfc3339(&s).map_err(|_| DecodeError::bad_timestamp("scheduled_at", s))?),
        None if kind == EventKind::Cancelled => None,
        None => return Err(DecodeError::missing("scheduled_at", "scheduled time (RFC 3339 with offset)")),
    };
    let priority = match optional_str(&root, "priority", "priority")?.map(|p| p.to_ascii_lowercase()) {
        None => ExamPriority::Routine,
        Some(p) => match p.as_str() {
            "routine" => ExamPriority::Routine,
            "urgent" | "asap" => ExamPriority::Urgent,
            "stat" => ExamPriority::Stat,
            _ => return Err(DecodeError::bad("priority", "must be routine, urgent or stat")),
        },
    };
    // DICOM CS (0008,0060): upper case, digits, space, underscore, at most 16. Lower case
    // is folded rather than rejected: "ct" is unambiguous and engines do send it.
    let modality = optional_str(&root, "modality", "modality")?.map(|m| m.to_ascii_uppercase());
    if let Some(m) = &modality
        && !(m.len() <= 16 && m.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_' || b == b' '))
    {
        return Err(DecodeError::bad("modality", "must be 1 to 16 characters A-Z, 0-9, '_' or space (e.g. CT)"));
    }
    let procedure = match root.get("procedure") {
        None | Some(Value::Null) => None,
        Some(Value::Object(p)) => Some(Procedure {
            code: optional_str(p, "code", "procedure.code")?,
            text: optional_str(p, "text", "procedure.text")?,
        }),
        Some(_) => return Err(DecodeError::bad("procedure", "must be an object")),
    };
    Ok(ExamEvent {
        event_key: format!("json:{event_id}"),
        kind,
        patient,
        accession_number,
        study_instance_uid,
        scheduled_at,
        priority,
        modality,
        body_part: optional_str(&root, "body_part", "body_part")?.map(|b| b.to_ascii_uppercase()),
        procedure,
        format: Format::Json,
        message_type: kind.as_str().to_string(),
    })
}

/// `patient`: the primary identifier (`id`, `issuer`) and/or the list `identifiers`
/// (`[{id, issuer}]`). With only the list, the first is the primary.
fn patient_of(patient: &Map<String, Value>) -> Result<Patient, DecodeError> {
    let listed = identifiers(patient)?;
    let (id, issuer) = match patient.get("id") {
        None | Some(Value::Null) if !listed.is_empty() => {
            if patient.get("issuer").is_some_and(|v| !v.is_null()) {
                return Err(DecodeError::bad(
                    "patient.issuer",
                    "goes with patient.id; without it, give the issuer in patient.identifiers",
                ));
            }
            (listed[0].id.clone(), listed[0].issuer.clone())
        }
        _ => (
            required_str(patient, "id", "patient.id", "patient id")?.to_string(),
            optional_str(patient, "issuer", "patient.issuer")?,
        ),
    };
    let identifiers = PatientIdentifier::all(PatientIdentifier { id: id.clone(), issuer: issuer.clone() }, &listed);
    Ok(Patient {
        id,
        issuer,
        identifiers,
        name: optional_str(patient, "name", "patient.name")?,
        birth_date: optional_str(patient, "birth_date", "patient.birth_date")?
            .map(|d| {
                NaiveDate::parse_from_str(&d, "%Y%m%d")
                    .or_else(|_| NaiveDate::parse_from_str(&d, "%Y-%m-%d"))
                    .map_err(|_| DecodeError::bad_date("patient.birth_date", d.clone()))
            })
            .transpose()?,
    })
}

/// `patient.identifiers`: a list of `{id, issuer}` objects (count bounded in validate.rs).
fn identifiers(patient: &Map<String, Value>) -> Result<Vec<PatientIdentifier>, DecodeError> {
    let items = match patient.get("identifiers") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(DecodeError::bad("patient.identifiers", "must be a list of {id, issuer} objects")),
    };
    if items.len() > MAX_IDENTIFIERS {
        return Err(DecodeError::bad(
            "patient.identifiers",
            format!("{} identifiers, at most {MAX_IDENTIFIERS} allowed", items.len()),
        ));
    }
    let mut list: Vec<PatientIdentifier> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let path = format!("patient.identifiers[{i}]");
        let Value::Object(o) = item else {
            return Err(DecodeError::bad(path, "must be an object {id, issuer}"));
        };
        let identifier = PatientIdentifier {
            id: required_str(o, "id", &format!("{path}.id"), "patient id")?.to_string(),
            issuer: optional_str(o, "issuer", &format!("{path}.issuer"))?,
        };
        if !list.contains(&identifier) {
            list.push(identifier);
        }
    }
    Ok(list)
}

/// A non-empty string; `what` names it in words for the error.
fn required_str<'a>(object: &'a Map<String, Value>, key: &str, path: &str, what: &str) -> Result<&'a str, DecodeError> {
    match object.get(key) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim()),
        Some(Value::String(_)) | None | Some(Value::Null) => Err(DecodeError::missing(path, what)),
        Some(_) => Err(DecodeError::bad(path, "must be a string")),
    }
}

fn optional_str(object: &Map<String, Value>, key: &str, path: &str) -> Result<Option<String>, DecodeError> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
        Some(_) => Err(DecodeError::bad(path, "must be a string")),
    }
}

/// DICOM UID: digits and dots, at most 64 characters, no empty component.
pub(crate) fn check_uid(uid: &str, field: &str) -> Result<(), DecodeError> {
    let ok = uid.len() <= 64
        && !uid.is_empty()
        && uid.split('.').all(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()));
    if ok { Ok(()) } else { Err(DecodeError::bad(field, "not a DICOM UID (digits and dots, at most 64 characters)")) }
}
