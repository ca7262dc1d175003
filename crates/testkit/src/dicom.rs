//! Real DICOM peers as child processes, and synthetic studies to load into them.
//!
//! - [`write_study`]: a deterministic multi-series study as Part-10 files (real pixel data).
//! - [`Orthanc`]: an Orthanc instance with its own JSON config and storage in a temp dir,
//!   `DicomCheckCalledAet` on, our AE and the destinations in `DicomModalities`, optional
//!   `LimitFindResults`.
//! - [`Dcmqrscp`]: DCMTK's Q/R SCP (fork mode) with a host table of move destinations.
//! - [`Storescp`]: DCMTK's storage SCP as a move destination.
//! - [`store_files`]: load files into a peer with DCMTK `storescu`.
//!
//! Every process is killed when its guard drops. Binaries come from PATH (Orthanc also
//! from `PRIORFETCH_ORTHANC_BIN`); a missing one fails the test with the fix.
//! `TCP_NODELAY=1` is set for DCMTK and Orthanc (Nagle otherwise slows them 30x).

use crate::ports::free_port;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";
pub const MR_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.4";

/// A study to generate.
#[derive(Debug, Clone)]
pub struct StudySpec {
    pub patient_id: String,
    pub patient_name: String,
    pub study_uid: String,
    pub accession: String,
    pub study_date: String,
    pub description: String,
    pub modality: String,
    pub body_part: String,
    pub series: usize,
    pub instances_per_series: usize,
    pub rows: u16,
    pub columns: u16,
}

impl StudySpec {
    pub fn small(patient_id: &str, n: u32) -> StudySpec {
        StudySpec {
            patient_id: patient_id.into(),
            patient_name: format!("TEST^{patient_id}"),
            study_uid: format!("1.2.826.0.1.3680043.10.543.{n}"),
            accession: format!("ACC{n}"),
            study_date: format!("20{:02}0{}15", 10 + n % 15, 1 + n % 9),
            description: format!("STUDY {n}"),
            modality: if n.is_multiple_of(2) { "CT".into() } else { "MR".into() },
            body_part: "CHEST".into(),
            series: 2,
            instances_per_series: 3,
            rows: 64,
            columns: 64,
        }
    }

    pub fn instance_count(&self) -> usize {
        self.series * self.instances_per_series
    }
}

fn put(obj: &mut InMemDicomObject, tag: Tag, vr: VR, value: &str) {
    obj.put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
}

