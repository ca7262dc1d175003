//! What the doctor reports: one finding per check (sometimes several), each with the fix.

use serde::Serialize;
use std::fmt;

/// The checks, in the order they run. A failing check skips the later ones that it makes
/// meaningless (no association: no C-FIND), and says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Check {
    /// DNS resolution and TCP connect.
    Reach,
    /// A-ASSOCIATE: accepted, rejected (decoded), aborted, or never answered.
    Association,
    /// Which presentation contexts the peer accepted, against what the config needs.
    Contexts,
    Echo,
    /// Whether our AE may query, and at which levels.
    Query,
    /// The archive's match cap, measured with a broad C-FIND.
    MatchCap,
    /// Whether the archive knows `move_destination` (and reaches it, with the move probe).
    MoveDestination,
    /// For `retrieve = "get"`: one instance fetched by C-GET (and discarded).
    Get,
    /// Wildcard and case behaviour of PatientID / PatientName matching (informational).
    Matching,
}

impl Check {
    pub fn as_str(self) -> &'static str {
        match self {
            Check::Reach => "reach",
            Check::Association => "association",
            Check::Contexts => "contexts",
            Check::Echo => "echo",
            Check::Query => "query",
            Check::MatchCap => "match-cap",
            Check::MoveDestination => "move-destination",
            Check::Get => "get",
            Check::Matching => "matching",
        }
    }

    pub const ALL: [Check; 9] = [
        Check::Reach,
        Check::Association,
        Check::Contexts,
        Check::Echo,
        Check::Query,
        Check::MatchCap,
        Check::MoveDestination,
        Check::Get,
        Check::Matching,
    ];
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Ok,
    Warn,
    Fail,
    /// Not run: an earlier failure makes it meaningless, or it does not apply.
    Skip,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Ok => "OK",
            Severity::Warn => "WARN",
            Severity::Fail => "FAIL",
            Severity::Skip => "SKIP",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One finding. Messages never carry patient data (names, IDs, birth dates) nor UIDs:
/// they are printed and logged at info/warn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The archive name (or `destination`, or `AET@host:port` for an ad-hoc peer).
    pub target: String,
    pub check: Check,
    pub severity: Severity,
    pub message: String,
    /// What to change, naming the config key when there is one.
    pub fix: Option<String>,
}

impl fmt::Display for Finding {
    /// `archive  check  OK|WARN|FAIL|SKIP  message — fix: ...`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<14} {:<16} {:<4} {}", self.target, self.check.as_str(), self.severity.as_str(), self.message)?;
        if let Some(fix) = &self.fix {
            write!(f, " — fix: {fix}")?;
        }
        Ok(())
    }
}

/// True when any finding failed (the CLI then exits 1).
pub fn any_failed(findings: &[Finding]) -> bool {
    findings.iter().any(|f| f.severity == Severity::Fail)
}

/// Collects findings and logs each as one structured line (warn! for failures).
pub(crate) struct Report {
    target: String,
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn new(target: &str) -> Report {
        Report { target: target.to_string(), findings: Vec::new() }
    }

    pub fn push(&mut self, check: Check, severity: Severity, message: impl Into<String>, fix: Option<String>) {
        let finding = Finding { target: self.target.clone(), check, severity, message: message.into(), fix };
        let fix = finding.fix.as_deref().unwrap_or("");
        match severity {
            Severity::Fail => {
                tracing::warn!(archive = %finding.target, check = %check, severity = "fail", fix, "{}", finding.message)
            }
            Severity::Warn => {
                tracing::warn!(archive = %finding.target, check = %check, severity = "warn", fix, "{}", finding.message)
            }
            Severity::Ok | Severity::Skip => {
                tracing::info!(archive = %finding.target, check = %check, severity = severity.as_str(), "{}", finding.message)
            }
        }
        self.findings.push(finding);
    }

    pub fn ok(&mut self, check: Check, message: impl Into<String>) {
        self.push(check, Severity::Ok, message, None);
    }

    pub fn warn(&mut self, check: Check, message: impl Into<String>, fix: impl Into<String>) {
        self.push(check, Severity::Warn, message, Some(fix.into()));
    }

    pub fn fail(&mut self, check: Check, message: impl Into<String>, fix: impl Into<String>) {
        self.push(check, Severity::Fail, message, Some(fix.into()));
    }

    pub fn skip(&mut self, check: Check, why: impl Into<String>) {
        self.push(check, Severity::Skip, why, None);
    }

    /// Marks every check after `after` (that `applies`) as skipped, with the reason.
    pub fn skip_after(&mut self, after: Check, applies: &[Check], why: &str) {
        for check in Check::ALL.into_iter().filter(|c| *c > after && applies.contains(c)) {
            if !self.findings.iter().any(|f| f.check == check) {
                self.skip(check, why);
            }
        }
    }
}
