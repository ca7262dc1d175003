//! HL7 v2 orders and schedules to exam events.

pub(crate) mod mapping;
mod message;
mod timestamp;

use crate::error::DecodeError;
use crate::event::{EventKind, ExamEvent, Format, Patient, PatientIdentifier, Procedure};
use crate::{DecodeOptions, json::check_uid};
use mapping::{Hl7FieldMap, require};
use message::Message;
use priorfetch_domain::ExamPriority;

pub(crate) fn decode(text: &str, options: &DecodeOptions) -> Result<ExamEvent, DecodeError> {
    let message = Message::parse(text)?;
    let map = &options.hl7;
    let offset =
        map.offset().ok_or_else(|| DecodeError::bad("default_utc_offset", "bad offset in the HL7 field map"))?;

    let msh9 = message.field("MSH", 9).ok_or_else(|| DecodeError::TruncatedHl7("MSH ends before MSH-9".into()))?;
    let msh9 = message.repetitions(msh9).into_iter().next().unwrap_or_default();
    let code = message.component(msh9, 1, 1).unwrap_or_default();
    let trigger = message.component(msh9, 2, 1).unwrap_or_default();
    let message_type = format!("{code}^{trigger}");
    let control_id = message.field("MSH", 10).and_then(|f| message.component(f, 1, 1));
    let control_id = require(control_id, "MSH-10", "message control id")?;

    let kind = match (code.as_str(), trigger.as_str()) {
        ("ORM", "O01") | ("OMI", "O23") => {
            let orc = message.segment("ORC").ok_or_else(|| DecodeError::TruncatedHl7("no ORC segment".into()))?;
            let control = orc.fields.get(1).and_then(|f| message.component(f, 1, 1)).unwrap_or_default();
            match control.as_str() {
                "NW" => EventKind::Scheduled,
                "XO" | "SC" | "RP" => EventKind::Updated,
                "CA" | "OC" | "DC" | "CR" => EventKind::Cancelled,
                "" => return Err(DecodeError::missing("ORC-1", "order control")),
                other => {
                    return Err(DecodeError::bad(
                        "ORC-1",
                        format!("order control '{other}' is not NW, XO, SC, CA, OC or DC"),
                    ));
                }
            }
        }
        ("SIU", "S12") => EventKind::Scheduled,
        ("SIU", "S13") | ("SIU", "S14") => EventKind::Updated,
        ("SIU", "S15") => EventKind::Cancelled,
        _ => return Err(DecodeError::UnsupportedMessage(message_type)),
    };
    if !message.has("PID") {
        return Err(DecodeError::TruncatedHl7("no PID segment".into()));
    }
    if code != "SIU" && !message.has("OBR") && !message.has("IPC") {
        return Err(DecodeError::TruncatedHl7("no OBR segment".into()));
    }
    if code == "SIU" && !message.has("SCH") {
        return Err(DecodeError::TruncatedHl7("no SCH segment".into()));
    }

    let patient = patient(&message, map, offset)?;
    let accession_number = Hl7FieldMap::first(&map.accession, &message).map(|(v, _)| v);
    let study_instance_uid = match Hl7FieldMap::first(&map.study_instance_uid, &message) {
        Some((uid, at)) => {
            check_uid(&uid, &at)?;
            Some(uid)
        }
        None => None,
    };
    if accession_number.is_none() && study_instance_uid.is_none() {
        let positions: Vec<String> = map.accession.iter().map(|p| p.to_string()).collect();
        return Err(DecodeError::missing(positions.join(", "), "accession number and study instance uid"));
    }
    let scheduled_at = match Hl7FieldMap::first(&map.scheduled_at, &message) {
        Some((value, at)) => {
            Some(timestamp::parse_dtm(&value, offset).ok_or_else(|| DecodeError::bad_timestamp(at, value))?)
        }
        None if kind == EventKind::Cancelled => None,
        None => {
            let positions: Vec<String> = map.scheduled_at.iter().map(|p| p.to_string()).collect();
            return Err(DecodeError::missing(positions.join(", "), "scheduled time"));
        }
    };
    let priority = match Hl7FieldMap::first(&map.priority, &message).map(|(v, _)| v.to_ascii_uppercase()) {
        Some(p) if p == "S" || p == "STAT" => ExamPriority::Stat,
        Some(p) if p == "A" || p == "ASAP" || p == "U" || p == "URGENT" => ExamPriority::Urgent,
        _ => ExamPriority::Routine,
    };
    let code_value = Hl7FieldMap::first(&map.procedure_code, &message).map(|(v, _)| v);
    let text_value = Hl7FieldMap::first(&map.procedure_text, &message).map(|(v, _)| v);
    let procedure =
        (code_value.is_some() || text_value.is_some()).then_some(Procedure { code: code_value, text: text_value });
    let modality =
        Hl7FieldMap::first(&map.modality, &message).map(|(v, _)| v.to_ascii_uppercase()).filter(|m| m.len() <= 16);
    let event_key = if options.sender_in_key {
        let part = |n| message.field("MSH", n).and_then(|f| message.component(f, 1, 1)).unwrap_or_default();
        format!("hl7:{}:{}^{}:{}", options.source, part(3), part(4), control_id)
    } else {
        format!("hl7:{}:{}", options.source, control_id)
    };
    Ok(ExamEvent {
        event_key,
        kind,
        patient,
        accession_number,
        study_instance_uid,
        scheduled_at,
        priority,
        modality,
        body_part: Hl7FieldMap::first(&map.body_part, &message).map(|(v, _)| v.to_ascii_uppercase()),
        procedure,
        format: Format::Hl7,
        message_type,
    })
}

fn patient(message: &Message<'_>, map: &Hl7FieldMap, offset: chrono::FixedOffset) -> Result<Patient, DecodeError> {
    let pid3 = message.field("PID", 3).unwrap_or_default();
    // Every repetition with an ID: CX.1, and CX.4.1 (the assigning authority's namespace id).
    let mut identifiers: Vec<PatientIdentifier> = Vec::new();
    for rep in message.repetitions(pid3) {
        if let Some(id) = message.component(rep, 1, 1) {
            let identifier = PatientIdentifier { id, issuer: message.component(rep, 4, 1) };
            if !identifiers.contains(&identifier) {
                identifiers.push(identifier);
            }
        }
    }
    let chosen = map
        .preferred_issuer
        .as_deref()
        .and_then(|want| identifiers.iter().find(|i| i.issuer.as_deref() == Some(want)))
        .or(identifiers.first())
        .cloned();
    let PatientIdentifier { id, issuer } = chosen.ok_or_else(|| DecodeError::missing("PID-3", "patient id"))?;
    let name = message.field("PID", 5).and_then(|f| {
        let rep = message.repetitions(f).into_iter().next()?;
        let family = message.component(rep, 1, 1)?;
        Some(match message.component(rep, 2, 1) {
            Some(given) => format!("{family}^{given}"),
            None => family,
        })
    });
    let birth_date = match message.field("PID", 7).and_then(|f| message.component(f, 1, 1)) {
        Some(value) => Some(
            // Only the date part matters; the offset cannot move it, any will do.
            timestamp::parse_dtm(&value, offset)
                .map(|t| t.date_naive())
                .ok_or_else(|| DecodeError::bad_date("PID-7", value))?,
        ),
        None => None,
    };
    Ok(Patient { id, issuer, identifiers, name, birth_date })
}
