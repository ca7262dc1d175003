//! Every validation rule names its key; nothing panics on bad input.

use priorfetch_config::{Config, IntakeSource, Sources};

fn load(overlay: &str) -> Result<Config, Vec<String>> {
    Config::load(Sources { overlay: Some(overlay), ..Default::default() })
        .map_err(|e| e.issues.iter().map(|i| i.to_string()).collect())
}

const TWO_ARCHIVES: &str = r#"
[[archives]]
name = "short-term"
ae_title = "ARCH1"
host = "127.0.0.1"
port = 4242
move_destination = "DEST"

[[archives]]
name = "long-term"
ae_title = "ARCH2"
host = "127.0.0.1"
port = 70000
move_destination = "DEST"
"#;

#[test]
fn defaults_are_valid() {
    let config = load("").expect("embedded defaults validate");
    assert_eq!(config.service.ae_title, "PRIORFETCH");
    assert_eq!(config.prefetch.lead_time.as_secs(), 12 * 3600);
    assert_eq!(config.rules[0].priors.lookback.as_secs() / 86400, 1826); // 5 years of 365.25 days
}

#[test]
fn port_out_of_range_names_the_archive_index() {
    let issues = load(TWO_ARCHIVES).unwrap_err();
    assert_eq!(issues, vec!["archives[1].port: must be 1..=65535"]);
}

#[test]
fn move_destination_required_for_move() {
    let issues = load("[[archives]]\nname='a'\nae_title='A'\nhost='h'\nport=104\n").unwrap_err();
    assert_eq!(issues, vec!["archives[0].move_destination: required when retrieve = \"move\""]);
    // not required for C-GET
    load("[[archives]]\nname='a'\nae_title='A'\nhost='h'\nport=104\nretrieve='get'\n").unwrap();
}

#[test]
fn duplicate_archive_names_rejected() {
    let one = "[[archives]]\nname='a'\nae_title='A'\nhost='h'\nport=104\nretrieve='get'\n";
    let issues = load(&format!("{one}{one}")).unwrap_err();
    assert_eq!(issues, vec!["archives[1].name: duplicate archive name 'a'"]);
}

#[test]
fn unknown_keys_rejected_with_their_path() {
    let issues = load("[service]\nae_titel = 'X'\n").unwrap_err();
    assert!(issues.iter().any(|i| i.starts_with("service.ae_titel: unknown key")), "{issues:?}");
    let issues =
        load("[[archives]]\nname='a'\nae_title='A'\nhost='h'\nport=104\nretrieve='get'\ncolour='red'\n").unwrap_err();
    assert!(issues.iter().any(|i| i.starts_with("archives[0].colour: unknown key")), "{issues:?}");
}

#[test]
fn bad_values_name_the_key() {
    let issues = load("[prefetch]\nlead_time = 'soon'\n").unwrap_err();
    assert!(issues[0].starts_with("prefetch.lead_time:") && issues[0].contains("bad duration"), "{issues:?}");
    let issues = load("[intake]\nsource = 'mqtt'\n").unwrap_err();
    assert!(issues[0].starts_with("intake.source:"), "{issues:?}");
    let issues = load("[service]\nae_title = 'THIS_AE_TITLE_IS_TOO_LONG'\n").unwrap_err();
    assert_eq!(issues, vec!["service.ae_title: AE title 'THIS_AE_TITLE_IS_TOO_LONG' is longer than 16 characters"]);
    let issues = load("[[archives]]\nname='a'\nae_title='A'\nhost='h'\nport=104\nretrieve='get'\nretrieve_windows=[{start='every night', duration='1h'}]\n").unwrap_err();
    assert!(issues[0].starts_with("archives[0].retrieve_windows[0].start: bad cron expression"), "{issues:?}");
    let issues = load("[[rules]]\nname='r'\npriors={lookback='1y', max=1, description='(('}\n").unwrap_err();
    assert!(issues[0].starts_with("rules[0].priors.description: bad regex: unclosed group"), "{issues:?}");
    let issues = load("[retry]\nmax_attempts = 0\n").unwrap_err();
    assert_eq!(issues, vec!["retry.max_attempts: must be at least 1"]);
}

#[test]
fn several_problems_reported_together() {
    let issues = load("[retry]\nmax_attempts = 0\n[destination]\nport = 0\n").unwrap_err();
    assert_eq!(issues.len(), 2, "{issues:?}");
}

#[test]
fn secrets_redacted_when_printed() {
    let config = load("[database]\nurl='postgres://app:s3cret@db/x'\npassword='topsecret'\n").unwrap();
    let shown = config.to_redacted_toml();
    assert!(!shown.contains("s3cret") && !shown.contains("topsecret") && !shown.contains("guest:guest"), "{shown}");
    assert!(shown.contains("[redacted]"));
    assert_eq!(config.database.password.expose(), "topsecret");
}

#[test]
fn file_and_garbage_inputs_do_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.toml");
    std::fs::write(&path, "\u{0}\u{1}[[[ not toml").unwrap();
    let err = Config::load(Sources { file: Some(&path), ..Default::default() }).unwrap_err();
    assert!(!err.issues.is_empty());
    let missing = dir.path().join("missing.toml");
    let err = Config::load(Sources { file: Some(&missing), ..Default::default() }).unwrap_err();
    assert_eq!(err.issues[0].key, "--config");
}

