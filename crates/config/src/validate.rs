//! Checks serde cannot express: ranges, required-if, uniqueness, cron and regex syntax.

use crate::ConfigIssue;
use crate::model::*;
use std::collections::HashSet;
use std::str::FromStr;

pub(crate) fn validate(config: &Config) -> Vec<ConfigIssue> {
    let mut issues = Vec::new();
    let mut issue = |key: String, message: &str| issues.push(ConfigIssue { key, message: message.to_string() });

    if let Err(why) = check_ae_title(&config.service.ae_title) {
        issue("service.ae_title".into(), &why);
    }
    if config.service.admin_listen.parse::<std::net::SocketAddr>().is_err() {
        issue("service.admin_listen".into(), "must be host:port with an IP address, e.g. 127.0.0.1:9464");
    }
    let url = &config.database.url;
    if !(url.starts_with("sqlite:") || url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        issue("database.url".into(), "must start with sqlite: or postgres://");
    }
    if config.database.max_connections == 0 {
        issue("database.max_connections".into(), "must be at least 1");
    }
    if let Err(why) = config.intake.hl7.validate() {
        let (field, message) = why.split_once(": ").unwrap_or(("default_utc_offset", why.as_str()));
        issue(format!("intake.hl7.{field}"), message);
    }
    if crate::admin::api_open_to_network(&config.admin, &config.service.admin_listen) {
        issue(
            "service.admin_listen".into(),
            "listens beyond loopback but no [[admin.tokens]] are configured: the operator API would be open \
             to the network; add [[admin.tokens]], listen on 127.0.0.1, or set admin.api = false",
        );
    }
    if !config.admin.open_probes && config.admin.tokens.is_empty() {
        issue("admin.open_probes".into(), "false needs [[admin.tokens]]: no probe or scraper could get in");
    }
    for (i, field, message) in crate::admin::check(&config.admin) {
        issue(format!("admin.tokens[{i}].{field}"), &message);
    }
    if config.intake.http.max_body < 1024 {
        issue("intake.http.max_body".into(), "must be at least 1024 bytes");
    }
    for (key, message) in crate::intake::check(config) {
        issue(key, &message);
    }
    for (field, message) in crate::signals::check(&config.signals) {
        issue(format!("signals.{field}"), message);
    }
    if config.intake.rabbitmq.prefetch == 0 {
        issue("intake.rabbitmq.prefetch".into(), "must be at least 1");
    }

    let mut names = HashSet::new();
    for (i, a) in config.archives.iter().enumerate() {
        let key = |field: &str| format!("archives[{i}].{field}");
        if a.name.trim().is_empty() {
            issue(key("name"), "must not be empty");
        } else if !names.insert(a.name.as_str()) {
            issue(key("name"), &format!("duplicate archive name '{}'", a.name));
        }
        if a.protocol == Protocol::Dimse {
            if let Err(why) = check_ae_title(&a.ae_title) {
                issue(key("ae_title"), &why);
            }
            if a.host.trim().is_empty() {
                issue(key("host"), "must not be empty");
            }
            if !(1..=65535).contains(&a.port) {
                issue(key("port"), "must be 1..=65535");
            }
        }
        if let Some(url) = &a.base_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            issue(key("base_url"), "must start with http:// or https://");
        }
        for (field, message) in a.tls.as_ref().map(crate::tls::check_client).unwrap_or_default() {
            issue(key(&format!("tls.{field}")), &message);
        }
        if a.protocol == Protocol::Dicomweb && a.retrieve != RetrieveMethod::Wado {
            issue(key("retrieve"), "must be \"wado\" when protocol = \"dicomweb\"");
        }
        if a.protocol == Protocol::Dimse
            && a.retrieve == RetrieveMethod::Move
            && a.move_destination.as_deref().is_none_or(|d| d.trim().is_empty())
        {
            issue(key("move_destination"), "required when retrieve = \"move\"");
        }
        if let Some(dest) = &a.move_destination
            && let Err(why) = check_ae_title(dest)
        {
            issue(key("move_destination"), &why);
        }
        if a.protocol == Protocol::Dicomweb && a.base_url.is_none() {
            issue(key("base_url"), "required when protocol = \"dicomweb\"");
        }
        if a.retrieve == RetrieveMethod::Wado && a.protocol != Protocol::Dicomweb {
            issue(key("retrieve"), "\"wado\" needs protocol = \"dicomweb\"");
        }
        if a.max_associations == 0 {
            issue(key("max_associations"), "must be at least 1");
        }
        if a.max_matches == Some(0) {
            issue(key("max_matches"), "must be at least 1 (omit it when the archive has no cap)");
        }
        for (w, window) in a.retrieve_windows.iter().enumerate() {
            if let Err(e) = cron::Schedule::from_str(&window.start) {
                issue(format!("archives[{i}].retrieve_windows[{w}].start"), &format!("bad cron expression: {e}"));
            }
            if window.duration.is_zero() {
                issue(format!("archives[{i}].retrieve_windows[{w}].duration"), "must be positive");
            }
        }
    }

    let d = &config.destination;
    for (field, message) in d.tls.as_ref().map(crate::tls::check_client).unwrap_or_default() {
        issue(format!("destination.tls.{field}"), &message);
    }
    for (field, message) in config.service.tls.as_ref().map(crate::tls::check_server).unwrap_or_default() {
        issue(format!("service.tls.{field}"), &message);
    }
    for (field, message) in config.service.admin_tls.as_ref().map(crate::tls::check_server).unwrap_or_default() {
        issue(format!("service.admin_tls.{field}"), &message);
    }
    match d.protocol {
        Protocol::Dimse => {
            if let Err(why) = check_ae_title(&d.ae_title) {
                issue("destination.ae_title".into(), &why);
            }
            if !(1..=65535).contains(&d.port) {
                issue("destination.port".into(), "must be 1..=65535");
            }
        }
        Protocol::Dicomweb => {
            match &d.base_url {
                None => issue("destination.base_url".into(), "required when protocol = \"dicomweb\""),
                Some(url) if !(url.starts_with("http://") || url.starts_with("https://")) => {
                    issue("destination.base_url".into(), "must start with http:// or https://")
                }
                Some(_) => {}
            }
            for (i, a) in config.archives.iter().enumerate() {
                if a.retrieve == RetrieveMethod::Move {
                    issue(
                        format!("archives[{i}].retrieve"),
                        "\"move\" cannot reach a DICOMweb destination: use \"get\" or \"wado\"",
                    );
                }
            }
        }
    }

    let mut rule_names = HashSet::new();
    for (i, r) in config.rules.iter().enumerate() {
        if !rule_names.insert(r.name.as_str()) {
            issue(format!("rules[{i}].name"), &format!("duplicate rule name '{}'", r.name));
        }
        for (field, pattern) in
            [("match.procedure_text", &r.matches.procedure_text), ("priors.description", &r.priors.description)]
        {
            if let Some(p) = pattern
                && let Err(e) = regex::Regex::new(p)
            {
                let why = e.to_string();
                let why = why.lines().last().unwrap_or_default().trim_start_matches("error: ");
                issue(format!("rules[{i}].{field}"), &format!("bad regex: {why}"));
            }
        }
        if r.priors.max == 0 {
            issue(format!("rules[{i}].priors.max"), "must be at least 1");
        }
    }

    let retry = &config.retry;
    if retry.max_attempts == 0 {
        issue("retry.max_attempts".into(), "must be at least 1");
    }
    if !(retry.backoff.factor >= 1.0 && retry.backoff.factor.is_finite()) {
        issue("retry.backoff.factor".into(), "must be a number >= 1.0");
    }
    if !(0.0..=1.0).contains(&retry.backoff.jitter) {
        issue("retry.backoff.jitter".into(), "must be between 0.0 and 1.0");
    }
    if retry.backoff.max < retry.backoff.initial {
        issue("retry.backoff.max".into(), "must be >= retry.backoff.initial");
    }

    let mover = &config.mover;
    if mover.workers == 0 {
        issue("mover.workers".into(), "must be at least 1");
    }
    if mover.spool_limit_mb == 0 {
        issue("mover.spool_limit_mb".into(), "must be at least 1");
    }
    if mover.spool_dir.trim().is_empty() {
        issue("mover.spool_dir".into(), "must not be empty");
    }
    if mover.progress_interval.is_zero() || mover.progress_interval > config.queue.lease / 2 {
        issue(
            "mover.progress_interval".into(),
            "must be positive and at most half of queue.lease (it extends the lease)",
        );
    }
    if mover.dimse_timeout.as_secs() < 1 {
        issue("mover.dimse_timeout".into(), "must be at least 1s");
    }
    if mover.stall_timeout < mover.dimse_timeout {
        issue("mover.stall_timeout".into(), "must be at least mover.dimse_timeout");
    }
    if mover.split_associations == 0 {
        issue("mover.split_associations".into(), "must be at least 1 (1: never split a retrieve)");
    }
    let planner = &config.planner;
    if planner.concurrency == 0 {
        issue("planner.concurrency".into(), "must be at least 1");
    }
    if planner.cfind_timeout.is_zero() {
        issue("planner.cfind_timeout".into(), "must be positive");
    }
    if !(planner.replan_backoff.factor >= 1.0 && planner.replan_backoff.factor.is_finite()) {
        issue("planner.replan_backoff.factor".into(), "must be a number >= 1.0");
    }
    if !(0.0..=1.0).contains(&planner.replan_backoff.jitter) {
        issue("planner.replan_backoff.jitter".into(), "must be between 0.0 and 1.0");
    }
    if planner.replan_backoff.max < planner.replan_backoff.initial {
        issue("planner.replan_backoff.max".into(), "must be >= planner.replan_backoff.initial");
    }

    let queue = &config.queue;
    if queue.lease.as_secs() < 5 {
        issue("queue.lease".into(), "must be at least 5s");
    }
    if queue.heartbeat.is_zero() || queue.heartbeat > queue.dead_after / 3 {
        issue("queue.heartbeat".into(), "must be positive and at most a third of queue.dead_after");
    }
    if queue.dead_after > queue.lease {
        issue("queue.dead_after".into(), "must be at most queue.lease");
    }
    for (field, expr) in [("rescue_schedule", &queue.rescue_schedule), ("purge_schedule", &queue.purge_schedule)] {
        if let Err(e) = cron::Schedule::from_str(expr) {
            issue(format!("queue.{field}"), &format!("bad cron expression: {e}"));
        }
    }
    issues
}

/// DICOM AE title: the domain's one validator (1-16 characters of the default
/// repertoire, no backslash or control characters, not only spaces).
pub fn check_ae_title(ae: &str) -> Result<(), String> {
    priorfetch_domain::AeTitle::parse(ae).map(|_| ())
}
