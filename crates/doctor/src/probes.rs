//! Checks 5-8, all C-FIND/C-MOVE probes: may our AE query (and at which levels), the
//! archive's match cap, whether it knows the move destination, and how it matches
//! wildcards and case. Patient values read here stay in memory: never printed or logged.

use crate::finding::{Check, Report};
use crate::session::{STUDY_FIND, STUDY_MOVE, Session, calling_ae_fix};
use crate::target::{DoctorContext, Target};
use dicom_core::{Tag, VR};
use dicom_object::InMemDicomObject;
use priorfetch_dimse::{AeTitle, DimseError, QueryModel, identifier};
use std::ops::ControlFlow;

const PATIENT_ID: Tag = Tag(0x0010, 0x0020);
const PATIENT_NAME: Tag = Tag(0x0010, 0x0010);
const STUDY_UID: Tag = Tag(0x0020, 0x000D);
const SERIES_UID: Tag = Tag(0x0020, 0x000E);
const SOP_UID: Tag = Tag(0x0008, 0x0018);
const STUDY_DATE: Tag = Tag(0x0008, 0x0020);
const SOP_CLASS: Tag = Tag(0x0008, 0x0016);

/// Values no archive holds (a PatientID and a UID under our test root).
const NO_SUCH_PATIENT: &str = "PFDOCTOR-NO-SUCH-PATIENT";
const NO_SUCH_STUDY: &str = "1.2.826.0.1.3680043.10.543.999999999.1";
/// An AE no archive knows: how the archive answers it is the baseline "unknown
/// destination" answer.
const NO_SUCH_AE: &str = "PFDOCTOR-NX";

/// One study the archive holds, found by the broad query (PHI: never printed).
#[derive(Debug, Clone, Default)]
pub(crate) struct Sample {
    pub study_uid: String,
    pub patient_id: String,
    pub patient_name: String,
}

fn text(obj: &InMemDicomObject, tag: Tag) -> String {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
        .unwrap_or_default()
}

/// Check 5. False when the archive will not let us query at all (later checks skip).
pub(crate) async fn query(target: &Target, ctx: &DoctorContext, session: &mut Session, report: &mut Report) -> bool {
    if !session.accepted(STUDY_FIND) {
        report.skip(Check::Query, "no Study Root C-FIND context");
        return false;
    }
    let q = identifier(
        "STUDY",
        &[(PATIENT_ID, VR::LO, NO_SUCH_PATIENT), (STUDY_UID, VR::UI, ""), (STUDY_DATE, VR::DA, "")],
    );
    let (count, result) = session.find(QueryModel::StudyRoot, &q, Some(10), |_| ControlFlow::Continue(())).await;
    match result {
        Ok(_) if count == 0 => report.ok(Check::Query, "study-level c-find by PatientID answered (0 matches for an unknown patient)"),
        Ok(_) => report.warn(
            Check::Query,
            format!("study-level c-find for a PatientID nobody has returned {count} studies: the archive ignores the PatientID key"),
            "check the archive's query configuration: priors of other patients would be selected",
        ),
        Err(DimseError::Aborted { .. }) => {
            report.fail(
                Check::Query,
                format!("the archive aborted the association on our first C-FIND: it does not let calling AE '{}' query", ctx.calling_ae),
                calling_ae_fix(target, ctx),
            );
            return false;
        }
        Err(DimseError::Status { status, .. }) => {
            report.fail(
                Check::Query,
                format!("level mismatch: the archive refuses a Study Root STUDY-level C-FIND by PatientID (status 0x{status:04X})"),
                "priorfetch needs Study Root STUDY-level queries by PatientID: enable them for our AE on the archive",
            );
            return false;
        }
        Err(e) => {
            report.fail(Check::Query, format!("study-level c-find failed: {e}"), e.hint());
            return false;
        }
    }
    if matches!(target.role, crate::target::Role::Destination { .. }) {
        return true;
    }
    // Body part needs SERIES level (Orthanc leaves it empty at STUDY level).
    let q = identifier(
        "SERIES",
        &[(STUDY_UID, VR::UI, NO_SUCH_STUDY), (SERIES_UID, VR::UI, ""), (Tag(0x0018, 0x0015), VR::CS, "")],
    );
    let (_, result) = session.find(QueryModel::StudyRoot, &q, Some(10), |_| ControlFlow::Continue(())).await;
    match result {
        Ok(_) => report.ok(Check::Query, "series-level c-find by StudyInstanceUID answered"),
        Err(e) => report.warn(
            Check::Query,
            format!("level mismatch: the archive refuses a SERIES-level C-FIND by StudyInstanceUID: {e}"),
            "rules on body_part need SERIES-level queries: drop body_part from the rules for this archive or enable series-level C-FIND",
        ),
    }
    true
}

