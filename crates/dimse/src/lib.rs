//! DICOM upper layer on dicom-ul: the DIMSE codec and the Query/Retrieve SCU.
//!
//! Layout:
//! - `peer.rs`: AE titles and `AET@host:port` peers, validated once.
//! - `command.rs`: DIMSE command sets (Implicit VR LE, group length computed).
//! - `association.rs`: an established association: send and receive whole messages
//!   (P-DATA reassembly), message IDs, timeouts, release/abort.
//! - `link.rs`: the connection under it, plain TCP or DICOM TLS (`ScuOptions::tls`).
//! - `scu.rs`: C-ECHO, C-FIND (streamed matches, C-CANCEL), C-MOVE (progress, counts,
//!   failed instance list, C-CANCEL).
//! - `get.rs`: C-GET with storage sub-operations streamed to a sink (`DirSink`: Part-10
//!   files, temp name then rename).
//! - `scp/store.rs`: the C-STORE SCP (allow-list, association cap, files streamed to disk
//!   atomically, each instance reported with its C-MOVE originator).
//! - `store_scu.rs`: C-STORE SCU: Part-10 header reading, storage contexts, store (with
//!   transcoding between native syntaxes) and pipelined send/collect.
//! - `storage_classes.rs`: every standard storage SOP class (what the SCP accepts).
//! - `dataset_guard.rs`: a linear check that a received data set's lengths fit, before
//!   dicom-object parses it (garbage lengths otherwise make it allocate or spin).
//! - `worklist.rs`: Modality Worklist C-FIND (the identifier, one association per poll).
//! - `error.rs`: typed failures, retryable or permanent, each with a hint that says the fix.
//!
//! Nothing read from the network can panic this crate: malformed input is an error.

pub mod association;
pub mod command;
pub mod dataset_guard;
pub mod error;
pub mod get;
pub mod link;
pub mod peer;
pub mod scp;
pub mod scu;
pub mod storage_classes;
pub mod store_scu;
pub mod worklist;

pub use association::{Association, ContextRequest, ScuOptions};
pub use error::DimseError;
pub use get::{DirSink, StoreSink};
pub use peer::{AeTitle, Peer};
pub use scp::store::{StoreScpOptions, StoredInstance, run_store_scp};
pub use scu::{FindOutcome, QueryModel, RetrieveOutcome, SubOperations, echo, identifier};
pub use store_scu::{Part10, PendingStore, StoreStatus, StoreStatusKind, storage_contexts};
