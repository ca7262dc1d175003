//! Generated archives, deterministic from a seed: patients `SIM-P0001`..., each with
//! several studies over the 10 years before `now` (CT/MR/CR/DX/US, body parts, 1-3
//! series), and instances whose data sets (real 16-bit pixel data) are encoded on request
//! straight into the transfer syntax the peer accepted.

use crate::config::SyntheticSpec;
use crate::index::{Attrs, INSTANCE_KEYS, Index, Instance, Source, Study, StudySummary, pick, tags::*};
use dicom_core::Tag;

const MODALITIES: &[&str] = &["CT", "MR", "CR", "DX", "US"];
const BODY_PARTS: &[&str] = &["CHEST", "ABDOMEN", "HEAD", "KNEE", "PELVIS", "SPINE", "SHOULDER"];
/// Our UID root for generated studies (2.25 needs a UUID; this is a private-looking root
/// also used by the test kit).
const UID_ROOT: &str = "1.2.826.0.1.3680043.10.543.77";

pub fn sop_class_for(modality: &str) -> &'static str {
    match modality {
        "CT" => "1.2.840.10008.5.1.4.1.1.2",
        "MR" => "1.2.840.10008.5.1.4.1.1.4",
        "CR" => "1.2.840.10008.5.1.4.1.1.1",
        "DX" => "1.2.840.10008.5.1.4.1.1.1.1",
        _ => "1.2.840.10008.5.1.4.1.1.6.1",
    }
}

/// SplitMix64 over a combination of inputs: stable across platforms and versions.
pub fn mix(values: &[u64]) -> u64 {
    let mut z: u64 = 0x9E37_79B9_7F4A_7C15;
    for v in values {
        z = z.wrapping_add(*v).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
    }
    z
}

fn in_range(r: u64, (lo, hi): (usize, usize)) -> usize {
    let hi = hi.max(lo);
    lo + (r % (hi - lo + 1) as u64) as usize
}

impl SyntheticSpec {
    fn today(&self) -> chrono::NaiveDate {
        self.now.unwrap_or_else(|| chrono::Utc::now().date_naive())
    }

    pub fn patient_id(p: usize) -> String {
        format!("SIM-P{:04}", p + 1)
    }

    pub fn patient_ids(&self) -> Vec<String> {
        (0..self.patients).map(Self::patient_id).collect()
    }

    fn patient_attrs(&self, p: usize) -> Attrs {
        let r = mix(&[self.seed, p as u64, 1]);
        let birth = format!("{}{:02}{:02}", 1935 + r % 70, 1 + (r >> 8) % 12, 1 + (r >> 16) % 28);
        Attrs::from([
            (PATIENT_ID, Self::patient_id(p)),
            (PATIENT_NAME, format!("SIM^PATIENT{:04}", p + 1)),
            (ISSUER_OF_PATIENT_ID, self.issuer.clone()),
            (PATIENT_BIRTH_DATE, birth),
            (PATIENT_SEX, if r >> 24 & 1 == 0 { "F".into() } else { "M".into() }),
        ])
    }

    fn study_count(&self, p: usize) -> usize {
        in_range(mix(&[self.seed, p as u64, 2]), self.studies_per_patient)
    }

    /// (study attrs including the patient's, series attrs).
    fn study(&self, p: usize, s: usize) -> (Attrs, Vec<Attrs>) {
        let r = mix(&[self.seed, p as u64, 3, s as u64]);
        let modality = MODALITIES[(r % MODALITIES.len() as u64) as usize];
        let body_part = BODY_PARTS[((r >> 8) % BODY_PARTS.len() as u64) as usize];
        let date = self.today() - chrono::Duration::days(((r >> 16) % 3650) as i64);
        let time = format!("{:02}{:02}{:02}", 7 + (r >> 32) % 12, (r >> 40) % 60, (r >> 48) % 60);
        let uid = format!("{UID_ROOT}.{}.{}.{}", self.seed, p + 1, s + 1);
        let mut attrs = self.patient_attrs(p);
        attrs.extend([
            (STUDY_INSTANCE_UID, uid.clone()),
            (STUDY_DATE, date.format("%Y%m%d").to_string()),
            (STUDY_TIME, time),
            (ACCESSION_NUMBER, format!("A{:05}{:03}{:02}", self.seed % 100_000, p + 1, s + 1)),
            (STUDY_DESCRIPTION, format!("{modality} {body_part}")),
            (STUDY_ID, format!("{}", s + 1)),
            (REFERRING_PHYSICIAN, "SIM^REFERRER".into()),
        ]);
        let series_count = in_range(r >> 56, self.series_per_study);
        let series = (0..series_count)
            .map(|k| {
                Attrs::from([
                    (SERIES_INSTANCE_UID, format!("{uid}.{}", k + 1)),
                    (MODALITY, modality.to_string()),
                    (BODY_PART, body_part.to_string()),
                    (SERIES_NUMBER, format!("{}", k + 1)),
                    (SERIES_DESCRIPTION, format!("{modality} {body_part} SERIES {}", k + 1)),
                ])
            })
            .collect();
        (attrs, series)
    }

