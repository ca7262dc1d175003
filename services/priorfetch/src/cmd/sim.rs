//! `priorfetch sim`: the archive simulator standalone (tests, demos, benchmarks).

use crate::Failure;
use clap::Args;
use pacs_sim::{CapBehaviour, DataSource, Faults, MatchCap, RejectReason, Sim, SimConfig, SyntheticSpec};
use std::path::Path;
use std::process::ExitCode;

#[derive(Args)]
pub struct SimArgs {
    /// Port to listen on (0: any free port; the chosen one is printed).
    #[arg(long, default_value_t = 11112)]
    port: u16,
    /// Address to listen on (0.0.0.0: every interface).
    #[arg(long, default_value = "127.0.0.1")]
    bind: String,
    /// Our AE title.
    #[arg(long, default_value = "SIM")]
    ae: String,
    /// Serve the Part-10 files under this folder (indexed at start).
    #[arg(long, conflicts_with = "synthetic")]
    data: Option<std::path::PathBuf>,
    /// Generate N patients with prior studies.
    #[arg(long)]
    synthetic: Option<usize>,
    /// Seed of the synthetic data and of --fail-ratio's choice of failing instances.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Instances per series (synthetic).
    #[arg(long, default_value_t = 2)]
    instances: usize,
    /// Image rows and columns (synthetic; 16-bit pixels).
    #[arg(long, default_value_t = 64)]
    size: u16,
    /// Move destination AE=host:port (repeatable).
    #[arg(long = "destination")]
    destinations: Vec<String>,
    /// C-FIND returns at most N matches (see --cap-behaviour).
    #[arg(long)]
    match_cap: Option<usize>,
    /// At the match cap: refuse (0xA700, no match), truncate (N matches, then success) or
    /// cancel (N matches, then 0xFE00 as Orthanc does).
    #[arg(long, default_value = "cancel")]
    cap_behaviour: String,
    /// Reject every association: no-reason, calling-ae, called-ae, busy, congestion, local-limit.
    #[arg(long)]
    reject: Option<String>,
    /// Associations served at once; more are rejected (transient, local limit exceeded).
    #[arg(long)]
    max_associations: Option<u32>,
    /// Delay per response, e.g. 50ms.
    #[arg(long)]
    delay: Option<String>,
    /// A-ABORT the association after N sub-operations of one C-MOVE/C-GET.
    #[arg(long)]
    abort_after: Option<u32>,
    /// Share (0..1) of sub-operations that fail; the final status is 0xB000 with the failed list.
    #[arg(long, default_value_t = 0.0)]
    fail_ratio: f64,
    /// C-MOVE/C-GET answer success with 0 completed and send nothing.
    #[arg(long)]
    empty_success: bool,
    /// C-MOVE/C-GET answer 0xA702 (out of resources: unable to perform sub-operations).
    #[arg(long)]
    out_of_resources: bool,
    /// C-MOVE/C-GET at IMAGE level answer 0xC000 (an archive that retrieves whole studies and series only).
    #[arg(long)]
    refuse_image_level: bool,
    /// Retrieve faults apply only to the first N attempts of each study.
    #[arg(long)]
    faults_first_attempts: Option<u32>,
    /// Also serve DICOMweb (QIDO-RS, WADO-RS at /dicom-web) on this port (0: any free one).
    #[arg(long)]
    dicomweb_port: Option<u16>,
    /// DICOMweb: answer the first N requests with --web-busy-status and Retry-After.
    #[arg(long, default_value_t = 0)]
    web_busy: u32,
    /// 429 or 503.
    #[arg(long, default_value_t = 503)]
    web_busy_status: u16,
    /// DICOMweb: seconds in the Retry-After header of the --web-busy answers.
    #[arg(long, default_value_t = 1)]
    web_retry_after: u64,
    /// DICOMweb: cut each study's first WADO-RS body after N instances.
    #[arg(long)]
    web_cut_after: Option<usize>,
    /// DICOMweb: STOW-RS refuses every N-th instance offered, the first time (202).
    #[arg(long)]
    stow_refuse_every: Option<usize>,
    /// DICOMweb: require HTTP basic authentication, USER:PASSWORD.
    #[arg(long)]
    web_user: Option<String>,
    #[command(flatten)]
    tls: super::tls::ServerTlsArgs,
}

