//! `priorfetch echo | find | retrieve`: ad-hoc DICOM tools for interface engineers.
//! ARCHIVE is a configured archive name, `AET@host:port`, or a DICOMweb URL
//! (`http://host:8042/dicom-web`: QIDO-RS and WADO-RS, see `web.rs`).

use super::out::outln;
use crate::Failure;
use clap::Args;
use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;
use priorfetch_config::Config;
use priorfetch_dimse::scu::query_contexts;
use priorfetch_dimse::{AeTitle, Association, DimseError, Peer, QueryModel, ScuOptions, identifier};
use std::ops::ControlFlow;
use std::path::Path;
use std::process::ExitCode;

#[derive(Args)]
pub struct EchoArgs {
    /// Configured archive name, or AET@host:port.
    archive: String,
    #[command(flatten)]
    tls: super::tls::ClientTlsArgs,
}

#[derive(Args)]
pub struct FindArgs {
    /// Configured archive name, AET@host:port, or a DICOMweb URL (http://host:8042/dicom-web).
    archive: String,
    /// PATIENT, STUDY, SERIES or IMAGE.
    #[arg(long, default_value = "study")]
    level: String,
    /// Query key: `Keyword=value` to match, `Keyword` to return (e.g. -k PatientID=MRN1 -k StudyDate).
    #[arg(short = 'k', long = "key")]
    keys: Vec<String>,
    /// Patient Root instead of Study Root.
    #[arg(long)]
    patient_root: bool,
    /// Send C-CANCEL after this many matches.
    #[arg(long)]
    max: Option<usize>,
    /// One JSON object per match (keyword -> value) instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    tls: super::tls::ClientTlsArgs,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Method {
    /// C-MOVE: the archive sends the study to --dest.
    Move,
    /// C-GET: the archive sends the study on our association, into --out.
    Get,
}

#[derive(Args)]
pub struct RetrieveArgs {
    /// Configured archive name, AET@host:port, or a DICOMweb URL (WADO-RS into --out).
    archive: String,
    /// StudyInstanceUID to retrieve.
    #[arg(long)]
    study: String,
    /// C-MOVE to --dest, or C-GET into --out.
    #[arg(long, value_enum, default_value = "move")]
    method: Method,
    /// Folder for C-GET (default: ./retrieved/<study UID>).
    #[arg(long)]
    out: Option<std::path::PathBuf>,
    /// Move destination AE (default: the archive's configured move_destination, else destination.ae_title).
    #[arg(long)]
    dest: Option<String>,
    /// One JSON object with the final status and counts instead of a sentence.
    #[arg(long)]
    json: bool,
    /// Associations at once (1-16): the study is split by series, or into IMAGE-level batches
    /// of SOP Instance UIDs, and a failed part is retried alone; an archive that refuses that
    /// gets the study whole on one association. Mind the archive's own association limit.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=16))]
    associations: u16,
    #[command(flatten)]
    tls: super::tls::ClientTlsArgs,
}

/// A configured archive or `AET@host:port`: its address, its move destination, and our
/// association options towards it (TLS from its `tls` block or the `--tls*` flags).
fn resolve(
    config: &Config,
    archive: &str,
    tls: &super::tls::ClientTlsArgs,
) -> Result<(Peer, Option<String>, ScuOptions), Failure> {
    let mut options = ScuOptions::new(config.service.calling_ae().map_err(usage)?);
    if let Some(a) = config.archive(archive) {
        let peer = a.peer().map_err(|e| anyhow::anyhow!(e))?;
        options.tls = tls.client(a.tls.as_ref(), &peer.host)?;
        return Ok((peer, a.move_destination.clone(), options));
    }
    match Peer::parse(archive) {
        Ok(peer) => {
            options.tls = tls.client(None, &peer.host)?;
            Ok((peer, None, options))
        }
        Err(e) => Err(usage(format!(
            "'{archive}' is neither a configured archive nor AET@host:port ({e}); {}",
            known_archives(config)
        ))),
    }
}

/// The configured archive names, for an error about a name that is not one of them.
pub(super) fn known_archives(config: &Config) -> String {
    if config.archives.is_empty() {
        return "no archive is configured (add [[archives]] to the --config file)".into();
    }
    let names: Vec<&str> = config.archives.iter().map(|a| a.name.as_str()).collect();
    format!("configured archives: {}", names.join(", "))
}

