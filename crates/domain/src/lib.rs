//! Pure planning logic of priorfetch: what to fetch for a scheduled exam, from where and
//! when. No I/O: the planner service feeds it C-FIND results and records its decisions.
//!
//! Layout:
//! - `exam.rs`: the scheduled exam as the planner sees it, its priority, its status (and
//!   how job states roll up into it), and the exam as recorded.
//! - `job.rs`: retrieve jobs: method, state, sub-operation counts, the job as queued.
//! - `peer.rs`: AE titles and `AET@host:port` peers, the one validator of both.
//! - `study.rs`: one study as an archive reported it (a candidate prior).
//! - `rule_config.rs`: `[[rules]]` as the config file spells them (`duration.rs`: "30s").
//! - `rules.rs`: compiled `[[rules]]`: first match wins; what each rule selects.
//! - `select.rs`: prior selection and cross-archive dedupe, every candidate with a reason.
//! - `range.rs`: StudyDate ranges for C-FIND, split in halves when an archive caps matches.
//! - `timing.rs`: a job's not_before, deadline and queue priority.

pub mod duration;
pub mod exam;
pub mod job;
pub mod peer;
pub mod range;
pub mod rule_config;
pub mod rules;
pub mod select;
pub mod study;
pub mod timing;

pub use exam::{Exam, ExamPriority, ExamRecord, ExamStatus, PatientIdentifier, UnsafeIdentifier};
pub use job::{AttemptError, Counts, Job, JobState, RetrieveMethod};
pub use peer::{AeTitle, Peer};
pub use range::{DateRange, EARLIEST, LATEST};
pub use rule_config::{PriorSelection, RuleConfig, RuleMatch};
pub use rules::{Rule, RuleError, RuleInput, RuleSet};
pub use select::{Decision, Needs, select_priors, skip_present};
pub use study::StudyMatch;
pub use timing::{JobTiming, job_timing};
