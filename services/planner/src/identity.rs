//! Patient identity per archive. A patient known to several archives may be filed under a
//! different ID in each (one per assigning authority). `archives[].patient_id_issuer`
//! names the issuer an archive files patients under; the archive is queried with the
//! exam's identifier of that issuer, and not at all when the exam has none (the plan says
//! why). Without the key, the exam's primary identifier is used, as before.
//!
//! Issuers compare exactly (case included) after trimming DICOM's insignificant spaces:
//! an issuer is a namespace identifier, the wrong-patient guard compares returned issuers
//! the same way, and a near miss must show up as a visible skip rather than as a query in
//! another patient-ID domain.

use crate::Archive;
use crate::query::{self, Findings};
use futures::future::join_all;
use priorfetch_config::ArchiveConfig;
use priorfetch_domain::{DateRange, Exam, Needs, PatientIdentifier};
use priorfetch_events::short_hash;
use std::time::Duration;

/// What the plan does with one archive.
#[derive(Debug, Clone, PartialEq)]
pub enum ArchiveIdentity {
    /// Query it with this identifier; `chosen_by` says how it was picked.
    Query { identifier: PatientIdentifier, chosen_by: String },
    /// Do not query it: why (issuers only, never an ID).
    Skip(String),
}

fn lo(value: &str) -> &str {
    value.trim_matches(|c: char| c == '\0' || c.is_whitespace())
}

/// The identifier `archive` is queried with for `exam`.
pub fn choose(exam: &Exam, archive: &ArchiveConfig) -> ArchiveIdentity {
    let wanted = archive.patient_id_issuer.as_deref().map(lo).filter(|w| !w.is_empty());
    let (identifier, chosen_by) = match wanted {
        None => (exam.primary_identifier(), "primary identifier".to_string()),
        Some(want) => {
            let of_issuer: Vec<&PatientIdentifier> =
                exam.identifiers.iter().filter(|i| i.issuer.as_deref().map(lo) == Some(want)).collect();
            let Some(first) = of_issuer.first() else {
                return ArchiveIdentity::Skip(format!(
                    "no patient identifier of issuer '{want}' (patient_id_issuer); the exam has {}: not queried",
                    issuers(exam)
                ));
            };
            let mut by = format!("patient_id_issuer '{want}'");
            if of_issuer.len() > 1 {
                by.push_str(&format!(" (the first of {} identifiers of this issuer)", of_issuer.len()));
            }
            ((*first).clone(), by)
        }
    };
    // intake refuses such identifiers; rows stored earlier or by other writers may not be
    match identifier.check() {
        Ok(()) => ArchiveIdentity::Query { identifier, chosen_by },
        Err(e) => ArchiveIdentity::Skip(format!("identifier chosen by {chosen_by}: {e}")),
    }
}

/// The issuers of the exam's identifiers, for a skip reason ("none" when unknown).
fn issuers(exam: &Exam) -> String {
    let list: Vec<String> = exam
        .identifiers
        .iter()
        .map(|i| match i.issuer.as_deref().map(lo).filter(|s| !s.is_empty()) {
            Some(issuer) => format!("'{issuer}'"),
            None => "one without issuer".to_string(),
        })
        .collect();
    if list.is_empty() { "no identifiers".into() } else { format!("identifiers of {}", list.join(", ")) }
}

impl ArchiveIdentity {
    /// The plan's record for this archive: the identifier's issuer and hashed ID (PHI is
    /// never stored in the explanation), how it was chosen, and whether the issuer was
    /// sent as IssuerOfPatientID; or why the archive was skipped.
    pub fn to_json(&self, archive: &ArchiveConfig) -> serde_json::Value {
        match self {
            ArchiveIdentity::Query { identifier, chosen_by } => {
                let issuer = identifier.issuer.as_deref().filter(|i| !lo(i).is_empty());
                serde_json::json!({ "patient": {
                    "issuer": issuer,
                    "id_hash": short_hash(&identifier.id),
                    "chosen_by": chosen_by,
                    "issuer_sent": archive.query_issuer && issuer.is_some(),
                } })
            }
            ArchiveIdentity::Skip(why) => serde_json::json!({ "skipped": why }),
        }
    }
}

