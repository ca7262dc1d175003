//! DICOMweb client for archives that speak it (Orthanc's plugin, dcm4chee, cloud PACS):
//! - `client.rs`: one HTTP client per archive (reuse, HTTP/1.1 and 2, rustls), auth
//!   (none, basic, bearer; never printed), errors with a one-line hint;
//! - `qido.rs`: QIDO-RS study and series searches from DICOM JSON, with paging and the
//!   signs of truncation;
//! - `wado.rs`: WADO-RS retrieves streamed part by part into a [`Part10Sink`];
//! - `stow.rs`: STOW-RS batches, with per-instance failures from a 202's FailedSOPSequence;
//! - `multipart.rs`: the streaming `multipart/related` reader under it.

pub mod client;
pub mod multipart;
pub mod qido;
pub mod stow;
pub mod wado;

pub use client::{Auth, ClientOptions, DicomWebClient, DicomWebError};
pub use qido::{Found, Level, Page, Query};
pub use stow::{Outgoing, Stored};
pub use wado::{DirSink, Discard, Part10Sink, Retrieved, Target, sop_instance_uid};
