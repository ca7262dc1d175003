//! DICOMweb client for archives that speak it (Orthanc's plugin, dcm4chee, cloud PACS):
//! - `client.rs`: one HTTP client per archive (reuse, HTTP/1.1 and 2, rustls), auth
//!   (none, basic, bearer; never printed), errors with a one-line hint;
//! - `qido.rs`: QIDO-RS study and series searches from DICOM JSON, with paging and the
//!   signs of truncation;
//! - `wado.rs`: WADO-RS retrieves streamed part by part into a [`Part10Sink`];
//! - `multipart.rs`: the streaming `multipart/related` reader under it.

pub mod client;
pub mod multipart;
pub mod qido;
pub mod wado;

pub use client::{Auth, ClientOptions, DicomWebClient, DicomWebError};
pub use qido::{Found, Level, Page, Query};
pub use wado::{DirSink, Part10Sink, Retrieved, Target};
