//! DICOM upper layer on dicom-ul: the DIMSE codec and the Query/Retrieve SCU.
//!
//! Layout:
//! - `peer.rs`: AE titles and `AET@host:port` peers, validated once.
//! - `command.rs`: DIMSE command sets (Implicit VR LE, group length computed).
//! - `association.rs`: an established association: send and receive whole messages
//!   (P-DATA reassembly), message IDs, timeouts, release/abort.
//! - `scu.rs`: C-ECHO, C-FIND (streamed matches, C-CANCEL), C-MOVE (progress, counts,
//!   failed instance list, C-CANCEL).
//! - `get.rs`: C-GET with storage sub-operations streamed to a sink (`DirSink`: Part-10
//!   files, temp name then rename).
//! - `error.rs`: typed failures, retryable or permanent, each with a hint that says the fix.
//!
//! Nothing read from the network can panic this crate: malformed input is an error.

pub mod association;
pub mod command;
pub mod error;
pub mod get;
pub mod peer;
pub mod scu;

pub use association::{Association, ContextRequest, ScuOptions};
pub use error::DimseError;
pub use peer::{AeTitle, Peer};
pub use scu::{FindOutcome, QueryModel, RetrieveOutcome, SubOperations, echo, identifier};