/// Writes the study as Part-10 files (Explicit VR LE) into `dir`; returns their paths.
/// Pixel values are deterministic from the instance position.
pub fn write_study(dir: &Path, spec: &StudySpec) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).expect("study dir");
    let sop_class = if spec.modality == "MR" { MR_IMAGE_STORAGE } else { CT_IMAGE_STORAGE };
    let mut paths = Vec::new();
    for s in 0..spec.series {
        let series_uid = format!("{}.{}", spec.study_uid, s + 1);
        for i in 0..spec.instances_per_series {
            let sop_uid = format!("{series_uid}.{}", i + 1);
            let mut obj = InMemDicomObject::new_empty();
            put(&mut obj, Tag(0x0008, 0x0016), VR::UI, sop_class);
            put(&mut obj, Tag(0x0008, 0x0018), VR::UI, &sop_uid);
            put(&mut obj, Tag(0x0008, 0x0020), VR::DA, &spec.study_date);
            put(&mut obj, Tag(0x0008, 0x0030), VR::TM, "101500");
            put(&mut obj, Tag(0x0008, 0x0050), VR::SH, &spec.accession);
            put(&mut obj, Tag(0x0008, 0x0060), VR::CS, &spec.modality);
            put(&mut obj, Tag(0x0008, 0x1030), VR::LO, &spec.description);
            put(&mut obj, Tag(0x0010, 0x0010), VR::PN, &spec.patient_name);
            put(&mut obj, Tag(0x0010, 0x0020), VR::LO, &spec.patient_id);
            put(&mut obj, Tag(0x0010, 0x0030), VR::DA, "19700101");
            put(&mut obj, Tag(0x0010, 0x0040), VR::CS, "O");
            put(&mut obj, Tag(0x0018, 0x0015), VR::CS, &spec.body_part);
            put(&mut obj, Tag(0x0020, 0x000D), VR::UI, &spec.study_uid);
            put(&mut obj, Tag(0x0020, 0x000E), VR::UI, &series_uid);
            put(&mut obj, Tag(0x0020, 0x0010), VR::SH, "1");
            obj.put(DataElement::new(Tag(0x0020, 0x0011), VR::IS, PrimitiveValue::from((s + 1).to_string())));
            obj.put(DataElement::new(Tag(0x0020, 0x0013), VR::IS, PrimitiveValue::from((i + 1).to_string())));
            obj.put(DataElement::new(Tag(0x0028, 0x0002), VR::US, PrimitiveValue::from(1u16)));
            put(&mut obj, Tag(0x0028, 0x0004), VR::CS, "MONOCHROME2");
            obj.put(DataElement::new(Tag(0x0028, 0x0010), VR::US, PrimitiveValue::from(spec.rows)));
            obj.put(DataElement::new(Tag(0x0028, 0x0011), VR::US, PrimitiveValue::from(spec.columns)));
            obj.put(DataElement::new(Tag(0x0028, 0x0100), VR::US, PrimitiveValue::from(16u16)));
            obj.put(DataElement::new(Tag(0x0028, 0x0101), VR::US, PrimitiveValue::from(12u16)));
            obj.put(DataElement::new(Tag(0x0028, 0x0102), VR::US, PrimitiveValue::from(11u16)));
            obj.put(DataElement::new(Tag(0x0028, 0x0103), VR::US, PrimitiveValue::from(0u16)));
            let n = spec.rows as usize * spec.columns as usize;
            let seed = (s * 1000 + i) as u32;
            let pixels: Vec<u8> = (0..n as u32)
                .flat_map(|p| {
                    (((p.wrapping_mul(2654435761).wrapping_add(seed * 7919)) >> 20) as u16 & 0x0FFF).to_le_bytes()
                })
                .collect();
            obj.put(DataElement::new(Tag(0x7FE0, 0x0010), VR::OW, PrimitiveValue::from(pixels)));
            let file = obj
                .with_meta(
                    FileMetaTableBuilder::new()
                        .transfer_syntax("1.2.840.10008.1.2.1")
                        .media_storage_sop_class_uid(sop_class)
                        .media_storage_sop_instance_uid(sop_uid.as_str()),
                )
                .expect("meta");
            let path = dir.join(format!("{sop_uid}.dcm"));
            file.write_to_file(&path).expect("write dicom file");
            paths.push(path);
        }
    }
    paths
}

pub(crate) fn require_binary(name: &str) -> String {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        panic!("'{name}' not found: run the tests through scripts/test, which installs DCMTK and Orthanc");
    }
    name.to_string()
}