pub(super) fn usage(message: String) -> Failure {
    Failure::Config(priorfetch_config::ConfigError {
        issues: vec![priorfetch_config::ConfigIssue { key: "arguments".into(), message }],
    })
}

fn report(error: &DimseError) -> ExitCode {
    eprintln!("error: {error}\nhint: {}", error.hint());
    ExitCode::from(1)
}

pub async fn echo(path: &Path, args: EchoArgs) -> Result<ExitCode, Failure> {
    let config = super::load_config(path)?;
    let (peer, _, options) = resolve(&config, &args.archive, &args.tls)?;
    match priorfetch_dimse::echo(&peer, &options).await {
        Ok(elapsed) => {
            outln!("{peer}: C-ECHO ok in {} ms", elapsed.as_millis())?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Ok(report(&e)),
    }
}

/// The matches of `find`: JSON lines as they arrive, or a table printed at the end so
/// that every column fits its widest value.
pub(super) struct Matches {
    columns: Vec<(Tag, String)>,
    json: bool,
    rows: Vec<Vec<String>>,
}

impl Matches {
    pub(super) fn new(columns: Vec<(Tag, String)>, json: bool) -> Matches {
        Matches { columns, json, rows: Vec::new() }
    }

    /// One match: its asked-for columns.
    pub(super) fn add(&mut self, m: &dicom_object::InMemDicomObject) -> Result<(), Failure> {
        let values: Vec<String> = self
            .columns
            .iter()
            .map(|(tag, _)| {
                m.element_opt(*tag)
                    .ok()
                    .flatten()
                    .and_then(|e| e.to_str().ok())
                    .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
                    .unwrap_or_default()
            })
            .collect();
        if !self.json {
            self.rows.push(values);
            return Ok(());
        }
        let obj: serde_json::Map<String, serde_json::Value> =
            self.columns.iter().zip(values).map(|((_, n), v)| (n.clone(), v.into())).collect();
        outln!("{}", serde_json::Value::Object(obj))
    }

    /// The table (header and rows); nothing more for JSON.
    pub(super) fn finish(self) -> Result<(), Failure> {
        if self.json {
            return Ok(());
        }
        let headers: Vec<String> = self.columns.into_iter().map(|(_, n)| n).collect();
        super::out::text(&super::out::table(&headers, &self.rows))
    }
}

/// `Keyword[=value]` to (tag, VR, value).
fn parse_key(key: &str) -> Result<(Tag, VR, String, String), Failure> {
    let (name, value) = key.split_once('=').unwrap_or((key, ""));
    let entry = StandardDataDictionary
        .by_expr(name.trim())
        .ok_or_else(|| usage(format!("-k {key}: unknown attribute '{name}'")))?;
    let vr = match entry.vr() {
        VirtualVr::Exact(vr) => vr,
        _ => VR::LO,
    };
    Ok((entry.tag(), vr, value.to_string(), entry.alias().to_string()))
}

pub async fn find(path: &Path, args: FindArgs) -> Result<ExitCode, Failure> {
    let config = super::load_config(path)?;
    let level = args.level.to_ascii_uppercase();
    if !["PATIENT", "STUDY", "SERIES", "IMAGE"].contains(&level.as_str()) {
        return Err(usage(format!("--level {}: must be patient, study, series or image", args.level)));
    }
    let keys: Vec<(Tag, VR, String, String)> = args.keys.iter().map(|k| parse_key(k)).collect::<Result<_, _>>()?;
    if let Some(client) = super::web::client_for(&config, &args.archive, &args.tls)? {
        let keys: Vec<_> = keys.into_iter().map(|(t, _, v, name)| (t, v, name)).collect();
        return super::web::find(&client, &level, &keys, args.json).await;
    }
    let (peer, _, options) = resolve(&config, &args.archive, &args.tls)?;
    let query = identifier(&level, &keys.iter().map(|(t, vr, v, _)| (*t, *vr, v.as_str())).collect::<Vec<_>>());
    let model = if args.patient_root { QueryModel::PatientRoot } else { QueryModel::StudyRoot };
    let mut assoc = match Association::connect(&peer, &options, &query_contexts(model)).await {
        Ok(a) => a,
        Err(e) => return Ok(report(&e)),
    };
    let mut matches = Matches::new(keys.iter().map(|(t, _, _, name)| (*t, name.clone())).collect(), args.json);
    let mut closed = None;
    let result = assoc
        .find(model, &query, args.max, |m| match matches.add(&m) {
            Ok(()) => ControlFlow::Continue(()),
            // stdout is gone (or broken): cancel the C-FIND rather than read matches for no one
            Err(e) => {
                closed = Some(e);
                ControlFlow::Break(())
            }
        })
        .await;
    assoc.release().await;
    if let Some(e) = closed {
        return Err(e);
    }
    // the rows that arrived, also before a failure (as when they were printed one by one)
    matches.finish()?;
    match result {
        Ok(outcome) => {
            eprintln!(
                "{} match(es){}{}",
                outcome.matches,
                if outcome.truncated {
                    "; the archive stopped at its match limit (0xFE00): the list is incomplete"
                } else {
                    ""
                },
                if outcome.cancelled_by_us { "; cancelled after --max" } else { "" }
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Ok(report(&e)),
    }
}

pub async fn retrieve(path: &Path, args: RetrieveArgs) -> Result<ExitCode, Failure> {
    let config = super::load_config(path)?;
    // A DICOMweb archive or URL: WADO-RS into --out.
    if let Some(client) = super::web::client_for(&config, &args.archive, &args.tls)? {
        let out = args.out.clone().unwrap_or_else(|| std::path::PathBuf::from("retrieved").join(&args.study));
        return super::web::retrieve(&client, &args.study, &out, args.json).await;
    }
    let (peer, configured_dest, options) = resolve(&config, &args.archive, &args.tls)?;
    let dest = args.dest.or(configured_dest).unwrap_or_else(|| config.destination.ae_title.clone());
    let dest = AeTitle::parse(&dest).map_err(|e| usage(format!("--dest: {e}")))?;
    let model = QueryModel::StudyRoot;
    let query = identifier("STUDY", &[(Tag(0x0020, 0x000D), VR::UI, args.study.as_str())]);
    let contexts = match args.method {
        Method::Move => query_contexts(model),
        Method::Get => priorfetch_dimse::get::get_contexts(model, priorfetch_dimse::get::COMMON_STORAGE_CLASSES),
    };
    let out = args.out.clone().unwrap_or_else(|| std::path::PathBuf::from("retrieved").join(&args.study));
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    if args.json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let target = match args.method {
        Method::Move => dest.to_string(),
        Method::Get => out.display().to_string(),
    };
    let mut split = None;
    if args.associations > 1 {
        let via = match args.method {
            Method::Move => super::split::Via::Move(&dest),
            Method::Get => super::split::Via::Get(&out),
        };
        split = super::split::retrieve(&peer, &options, &args.study, via, args.associations as usize, &bar).await?;
    }
    let progress = |p: &priorfetch_dimse::SubOperations| {
        let done = (p.completed + p.failed + p.warning) as u64;
        bar.set_length(done + p.remaining.unwrap_or(0) as u64);
        bar.set_position(done);
        bar.set_message(format!("failed {} warning {}", p.failed, p.warning));
    };
    let result = match split {
        Some(result) => result,
        None => {
            let mut assoc = match Association::connect(&peer, &options, &contexts).await {
                Ok(a) => a,
                Err(e) => {
                    bar.finish_and_clear();
                    return Ok(report(&e));
                }
            };
            let result = match args.method {
                Method::Move => assoc.retrieve_move(model, &query, &dest, progress, None).await,
                Method::Get => {
                    let mut sink = priorfetch_dimse::DirSink::new(&out)
                        .map_err(|e| anyhow::anyhow!("--out {}: {e}", out.display()))?;
                    assoc.retrieve_get(model, &query, &mut sink, progress, None).await
                }
            };
            assoc.release().await;
            result
        }
    };
    bar.finish_and_clear();
    match result {
        Ok(o) => {
            let summary = serde_json::json!({
                "archive": peer.to_string(), "method": if args.method == Method::Move { "move" } else { "get" },
                "destination": target, "status": format!("0x{:04X}", o.status),
                "completed": o.counts.completed, "failed": o.counts.failed, "warning": o.counts.warning,
                "failed_instances": o.failed_instances, "seconds": o.elapsed.as_secs_f64(),
            });
            if args.json {
                outln!("{summary}")?;
            } else {
                outln!(
                    "{} to {target}: status 0x{:04X}, completed {}, failed {}, warning {} in {:.1} s",
                    if args.method == Method::Move { "C-MOVE" } else { "C-GET" },
                    o.status,
                    o.counts.completed,
                    o.counts.failed,
                    o.counts.warning,
                    o.elapsed.as_secs_f64()
                )?;
            }
            if o.status == 0 && o.counts.completed == 0 {
                // only a C-MOVE goes through the archive's AE table entry for a destination
                let check = match args.method {
                    Method::Move => format!("and that the archive's AE table maps {dest} to the right host:port"),
                    Method::Get => "and that the archive accepts our storage contexts (SCP role) for C-GET".into(),
                };
                eprintln!("warning: the archive reported success but sent nothing: check the study UID, {check}");
                return Ok(ExitCode::from(1));
            }
            Ok(if o.counts.failed > 0 || o.status != 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
        }
        Err(e) => Ok(report(&e)),
    }
}

#[derive(Args)]
pub struct StoreScpArgs {
    /// Port to listen on (all interfaces of --bind).
    #[arg(long)]
    port: u16,
    /// Our AE title (default: service.ae_title).
    #[arg(long)]
    ae: Option<String>,
    /// Folder the instances land in.
    #[arg(long, default_value = "received")]
    out: std::path::PathBuf,
    /// Calling AEs allowed to store (repeatable), in addition to the AE titles of the
    /// configured archives. Anyone else is rejected ("calling AE title not recognized").
    #[arg(long = "allow")]
    allow: Vec<String>,
    /// Accept any calling AE (a test receiver); without it an empty allow-list is an error.
    #[arg(long, conflicts_with = "allow")]
    allow_any: bool,
    /// Address to listen on (0.0.0.0: every interface).
    #[arg(long, default_value = "127.0.0.1")]
    bind: String,
    /// Associations served at once; more are rejected (local limit exceeded).
    #[arg(long, default_value_t = 8)]
    max_associations: usize,
    #[command(flatten)]
    tls: super::tls::ServerTlsArgs,
}

pub async fn store_scp(path: &Path, args: StoreScpArgs) -> Result<ExitCode, Failure> {
    let config = super::load_config(path)?;
    let _logs = super::init_logs(&config);
    let ae = AeTitle::parse(args.ae.as_deref().unwrap_or(&config.service.ae_title))
        .map_err(|e| usage(format!("--ae: {e}")))?;
    let mut allowed = args
        .allow
        .iter()
        .map(|a| AeTitle::parse(a).map_err(|e| usage(format!("--allow: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    // The configured archives are who sends us instances (C-MOVE sub-operations).
    for archive in config.archives.iter().filter_map(|a| AeTitle::parse(&a.ae_title).ok()) {
        if !allowed.contains(&archive) {
            allowed.push(archive);
        }
    }
    if allowed.is_empty() && !args.allow_any {
        return Err(usage(
            "no calling AE would be allowed: configure archives, pass --allow CALLING_AE, or --allow-any".into(),
        ));
    }
    let listener = tokio::net::TcpListener::bind((args.bind.as_str(), args.port))
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}:{}: {e}", args.bind, args.port))?;
    let mut options = priorfetch_dimse::StoreScpOptions::new(ae, &args.out);
    options.allowed_calling = allowed;
    options.allow_any_calling = args.allow_any;
    options.max_associations = args.max_associations;
    options.tls = args.tls.server(config.service.tls.as_ref(), "store-scp")?;
    let (tx, mut rx) = tokio::sync::mpsc::channel(256);
    let token = tokio_util::sync::CancellationToken::new();
    let mut shutdown = super::shutdown_signal();
    let stop = token.clone();
    tokio::spawn(async move {
        let _ = shutdown.wait_for(|s| *s).await;
        stop.cancel();
    });
    let server = tokio::spawn(priorfetch_dimse::run_store_scp(listener, options, tx, token));
    let mut count = 0u64;
    while let Some(instance) = rx.recv().await {
        count += 1;
        // A closed stdout does not stop the receiver: storing is its job, this list a courtesy.
        let _ = outln!("{} {} {} bytes from {}", count, instance.path.display(), instance.size, instance.calling_ae);
    }
    match server.await {
        Ok(Ok(())) => Ok(ExitCode::SUCCESS),
        Ok(Err(e)) => Ok(report(&e)),
        Err(e) => Err(Failure::Runtime(anyhow::anyhow!("store-scp task failed: {e}"))),
    }
}