/// Check 6: a broad STUDY-level C-FIND, counted, with C-CANCEL after `cap_probe_limit`.
pub(crate) async fn match_cap(
    target: &Target,
    ctx: &DoctorContext,
    max_matches: Option<u32>,
    session: &mut Session,
    report: &mut Report,
) -> Option<Sample> {
    let key = &target.key;
    let limit = ctx.cap_probe_limit.max(1);
    let q = identifier(
        "STUDY",
        &[(PATIENT_ID, VR::LO, "*"), (PATIENT_NAME, VR::PN, ""), (STUDY_UID, VR::UI, ""), (STUDY_DATE, VR::DA, "")],
    );
    let mut sample: Option<Sample> = None;
    let (count, result) = session
        .find(QueryModel::StudyRoot, &q, Some(limit), |m| {
            if sample.is_none() {
                let s = Sample {
                    study_uid: text(m, STUDY_UID),
                    patient_id: text(m, PATIENT_ID),
                    patient_name: text(m, PATIENT_NAME),
                };
                if !s.study_uid.is_empty() && !s.patient_id.is_empty() {
                    sample = Some(s);
                }
            }
            ControlFlow::Continue(())
        })
        .await;
    let configured = max_matches
        .map(|m| format!("{key}.max_matches = {m}"))
        .unwrap_or_else(|| format!("{key}.max_matches is not set"));
    let cap_fix = |n: usize| format!("set {key}.max_matches = {n} (queries are then split to stay below it)");
    match result {
        Ok(outcome) if outcome.truncated => {
            let message = format!("archive caps matches at {count}: it ended a broad C-FIND with 0xFE00 after {count} matches without our C-CANCEL");
            if max_matches.is_some_and(|m| m as usize <= count) {
                report.ok(Check::MatchCap, format!("{message}; {configured} covers it"));
            } else {
                report.fail(Check::MatchCap, format!("{message}; {configured}"), cap_fix(count));
            }
        }
        Ok(outcome) if outcome.cancelled_by_us => {
            report.ok(Check::MatchCap, format!("no cap below {count} matches (we sent C-CANCEL there); {configured}"))
        }
        Ok(_) if count == 0 => report.warn(
            Check::MatchCap,
            "a broad C-FIND (PatientID '*') returned no study: the cap cannot be measured",
            "if the archive holds studies, it refuses wildcard queries: ask for its match limit and set max_matches",
        ),
        Ok(_) if max_matches.is_some_and(|m| m as usize == count) => report.ok(
            Check::MatchCap,
            format!("exactly {count} matches with success: consistent with a silent cap at {configured}"),
        ),
        Ok(_) if count >= 100 && count % 100 == 0 && max_matches.is_none() => report.warn(
            Check::MatchCap,
            format!("exactly {count} matches, a round number, with success: the archive may cap silently"),
            format!("if the archive has a match limit of {count}, {}", cap_fix(count)),
        ),
        Ok(_) => report.ok(Check::MatchCap, format!("{count} matches, complete (no cap seen); {configured}")),
        Err(DimseError::Status { status: status @ 0xA700..=0xA7FF, .. }) if count > 0 => report.fail(
            Check::MatchCap,
            format!("archive caps matches at {count}: it ended a broad C-FIND with 0x{status:04X} (out of resources) after {count} matches; {configured}"),
            cap_fix(count),
        ),
        Err(DimseError::Status { status: status @ 0xA700..=0xA7FF, .. }) if max_matches.is_some() => report.ok(
            Check::MatchCap,
            format!("the archive refuses a broad C-FIND with 0x{status:04X} (too many matches); {configured}"),
        ),
        Err(DimseError::Status { status: status @ 0xA700..=0xA7FF, .. }) => report.warn(
            Check::MatchCap,
            format!("the archive refuses a broad C-FIND with 0x{status:04X} (out of resources: too many matches)"),
            format!("ask the archive's admin for its match limit and set {key}.max_matches to it"),
        ),
        Err(DimseError::Status { status, .. }) => report.warn(
            Check::MatchCap,
            format!("level mismatch: the archive refuses a STUDY-level C-FIND without a specific PatientID (0x{status:04X}); the cap cannot be measured"),
            "none needed: priorfetch always queries by PatientID; set max_matches if the archive has a limit",
        ),
        Err(e) => report.warn(Check::MatchCap, format!("broad c-find failed after {count} matches: {e}"), e.hint()),
    }
    sample
}

