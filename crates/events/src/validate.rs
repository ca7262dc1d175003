//! The last check of every decoded event, JSON or HL7, before anything reaches the
//! database or an archive. Each rule keeps a whole class of bad input permanent and
//! isolated (a dead letter with the field named) instead of a database error that would
//! block the batch around it, or a C-FIND that matches other patients:
//!
//! | field | rule |
//! |---|---|
//! | every text field | no control characters (NUL, CR, LF, TAB, DEL, C1); free text (name, procedure text) may hold line breaks and tabs |
//! | event key (`event_id`, MSH-10) | at most 200 characters |
//! | `patient.id`, `patient.issuer` | 1 to 64 characters (DICOM LO); no `*`, `?` or `\` (C-FIND wildcards and the DICOM value separator) |
//! | `patient.identifiers` (every PID-3 repetition) | at most 20; each `id` and `issuer` as `patient.id` and `patient.issuer` |
//! | `accession_number` | at most 64 characters; no `*`, `?` or `\` |
//! | `study_instance_uid` | a DICOM UID (checked while decoding) |
//! | `patient.name` | at most 200 characters |
//! | `modality`, `body_part` | at most 16 characters (DICOM CS) |
//! | `procedure.code` / `procedure.text` | at most 64 / 1024 characters |
//! | `scheduled_at` | year 1970 to 2199 |
//! | `patient.birth_date` | year 1850 or later, not after `scheduled_at` (or today when absent) |
//!
//! The bounds also keep every indexed column far below Postgres' btree row limit.

use crate::error::DecodeError;
use crate::event::ExamEvent;
use chrono::{Datelike, Utc};

/// Characters that turn an exact match key into a pattern or a list in a C-FIND or QIDO.
pub const MATCH_KEY_FORBIDDEN: [char; 3] = ['*', '?', '\\'];

pub const MAX_EVENT_KEY: usize = 200;
pub const MAX_IDENTIFIER: usize = 64;
/// Identifiers of one patient (PID-3 repetitions, `patient.identifiers`): a real patient
/// has a handful; more is a broken feed, and each one may become a C-FIND.
pub const MAX_IDENTIFIERS: usize = 20;
pub const MAX_NAME: usize = 200;
pub const MAX_CODE_STRING: usize = 16;
pub const MAX_PROCEDURE_CODE: usize = 64;
pub const MAX_PROCEDURE_TEXT: usize = 1024;
pub const SCHEDULED_YEARS: std::ops::RangeInclusive<i32> = 1970..=2199;
pub const FIRST_BIRTH_YEAR: i32 = 1850;

/// Checks a decoded event against the table above.
pub fn validate(event: &ExamEvent) -> Result<(), DecodeError> {
    text("event key", &event.event_key, MAX_EVENT_KEY + 16)?;
    match_key("patient.id", &event.patient.id)?;
    if let Some(issuer) = &event.patient.issuer {
        match_key("patient.issuer", issuer)?;
    }
    let identifiers = &event.patient.identifiers;
    if identifiers.len() > MAX_IDENTIFIERS {
        return Err(DecodeError::bad(
            "patient.identifiers",
            format!("{} identifiers, at most {MAX_IDENTIFIERS} allowed", identifiers.len()),
        ));
    }
    for (i, identifier) in identifiers.iter().enumerate() {
        // Any of them may be sent to an archive as PatientID (`patient_id_issuer`).
        match_key(&format!("patient.identifiers[{i}].id"), &identifier.id)?;
        if let Some(issuer) = &identifier.issuer {
            match_key(&format!("patient.identifiers[{i}].issuer"), issuer)?;
        }
    }
    if let Some(name) = &event.patient.name {
        free_text("patient.name", name, MAX_NAME)?;
    }
    if let Some(accession) = &event.accession_number {
        text("accession_number", accession, MAX_IDENTIFIER)?;
        no_wildcards("accession_number", accession)?;
    }
    if let Some(uid) = &event.study_instance_uid {
        text("study_instance_uid", uid, MAX_IDENTIFIER)?;
    }
    if let Some(modality) = &event.modality {
        text("modality", modality, MAX_CODE_STRING)?;
    }
    if let Some(body_part) = &event.body_part {
        text("body_part", body_part, MAX_CODE_STRING)?;
        no_wildcards("body_part", body_part)?;
    }
    if let Some(procedure) = &event.procedure {
        if let Some(code) = &procedure.code {
            text("procedure.code", code, MAX_PROCEDURE_CODE)?;
        }
        if let Some(t) = &procedure.text {
            free_text("procedure.text", t, MAX_PROCEDURE_TEXT)?;
        }
    }
    dates(event)
}

fn dates(event: &ExamEvent) -> Result<(), DecodeError> {
    if let Some(at) = event.scheduled_at
        && !SCHEDULED_YEARS.contains(&at.year())
    {
        return Err(DecodeError::bad(
            "scheduled_at",
            format!("year {} is outside {}..={}", at.year(), SCHEDULED_YEARS.start(), SCHEDULED_YEARS.end()),
        ));
    }
    if let Some(born) = event.patient.birth_date {
        let latest = event.scheduled_at.map(|t| t.date_naive()).unwrap_or_else(|| Utc::now().date_naive());
        if born.year() < FIRST_BIRTH_YEAR || born > latest {
            // The value itself is PHI: the reason names the rule, not the date.
            return Err(DecodeError::bad(
                "patient.birth_date",
                format!("must be in {FIRST_BIRTH_YEAR} or later and not after the exam"),
            ));
        }
    }
    Ok(())
}

/// An exact-match identifier: present, bounded, printable, no wildcard or list character.
fn match_key(field: &str, value: &str) -> Result<(), DecodeError> {
    if value.is_empty() {
        return Err(DecodeError::missing(field, "identifier"));
    }
    text(field, value, MAX_IDENTIFIER)?;
    no_wildcards(field, value)
}

fn no_wildcards(field: &str, value: &str) -> Result<(), DecodeError> {
    if value.contains(MATCH_KEY_FORBIDDEN) {
        return Err(DecodeError::bad(
            field,
            "contains '*', '?' or '\\' (a query wildcard or value separator): it would match other patients",
        ));
    }
    Ok(())
}

/// Free text (a name, a procedure description) may carry the line breaks and tabs of HL7's
/// `\.br\` escapes; no other control character.
fn free_text(field: &str, value: &str, max: usize) -> Result<(), DecodeError> {
    let layout = |c: char| matches!(c, '\n' | '\r' | '\t');
    text(field, &value.replace(layout, " "), max)
}

/// Bounded in characters, and free of control characters (Postgres refuses NUL in text;
/// CR/LF would split log lines and HL7 segments).
fn text(field: &str, value: &str, max: usize) -> Result<(), DecodeError> {
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(DecodeError::bad(field, format!("contains the control character U+{:04X}", c as u32)));
    }
    let len = value.chars().count();
    if len > max {
        return Err(DecodeError::bad(field, format!("{len} characters, at most {max} allowed")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        assert!(text("f", "ok", 2).is_ok());
        assert!(text("f", "o\u{0}k", 9).unwrap_err().to_string().contains("U+0000"));
        assert!(text("f", "abc", 2).unwrap_err().to_string().contains("3 characters, at most 2"));
        assert!(match_key("patient.id", "SIM-P*").is_err());
        assert!(match_key("patient.id", "A\\B").is_err());
        assert!(match_key("patient.id", "MRN-1^^^HOSP").is_ok());
    }
}