    /// Whether a study is young enough for `max_age_days`.
    fn keeps(&self, attrs: &Attrs) -> bool {
        let Some(days) = self.max_age_days else { return true };
        let oldest = (self.today() - chrono::Duration::days(days as i64)).format("%Y%m%d").to_string();
        attrs.get(&STUDY_DATE).is_some_and(|d| *d >= oldest)
    }

    /// Every study, without generating instances: what tests predict priors from.
    pub fn studies(&self) -> Vec<StudySummary> {
        self.build_index().studies.iter().map(Study::summary).collect()
    }

    pub fn studies_for(&self, patient_id: &str) -> Vec<StudySummary> {
        self.studies().into_iter().filter(|s| s.patient_id == patient_id).collect()
    }

    pub fn build_index(&self) -> Index {
        let mut index = Index::default();
        for p in 0..self.patients {
            for s in 0..self.study_count(p) {
                let (attrs, series) = self.study(p, s);
                if !self.keeps(&attrs) {
                    continue;
                }
                let mut study = Study { attrs, series: Vec::new() };
                for series_attrs in series {
                    let modality = series_attrs.get(&MODALITY).cloned().unwrap_or_default();
                    let series_uid = series_attrs.get(&SERIES_INSTANCE_UID).cloned().unwrap_or_default();
                    let instances = (0..self.instances_per_series)
                        .map(|i| {
                            let sop_instance_uid = format!("{series_uid}.{}", i + 1);
                            let class = sop_class_for(&modality);
                            let attrs = Attrs::from([
                                (SOP_CLASS_UID, class.to_string()),
                                (SOP_INSTANCE_UID, sop_instance_uid.clone()),
                                (INSTANCE_NUMBER, format!("{}", i + 1)),
                            ]);
                            std::sync::Arc::new(Instance {
                                attrs: pick(&attrs, INSTANCE_KEYS.iter()),
                                sop_class_uid: class.to_string(),
                                sop_instance_uid,
                                source: Source::Synthetic,
                            })
                        })
                        .collect();
                    study.series.push(crate::index::Series { attrs: series_attrs, instances });
                }
                index.push_study(study);
            }
        }
        index
    }

