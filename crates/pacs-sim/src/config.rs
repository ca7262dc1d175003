//! What a simulator serves and how it misbehaves.

use std::path::PathBuf;
use std::time::Duration;

/// Where the archive's content comes from.
#[derive(Debug, Clone)]
pub enum DataSource {
    /// Part-10 files under a folder (recursively), indexed at start.
    Folder(PathBuf),
    /// Generated, deterministic from the seed.
    Synthetic(SyntheticSpec),
    /// Nothing at start: a pure storage destination (answers C-FIND on what it received).
    Empty,
}

/// Synthetic patients and their studies.
#[derive(Debug, Clone)]
pub struct SyntheticSpec {
    pub patients: usize,
    pub seed: u64,
    /// Study dates spread over the 10 years before this day (default: today). Fix it in
    /// tests that predict dates.
    pub now: Option<chrono::NaiveDate>,
    /// Studies per patient, inclusive range.
    pub studies_per_patient: (usize, usize),
    /// Series per study, inclusive range.
    pub series_per_study: (usize, usize),
    pub instances_per_series: usize,
    /// Image size: 16-bit pixels, so rows * columns * 2 bytes of pixel data.
    pub rows: u16,
    pub columns: u16,
    /// IssuerOfPatientID of every patient.
    pub issuer: String,
    /// Keep only studies at most this many days old (a short-term archive); the rest
    /// are generated (same UIDs as in an archive without the limit) but not served.
    pub max_age_days: Option<u32>,
}

impl Default for SyntheticSpec {
    fn default() -> Self {
        SyntheticSpec {
            patients: 10,
            seed: 1,
            now: None,
            studies_per_patient: (2, 6),
            series_per_study: (1, 3),
            instances_per_series: 2,
            rows: 64,
            columns: 64,
            issuer: "SIM".into(),
            max_age_days: None,
        }
    }
}

/// What a C-FIND beyond `MatchCap::limit` matches does (each seen in the field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapBehaviour {
    /// No match at all, final 0xA700 (out of resources).
    Refuse,
    /// The first `limit` matches, then success as if that were all.
    Truncate,
    /// The first `limit` matches, then 0xFE00 without any C-CANCEL (Orthanc's LimitFindResults).
    Cancel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatchCap {
    pub limit: usize,
    pub behaviour: CapBehaviour,
}

/// A-ASSOCIATE-RJ to send (PS3.8 9.3.4: result, source, reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// Permanent, service user, no reason given.
    NoReason,
    /// Permanent, service user: calling AE title not recognized.
    CallingAe,
    /// Permanent, service user: called AE title not recognized.
    CalledAe,
    /// Transient, service provider (ACSE): no reason given ("busy").
    Busy,
    /// Transient, service provider (presentation): temporary congestion.
    Congestion,
    /// Transient, service provider (presentation): local limit exceeded.
    LocalLimit,
}

impl RejectReason {
    /// (result, source, reason) bytes of the A-ASSOCIATE-RJ PDU.
    pub fn wire(self) -> (u8, u8, u8) {
        match self {
            RejectReason::NoReason => (1, 1, 1),
            RejectReason::CallingAe => (1, 1, 3),
            RejectReason::CalledAe => (1, 1, 7),
            RejectReason::Busy => (2, 2, 1),
            RejectReason::Congestion => (2, 3, 1),
            RejectReason::LocalLimit => (2, 3, 2),
        }
    }

    pub fn parse(text: &str) -> Result<RejectReason, String> {
        Ok(match text.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "no-reason" | "permanent" => RejectReason::NoReason,
            "calling-ae" => RejectReason::CallingAe,
            "called-ae" => RejectReason::CalledAe,
            "busy" | "transient" => RejectReason::Busy,
            "congestion" => RejectReason::Congestion,
            "local-limit" => RejectReason::LocalLimit,
            other => {
                return Err(format!(
                    "unknown reject reason '{other}': use no-reason, calling-ae, called-ae, busy, congestion or local-limit"
                ));
            }
        })
    }
}

