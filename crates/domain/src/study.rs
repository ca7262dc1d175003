//! A study as one archive reported it in a STUDY-level C-FIND.

use chrono::NaiveDate;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StudyMatch {
    /// The configured archive name.
    pub archive: String,
    /// The archive's `priority`: lower wins when a study is on several archives.
    pub archive_priority: i32,
    pub study_instance_uid: String,
    /// StudyDate as sent (DA), kept for the explanation even when it does not parse.
    pub study_date_raw: Option<String>,
    pub accession_number: Option<String>,
    /// ModalitiesInStudy, or the series' Modality values; empty when the archive sent none.
    pub modalities: Vec<String>,
    /// BodyPartExamined of the study or its series; empty when unknown.
    pub body_parts: Vec<String>,
    pub description: Option<String>,
    /// NumberOfStudyRelatedInstances; absent on archives that omit it (dcmqrscp).
    pub instances: Option<u32>,
}

impl StudyMatch {
    /// The StudyDate, when it is a valid DA (`YYYYMMDD`).
    pub fn study_date(&self) -> Option<NaiveDate> {
        let raw = self.study_date_raw.as_deref()?.trim();
        NaiveDate::parse_from_str(raw, "%Y%m%d").ok()
    }
}
