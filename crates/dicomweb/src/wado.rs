//! WADO-RS retrieves, streamed: the `multipart/related` body is read chunk by chunk and
//! each part (a Part-10 instance) goes to a [`Part10Sink`] as it arrives, so memory holds
//! one chunk, never an instance or the study. A body cut mid-part is an error that says
//! how many instances were complete; those stay with the sink.

use crate::client::{DicomWebClient, DicomWebError};
use crate::multipart::{Event, Reader, boundary_of};
use futures_util::StreamExt;
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

/// Where received instances go, one Part-10 file at a time.
pub trait Part10Sink: Send {
    /// Awaited before each instance: a sink without room pauses the download here (the
    /// archive's connection then backs up in TCP).
    fn ready(&mut self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(std::future::ready(()))
    }
    /// A new instance starts; its Part-10 bytes follow.
    fn begin(&mut self) -> std::io::Result<Box<dyn Write + Send>>;
    /// The instance is complete (`ok`) or must be discarded.
    fn finish(&mut self, ok: bool) -> std::io::Result<()>;
}

/// Counts nothing and keeps nothing: a retrieve that only checks what arrives (`doctor`,
/// the benchmark's network-only runs).
pub struct Discard;

impl Part10Sink for Discard {
    fn begin(&mut self) -> std::io::Result<Box<dyn Write + Send>> {
        Ok(Box::new(std::io::sink()))
    }
    fn finish(&mut self, _ok: bool) -> std::io::Result<()> {
        Ok(())
    }
}

/// What to bring: the study, one series, or named instances.
#[derive(Debug, Clone)]
pub enum Target {
    Study(String),
    Series { study: String, series: String },
    Instance { study: String, series: String, instance: String },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retrieved {
    pub instances: usize,
    pub bytes: u64,
}

impl DicomWebClient {
    pub fn wado_url(&self, target: &Target) -> String {
        match target {
            Target::Study(study) => format!("{}/studies/{study}", self.base),
            Target::Series { study, series } => format!("{}/studies/{study}/series/{series}", self.base),
            Target::Instance { study, series, instance } => {
                format!("{}/studies/{study}/series/{series}/instances/{instance}", self.base)
            }
        }
    }

    /// Streams the target's instances into `sink`. `transfer_syntax` is the Accept
    /// header's parameter: `*` (as stored, the default) or a UID to transcode to.
    pub async fn retrieve(
        &self,
        target: &Target,
        transfer_syntax: &str,
        sink: &mut dyn Part10Sink,
    ) -> Result<Retrieved, DicomWebError> {
        let full = self.wado_url(target);
        let url = crate::client::redacted(&full);
        let accept = format!("multipart/related; type=\"application/dicom\"; transfer-syntax={transfer_syntax}");
        let response = self.send(&full, self.get(&full).header(reqwest::header::ACCEPT, accept)).await?;
        let content_type =
            response.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
        let Some(boundary) = boundary_of(content_type) else {
            return Err(DicomWebError::Malformed {
                url,
                reason: format!("Content-Type '{content_type}' is not multipart with a boundary"),
            });
        };
        let mut reader = Reader::new(&boundary);
        let mut body = response.bytes_stream();
        let mut writer: Option<Box<dyn Write + Send>> = None;
        let mut done = Retrieved::default();
        let io = |e: std::io::Error| DicomWebError::Io(e.to_string());
        let mut events = Vec::new();
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(_) => break, // a cut connection: judged below by what is complete
            };
            reader
                .feed_into(chunk, &mut events)
                .map_err(|e| DicomWebError::Malformed { url: url.clone(), reason: e.to_string() })?;
            for event in events.drain(..) {
                match event {
                    Event::Begin(_) => {
                        sink.ready().await;
                        writer = Some(sink.begin().map_err(io)?);
                    }
                    Event::Data(bytes) => {
                        if let Some(w) = writer.as_mut() {
                            w.write_all(&bytes).map_err(io)?;
                            done.bytes += bytes.len() as u64;
                        }
                    }
                    Event::End => {
                        if let Some(mut w) = writer.take() {
                            let flushed = w.flush().is_ok();
                            drop(w);
                            sink.finish(flushed).map_err(io)?;
                            done.instances += 1;
                        }
                    }
                    Event::Done => {}
                }
            }
        }
        if reader.finish().is_err() {
            if writer.take().is_some() {
                let _ = sink.finish(false);
            }
            return Err(DicomWebError::Truncated { url, complete: done.instances });
        }
        Ok(done)
    }
}