pub(crate) fn wait_port(port: u16, child: &mut Child, what: &str) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited at start-up ({status})");
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{what} did not listen on {port} within 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kills the child on drop.
pub struct Guard(pub(crate) Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A move destination known to an archive.
#[derive(Debug, Clone)]
pub struct Destination {
    pub ae: String,
    pub port: u16,
}

/// Orthanc's DICOM TLS files (PEM).
#[derive(Debug, Clone)]
pub struct OrthancTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The CAs it trusts (its peers' certificates).
    pub ca: PathBuf,
    /// `DicomTlsRemoteCertificateRequired`.
    pub require_client_cert: bool,
}

impl OrthancTls {
    /// Orthanc's configuration keys for DICOM TLS on its port.
    pub(crate) fn settings(&self) -> serde_json::Value {
        serde_json::json!({
            "DicomTlsEnabled": true,
            "DicomTlsCertificate": self.cert.display().to_string(),
            "DicomTlsPrivateKey": self.key.display().to_string(),
            "DicomTlsTrustedCertificates": self.ca.display().to_string(),
            "DicomTlsRemoteCertificateRequired": self.require_client_cert,
        })
    }
}

pub struct Orthanc {
    pub ae: String,
    pub port: u16,
    pub http_port: u16,
    pub dir: tempfile::TempDir,
    guard: Option<Guard>,
}

impl Orthanc {
    /// Starts Orthanc knowing `our_ae` (find/move/get/store allowed) and `destinations`.
    pub fn start(ae: &str, our_ae: &str, destinations: &[Destination], limit_find_results: Option<u32>) -> Orthanc {
        Orthanc::start_with(ae, our_ae, destinations, limit_find_results, false, None, serde_json::json!({}))
    }

    /// With DICOM TLS on its DIMSE port (`DicomTlsEnabled`), and towards `destinations`
    /// (`UseDicomTls`): Orthanc presents `tls.cert` both ways and trusts `tls.ca`.
    pub fn start_tls(ae: &str, our_ae: &str, destinations: &[Destination], tls: &OrthancTls) -> Orthanc {
        Orthanc::start_with(ae, our_ae, destinations, None, false, None, tls.settings())
    }

    /// With the DICOMweb plugin (Debian `orthanc-dicomweb`) at [`Orthanc::dicomweb_url`].
    pub fn start_dicomweb(ae: &str, our_ae: &str, limit_find_results: Option<u32>) -> Orthanc {
        Orthanc::start_with(ae, our_ae, &[], limit_find_results, true, None, serde_json::json!({}))
    }

    /// With the DICOMweb plugin behind HTTP basic authentication for `user`.
    pub fn start_dicomweb_with_user(ae: &str, our_ae: &str, user: (&str, &str)) -> Orthanc {
        Orthanc::start_with(ae, our_ae, &[], None, true, Some(user), serde_json::json!({}))
    }

    /// The DICOMweb root, e.g. `http://127.0.0.1:8042/dicom-web`.
    pub fn dicomweb_url(&self) -> String {
        format!("http://127.0.0.1:{}/dicom-web", self.http_port)
    }

    /// `extra` keys replace the generated ones (another plugin list, TLS settings).
    pub(crate) fn start_with(
        ae: &str,
        our_ae: &str,
        destinations: &[Destination],
        limit_find_results: Option<u32>,
        dicomweb: bool,
        user: Option<(&str, &str)>,
        extra: serde_json::Value,
    ) -> Orthanc {
        let bin = std::env::var("PRIORFETCH_ORTHANC_BIN").unwrap_or_else(|_| "Orthanc".into());
        require_binary(&bin);
        let dir = tempfile::tempdir().expect("temp dir");
        let (port, http_port) = (free_port(), free_port());
        let mut modalities = serde_json::Map::new();
        modalities.insert(
            "priorfetch".into(),
            serde_json::json!({ "AET": our_ae, "Host": "127.0.0.1", "Port": 104,
                "AllowEcho": true, "AllowFind": true, "AllowMove": true, "AllowGet": true, "AllowStore": true }),
        );
        for (i, d) in destinations.iter().enumerate() {
            modalities.insert(
                format!("dest{i}"),
                serde_json::json!({ "AET": d.ae, "Host": "127.0.0.1", "Port": d.port,
                    "UseDicomTls": extra.get("DicomTlsEnabled").is_some() }),
            );
        }
        let plugins: Vec<String> = if dicomweb {
            let folder =
                std::env::var("PRIORFETCH_ORTHANC_PLUGINS").unwrap_or_else(|_| "/usr/share/orthanc/plugins".into());
            let plugin = std::path::Path::new(&folder).join("libOrthancDicomWeb.so");
            assert!(plugin.exists(), "{} not found: scripts/peers.sh installs orthanc-dicomweb", plugin.display());
            vec![plugin.display().to_string()]
        } else {
            Vec::new()
        };
        let config = serde_json::json!({
            "Name": format!("pf-test-{ae}"),
            "StorageDirectory": dir.path().join("storage"),
            "IndexDirectory": dir.path().join("index"),
            "DicomAet": ae, "DicomPort": port, "HttpPort": http_port, "HttpServerEnabled": true,
            "RemoteAccessAllowed": false, "AuthenticationEnabled": user.is_some(),
            "RegisteredUsers": user.map(|(u, p)| serde_json::json!({ u: p })).unwrap_or_else(|| serde_json::json!({})),
            "DicomCheckCalledAet": true, "DicomCheckModalityHost": false,
            "DicomAlwaysAllowEcho": true, "DicomAlwaysAllowStore": true,
            "DicomModalities": modalities,
            "LimitFindResults": limit_find_results.unwrap_or(0),
            "StorageCompression": false, "Plugins": plugins,
            "DicomWeb": { "Enable": dicomweb, "Root": "/dicom-web/", "StudiesMetadata": "Full" },
            "DicomScpTimeout": 30, "StableAge": 1
        });
        let mut config = config;
        if let (Some(config), Some(extra)) = (config.as_object_mut(), extra.as_object()) {
            config.extend(extra.clone());
        }
        let config_path = dir.path().join("orthanc.json");
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        let mut orthanc = Orthanc { ae: ae.into(), port, http_port, dir, guard: None };
        orthanc.restart();
        orthanc
    }

    /// Kills the process (an archive going down); its storage stays for [`Orthanc::restart`].
    pub fn stop(&mut self) {
        self.guard = None;
    }

    /// Starts the process again on the same ports and storage (an archive coming back).
    pub fn restart(&mut self) {
        self.guard = None;
        let bin = std::env::var("PRIORFETCH_ORTHANC_BIN").unwrap_or_else(|_| "Orthanc".into());
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("orthanc.log")).unwrap();
        let mut child = Command::new(bin)
            .arg(self.dir.path().join("orthanc.json"))
            .env("TCP_NODELAY", "1")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start Orthanc");
        wait_port(self.port, &mut child, "Orthanc");
        wait_port(self.http_port, &mut child, "Orthanc HTTP");
        self.guard = Some(Guard(child));
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("orthanc.log")).unwrap_or_default()
    }
}

