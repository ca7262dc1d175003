//! Spool and forward, shared by every retrieve that receives instances itself (C-GET, and
//! WADO-RS to come) and must hand them to a destination that only takes C-STORE:
//! - `spool.rs`: one folder per job, one byte budget per process (receivers await room),
//!   and the folders' lifecycle (end of job, orphans at start, sweep);
//! - `forward.rs`: a job's relay: a [`StoreSink`](priorfetch_dimse::StoreSink) writing
//!   into the spool, and a forwarder task sending each file on by C-STORE (or STOW-RS
//!   batches to a DICOMweb destination).
//! - `metrics.rs`: `priorfetch_spool_bytes`.

mod forward;
pub mod metrics;
pub mod spool;

pub use forward::{Destination, Forwarded, OnConfirmed, Relay, RelaySink};
pub use spool::{JobSpool, SpoolBudget};
