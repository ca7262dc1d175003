//! One large study over several associations at once (C-MOVE or C-GET).
//!
//! Over a path with a round trip of a few milliseconds one association waits on every
//! sub-operation; several use the path. The study's instances are listed by one C-FIND
//! (IMAGE level), cut into parts (a small series whole at SERIES level, the rest in
//! IMAGE-level batches of SOP Instance UIDs), and the parts are taken from one queue by
//! up to N associations. A part that fails (association lost, archive cancel, failed
//! sub-operations) goes back to the queue alone: a C-GET asks again only for what did not
//! arrive, a C-MOVE for the part (or for the failures the archive named), and only its
//! final try counts, so the counts stay exact per instance.
//!
//! An archive that refuses the parts (a failure status, or no sub-operation for named
//! instances: it does not do IMAGE level or UID lists) stops the split; the caller falls
//! back to one whole-study request on one association and [`remember_refusal`] keeps
//! that archive unsplit for the life of the process (in memory, not in the database).
//!
//! Used by the mover (`parallel.rs`) and by `priorfetch retrieve --associations N`.

//!
//! Layout: this file plans the parts and judges each try; `run.rs` runs them over the
//! associations.

mod run;

pub use run::{Leg, OnProgress, Split, SplitOutcome, Totals, run};

use dicom_core::{Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use priorfetch_dimse::scu::identifier;
use priorfetch_dimse::{Association, DimseError, QueryModel, RetrieveOutcome};
use std::collections::{BTreeMap, HashSet};
use std::ops::ControlFlow;
use std::sync::{LazyLock, Mutex, MutexGuard};

/// Identifiers name at most this many SOP Instance UIDs (a long UID list in one
/// identifier trips some archives' parsers).
pub const UIDS_PER_REQUEST: usize = 200;
/// Parts per association: small enough that the associations finish together and a
/// retried part is cheap, large enough that the per-request round trip does not matter.
const PARTS_PER_ASSOCIATION: usize = 4;
/// Tries of one part (the first included) before its instances count as failed.
pub const PART_TRIES: u32 = 3;

/// One request of a split retrieve.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub series: String,
    /// The instances it brings (from the study's C-FIND).
    pub sops: Vec<String>,
    /// The whole series at SERIES level, rather than an IMAGE-level UID list.
    pub whole_series: bool,
    /// Tries so far.
    pub tries: u32,
}

impl Part {
    pub fn identifier(&self, study: &str) -> InMemDicomObject {
        let mut keys =
            vec![(tags::STUDY_INSTANCE_UID, VR::UI, study), (tags::SERIES_INSTANCE_UID, VR::UI, &self.series)];
        if self.whole_series {
            return identifier("SERIES", &keys);
        }
        let list = self.sops.join("\\");
        keys.push((tags::SOP_INSTANCE_UID, VR::UI, &list));
        identifier("IMAGE", &keys)
    }

    /// The next try, for `sops` of this part only (IMAGE level).
    fn again(&self, sops: Vec<String>) -> Part {
        let whole_series = self.whole_series && sops.len() == self.sops.len();
        Part { series: self.series.clone(), sops, whole_series, tries: self.tries + 1 }
    }
}

/// (series, SOP instance) of every instance of the study, by one IMAGE-level C-FIND.
pub async fn study_instances(assoc: &mut Association, study: &str) -> Result<Vec<(String, String)>, DimseError> {
    let mut found = Vec::new();
    let query = identifier(
        "IMAGE",
        &[
            (tags::STUDY_INSTANCE_UID, VR::UI, study),
            (tags::SERIES_INSTANCE_UID, VR::UI, ""),
            (tags::SOP_INSTANCE_UID, VR::UI, ""),
        ],
    );
    assoc
        .find(QueryModel::StudyRoot, &query, None, |m| {
            let text = |tag: Tag| {
                m.element(tag).ok().and_then(|e| e.to_str().ok()).map(|s| s.trim_end_matches('\0').trim().to_string())
            };
            if let (Some(series), Some(sop)) = (text(tags::SERIES_INSTANCE_UID), text(tags::SOP_INSTANCE_UID))
                && !series.is_empty()
                && !sop.is_empty()
            {
                found.push((series, sop));
            }
            ControlFlow::Continue(())
        })
        .await?;
    Ok(found)
}

