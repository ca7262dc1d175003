//! Test support shared by the crates' integration tests and the benchmarks.
//!
//! - [`ports`]: free loopback ports.
//! - [`db`]: a fresh Postgres database (or SQLite file) per test.
//! - [`dicom`]: real DICOM peers (Orthanc, DCMTK dcmqrscp/storescp) run as child processes.
//! - [`pg_instance`]: a private Postgres server that tests may stop, crash and restart.
//! - [`chaos`]: killable processes and a job-table poller for the chaos suite.
//! - [`proxy`]: a loopback TCP proxy that can cut the line (database outages).
//! - [`tls`]: a test PKI (CA, certificates, an expired one) made per test.
//! - [`worklist`]: Modality Worklist SCPs (DCMTK wlmscpfs, Orthanc's worklist plugin).
//! - [`otlp`] (feature `otlp`): an OTLP trace receiver, gRPC and HTTP/protobuf.
//! - [`bench`]: environment knobs, medians and folder sizes for the benchmark programs.
//!
//! Tracing output in tests only when `TEST_LOG` is set.

pub mod bench;
pub mod chaos;
pub mod db;
pub mod dicom;
#[cfg(feature = "otlp")]
pub mod otlp;
pub mod pg_instance;
pub mod ports;
pub mod proxy;
pub mod tls;
pub mod worklist;