/// Misbehaviour to inject. The default is a well-behaved archive.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    pub match_cap: Option<MatchCap>,
    /// Reject every association with this reason.
    pub reject: Option<RejectReason>,
    /// The host is away (an outage): every connection is closed at once, unanswered.
    pub unreachable: bool,
    /// Associations served at once; more are rejected (transient, local limit exceeded).
    pub max_associations: Option<u32>,
    /// Sleep before every response (C-FIND matches, retrieve progress, final responses).
    pub response_delay: Option<Duration>,
    /// C-FIND responses sleep this instead of `response_delay` (an archive whose database
    /// answers at once while its images come slowly off a long-term store).
    pub query_delay: Option<Duration>,
    /// A-ABORT the association after this many sub-operations of one C-MOVE/C-GET.
    pub abort_after_suboperations: Option<u32>,
    /// After this many sub-operations of one C-MOVE/C-GET, send nothing more but a pending
    /// response with the same counts every 500 ms until the retrieve is cancelled: an
    /// archive stuck while its association stays alive.
    pub stall_after_suboperations: Option<u32>,
    /// Share of sub-operations that fail (deterministic per instance from the seed); the
    /// final response is 0xB000 with the Failed SOP Instance UID List.
    pub failed_suboperation_ratio: f64,
    /// C-MOVE/C-GET answer success with 0 completed and send nothing.
    pub empty_success: bool,
    /// C-MOVE/C-GET answer 0xA702 (out of resources, unable to perform sub-operations).
    pub out_of_resources: bool,
    /// C-MOVE/C-GET at IMAGE level answer 0xC000 (unable to process) and send nothing:
    /// an archive that retrieves whole studies and series only.
    pub refuse_image_level: bool,
    /// Retrieve faults apply only to the first N retrieve attempts of each study, so
    /// retries recover. `None`: always.
    pub faults_first_attempts: Option<u32>,
    /// DICOMweb: the first `times` requests answer `status` (429 or 503) with
    /// `Retry-After: retry_after_secs`.
    pub web_busy: Option<WebBusy>,
    /// DICOMweb: the first WADO-RS body of each study is cut after this many complete
    /// parts (and half of the next).
    pub web_cut_after_parts: Option<usize>,
    /// STOW-RS: every n-th instance offered is refused (0xA700 in a 202's
    /// FailedSOPSequence) if it is its first offer; offered again, it is stored.
    pub stow_refuse_every: Option<usize>,
}

impl Faults {
    /// The faults a C-FIND sees: `query_delay`, when set, in place of `response_delay`.
    pub fn for_queries(mut self) -> Faults {
        if self.query_delay.is_some() {
            self.response_delay = self.query_delay;
        }
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebBusy {
    pub status: u16,
    pub retry_after_secs: u64,
    pub times: u32,
}

/// Pattern matching of text keys differs between archives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CaseMatching {
    /// Exact case everywhere (DICOM's rule; dcmqrscp).
    #[default]
    Sensitive,
    /// Person names ignore case (Orthanc's default `CaseSensitivePN: false`).
    PersonNamesInsensitive,
    /// Every text key ignores case.
    Insensitive,
}

#[derive(Debug, Clone)]
pub struct Destination {
    pub ae: String,
    pub host: String,
    pub port: u16,
}

/// Everything [`crate::Sim::start`] needs.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub ae_title: String,
    pub data: DataSource,
    /// Move destinations: AE -> host:port. Unknown AE -> 0xA801.
    pub destinations: Vec<Destination>,
    pub faults: Faults,
    pub case_matching: CaseMatching,
    /// Seed of fault decisions (failed sub-operations); synthetic data uses its own.
    pub seed: u64,
    pub max_pdu: u32,
    /// Longest silence inside an association.
    pub idle_timeout: Duration,
    /// C-STOREs sent before waiting for their responses (C-GET and C-MOVE sub-operations).
    pub store_window: usize,
    /// Fault: every C-FIND with a PatientID key also answers one study of another patient
    /// that matches the other keys (an archive ignoring the PatientID, or matching it
    /// loosely), so a caller must check each match against its query.
    pub foreign_matches: bool,
    /// DICOMweb: HTTP basic credentials every request must carry (`None`: open).
    pub web_user: Option<(String, String)>,
    /// DICOM TLS on the DIMSE port (every association); None: plain TCP.
    pub tls: Option<priorfetch_tls::ServerTls>,
}

impl SimConfig {
    pub fn new(ae_title: &str, data: DataSource) -> SimConfig {
        SimConfig {
            ae_title: ae_title.to_string(),
            data,
            destinations: Vec::new(),
            faults: Faults::default(),
            case_matching: CaseMatching::default(),
            seed: 1,
            max_pdu: 1 << 20,
            idle_timeout: Duration::from_secs(60),
            store_window: 8,
            foreign_matches: false,
            web_user: None,
            tls: None,
        }
    }

    pub fn with_destination(mut self, ae: &str, host: &str, port: u16) -> SimConfig {
        self.destinations.retain(|d| d.ae != ae);
        self.destinations.push(Destination { ae: ae.to_string(), host: host.to_string(), port });
        self
    }

    pub fn with_faults(mut self, faults: Faults) -> SimConfig {
        self.faults = faults;
        self
    }

    pub fn with_foreign_matches(mut self, on: bool) -> SimConfig {
        self.foreign_matches = on;
        self
    }

    pub fn with_case_matching(mut self, case: CaseMatching) -> SimConfig {
        self.case_matching = case;
        self
    }
}
