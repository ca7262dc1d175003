//! `priorfetch doctor [ARCHIVE] [--json] [--move-probe]`: diagnoses the configured archives
//! and the destination (or one archive, `destination`, or an `AET@host:port` peer) and
//! prints one line per finding with its fix. Exit 0 without FAIL, 1 with, 2 on config errors.

use super::out::outln;
use crate::Failure;
use clap::Args;
use priorfetch_config::{ConfigError, ConfigIssue};
use priorfetch_dimse::{AeTitle, Peer};
use priorfetch_doctor::{DoctorContext, Finding, Target, any_failed, diagnose, diagnose_destination, diagnose_target};
use std::path::Path;
use std::process::ExitCode;

#[derive(Args)]
pub struct DoctorArgs {
    /// A configured archive name, `destination`, or AET@host:port; all archives and the
    /// destination when absent.
    archive: Option<String>,
    /// One JSON object per finding.
    #[arg(long)]
    json: bool,
    /// Verify each move destination by moving ONE instance the archive holds to it (this
    /// writes to the destination; without it Orthanc/dcmqrscp-style archives stay unverified).
    #[arg(long)]
    move_probe: bool,
    /// The match-cap probe sends C-CANCEL after this many matches.
    #[arg(long, default_value_t = 5000)]
    cap_probe_limit: usize,
    /// For an AET@host:port peer (configured archives use their `tls` block).
    #[command(flatten)]
    tls: super::tls::ClientTlsArgs,
}

fn usage(key: &str, message: String) -> Failure {
    Failure::Config(ConfigError { issues: vec![ConfigIssue { key: key.into(), message }] })
}

fn print(findings: &[Finding], json: bool) -> Result<(), Failure> {
    for f in findings {
        if json {
            outln!("{}", serde_json::to_string(f).unwrap_or_default())?;
        } else {
            outln!("{f}")?;
        }
    }
    Ok(())
}

pub async fn run(path: &Path, args: DoctorArgs) -> Result<ExitCode, Failure> {
    let config = super::load_config(path)?;
    let _logs = super::init_logs(&config);
    let ae = AeTitle::parse(&config.service.ae_title).map_err(|e| usage("service.ae_title", e))?;
    let mut ctx = DoctorContext::new(ae);
    ctx.move_probe = args.move_probe;
    ctx.cap_probe_limit = args.cap_probe_limit;
    let mut all = Vec::new();
    match args.archive.as_deref() {
        None => {
            for (index, archive) in config.archives.iter().enumerate() {
                let findings = diagnose(archive, index, &ctx).await;
                print(&findings, args.json)?;
                all.extend(findings);
            }
            let findings = diagnose_destination(&config.destination, &ctx).await;
            print(&findings, args.json)?;
            all.extend(findings);
        }
        Some("destination") => {
            all = diagnose_destination(&config.destination, &ctx).await;
            print(&all, args.json)?;
        }
        Some(name) => {
            if let Some(index) = config.archives.iter().position(|a| a.name == name) {
                all = diagnose(&config.archives[index], index, &ctx).await;
            } else {
                let peer = Peer::parse(name).map_err(|e| {
                    let known = super::dicom::known_archives(&config);
                    usage(
                        "arguments",
                        format!("'{name}' is neither a configured archive nor AET@host:port ({e}); {known}"),
                    )
                })?;
                let dest =
                    AeTitle::parse(&config.destination.ae_title).map_err(|e| usage("destination.ae_title", e))?;
                let mut target = Target::ad_hoc(peer, Some(dest));
                target.tls = args.tls.settings(None);
                all = diagnose_target(&target, &ctx).await;
            }
            print(&all, args.json)?;
        }
    }
    Ok(if any_failed(&all) { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
