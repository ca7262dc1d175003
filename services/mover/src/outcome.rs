//! Judging an attempt: pure, so every rule of "never report done when images did not
//! arrive" is a unit test.

use priorfetch_dimse::DimseError;

/// What one attempt produced, in the units the judge needs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Attempt {
    /// Instances this attempt was to bring: the pending list's length on a retry of
    /// named instances, else the study's expected count (unknown for some archives).
    pub expected: Option<u32>,
    /// Instances that arrived at the destination: the archive's completed + warning for
    /// a C-MOVE, the destination's confirmations for a relayed C-GET.
    pub arrived: u32,
    /// Sub-operations that failed (archive leg and, for C-GET, relay leg).
    pub failed: u32,
    /// Final DIMSE status of the retrieve.
    pub status: u16,
    /// The archive's Failed SOP Instance UID List (may be empty even when failed > 0).
    pub failed_instances: Vec<String>,
    /// The archive ended with 0xFE00 although we did not cancel.
    pub cancelled_by_archive: bool,
    /// With `check_existing`: (instances the destination holds for the study, the study's
    /// expected count).
    pub verified: Option<(u32, u32)>,
    /// `move` or `get`.
    pub method: &'static str,
    /// Our destination's AE title, for the diagnosis.
    pub destination: String,
}

/// The decision for the job.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Every expected instance arrived (and the destination confirmed it when asked).
    Completed,
    /// Some or none arrived: retry; only `pending` when the archive named the failures.
    Partial { error: String, pending: Option<Vec<String>> },
    /// Retrying cannot help until someone fixes the configuration.
    Permanent { error: String },
    /// A transient failure: retry the same scope.
    Retry { error: String },
}

pub fn judge(a: &Attempt) -> Verdict {
    if a.cancelled_by_archive {
        return Verdict::Retry {
            error: format!("archive cancelled the retrieve (0xFE00) after {} instances", a.arrived),
        };
    }
    if a.failed > 0 {
        let pending = (!a.failed_instances.is_empty()).then(|| a.failed_instances.clone());
        let scope = if pending.is_some() {
            "retrying the failed instances"
        } else {
            "the archive did not name them: retrying the study"
        };
        return Verdict::Partial {
            error: format!(
                "{} sub-operations failed, {} arrived (status 0x{:04X}); {scope}",
                a.failed, a.arrived, a.status
            ),
            pending,
        };
    }
    if a.arrived == 0 {
        let error = match a.method {
            "move" => format!(
                "archive reported success but the destination received nothing: check that the archive's AE \
                 table maps {} to host:port",
                a.destination
            ),
            _ => "archive reported success but sent no instance over the C-GET association: check that it \
                  holds the study and accepts our storage contexts"
                .to_string(),
        };
        return Verdict::Partial { error, pending: None };
    }
    if let Some(expected) = a.expected
        && a.arrived < expected
    {
        return Verdict::Partial {
            error: format!(
                "archive sent {} of {expected} expected instances (status 0x{:04X}): the study may be incomplete \
                 on the archive or still arriving there",
                a.arrived, a.status
            ),
            pending: None,
        };
    }
    if let Some((found, expected)) = a.verified
        && found < expected
    {
        return Verdict::Partial {
            error: format!(
                "destination {} holds {found} of {expected} instances after the retrieve: check its storage \
                 (disk, rejected SOP classes) and logs",
                a.destination
            ),
            pending: None,
        };
    }
    Verdict::Completed
}

/// A retrieve that ended in an error rather than a final status.
pub fn judge_error(error: &DimseError) -> Verdict {
    let message = format!("{error}; {}", error.hint());
    match error {
        // Rejections are retried even when the reason sounds permanent: AE tables get fixed,
        // and the attempt budget bounds the cost.
        DimseError::Rejected { .. } => Verdict::Retry { error: message },
        DimseError::Status { status: 0xA801, .. } => Verdict::Permanent { error: message },
        e if e.is_retryable() => Verdict::Retry { error: message },
        _ => Verdict::Permanent { error: message },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(expected: Option<u32>, arrived: u32, failed: u32) -> Attempt {
        Attempt { expected, arrived, failed, method: "move", destination: "DEST".into(), ..Default::default() }
    }

    #[test]
    fn complete_only_when_every_expected_instance_arrived() {
        assert_eq!(judge(&attempt(Some(10), 10, 0)), Verdict::Completed);
        assert_eq!(judge(&attempt(None, 3, 0)), Verdict::Completed);
        assert!(matches!(judge(&attempt(Some(10), 9, 0)), Verdict::Partial { pending: None, .. }));
    }

    #[test]
    fn success_with_nothing_sent_names_the_ae_table() {
        let Verdict::Partial { error, pending } = judge(&attempt(Some(10), 0, 0)) else { panic!("not partial") };
        assert!(error.contains("destination received nothing") && error.contains("maps DEST to host:port"), "{error}");
        assert_eq!(pending, None);
        let Verdict::Partial { error, .. } = judge(&attempt(None, 0, 0)) else { panic!("not partial") };
        assert!(error.contains("received nothing"));
    }

    #[test]
    fn failed_instances_are_retried_alone_when_named() {
        let mut a = attempt(Some(10), 7, 3);
        a.failed_instances = vec!["1.2".into(), "1.3".into(), "1.4".into()];
        let Verdict::Partial { pending, .. } = judge(&a) else { panic!("not partial") };
        assert_eq!(pending.unwrap().len(), 3);
        let Verdict::Partial { pending, error } = judge(&attempt(Some(10), 7, 3)) else { panic!("not partial") };
        assert_eq!(pending, None);
        assert!(error.contains("retrying the study"));
    }

    #[test]
    fn verification_mismatch_is_partial() {
        let mut a = attempt(Some(10), 10, 0);
        a.verified = Some((8, 10));
        let Verdict::Partial { error, .. } = judge(&a) else { panic!("not partial") };
        assert!(error.contains("holds 8 of 10"));
        a.verified = Some((10, 10));
        assert_eq!(judge(&a), Verdict::Completed);
    }

    #[test]
    fn unknown_destination_is_permanent_and_rejections_are_retried() {
        let e = DimseError::Status {
            operation: "C-MOVE",
            status: 0xA801,
            meaning: "move destination unknown",
            comment: String::new(),
            move_destination: Some("DEST".into()),
            peer: "ARCH@127.0.0.1:104".into(),
        };
        let Verdict::Permanent { error } = judge_error(&e) else { panic!("not permanent") };
        assert!(error.contains("does not know move destination 'DEST'"), "{error}");
        let r = DimseError::Rejected {
            peer: "p".into(),
            reason: "calling AE title not recognized".into(),
            permanent: true,
            called_ae: "A".into(),
            calling_ae: "B".into(),
        };
        assert!(matches!(judge_error(&r), Verdict::Retry { .. }));
        let busy = DimseError::Status {
            operation: "C-MOVE",
            status: 0xA702,
            meaning: "out of resources",
            comment: String::new(),
            move_destination: None,
            peer: "p".into(),
        };
        assert!(matches!(judge_error(&busy), Verdict::Retry { .. }));
    }

    #[test]
    fn an_archive_cancel_is_retried() {
        let mut a = attempt(Some(10), 4, 0);
        a.cancelled_by_archive = true;
        assert!(matches!(judge(&a), Verdict::Retry { .. }));
    }
}