#[test]
fn hl7_field_positions_are_configurable_and_checked() {
    let config = load("[intake.hl7]\naccession = ['OBR-3']\ndefault_utc_offset = '+01:00'\n").unwrap();
    assert_eq!(config.intake.hl7.accession[0].to_string(), "OBR-3");
    let issues = load("[intake.hl7]\naccession = ['OBR3']\n").unwrap_err();
    assert!(issues[0].starts_with("intake.hl7.accession"), "{issues:?}");
    let issues = load("[intake.hl7]\ndefault_utc_offset = 'CET'\n").unwrap_err();
    assert!(issues[0].starts_with("intake.hl7.default_utc_offset:"), "{issues:?}");
}

// nextest runs each test in its own process, so setting the environment here is safe.
#[test]
fn passwords_from_the_environment_are_taken_as_raw_strings() {
    unsafe {
        std::env::set_var("PRIORFETCH__DATABASE__PASSWORD", "12345");
        std::env::set_var("PRIORFETCH__INTAKE__KAFKA__PASSWORD", "true");
    }
    let config = Config::load(Sources { env: true, ..Default::default() }).expect("numeric-looking passwords load");
    assert_eq!(config.database.password.expose(), "12345");
    assert_eq!(config.intake.kafka.password.expose(), "true");
}

#[test]
fn mover_settings_are_checked() {
    let issues = load("[mover]\nworkers = 0\nspool_dir = \" \"\nspool_limit_mb = 0\nprogress_interval = \"10m\"\ndimse_timeout = \"0s\"\n").unwrap_err();
    for key in
        ["mover.workers", "mover.spool_dir", "mover.spool_limit_mb", "mover.progress_interval", "mover.dimse_timeout"]
    {
        assert!(issues.iter().any(|i| i.starts_with(key)), "{key} not named in {issues:?}");
    }
}

#[test]
fn planner_settings_and_query_issuer_are_checked() {
    let config = load(TWO_ARCHIVES.replace("70000", "4243").as_str()).unwrap();
    assert_eq!(config.planner.concurrency, 8);
    assert_eq!(config.planner.association_idle.as_secs(), 2);
    assert!(!config.archives[0].query_issuer);
    let config =
        load("[[archives]]\nname='a'\nae_title='A'\nhost='h'\nport=104\nretrieve='get'\nquery_issuer=true\n").unwrap();
    assert!(config.archives[0].query_issuer);
    let issues = load(
        "[planner]\nconcurrency = 0\nreplan_backoff = { initial = '1m', factor = 0.5, max = '1s', jitter = 2.0 }\n",
    )
    .unwrap_err();
    for key in [
        "planner.concurrency",
        "planner.replan_backoff.factor",
        "planner.replan_backoff.jitter",
        "planner.replan_backoff.max",
    ] {
        assert!(issues.iter().any(|i| i.starts_with(key)), "{key}: {issues:?}");
    }
    let issues = load("[planner]\ncolour = 'red'\n").unwrap_err();
    assert!(issues.iter().any(|i| i.starts_with("planner.colour: unknown key")), "{issues:?}");
}

#[test]
fn a_dicomweb_archive_needs_a_url_not_a_dimse_address() {
    let ok = load(
        r#"
[[archives]]
name = "cloud"
protocol = "dicomweb"
base_url = "https://pacs.example/dicom-web"
retrieve = "wado"
auth = { basic = { user = "pf", password = "s3cret" } }
"#,
    )
    .expect("no ae_title, host or port needed");
    assert!(!format!("{:?}", ok.archives[0].auth).contains("s3cret"), "the password is never printed");
    let issues = load(
        r#"
[[archives]]
name = "cloud"
protocol = "dicomweb"
base_url = "pacs.example/dicom-web"
"#,
    )
    .unwrap_err();
    assert_eq!(
        issues,
        vec![
            "archives[0].base_url: must start with http:// or https://",
            "archives[0].retrieve: must be \"wado\" when protocol = \"dicomweb\"",
        ]
    );
}

#[test]
fn a_dicomweb_destination_needs_a_url_and_archives_that_can_reach_it() {
    let issues =
        load(&format!("{TWO_ARCHIVES}\n[destination]\nprotocol = \"dicomweb\"\nae_title = \"\"\n")).unwrap_err();
    assert!(issues.contains(&"destination.base_url: required when protocol = \"dicomweb\"".to_string()), "{issues:?}");
    assert!(
        issues.contains(
            &"archives[0].retrieve: \"move\" cannot reach a DICOMweb destination: use \"get\" or \"wado\"".to_string()
        ),
        "{issues:?}"
    );
    let ok =
        load("[destination]\nprotocol = \"dicomweb\"\nbase_url = \"http://reading:8042/dicom-web\"\nae_title = \"\"\n")
            .expect("no AE title, host or port needed");
    assert_eq!(ok.destination.name(), "http://reading:8042/dicom-web", "job rows name it by its URL");
}