/// Writes each instance into a folder as `<SOPInstanceUID>.dcm`, under a temporary name
/// until complete. The UID comes from the file's meta group, kept from the first bytes
/// written (the file is read again only when the meta group is unusually long).
pub struct DirSink {
    dir: PathBuf,
    /// Distinct per sink of the process: several sinks may write into one folder at once
    /// (a retrieve split over several connections), each with its own temporary names.
    id: u64,
    next: u64,
    current: Option<(PathBuf, Arc<Mutex<Vec<u8>>>)>,
    /// Files completed, in arrival order.
    pub stored: Vec<PathBuf>,
}

/// How many first bytes of an instance are kept to read its meta group from.
const HEAD: usize = 8 * 1024;

static SINKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl DirSink {
    pub fn new(dir: &Path) -> std::io::Result<DirSink> {
        std::fs::create_dir_all(dir)?;
        let id = SINKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(DirSink { dir: dir.to_path_buf(), id, next: 0, current: None, stored: Vec::new() })
    }
}

impl Part10Sink for DirSink {
    fn begin(&mut self) -> std::io::Result<Box<dyn Write + Send>> {
        self.next += 1;
        let temp = self.dir.join(format!(".wado-{}-{}.part", self.id, self.next));
        let file = std::fs::File::create(&temp)?;
        let head = Arc::new(Mutex::new(Vec::with_capacity(HEAD)));
        self.current = Some((temp, head.clone()));
        Ok(Box::new(HeadKeeper { file: std::io::BufWriter::with_capacity(256 * 1024, file), head }))
    }

    fn finish(&mut self, ok: bool) -> std::io::Result<()> {
        let Some((temp, head)) = self.current.take() else { return Ok(()) };
        if !ok {
            return std::fs::remove_file(&temp);
        }
        let from_head = head.lock().ok().and_then(|h| sop_instance_uid_of(&mut h.as_slice()).ok());
        let uid = match from_head.map(Ok).unwrap_or_else(|| sop_instance_uid(&temp)) {
            Ok(uid) => uid,
            Err(e) => {
                let _ = std::fs::remove_file(&temp);
                return Err(e);
            }
        };
        let done = self.dir.join(format!("{uid}.dcm"));
        std::fs::rename(&temp, &done)?;
        self.stored.push(done);
        Ok(())
    }
}

/// Writes through to the file and keeps the first [`HEAD`] bytes.
struct HeadKeeper {
    file: std::io::BufWriter<std::fs::File>,
    head: Arc<Mutex<Vec<u8>>>,
}

impl Write for HeadKeeper {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut head) = self.head.lock()
            && head.len() < HEAD
        {
            let take = (HEAD - head.len()).min(buf.len());
            head.extend_from_slice(&buf[..take]);
        }
        // large slices bypass the buffer (BufWriter writes them directly)
        self.file.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// The SOP Instance UID from a Part-10 file's meta group (the data set is not read).
pub fn sop_instance_uid(path: &Path) -> std::io::Result<String> {
    sop_instance_uid_of(&mut std::io::BufReader::new(std::fs::File::open(path)?))
}

/// The SOP Instance UID from the start of a Part-10 stream.
fn sop_instance_uid_of(source: &mut dyn std::io::Read) -> std::io::Result<String> {
    let mut preamble = [0u8; 128];
    source.read_exact(&mut preamble)?;
    let meta = dicom_object::meta::FileMetaTable::from_reader(source).map_err(|e| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not a DICOM Part-10 instance: {e}"))
    })?;
    let uid = meta.media_storage_sop_instance_uid().trim_end_matches('\0').trim().to_string();
    if uid.is_empty() || !uid.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the instance's SOP Instance UID is not a UID",
        ));
    }
    Ok(uid)
}