use super::dicom::usage;
use super::out::outln;

pub async fn run(path: &Path, args: SimArgs) -> Result<ExitCode, Failure> {
    let config = super::load_config(path)?;
    let _logs = super::init_logs(&config);
    let data = match (&args.data, args.synthetic) {
        (Some(dir), _) => DataSource::Folder(dir.clone()),
        (None, Some(patients)) => DataSource::Synthetic(SyntheticSpec {
            patients,
            seed: args.seed,
            instances_per_series: args.instances,
            rows: args.size,
            columns: args.size,
            ..Default::default()
        }),
        (None, None) => DataSource::Empty,
    };
    let match_cap = match args.match_cap {
        Some(limit) => {
            let behaviour = match args.cap_behaviour.as_str() {
                "refuse" => CapBehaviour::Refuse,
                "truncate" => CapBehaviour::Truncate,
                "cancel" => CapBehaviour::Cancel,
                other => return Err(usage(format!("--cap-behaviour: '{other}' is not refuse, truncate or cancel"))),
            };
            Some(MatchCap { limit, behaviour })
        }
        None => None,
    };
    let reject =
        args.reject.as_deref().map(RejectReason::parse).transpose().map_err(|e| usage(format!("--reject: {e}")))?;
    let response_delay =
        args.delay.as_deref().map(humantime::parse_duration).transpose().map_err(|e| usage(format!("--delay: {e}")))?;
    if !(0.0..=1.0).contains(&args.fail_ratio) {
        return Err(usage("--fail-ratio: must be between 0 and 1".into()));
    }
    let faults = Faults {
        match_cap,
        reject,
        max_associations: args.max_associations,
        response_delay,
        abort_after_suboperations: args.abort_after,
        failed_suboperation_ratio: args.fail_ratio,
        empty_success: args.empty_success,
        out_of_resources: args.out_of_resources,
        refuse_image_level: args.refuse_image_level,
        faults_first_attempts: args.faults_first_attempts,
        web_busy: (args.web_busy > 0).then_some(pacs_sim::WebBusy {
            status: args.web_busy_status,
            retry_after_secs: args.web_retry_after,
            times: args.web_busy,
        }),
        web_cut_after_parts: args.web_cut_after,
        stow_refuse_every: args.stow_refuse_every,
        unreachable: false,
        query_delay: None,
        // faults without a flag of their own stay off
        ..Default::default()
    };
    let mut sim_config = SimConfig::new(&args.ae, data).with_faults(faults);
    sim_config.seed = args.seed;
    sim_config.tls = args.tls.server(None, "sim")?;
    if let Some(user) = &args.web_user {
        let (name, password) = user.split_once(':').ok_or_else(|| usage("--web-user: USER:PASSWORD".into()))?;
        sim_config.web_user = Some((name.to_string(), password.to_string()));
    }
    for d in &args.destinations {
        let parsed = d.split_once('=').and_then(|(ae, addr)| {
            let (host, port) = addr.rsplit_once(':')?;
            Some((ae, host, port.parse::<u16>().ok()?))
        });
        let Some((ae, host, port)) = parsed else {
            return Err(usage(format!("--destination: '{d}' is not AE=host:port")));
        };
        sim_config = sim_config.with_destination(ae, host, port);
    }
    let sim =
        Sim::start(sim_config, &format!("{}:{}", args.bind, args.port)).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    // A closed stdout does not stop the simulator: these lines are a courtesy, serving is its job.
    let _ = outln!("sim {} listening on {} ({} studies)", sim.ae(), sim.address(), sim.index().len());
    if let Some(port) = args.dicomweb_port {
        let url = sim.serve_dicomweb(&format!("{}:{port}", args.bind)).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        let _ = outln!("sim DICOMweb at {url}");
    }
    let mut shutdown = super::shutdown_signal();
    let _ = shutdown.wait_for(|s| *s).await;
    let stats = sim.stats();
    sim.shutdown().await;
    let summary = format!(
        "sim stopped: {} associations, {} finds, {} moves, {} gets, {} instances sent, {} received",
        stats.associations, stats.finds, stats.moves, stats.gets, stats.stores_sent, stats.stores_received
    );
    let _ = outln!("{summary}");
    Ok(ExitCode::SUCCESS)
}