/// Every archive at once: each with its identity (the exam as that archive knows the
/// patient), SERIES-level queries for attributes the rule needs and a study lacks.
/// Skipped archives get no query and no gap.
pub(crate) async fn find_all(
    archives: &[Archive],
    exam: &Exam,
    window: DateRange,
    needs: Needs,
    timeout: Duration,
) -> Vec<(ArchiveIdentity, Findings)> {
    join_all(archives.iter().map(|archive| async move {
        let identity = choose(exam, &archive.config);
        let finder = match (&identity, &archive.finder) {
            (ArchiveIdentity::Skip(_), _) => return (identity, Findings::default()),
            (_, Err(e)) => return (identity, Findings { gap: Some((e.clone(), false)), ..Default::default() }),
            (_, Ok(finder)) => finder,
        };
        let ArchiveIdentity::Query { identifier, .. } = &identity else { unreachable!("skips returned above") };
        let known = exam.known_as(identifier);
        let mut f = query::find_studies(finder, &archive.config, &known, window, needs, timeout).await;
        if needs.modalities || needs.body_part {
            let mut queries = std::mem::take(&mut f.queries);
            for study in f.studies.iter_mut() {
                let in_window = study.study_date().is_some_and(|d| window.contains(d));
                if in_window
                    && needs.missing_in(study)
                    && let Err(e) = query::enrich(finder, &archive.config.name, study, timeout, &mut queries).await
                {
                    tracing::warn!(archive = %archive.config.name, error = %e, "series-level c-find failed");
                }
            }
            f.queries = queries;
        }
        (identity, f)
    }))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(issuer: Option<&str>) -> ArchiveConfig {
        let text = format!(
            "[[archives]]\nname = 'a'\nae_title = 'A'\nhost = '127.0.0.1'\nport = 104\nmove_destination = 'DEST'\n{}\n",
            issuer.map(|i| format!("patient_id_issuer = '{i}'")).unwrap_or_default()
        );
        let config =
            priorfetch_config::Config::load(priorfetch_config::Sources { overlay: Some(&text), ..Default::default() })
                .expect("config");
        config.archives[0].clone()
    }

    fn exam(ids: &[(&str, Option<&str>)]) -> Exam {
        let identifiers: Vec<PatientIdentifier> =
            ids.iter().map(|(id, issuer)| PatientIdentifier::new(*id, issuer.map(str::to_string))).collect();
        Exam {
            id: 1,
            patient_id: identifiers[0].id.clone(),
            issuer: identifiers[0].issuer.clone(),
            identifiers,
            accession_number: None,
            study_instance_uid: None,
            scheduled_at: None,
            modality: None,
            body_part: None,
            procedure_code: None,
            procedure_text: None,
            priority: priorfetch_domain::ExamPriority::Routine,
        }
    }

    fn used(identity: ArchiveIdentity) -> PatientIdentifier {
        match identity {
            ArchiveIdentity::Query { identifier, .. } => identifier,
            ArchiveIdentity::Skip(why) => panic!("skipped: {why}"),
        }
    }

    #[test]
    fn each_archive_gets_the_identifier_of_its_issuer() {
        let e = exam(&[("N-100", Some("HOSP_N")), ("S-200", Some("HOSP_S")), ("S-201", Some("HOSP_S"))]);
        assert_eq!(used(choose(&e, &archive(None))).id, "N-100", "no key: the primary");
        assert_eq!(used(choose(&e, &archive(Some("HOSP_S")))).id, "S-200");
        let ArchiveIdentity::Query { chosen_by, .. } = choose(&e, &archive(Some(" HOSP_S "))) else { panic!() };
        assert!(chosen_by.contains("first of 2"), "{chosen_by}");
        // exact: another case is another issuer
        let ArchiveIdentity::Skip(why) = choose(&e, &archive(Some("hosp_s"))) else { panic!("case-sensitive") };
        assert!(why.contains("'hosp_s'") && why.contains("'HOSP_N', 'HOSP_S'"), "{why}");
        assert!(!why.contains("N-100") && !why.contains("S-200"), "no identifier in the reason: {why}");
        let ArchiveIdentity::Skip(why) = choose(&exam(&[("X", None)]), &archive(Some("HOSP_E"))) else { panic!() };
        assert!(why.contains("one without issuer"), "{why}");
    }

    #[test]
    fn an_unsafe_identifier_is_not_sent_and_the_record_hashes_ids() {
        let e = exam(&[("N-100", Some("HOSP_N")), ("S*", Some("HOSP_S"))]);
        let ArchiveIdentity::Skip(why) = choose(&e, &archive(Some("HOSP_S"))) else { panic!("wildcard sent") };
        assert!(why.contains("'*'"), "{why}");
        let a = archive(Some("HOSP_N"));
        let record = choose(&e, &a).to_json(&a);
        assert_eq!(record["patient"]["issuer"], "HOSP_N");
        assert_eq!(record["patient"]["id_hash"], short_hash("N-100"));
        assert_eq!(record["patient"]["issuer_sent"], false);
        assert!(!record.to_string().contains("N-100"), "{record}");
    }
}