/// The parts of a study for `associations` associations: a series no larger than two
/// batches is one SERIES-level part, a larger one IMAGE-level batches (a single-series
/// study is always cut in batches).
pub fn plan(instances: &[(String, String)], associations: usize) -> Vec<Part> {
    let mut by_series: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut seen = HashSet::new();
    for (series, sop) in instances {
        if seen.insert(sop.as_str()) {
            by_series.entry(series.as_str()).or_default().push(sop.clone());
        }
    }
    let wanted = associations.max(1) * PARTS_PER_ASSOCIATION;
    let batch = seen.len().div_ceil(wanted).clamp(1, UIDS_PER_REQUEST);
    let single = by_series.len() == 1;
    let mut parts = Vec::new();
    for (series, sops) in by_series {
        if !single && sops.len() <= 2 * batch {
            parts.push(Part { series: series.to_string(), sops, whole_series: true, tries: 0 });
            continue;
        }
        for chunk in sops.chunks(batch) {
            parts.push(Part { series: series.to_string(), sops: chunk.to_vec(), whole_series: false, tries: 0 });
        }
    }
    parts
}

/// Archives (by name, or address for the CLI) that refused a split in this process.
static REFUSING: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(Mutex::default);

fn refusing() -> MutexGuard<'static, HashSet<String>> {
    REFUSING.lock().unwrap_or_else(|e| e.into_inner())
}

/// True when `archive` refused a split earlier in this process: retrieve it whole.
pub fn refuses(archive: &str) -> bool {
    refusing().contains(archive)
}

pub fn remember_refusal(archive: &str) {
    refusing().insert(archive.to_string());
}

/// How a try of a part ended.
#[derive(Debug)]
pub(crate) enum PartEnd {
    Done {
        completed: u32,
        warning: u32,
        failed: u32,
        failed_instances: Vec<String>,
    },
    /// Try `next` (keeping `completed`/`warning` of this try); `broken`: the
    /// association is unusable.
    Again {
        next: Part,
        completed: u32,
        warning: u32,
        broken: bool,
        why: String,
    },
    Refused(String),
    Cancelled,
    /// Splitting has nothing to do with it (an unknown move destination): the attempt
    /// fails with this, as a whole-study retrieve would.
    Fatal(DimseError),
}

pub(crate) fn judge(part: &Part, result: Result<RetrieveOutcome, DimseError>, we_cancelled: bool) -> PartEnd {
    let o = match result {
        Ok(o) => o,
        Err(e @ DimseError::Status { status: 0xA801, .. }) => return PartEnd::Fatal(e),
        // a failure status that is not "busy": this archive does not retrieve this way
        Err(DimseError::Status { status, meaning, .. }) if !matches!(status, 0xA700..=0xA7FF | 0xFE00) => {
            let level = if part.whole_series { "SERIES" } else { "IMAGE" };
            return PartEnd::Refused(format!("{level}-level retrieve answered 0x{status:04X} ({meaning})"));
        }
        Err(e) => {
            let broken = !matches!(e, DimseError::Status { .. });
            return PartEnd::Again {
                next: part.again(part.sops.clone()),
                completed: 0,
                warning: 0,
                broken,
                why: e.to_string(),
            };
        }
    };
    let c = o.counts;
    let (completed, warning, failed) = (c.completed as u32, c.warning as u32, c.failed as u32);
    if o.cancelled && we_cancelled {
        return PartEnd::Cancelled;
    }
    if o.cancelled {
        let why = format!("archive cancelled the part (0xFE00) after {completed} instances");
        return PartEnd::Again { next: part.again(part.sops.clone()), completed: 0, warning: 0, broken: false, why };
    }
    let total = completed + warning + failed;
    if total == 0 || (!part.whole_series && (total as usize) < part.sops.len()) {
        return PartEnd::Refused(format!(
            "{total} sub-operations for {} named instances (status 0x{:04X}): the archive does not honour {} retrieves",
            part.sops.len(),
            o.status,
            if part.whole_series { "SERIES-level" } else { "IMAGE-level UID-list" }
        ));
    }
    if failed == 0 {
        return PartEnd::Done { completed, warning, failed: 0, failed_instances: Vec::new() };
    }
    let why = format!("{failed} sub-operations failed (status 0x{:04X})", o.status);
    let named: Vec<String> = o.failed_instances.iter().filter(|u| part.sops.contains(u)).cloned().collect();
    if named.len() == failed as usize {
        // only the failures again; what arrived counts now
        return PartEnd::Again { next: part.again(named), completed, warning, broken: false, why };
    }
    // unnamed: the whole part again (for a C-MOVE its retry counts every instance)
    PartEnd::Again { next: part.again(part.sops.clone()), completed: 0, warning: 0, broken: false, why }
}

