//! A DICOM Query/Retrieve SCP simulator on `priorfetch-dimse`: the archive priorfetch's
//! tests and benchmarks talk to, misbehaving on request in the ways archives in the
//! field do.
//!
//! Layout:
//! - `config.rs`: [`SimConfig`], data sources ([`SyntheticSpec`], a folder), [`Faults`].
//! - `synthetic.rs`: generated patients/studies (deterministic from a seed) and the
//!   encoding of their instances (real pixel data) on request.
//! - `index.rs`: the in-memory index (studies, series, instances, their attributes).
//! - `matching.rs`: C-FIND matching rules (universal, lists, wildcards, ranges).
//! - `server.rs`: [`Sim::start`], the accept loop, association cap and rejections.
//! - `serve.rs`: one association: C-ECHO, C-FIND, C-MOVE, C-GET, C-STORE, with faults.
//! - `stats.rs`: counters tests assert on.
//!
//! Nothing read from the network can panic the simulator: bad input ends the
//! association or gets an error status.

pub mod config;
pub mod index;
pub mod matching;
mod serve;
pub mod server;
pub mod stats;
pub mod synthetic;

pub use config::{
    CapBehaviour, CaseMatching, DataSource, Destination, Faults, MatchCap, RejectReason, SimConfig, SyntheticSpec,
    WebBusy,
};
pub use index::StudySummary;
pub use server::{FaultSwitch, ReceivedInstance, Sim, SimHandle};
pub use stats::SimStats;

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("cannot listen on {address}: {reason}")]
    Bind { address: String, reason: String },
    #[error("cannot index {folder}: {reason}")]
    Index { folder: String, reason: String },
    #[error("invalid simulator configuration: {0}")]
    Config(String),
}
