//! Modality Worklist SCPs for tests, serving the `*.wl` files a test writes:
//!
//! - [`Wlmscpfs`]: DCMTK `wlmscpfs` (a folder per called AE title, holding a `lockfile`;
//!   incomplete files are served too, `-dfr`, so tests can send bad items). It drops
//!   keys it does not support (Timezone Offset, Other Patient IDs, Body Part) with 0xFF01.
//! - [`OrthancWorklists`]: Orthanc with its ModalityWorklists plugin (optionally with
//!   DICOM TLS), which answers every key its files hold.
//!
//! Items are [`MwlItem`]s, written as a text dump and converted with `dump2dcm` (temp name,
//! then rename, so an SCP never reads half a file). Processes are killed on drop.

use crate::dicom::{Guard, Orthanc, OrthancTls, require_binary, wait_port};
use crate::ports::free_port;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One Scheduled Procedure Step; `None` leaves the attribute out.
#[derive(Debug, Clone, Default)]
pub struct MwlStep {
    pub id: Option<String>,
    pub station_ae: Option<String>,
    pub modality: Option<String>,
    /// DA, `20261123`.
    pub date: Option<String>,
    /// TM, `093000`.
    pub time: Option<String>,
    pub description: Option<String>,
    pub body_part: Option<String>,
}

/// One worklist item (a requested procedure and its steps); `None` leaves it out.
#[derive(Debug, Clone, Default)]
pub struct MwlItem {
    pub patient_id: Option<String>,
    pub patient_name: Option<String>,
    pub issuer: Option<String>,
    /// Other Patient IDs Sequence items: (PatientID, IssuerOfPatientID).
    pub other_ids: Vec<(String, Option<String>)>,
    pub accession: Option<String>,
    pub study_uid: Option<String>,
    /// Timezone Offset From UTC, `+0100`.
    pub timezone_offset: Option<String>,
    pub procedure_code: Option<String>,
    pub procedure_description: Option<String>,
    /// STAT, HIGH, ROUTINE, MEDIUM, LOW.
    pub priority: Option<String>,
    pub steps: Vec<MwlStep>,
}

impl MwlItem {
    /// A complete item with one step at `date` `time` on `modality`.
    pub fn simple(patient_id: &str, accession: &str, study_uid: &str, sps_id: &str, date: &str, time: &str) -> MwlItem {
        let s = |v: &str| Some(v.to_string());
        MwlItem {
            patient_id: s(patient_id),
            patient_name: s("TEST^PATIENT"),
            issuer: s("HOSP"),
            accession: s(accession),
            study_uid: s(study_uid),
            procedure_code: s("CTCHEST"),
            procedure_description: s("CT chest"),
            priority: s("ROUTINE"),
            steps: vec![MwlStep {
                id: s(sps_id),
                station_ae: s("CT1"),
                modality: s("CT"),
                date: s(date),
                time: s(time),
                description: s("CT chest step"),
                body_part: None,
            }],
            ..MwlItem::default()
        }
    }

    /// The item as `dump2dcm` input.
    pub fn dump(&self) -> String {
        let mut out = String::from("(0008,0005) CS [ISO_IR 100]\n");
        let mut line = |tag: &str, vr: &str, value: &Option<String>| {
            if let Some(v) = value {
                out.push_str(&format!("({tag}) {vr} [{v}]\n"));
            }
        };
        line("0008,0050", "SH", &self.accession);
        line("0008,0201", "SH", &self.timezone_offset);
        line("0010,0010", "PN", &self.patient_name);
        line("0010,0020", "LO", &self.patient_id);
        line("0010,0021", "LO", &self.issuer);
        line("0020,000d", "UI", &self.study_uid);
        line("0032,1060", "LO", &self.procedure_description);
        line("0040,1001", "SH", &Some("RP1".into()));
        line("0040,1003", "SH", &self.priority);
        if !self.other_ids.is_empty() {
            out.push_str("(0010,1002) SQ\n");
            for (id, issuer) in &self.other_ids {
                out.push_str(&format!("(fffe,e000) -\n(0010,0020) LO [{id}]\n"));
                if let Some(issuer) = issuer {
                    out.push_str(&format!("(0010,0021) LO [{issuer}]\n"));
                }
                out.push_str("(fffe,e00d) -\n");
            }
            out.push_str("(fffe,e0dd) -\n");
        }
        if let Some(code) = &self.procedure_code {
            out.push_str(&format!(
                "(0032,1064) SQ\n(fffe,e000) -\n(0008,0100) SH [{code}]\n(0008,0102) SH [LOCAL]\n\
                 (0008,0104) LO [{code}]\n(fffe,e00d) -\n(fffe,e0dd) -\n"
            ));
        }
        out.push_str("(0040,0100) SQ\n");
        for step in &self.steps {
            out.push_str("(fffe,e000) -\n");
            for (tag, vr, value) in [
                ("0008,0060", "CS", &step.modality),
                ("0018,0015", "CS", &step.body_part),
                ("0040,0001", "AE", &step.station_ae),
                ("0040,0002", "DA", &step.date),
                ("0040,0003", "TM", &step.time),
                ("0040,0007", "LO", &step.description),
                ("0040,0009", "SH", &step.id),
            ] {
                if let Some(v) = value {
                    out.push_str(&format!("({tag}) {vr} [{v}]\n"));
                }
            }
            out.push_str("(fffe,e00d) -\n");
        }
        out.push_str("(fffe,e0dd) -\n");
        out
    }
}