#[cfg(test)]
mod tests {
    use super::*;
    use priorfetch_dimse::SubOperations;

    fn instances(series: usize, each: usize) -> Vec<(String, String)> {
        (0..series).flat_map(|s| (0..each).map(move |i| (format!("1.{s}"), format!("1.{s}.{i}")))).collect()
    }

    #[test]
    fn a_single_series_is_cut_into_image_level_batches() {
        let parts = plan(&instances(1, 400), 4);
        assert_eq!(parts.len(), 16);
        assert!(parts.iter().all(|p| !p.whole_series && p.sops.len() == 25));
        let all: HashSet<&String> = parts.iter().flat_map(|p| &p.sops).collect();
        assert_eq!(all.len(), 400, "every instance in exactly one part");
        let id = parts[0].identifier("1");
        let level = id.element(tags::QUERY_RETRIEVE_LEVEL).unwrap().to_str().unwrap();
        assert_eq!(level.trim(), "IMAGE");
    }

    #[test]
    fn small_series_stay_whole_and_large_ones_are_cut() {
        let mut list = instances(5, 10);
        list.extend((0..300).map(|i| ("9".to_string(), format!("9.{i}"))));
        let parts = plan(&list, 4);
        let whole: Vec<_> = parts.iter().filter(|p| p.whole_series).collect();
        assert_eq!(whole.len(), 5, "{parts:?}");
        assert_eq!(parts.iter().map(|p| p.sops.len()).sum::<usize>(), 350);
        assert!(parts.iter().all(|p| p.sops.len() <= UIDS_PER_REQUEST));
    }

    fn outcome(completed: u16, failed: u16, failed_instances: Vec<String>) -> RetrieveOutcome {
        RetrieveOutcome {
            status: if failed > 0 { 0xB000 } else { 0 },
            counts: SubOperations { remaining: Some(0), completed, failed, warning: 0 },
            failed_instances,
            cancelled: false,
            elapsed: std::time::Duration::ZERO,
        }
    }

    #[test]
    fn named_failures_are_retried_alone_and_what_arrived_counts() {
        let part =
            Part { series: "1".into(), sops: vec!["a".into(), "b".into(), "c".into()], whole_series: false, tries: 1 };
        let PartEnd::Again { next, completed, .. } = judge(&part, Ok(outcome(2, 1, vec!["b".into()])), false) else {
            panic!("not again")
        };
        assert_eq!((next.sops, next.tries, completed), (vec!["b".to_string()], 2, 2));
        // unnamed: the whole part, and this try's completions do not count
        let PartEnd::Again { next, completed, .. } = judge(&part, Ok(outcome(2, 1, vec![])), false) else {
            panic!("not again")
        };
        assert_eq!((next.sops.len(), completed), (3, 0));
    }

    #[test]
    fn nothing_sent_for_named_instances_or_a_failure_status_is_a_refusal() {
        let part = Part { series: "1".into(), sops: vec!["a".into(), "b".into()], whole_series: false, tries: 0 };
        assert!(matches!(judge(&part, Ok(outcome(0, 0, vec![])), false), PartEnd::Refused(_)));
        assert!(matches!(judge(&part, Ok(outcome(1, 0, vec![])), false), PartEnd::Refused(_)), "list not honoured");
        let refused = DimseError::Status {
            operation: "C-GET",
            status: 0xA900,
            meaning: "identifier does not match SOP class",
            comment: String::new(),
            move_destination: None,
            peer: "p".into(),
        };
        assert!(matches!(judge(&part, Err(refused), false), PartEnd::Refused(_)));
        let unknown = DimseError::Status {
            operation: "C-MOVE",
            status: 0xA801,
            meaning: "move destination unknown",
            comment: String::new(),
            move_destination: Some("DEST".into()),
            peer: "p".into(),
        };
        assert!(matches!(judge(&part, Err(unknown), false), PartEnd::Fatal(_)), "not the split's fault");
        let lost = DimseError::Aborted { peer: "p".into(), during: String::new() };
        assert!(matches!(judge(&part, Err(lost), false), PartEnd::Again { broken: true, .. }));
    }
}