/// HTTPS in front of a plain HTTP port: `socat` (OpenSSL) terminating TLS with `cert` and
/// `key` and forwarding to 127.0.0.1:`upstream`. (Debian's Orthanc 1.10 with OpenSSL 3
/// resets every HTTPS request after the handshake, so its `SslEnabled` cannot serve here.)
pub struct TlsTerminator {
    pub port: u16,
    _guard: Guard,
}

impl TlsTerminator {
    pub fn start(cert: &Path, key: &Path, upstream: u16) -> TlsTerminator {
        Self::start_with(cert, key, None, upstream)
    }

    /// With `client_ca`, only clients with a certificate signed by it get through.
    pub fn start_with(cert: &Path, key: &Path, client_ca: Option<&Path>, upstream: u16) -> TlsTerminator {
        let bin = require_binary("socat");
        let port = free_port();
        let verify = match client_ca {
            Some(ca) => format!("verify=1,cafile={}", ca.display()),
            None => "verify=0".into(),
        };
        let listen = format!(
            "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert={},key={},{verify}",
            cert.display(),
            key.display()
        );
        let mut child = Command::new(bin)
            .args([listen, format!("TCP:127.0.0.1:{upstream}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start socat");
        wait_port(port, &mut child, "socat");
        TlsTerminator { port, _guard: Guard(child) }
    }
}

pub struct Dcmqrscp {
    pub ae: String,
    pub port: u16,
    pub dir: tempfile::TempDir,
    _guard: Guard,
}

impl Dcmqrscp {
    /// Starts dcmqrscp in fork mode (its `-s` single-process mode crashes after the first
    /// association) with `destinations` in its host table.
    pub fn start(ae: &str, our_ae: &str, destinations: &[Destination]) -> Dcmqrscp {
        let bin = require_binary("dcmqrscp");
        let dir = tempfile::tempdir().expect("temp dir");
        let storage = dir.path().join("db");
        std::fs::create_dir_all(&storage).unwrap();
        let port = free_port();
        let mut hosts = format!("priorfetch = ({our_ae}, 127.0.0.1, 104)\nloader = (STORESCU, 127.0.0.1, 104)\n");
        for (i, d) in destinations.iter().enumerate() {
            hosts.push_str(&format!("dest{i} = ({}, 127.0.0.1, {})\n", d.ae, d.port));
        }
        let config = format!(
            "NetworkTCPPort = {port}\nMaxPDUSize = 65536\nMaxAssociations = 16\n\
             HostTable BEGIN\n{hosts}HostTable END\nVendorTable BEGIN\nVendorTable END\n\
             AETable BEGIN\n{ae} {} RW (1000, 2048mb) ANY\nAETable END\n",
            storage.display()
        );
        let config_path = dir.path().join("dcmqrscp.cfg");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("dcmqrscp.log")).unwrap();
        let mut child = Command::new(bin)
            .args(["-c", config_path.to_str().unwrap()])
            .env("TCP_NODELAY", "1")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start dcmqrscp");
        wait_port(port, &mut child, "dcmqrscp");
        Dcmqrscp { ae: ae.into(), port, dir, _guard: Guard(child) }
    }
}

pub struct Storescp {
    pub ae: String,
    pub port: u16,
    pub out: tempfile::TempDir,
    _guard: Guard,
}

impl Storescp {
    pub fn start(ae: &str) -> Storescp {
        Storescp::start_with(ae, &["--accept-all"])
    }

    /// With other network options, e.g. `["+xi"]` (accept only Implicit VR LE).
    pub fn start_with(ae: &str, options: &[&str]) -> Storescp {
        let bin = require_binary("storescp");
        let out = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let mut child = Command::new(bin)
            .args(["-aet", ae, "--output-directory", out.path().to_str().unwrap()])
            .args(options)
            .arg(port.to_string())
            .env("TCP_NODELAY", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start storescp");
        wait_port(port, &mut child, "storescp");
        Storescp { ae: ae.into(), port, out, _guard: Guard(child) }
    }

    pub fn destination(&self) -> Destination {
        Destination { ae: self.ae.clone(), port: self.port }
    }

    /// Files received so far.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.out.path())
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()).collect())
            .unwrap_or_default();
        files.sort();
        files
    }
}