/// Check 7, for `retrieve = "move"`.
///
/// Measured (Orthanc 1.10.1, DCMTK dcmqrscp 3.6.7): both look up the matching instances
/// BEFORE the move destination, so a C-MOVE of a study they do not hold says nothing about
/// the destination: Orthanc answers 0xC000 ("matching no resource") and dcmqrscp success
/// with 0 sub-operations, whatever the destination. With a study they hold, an unknown
/// destination gives 0xA801 on dcmqrscp and 0xC000 on Orthanc ("unknown modality"),
/// without moving anything. Archives that check the destination first (0xA801 at once) are
/// caught by the first probe. So: probe 1 moves a study nobody has; probe 2 (opt-in,
/// `move_probe`) moves ONE instance the archive holds to the destination, and compares a
/// 0xC000-range failure with the answer for an AE that surely does not exist.
pub(crate) async fn move_destination(
    target: &Target,
    ctx: &DoctorContext,
    destination: &AeTitle,
    sample: Option<&Sample>,
    session: &mut Session,
    report: &mut Report,
) {
    let key = &target.key;
    let check = Check::MoveDestination;
    if !session.accepted(STUDY_MOVE) {
        report.skip(check, "no Study Root C-MOVE context");
        return;
    }
    let add_fix = format!(
        "add {destination}=host:port of the destination to the archive's AE table (or set {key}.move_destination to the AE it knows for it)"
    );
    let q = identifier("STUDY", &[(STUDY_UID, VR::UI, NO_SUCH_STUDY)]);
    let first = session.move_to(&q, destination).await;
    match &first {
        Err(DimseError::Status { status: 0xA801, .. }) => {
            report.fail(check, format!("the archive does not know move destination '{destination}' (0xA801)"), add_fix);
            return;
        }
        Err(DimseError::Aborted { .. }) => {
            report.fail(
                check,
                "the archive aborted the association on C-MOVE: our AE may not retrieve",
                calling_ae_fix(target, ctx),
            );
            return;
        }
        _ => {}
    }
    let Some(sample) = sample else {
        report.warn(
            check,
            format!("'{destination}' not verified: the archive holds no study to probe with, and it checks the study before the destination"),
            "rerun doctor once the archive holds a study",
        );
        return;
    };
    if !ctx.move_probe {
        report.warn(
            check,
            format!(
                "'{destination}' not verified: a C-MOVE of a study nobody has tells nothing here ({}) because the archive \
                 checks the study before the destination",
                describe(&first)
            ),
            "run `priorfetch doctor --move-probe` to move ONE instance to the destination and verify it",
        );
        return;
    }
    let Some(instance) = one_instance(session, sample).await else {
        report.warn(
            check,
            format!("'{destination}' not verified: no instance found to probe with"),
            "check the archive's series/image-level C-FIND",
        );
        return;
    };
    match session.move_to(&instance, destination).await {
        Ok(o) if o.counts.completed > 0 && o.counts.failed == 0 => {
            report.ok(check, format!("one instance moved to '{destination}': the archive knows it and reached it"))
        }
        Ok(o) if o.counts.failed > 0 || o.status != 0 => report.fail(
            check,
            format!(
                "the archive knows '{destination}' but could not store to it (status 0x{:04X}, {} failed)",
                o.status, o.counts.failed
            ),
            format!("check the host:port the archive's AE table has for {destination}, and that the destination accepts the archive's calling AE"),
        ),
        Ok(_) => report.fail(
            check,
            format!("the archive reported success but moved nothing to '{destination}'"),
            format!("check the host:port the archive's AE table has for {destination}"),
        ),
        Err(DimseError::Status { status: 0xA801, .. }) => {
            report.fail(check, format!("the archive does not know move destination '{destination}' (0xA801)"), add_fix)
        }
        Err(DimseError::Status { status: status @ 0xC000..=0xCFFF, .. }) => {
            let control = AeTitle::parse(NO_SUCH_AE).expect("valid AE title");
            let baseline = session.move_to(&instance, &control).await;
            // Orthanc also answers 0xC000 when it knows the AE but cannot connect to its
            // host:port (measured), so the message names both causes.
            if matches!(baseline, Err(DimseError::Status { status: s, .. }) if s == status) {
                report.fail(
                    check,
                    format!(
                        "the archive does not know move destination '{destination}', or cannot reach the host:port it has for it: \
                         it answers 0x{status:04X}, exactly as for an AE that does not exist (Orthanc answers both cases so)"
                    ),
                    format!("{add_fix}; if it is there, check that host:port and that the destination is up"),
                );
            } else {
                report.fail(
                    check,
                    format!("c-move of one instance to '{destination}' failed with 0x{status:04X} (an unknown AE gives {})", describe(&baseline)),
                    "check the archive's log for this C-MOVE",
                );
            }
        }
        Err(DimseError::Status { status: status @ 0xA700..=0xA7FF, .. }) => report.fail(
            check,
            format!("the archive knows '{destination}' but could not perform the sub-operation (0x{status:04X})"),
            format!(
                "check the host:port the archive's AE table has for {destination}, that the destination is up, \
                 and that it accepts the archive's calling AE"
            ),
        ),
        Err(e) => report.fail(check, format!("c-move of one instance to '{destination}' failed: {e}"), e.hint()),
    }
}