#[test]
fn several_sources_run_at_once_and_their_sections_are_checked() {
    let config = load("[intake]\nsource = ['rabbitmq', 'mllp']\n").unwrap();
    assert!(config.intake.source.contains(IntakeSource::Mllp) && config.intake.source.contains(IntakeSource::Rabbitmq));
    assert_eq!(config.intake.mllp.listen, "0.0.0.0:2575");
    let single = load("[intake]\nsource = 'kafka'\n").unwrap();
    assert_eq!(single.intake.source.0, vec![IntakeSource::Kafka]);
    assert!(single.to_redacted_toml().contains("source = \"kafka\""), "one source prints as before");

    let issues = load("[intake]\nsource = ['mllp', 'mllp']\n[intake.mllp]\nlisten = 'anywhere'\nmax_message = 10\n")
        .unwrap_err();
    assert!(issues.contains(&"intake.source: mllp is listed twice".to_string()), "{issues:?}");
    assert!(issues.iter().any(|i| i.starts_with("intake.mllp.listen:")), "{issues:?}");
    assert!(issues.contains(&"intake.mllp.max_message: must be at least 1024 bytes".to_string()), "{issues:?}");

    // The worklist is checked only when it is a source.
    assert!(load("[intake.worklist]\nschedule = 'often'\n").is_ok());
    let issues = load("[intake]\nsource = 'worklist'\n[intake.worklist]\nschedule = 'often'\n").unwrap_err();
    for key in ["intake.worklist.ae_title", "intake.worklist.host", "intake.worklist.port", "intake.worklist.schedule"]
    {
        assert!(issues.iter().any(|i| i.starts_with(key)), "{key}: {issues:?}");
    }
    let issues = load("[[procedure_map]]\ncodes = ['CTCHEST']\n").unwrap_err();
    assert_eq!(issues, vec!["procedure_map[0]: set modality, body_part or both"]);
}

#[test]
fn broker_tls_and_sasl_settings_are_checked() {
    let ok = load(
        "[intake.kafka]\nsecurity_protocol = 'sasl_ssl'\nsasl_mechanism = 'SCRAM-SHA-512'\nusername = 'pf'\n\
         tls = { ca = '/etc/pf/ca.pem' }\n[intake.rabbitmq]\nurl = 'amqps://mq:5671/%2f'\ntls = { ca = '/etc/pf/ca.pem' }\n",
    );
    assert!(ok.is_ok(), "{ok:?}");
    let issues = load("[intake.kafka]\nsecurity_protocol = 'sasl_plaintext'\ntls = { ca = 'ca.pem' }\n").unwrap_err();
    for key in ["intake.kafka.sasl_mechanism", "intake.kafka.username", "intake.kafka.tls"] {
        assert!(issues.iter().any(|i| i.starts_with(key)), "{key}: {issues:?}");
    }
    let issues = load("[intake.rabbitmq]\ntls = { cert = 'c.pem' }\n").unwrap_err();
    assert!(issues.iter().any(|i| i.starts_with("intake.rabbitmq.tls.cert")), "{issues:?}");
    assert!(issues.iter().any(|i| i.contains("not amqps://")), "{issues:?}");
}

#[test]
fn signals_settings_are_checked() {
    let config = load("").unwrap();
    assert_eq!(
        (config.signals.upcoming.as_secs(), config.signals.at_risk.as_secs(), config.signals.every.as_secs()),
        (12 * 3600, 3600, 15)
    );
    assert_eq!(config.signals.archive_stale.as_secs(), 300);
    let issues = load("[signals]\nupcoming = '0s'\nat_risk = '2h'\nevery = '10m'\narchive_stale = '1s'\n").unwrap_err();
    assert_eq!(
        issues,
        vec![
            "signals.upcoming: must be positive and at most 7d",
            "signals.at_risk: must be positive and at most signals.upcoming",
            "signals.every: must be between 1s and 5m",
            "signals.archive_stale: must be at least 10s",
        ]
    );
    let issues = load("[signals]\nat_risk = '13h'\n").unwrap_err();
    assert_eq!(issues, vec!["signals.at_risk: must be positive and at most signals.upcoming"]);
}

#[test]
fn an_operator_api_open_to_the_network_is_refused_naming_admin_listen() {
    let issues = load("[service]\nadmin_listen = '0.0.0.0:9464'\n").unwrap_err();
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert!(issues[0].starts_with("service.admin_listen: listens beyond loopback"), "{issues:?}");
    assert!(load("[service]\nadmin_listen = '[::1]:9464'\n").is_ok(), "IPv6 loopback is loopback");
    let off = load("[service]\nadmin_listen = '0.0.0.0:9464'\n[admin]\napi = false\n").unwrap();
    assert!(!off.admin.api);
    let hash = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    let with_token = format!(
        "[service]\nadmin_listen = '10.0.0.5:9464'\n[[admin.tokens]]\nname = 'ops'\nrole = 'viewer'\ntoken_sha256 = '{hash}'\n"
    );
    assert!(load(&with_token).unwrap().admin.api, "on by default");
}