/// Writes the studies into a temp folder and loads them into a peer with `storescu`.
pub fn load_studies(called_ae: &str, port: u16, specs: &[StudySpec]) {
    let dir = tempfile::tempdir().expect("temp dir");
    for (i, spec) in specs.iter().enumerate() {
        write_study(&dir.path().join(format!("s{i}")), spec);
    }
    store_files(called_ae, port, dir.path());
}

/// Loads files into a peer with DCMTK `storescu` (calling AE STORESCU).
pub fn store_files(called_ae: &str, port: u16, dir: &Path) {
    store_files_with(called_ae, port, dir, &[]);
}

/// [`store_files`] with more `storescu` options, e.g. `+tls KEY CERT +cf CA`.
pub fn store_files_with(called_ae: &str, port: u16, dir: &Path, options: &[&str]) {
    let bin = require_binary("storescu");
    let out = Command::new(bin)
        .args(options)
        .args([
            "-aet",
            "STORESCU",
            "-aec",
            called_ae,
            "+sd",
            "+r",
            "127.0.0.1",
            &port.to_string(),
            dir.to_str().unwrap(),
        ])
        .env("TCP_NODELAY", "1")
        .output()
        .expect("run storescu");
    assert!(out.status.success(), "storescu into {called_ae} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// A peer that answers every A-ASSOCIATE-RQ with an A-ASSOCIATE-RJ of the given result
/// (1 permanent, 2 transient), source (1 service user, 2 provider ACSE, 3 provider
/// presentation) and reason (PS3.8 9.3.4), then closes: strict PACS behaviours
/// (unknown calling AE, association limit) without configuring one.
pub struct Rejector {
    pub port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Rejector {
    pub fn start(result: u8, source: u8, reason: u8) -> Rejector {
        use std::io::{Read, Write};
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("non-blocking listener");
        let port = listener.local_addr().expect("local addr").port();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let Ok((mut stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                // The 6-byte PDU header, then the announced length (bounded).
                let mut header = [0u8; 6];
                if stream.read_exact(&mut header).is_err() || header[0] != 0x01 {
                    continue;
                }
                let length = u32::from_be_bytes([header[2], header[3], header[4], header[5]]).min(1 << 20) as usize;
                let mut body = vec![0u8; length];
                if stream.read_exact(&mut body).is_err() {
                    continue;
                }
                let _ = stream.write_all(&[0x03, 0, 0, 0, 0, 4, 0, result, source, reason]);
                let _ = stream.flush();
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Rejector { port, stop }
    }
}

impl Drop for Rejector {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What a DCMTK command-line tool did.
#[derive(Debug, Clone)]
pub struct ToolRun {
    pub success: bool,
    /// stdout and stderr together (DCMTK logs to stderr).
    pub log: String,
}

impl ToolRun {
    /// The last value DCMTK's `-d` output gives for a field: `Completed Suboperations :
    /// 6` (DIMSE message summaries) or `(0000,1021) US 6 ... # NumberOf...` (dumps).
    pub fn last_value(&self, label: &str) -> Option<String> {
        self.log.lines().rev().find_map(|l| {
            let at = l.find(label)?;
            let rest = &l[at + label.len()..];
            if let Some(value) = rest.trim_start().strip_prefix(':') {
                return value.split_whitespace().next().map(|v| v.trim_end_matches(':').to_string());
            }
            // dcmdump style: the label is the keyword after '#'
            let mut parts = l[..at].split_whitespace();
            parts.next()?;
            parts.next()?;
            parts.next().map(|v| v.trim_matches(['[', ']']).to_string())
        })
    }
}

/// Runs a DCMTK tool (`TCP_NODELAY=1`), killed after `timeout`.
pub async fn run_tool(tool: &str, args: &[String], timeout: Duration) -> ToolRun {
    let bin = require_binary(tool);
    let child = tokio::process::Command::new(bin)
        .args(args)
        .env("TCP_NODELAY", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("start {tool}: {e}"));
    let out = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{tool} did not finish within {timeout:?}"))
        .unwrap_or_else(|e| panic!("{tool}: {e}"));
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    ToolRun { success: out.status.success(), log }
}