fn describe(result: &Result<priorfetch_dimse::RetrieveOutcome, DimseError>) -> String {
    match result {
        Ok(o) => format!("0x{:04X} with {} completed", o.status, o.counts.completed),
        Err(DimseError::Status { status, .. }) => format!("0x{status:04X}"),
        Err(e) => e.to_string(),
    }
}

/// The identifier of one instance of the sample study (SERIES then IMAGE level).
async fn one_instance(session: &mut Session, sample: &Sample) -> Option<InMemDicomObject> {
    one_instance_and_class(session, sample).await.map(|(q, _)| q)
}

/// [`one_instance`] and the instance's SOP class (empty when the archive omits it).
async fn one_instance_and_class(session: &mut Session, sample: &Sample) -> Option<(InMemDicomObject, String)> {
    let q = identifier("SERIES", &[(STUDY_UID, VR::UI, sample.study_uid.as_str()), (SERIES_UID, VR::UI, "")]);
    let mut series = String::new();
    let _ = session
        .find(QueryModel::StudyRoot, &q, Some(1), |m| {
            series = text(m, SERIES_UID);
            ControlFlow::Break(())
        })
        .await;
    if series.is_empty() {
        return None;
    }
    let q = identifier(
        "IMAGE",
        &[
            (STUDY_UID, VR::UI, sample.study_uid.as_str()),
            (SERIES_UID, VR::UI, series.as_str()),
            (SOP_UID, VR::UI, ""),
            (SOP_CLASS, VR::UI, ""),
        ],
    );
    let (mut sop, mut class) = (String::new(), String::new());
    let _ = session
        .find(QueryModel::StudyRoot, &q, Some(1), |m| {
            sop = text(m, SOP_UID);
            class = text(m, SOP_CLASS);
            ControlFlow::Break(())
        })
        .await;
    (!sop.is_empty()).then(|| {
        let q = identifier(
            "IMAGE",
            &[
                (STUDY_UID, VR::UI, sample.study_uid.as_str()),
                (SERIES_UID, VR::UI, series.as_str()),
                (SOP_UID, VR::UI, sop.as_str()),
            ],
        );
        (q, class)
    })
}

/// Counts what a C-GET delivers and throws the bytes away: the probe stores nothing.
#[derive(Default)]
struct Discard {
    received: usize,
}

impl priorfetch_dimse::StoreSink for Discard {
    fn begin(&mut self, _class: &str, _instance: &str, _ts: &str) -> std::io::Result<Box<dyn std::io::Write + Send>> {
        Ok(Box::new(std::io::sink()))
    }
    fn finish(&mut self, _instance: &str, ok: bool) -> std::io::Result<()> {
        self.received += usize::from(ok);
        Ok(())
    }
}

