//! The in-memory index: studies with their series and instances, the attributes each
//! level answers C-FIND with, and where each instance's bytes come from.

use dicom_core::Tag;
use priorfetch_dimse::Part10;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

pub mod tags {
    use dicom_core::Tag;
    pub const SPECIFIC_CHARACTER_SET: Tag = Tag(0x0008, 0x0005);
    pub const SOP_CLASS_UID: Tag = Tag(0x0008, 0x0016);
    pub const SOP_INSTANCE_UID: Tag = Tag(0x0008, 0x0018);
    pub const STUDY_DATE: Tag = Tag(0x0008, 0x0020);
    pub const STUDY_TIME: Tag = Tag(0x0008, 0x0030);
    pub const ACCESSION_NUMBER: Tag = Tag(0x0008, 0x0050);
    pub const QUERY_RETRIEVE_LEVEL: Tag = Tag(0x0008, 0x0052);
    pub const RETRIEVE_AE_TITLE: Tag = Tag(0x0008, 0x0054);
    pub const MODALITY: Tag = Tag(0x0008, 0x0060);
    pub const MODALITIES_IN_STUDY: Tag = Tag(0x0008, 0x0061);
    pub const SOP_CLASSES_IN_STUDY: Tag = Tag(0x0008, 0x0062);
    pub const REFERRING_PHYSICIAN: Tag = Tag(0x0008, 0x0090);
    pub const STUDY_DESCRIPTION: Tag = Tag(0x0008, 0x1030);
    pub const SERIES_DESCRIPTION: Tag = Tag(0x0008, 0x103E);
    pub const PATIENT_NAME: Tag = Tag(0x0010, 0x0010);
    pub const PATIENT_ID: Tag = Tag(0x0010, 0x0020);
    pub const ISSUER_OF_PATIENT_ID: Tag = Tag(0x0010, 0x0021);
    pub const PATIENT_BIRTH_DATE: Tag = Tag(0x0010, 0x0030);
    pub const PATIENT_SEX: Tag = Tag(0x0010, 0x0040);
    pub const BODY_PART: Tag = Tag(0x0018, 0x0015);
    pub const STUDY_INSTANCE_UID: Tag = Tag(0x0020, 0x000D);
    pub const SERIES_INSTANCE_UID: Tag = Tag(0x0020, 0x000E);
    pub const STUDY_ID: Tag = Tag(0x0020, 0x0010);
    pub const SERIES_NUMBER: Tag = Tag(0x0020, 0x0011);
    pub const INSTANCE_NUMBER: Tag = Tag(0x0020, 0x0013);
    pub const PATIENT_RELATED_STUDIES: Tag = Tag(0x0020, 0x1200);
    pub const PATIENT_RELATED_SERIES: Tag = Tag(0x0020, 0x1202);
    pub const PATIENT_RELATED_INSTANCES: Tag = Tag(0x0020, 0x1204);
    pub const STUDY_RELATED_SERIES: Tag = Tag(0x0020, 0x1206);
    pub const STUDY_RELATED_INSTANCES: Tag = Tag(0x0020, 0x1208);
    pub const SERIES_RELATED_INSTANCES: Tag = Tag(0x0020, 0x1209);
}
use tags::*;

/// Attributes kept per level (values as text, multiple values joined with `\`).
pub const PATIENT_KEYS: &[Tag] = &[PATIENT_NAME, PATIENT_ID, ISSUER_OF_PATIENT_ID, PATIENT_BIRTH_DATE, PATIENT_SEX];
pub const STUDY_KEYS: &[Tag] =
    &[STUDY_DATE, STUDY_TIME, ACCESSION_NUMBER, REFERRING_PHYSICIAN, STUDY_DESCRIPTION, STUDY_INSTANCE_UID, STUDY_ID];
pub const SERIES_KEYS: &[Tag] = &[MODALITY, SERIES_DESCRIPTION, BODY_PART, SERIES_INSTANCE_UID, SERIES_NUMBER];
pub const INSTANCE_KEYS: &[Tag] = &[SOP_CLASS_UID, SOP_INSTANCE_UID, INSTANCE_NUMBER];

pub type Attrs = BTreeMap<Tag, String>;

/// Where an instance's data set comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// Generated on request from the study's and series' attributes.
    Synthetic,
    File(Part10),
    /// Received by the storage SCP: the data set in its transfer syntax.
    Received {
        dataset: Arc<Vec<u8>>,
        transfer_syntax: String,
    },
}

#[derive(Debug)]
pub struct Instance {
    pub attrs: Attrs,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub source: Source,
}

#[derive(Debug, Default)]
pub struct Series {
    pub attrs: Attrs,
    pub instances: Vec<Arc<Instance>>,
}

#[derive(Debug, Default)]
pub struct Study {
    /// Patient and study level attributes.
    pub attrs: Attrs,
    pub series: Vec<Series>,
}

impl Study {
    pub fn uid(&self) -> &str {
        self.attrs.get(&STUDY_INSTANCE_UID).map(String::as_str).unwrap_or("")
    }

    pub fn patient_id(&self) -> &str {
        self.attrs.get(&PATIENT_ID).map(String::as_str).unwrap_or("")
    }

    pub fn instance_count(&self) -> usize {
        self.series.iter().map(|s| s.instances.len()).sum()
    }

    /// Values computed from the series, as archives return them at study level.
    pub fn computed(&self, tag: Tag) -> Option<String> {
        match tag {
            MODALITIES_IN_STUDY => Some(join(self.series.iter().filter_map(|s| s.attrs.get(&MODALITY).cloned()))),
            SOP_CLASSES_IN_STUDY => {
                Some(join(self.series.iter().flat_map(|s| s.instances.iter().map(|i| i.sop_class_uid.clone()))))
            }
            STUDY_RELATED_SERIES => Some(self.series.len().to_string()),
            STUDY_RELATED_INSTANCES => Some(self.instance_count().to_string()),
            _ => None,
        }
    }

