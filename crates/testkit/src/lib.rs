//! Test support shared by the crates' integration tests and the benchmarks.
//!
//! - [`ports`]: free loopback ports.
//! - [`db`]: a fresh Postgres database (or SQLite file) per test.
//! - [`dicom`]: real DICOM peers (Orthanc, DCMTK dcmqrscp/storescp) run as child processes.
//! - [`bench`]: environment knobs, medians and folder sizes for the benchmark programs.
//!
//! Tracing output in tests only when `TEST_LOG` is set.

pub mod bench;
pub mod db;
pub mod dicom;
pub mod ports;