/// Check 7 for `retrieve = "get"`: C-GET ONE instance the archive holds on an association
/// that proposes its storage class with our SCP role, discarding it. Proves the archive
/// takes the role and sends the sub-operation on our association (no destination involved).
pub(crate) async fn get(target: &Target, sample: Option<&Sample>, session: &mut Session, report: &mut Report) {
    let (check, key) = (Check::Get, &target.key);
    if !session.accepted(crate::session::STUDY_GET) {
        report.skip(check, "no Study Root C-GET context");
        return;
    }
    let Some(sample) = sample else {
        report.warn(
            check,
            "c-get not verified: the archive holds no study to probe with",
            "rerun doctor once the archive holds a study",
        );
        return;
    };
    let Some((instance, class)) = one_instance_and_class(session, sample).await else {
        report.warn(
            check,
            "c-get not verified: no instance found to probe with",
            "check the archive's series/image-level C-FIND",
        );
        return;
    };
    let classes: Vec<&str> =
        if class.is_empty() { priorfetch_dimse::get::COMMON_STORAGE_CLASSES.to_vec() } else { vec![class.as_str()] };
    let contexts = priorfetch_dimse::get::get_contexts(QueryModel::StudyRoot, &classes);
    session.release_current().await;
    let mut assoc = match priorfetch_dimse::Association::connect(&target.peer, session.options(), &contexts).await {
        Ok(a) => a,
        Err(e) => {
            report.fail(check, format!("association for C-GET (with our storage SCP role) failed: {e}"), e.hint());
            return;
        }
    };
    let mut sink = Discard::default();
    let result = assoc.retrieve_get(QueryModel::StudyRoot, &instance, &mut sink, |_| {}, None).await;
    assoc.release().await;
    let move_fix = format!(
        "set {key}.retrieve = \"move\" (with {key}.move_destination) if the archive cannot send C-GET sub-operations"
    );
    match result {
        Ok(o) if sink.received > 0 && o.counts.failed == 0 => {
            report.ok(check, "one instance received by C-GET (discarded): the archive takes our storage SCP role")
        }
        Ok(o) => report.fail(
            check,
            format!(
                "c-get of one instance delivered {} (status 0x{:04X}, {} failed): the archive did not send it on our association",
                sink.received, o.status, o.counts.failed
            ),
            format!("the archive may not support SCP role selection for this storage class; {move_fix}"),
        ),
        Err(e) => report.fail(check, format!("c-get of one instance failed: {e}"), format!("{}; {move_fix}", e.hint())),
    }
}

/// Check 8 (informational): exact, wildcard and case matching on the sample's values.
pub(crate) async fn matching(sample: Option<&Sample>, session: &mut Session, report: &mut Report) {
    let check = Check::Matching;
    let Some(sample) = sample else {
        report.skip(check, "the archive returned no study to test matching with");
        return;
    };
    let mut count = async |key: Tag, vr: VR, value: &str| -> Option<usize> {
        let q = identifier("STUDY", &[(key, vr, value), (STUDY_UID, VR::UI, "")]);
        let (n, result) = session.find(QueryModel::StudyRoot, &q, Some(50), |_| ControlFlow::Continue(())).await;
        result.ok().map(|_| n)
    };
    let id = &sample.patient_id;
    if count(PATIENT_ID, VR::LO, id.as_str()).await.unwrap_or(0) == 0 {
        report.fail(
            check,
            "an exact PatientID query does not find a study the archive just listed",
            "check the archive's PatientID matching (issuer of patient ID, padding): priorfetch queries by exact PatientID",
        );
        return;
    }
    let mut notes = Vec::new();
    let mut wildcards_ok = true;
    let prefix: String = id.chars().take(id.chars().count().saturating_sub(1).max(1)).collect();
    match count(PATIENT_ID, VR::LO, format!("{prefix}*").as_str()).await {
        Some(n) if n > 0 => notes.push("PatientID wildcard '*' works".to_string()),
        _ => {
            wildcards_ok = false;
            notes.push("PatientID wildcard '*' finds nothing".to_string())
        }
    }
    let swapped: String = id
        .chars()
        .map(|c| if c.is_ascii_uppercase() { c.to_ascii_lowercase() } else { c.to_ascii_uppercase() })
        .collect();
    if swapped != *id {
        let n = count(PATIENT_ID, VR::LO, swapped.as_str()).await.unwrap_or(0);
        notes.push(format!("PatientID is case-{}", if n > 0 { "insensitive" } else { "sensitive" }));
    }
    let name = &sample.patient_name;
    if !name.is_empty() {
        let first: String = name.chars().take_while(|c| *c != '^').collect();
        if !first.is_empty() {
            match count(PATIENT_NAME, VR::PN, format!("{first}*").as_str()).await {
                Some(n) if n > 0 => notes.push("PatientName wildcard '*' works".into()),
                _ => {
                    wildcards_ok = false;
                    notes.push("PatientName wildcard '*' finds nothing".into())
                }
            }
        }
        let lower = name.to_lowercase();
        if lower != *name {
            let n = count(PATIENT_NAME, VR::PN, lower.as_str()).await.unwrap_or(0);
            notes.push(format!("PatientName is case-{}", if n > 0 { "insensitive" } else { "sensitive" }));
        }
    }
    let message = notes.join("; ");
    if wildcards_ok {
        report.ok(check, message);
    } else {
        report.warn(
            check,
            message,
            "none needed for prefetch (exact PatientID); ad-hoc `priorfetch find` with wildcards will not work here",
        );
    }
}