/// Writes `item` as `<folder>/<name>.wl` with `dump2dcm`.
pub fn write_item(folder: &Path, name: &str, item: &MwlItem) {
    let bin = require_binary("dump2dcm");
    let dump = folder.join(format!(".{name}.dump"));
    let temp = folder.join(format!(".{name}.tmp"));
    std::fs::write(&dump, item.dump()).expect("write dump");
    let out = Command::new(bin).arg(&dump).arg(&temp).output().expect("run dump2dcm");
    assert!(out.status.success(), "dump2dcm failed: {}", String::from_utf8_lossy(&out.stderr));
    std::fs::remove_file(&dump).ok();
    std::fs::rename(&temp, folder.join(format!("{name}.wl"))).expect("rename worklist file");
}

/// DCMTK's worklist SCP over a folder of files.
pub struct Wlmscpfs {
    pub ae: String,
    pub port: u16,
    pub dir: tempfile::TempDir,
    _process: Guard,
}

impl Wlmscpfs {
    pub fn start(ae: &str) -> Wlmscpfs {
        let bin = require_binary("wlmscpfs");
        let dir = tempfile::tempdir().expect("temp dir");
        let folder = dir.path().join(ae);
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("lockfile"), b"").unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("wlmscpfs.log")).unwrap();
        let mut child = Command::new(bin)
            .args(["-dfr", "-dfp", dir.path().to_str().unwrap(), &port.to_string()])
            .env("TCP_NODELAY", "1")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start wlmscpfs");
        wait_port(port, &mut child, "wlmscpfs");
        Wlmscpfs { ae: ae.into(), port, dir, _process: Guard(child) }
    }

    /// The folder its called AE title serves.
    pub fn folder(&self) -> PathBuf {
        self.dir.path().join(&self.ae)
    }

    pub fn put(&self, name: &str, item: &MwlItem) {
        write_item(&self.folder(), name, item);
    }

    pub fn remove(&self, name: &str) {
        std::fs::remove_file(self.folder().join(format!("{name}.wl"))).expect("remove worklist file");
    }
}

/// Orthanc with the ModalityWorklists plugin (Debian: /usr/share/orthanc/plugins), serving
/// the worklist files of its own folder.
pub struct OrthancWorklists {
    pub ae: String,
    pub port: u16,
    orthanc: Orthanc,
    folder: tempfile::TempDir,
}

impl OrthancWorklists {
    pub fn start(ae: &str, our_ae: &str) -> OrthancWorklists {
        OrthancWorklists::start_with(ae, our_ae, serde_json::json!({}))
    }

    /// With DICOM TLS on its port; it trusts `tls.ca` for client certificates.
    pub fn start_tls(ae: &str, our_ae: &str, tls: &OrthancTls) -> OrthancWorklists {
        OrthancWorklists::start_with(ae, our_ae, tls.settings())
    }

    fn start_with(ae: &str, our_ae: &str, mut extra: serde_json::Value) -> OrthancWorklists {
        let plugins =
            std::env::var("PRIORFETCH_ORTHANC_PLUGINS").unwrap_or_else(|_| "/usr/share/orthanc/plugins".into());
        let plugin = Path::new(&plugins).join("libModalityWorklists.so");
        assert!(plugin.exists(), "{} not found: install Debian's orthanc package", plugin.display());
        let folder = tempfile::tempdir().expect("temp dir");
        if let Some(extra) = extra.as_object_mut() {
            extra.insert("Plugins".into(), serde_json::json!([plugin.display().to_string()]));
            extra.insert("Worklists".into(), serde_json::json!({ "Enable": true, "Database": folder.path() }));
        }
        let orthanc = Orthanc::start_with(ae, our_ae, &[], None, false, None, extra);
        OrthancWorklists { ae: ae.into(), port: orthanc.port, orthanc, folder }
    }

    pub fn folder(&self) -> PathBuf {
        self.folder.path().to_path_buf()
    }

    pub fn put(&self, name: &str, item: &MwlItem) {
        write_item(&self.folder(), name, item);
    }

    pub fn remove(&self, name: &str) {
        std::fs::remove_file(self.folder().join(format!("{name}.wl"))).expect("remove worklist file");
    }

    pub fn log(&self) -> String {
        self.orthanc.log()
    }
}