    /// The data set of one generated instance, in Explicit (or Implicit) VR Little Endian.
    pub fn encode_instance(
        &self,
        study_attrs: &Attrs,
        series_attrs: &Attrs,
        instance: &Instance,
        explicit: bool,
    ) -> Vec<u8> {
        let pixels = self.rows as usize * self.columns as usize * 2;
        let mut w = Writer { out: Vec::with_capacity(pixels + 2048), explicit };
        let s = study_attrs;
        let series_attrs = Some(series_attrs);
        fn get(a: Option<&Attrs>, t: Tag) -> &str {
            a.and_then(|a| a.get(&t)).map(String::as_str).unwrap_or("")
        }
        w.text(SPECIFIC_CHARACTER_SET, *b"CS", "ISO_IR 100");
        w.text(SOP_CLASS_UID, *b"UI", &instance.sop_class_uid);
        w.text(SOP_INSTANCE_UID, *b"UI", &instance.sop_instance_uid);
        w.text(STUDY_DATE, *b"DA", get(Some(s), STUDY_DATE));
        w.text(STUDY_TIME, *b"TM", get(Some(s), STUDY_TIME));
        w.text(ACCESSION_NUMBER, *b"SH", get(Some(s), ACCESSION_NUMBER));
        w.text(MODALITY, *b"CS", get(series_attrs, MODALITY));
        w.text(REFERRING_PHYSICIAN, *b"PN", get(Some(s), REFERRING_PHYSICIAN));
        w.text(STUDY_DESCRIPTION, *b"LO", get(Some(s), STUDY_DESCRIPTION));
        w.text(SERIES_DESCRIPTION, *b"LO", get(series_attrs, SERIES_DESCRIPTION));
        w.text(PATIENT_NAME, *b"PN", get(Some(s), PATIENT_NAME));
        w.text(PATIENT_ID, *b"LO", get(Some(s), PATIENT_ID));
        w.text(ISSUER_OF_PATIENT_ID, *b"LO", get(Some(s), ISSUER_OF_PATIENT_ID));
        w.text(PATIENT_BIRTH_DATE, *b"DA", get(Some(s), PATIENT_BIRTH_DATE));
        w.text(PATIENT_SEX, *b"CS", get(Some(s), PATIENT_SEX));
        w.text(BODY_PART, *b"CS", get(series_attrs, BODY_PART));
        w.text(STUDY_INSTANCE_UID, *b"UI", get(Some(s), STUDY_INSTANCE_UID));
        w.text(SERIES_INSTANCE_UID, *b"UI", get(series_attrs, SERIES_INSTANCE_UID));
        w.text(STUDY_ID, *b"SH", get(Some(s), STUDY_ID));
        w.text(SERIES_NUMBER, *b"IS", get(series_attrs, SERIES_NUMBER));
        w.text(INSTANCE_NUMBER, *b"IS", instance.attrs.get(&INSTANCE_NUMBER).map(String::as_str).unwrap_or("1"));
        w.us(Tag(0x0028, 0x0002), 1);
        w.text(Tag(0x0028, 0x0004), *b"CS", "MONOCHROME2");
        w.us(Tag(0x0028, 0x0010), self.rows);
        w.us(Tag(0x0028, 0x0011), self.columns);
        w.us(Tag(0x0028, 0x0100), 16);
        w.us(Tag(0x0028, 0x0101), 12);
        w.us(Tag(0x0028, 0x0102), 11);
        w.us(Tag(0x0028, 0x0103), 0);
        w.header(Tag(0x7FE0, 0x0010), *b"OW", pixels as u32);
        // 12-bit noise from a per-instance generator, four pixels per step, for the first
        // 8 KiB; the rest tiles that block (memcpy speed: generating 0.5 MB of noise per
        // instance made the generator, not the network, the limit)
        let mut state = mix(&[self.seed, instance.sop_instance_uid.len() as u64, fnv(&instance.sop_instance_uid)]);
        let start = w.out.len();
        w.out.resize(start + pixels, 0);
        let block = pixels.min(8192);
        for chunk in w.out[start..start + block].chunks_mut(8) {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let v = (state >> 4) & 0x0FFF_0FFF_0FFF_0FFF;
            let bytes = v.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        let mut filled = block;
        while filled < pixels {
            let n = filled.min(pixels - filled);
            w.out.copy_within(start..start + n, start + filled);
            filled += n;
        }
        w.out
    }
}

fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

/// A minimal data set writer for Little Endian (elements must come in tag order).
struct Writer {
    out: Vec<u8>,
    explicit: bool,
}

impl Writer {
    fn header(&mut self, tag: Tag, vr: [u8; 2], length: u32) {
        self.out.extend_from_slice(&tag.0.to_le_bytes());
        self.out.extend_from_slice(&tag.1.to_le_bytes());
        if !self.explicit {
            self.out.extend_from_slice(&length.to_le_bytes());
        } else if matches!(&vr, b"OB" | b"OW" | b"SQ" | b"UN" | b"UT") {
            self.out.extend_from_slice(&vr);
            self.out.extend_from_slice(&[0, 0]);
            self.out.extend_from_slice(&length.to_le_bytes());
        } else {
            self.out.extend_from_slice(&vr);
            self.out.extend_from_slice(&(length as u16).to_le_bytes());
        }
    }

    fn text(&mut self, tag: Tag, vr: [u8; 2], value: &str) {
        let mut bytes = value.as_bytes().to_vec();
        bytes.truncate(1024);
        if bytes.len() % 2 == 1 {
            bytes.push(if &vr == b"UI" { 0 } else { b' ' });
        }
        self.header(tag, vr, bytes.len() as u32);
        self.out.extend_from_slice(&bytes);
    }

    fn us(&mut self, tag: Tag, value: u16) {
        self.header(tag, *b"US", 2);
        self.out.extend_from_slice(&value.to_le_bytes());
    }
}