    pub fn summary(&self) -> StudySummary {
        let get = |t: Tag| self.attrs.get(&t).cloned().unwrap_or_default();
        let mut modalities: Vec<String> = Vec::new();
        let mut body_parts: Vec<String> = Vec::new();
        for s in &self.series {
            for (tag, list) in [(MODALITY, &mut modalities), (BODY_PART, &mut body_parts)] {
                if let Some(v) = s.attrs.get(&tag)
                    && !v.is_empty()
                    && !list.contains(v)
                {
                    list.push(v.clone());
                }
            }
        }
        StudySummary {
            patient_id: get(PATIENT_ID),
            issuer: get(ISSUER_OF_PATIENT_ID),
            study_instance_uid: get(STUDY_INSTANCE_UID),
            study_date: get(STUDY_DATE),
            modalities,
            body_part: body_parts.first().cloned().unwrap_or_default(),
            description: get(STUDY_DESCRIPTION),
            accession: get(ACCESSION_NUMBER),
            instances: self.instance_count(),
            series: self.series.len(),
        }
    }
}

fn join(values: impl Iterator<Item = String>) -> String {
    let set: BTreeSet<String> = values.filter(|v| !v.is_empty()).collect();
    set.into_iter().collect::<Vec<_>>().join("\\")
}

/// A study as tests and callers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StudySummary {
    pub patient_id: String,
    pub issuer: String,
    pub study_instance_uid: String,
    /// YYYYMMDD
    pub study_date: String,
    pub modalities: Vec<String>,
    pub body_part: String,
    pub description: String,
    pub accession: String,
    pub instances: usize,
    pub series: usize,
}

/// Studies in insertion order, with a UID lookup.
#[derive(Debug, Default)]
pub struct Index {
    pub studies: Vec<Study>,
    by_uid: HashMap<String, usize>,
}

impl Index {
    pub fn push_study(&mut self, study: Study) {
        self.by_uid.insert(study.uid().to_string(), self.studies.len());
        self.studies.push(study);
    }

    pub fn study(&self, uid: &str) -> Option<&Study> {
        self.by_uid.get(uid).map(|&i| &self.studies[i])
    }

    /// Adds one instance, creating its study and series as needed; a repeated SOP
    /// instance UID replaces the earlier one (as a PACS does).
    pub fn add_instance(&mut self, attrs: &Attrs, instance: Instance) {
        let study_uid = attrs.get(&STUDY_INSTANCE_UID).cloned().unwrap_or_default();
        let index = match self.by_uid.get(&study_uid) {
            Some(&i) => i,
            None => {
                let study_attrs = pick(attrs, PATIENT_KEYS.iter().chain(STUDY_KEYS));
                self.push_study(Study { attrs: study_attrs, series: Vec::new() });
                self.studies.len() - 1
            }
        };
        let study = &mut self.studies[index];
        let series_uid = attrs.get(&SERIES_INSTANCE_UID).cloned().unwrap_or_default();
        let series = match study.series.iter().position(|s| s.attrs.get(&SERIES_INSTANCE_UID) == Some(&series_uid)) {
            Some(p) => &mut study.series[p],
            None => {
                study.series.push(Series { attrs: pick(attrs, SERIES_KEYS.iter()), instances: Vec::new() });
                study.series.last_mut().expect("just pushed")
            }
        };
        series.instances.retain(|i| i.sop_instance_uid != instance.sop_instance_uid);
        series.instances.push(Arc::new(instance));
    }
}

pub fn pick<'a>(attrs: &Attrs, keys: impl Iterator<Item = &'a Tag>) -> Attrs {
    keys.filter_map(|k| attrs.get(k).map(|v| (*k, v.clone()))).collect()
}

/// The text attributes of a parsed data set that the index keeps.
pub fn attrs_of(obj: &dicom_object::InMemDicomObject) -> Attrs {
    let mut attrs = Attrs::new();
    for tag in PATIENT_KEYS.iter().chain(STUDY_KEYS).chain(SERIES_KEYS).chain(INSTANCE_KEYS) {
        if let Ok(Some(e)) = obj.element_opt(*tag)
            && let Ok(v) = e.to_str()
        {
            attrs.insert(*tag, v.trim_matches(|c: char| c == ' ' || c == '\0').to_string());
        }
    }
    attrs
}

/// Indexes every Part-10 file under `dir` (recursively). Unreadable files are skipped
/// and counted.
pub fn index_folder(dir: &std::path::Path) -> std::io::Result<(Index, usize)> {
    let mut index = Index::default();
    let mut skipped = 0usize;
    let mut stack = vec![dir.to_path_buf()];
    let mut files = Vec::new();
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    for path in files {
        let Ok(part10) = Part10::open(&path) else {
            skipped += 1;
            continue;
        };
        let obj = dicom_object::OpenFileOptions::new().read_until(Tag(0x7FE0, 0x0010)).open_file(&path);
        let Ok(obj) = obj else {
            skipped += 1;
            continue;
        };
        let attrs = attrs_of(&obj);
        let instance = Instance {
            attrs: pick(&attrs, INSTANCE_KEYS.iter()),
            sop_class_uid: part10.sop_class_uid.clone(),
            sop_instance_uid: part10.sop_instance_uid.clone(),
            source: Source::File(part10),
        };
        index.add_instance(&attrs, instance);
    }
    Ok((index, skipped))
}
