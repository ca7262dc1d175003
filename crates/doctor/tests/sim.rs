//! The doctor against the archive simulator's faults: match caps (0xA700 refuse, silent
//! truncation), every association reject reason, an association cap of one, and an
//! archive that checks the move destination before the study.

use pacs_sim::{CapBehaviour, DataSource, Faults, MatchCap, RejectReason, Sim, SimConfig, SimHandle, SyntheticSpec};
use priorfetch_config::{ArchiveConfig, Protocol, RetrieveMethod};
use priorfetch_dimse::AeTitle;
use priorfetch_doctor::{Check, DoctorContext, Finding, Severity, diagnose};
use std::time::Duration;

fn archive(port: u16, retrieve: RetrieveMethod, move_destination: Option<&str>) -> ArchiveConfig {
    ArchiveConfig {
        name: "sim".into(),
        ae_title: "SIM".into(),
        host: "127.0.0.1".into(),
        port: port.into(),
        priority: 1,
        protocol: Protocol::Dimse,
        base_url: None,
        auth: Default::default(),
        retrieve,
        move_destination: move_destination.map(Into::into),
        max_associations: 1,
        max_matches: None,
        retrieve_windows: vec![],
        query_issuer: false,
        patient_id_issuer: None,
        tls: None,
    }
}

fn ctx() -> DoctorContext {
    let mut ctx = DoctorContext::new(AeTitle::parse("PRIORFETCH").unwrap());
    ctx.association_timeout = Duration::from_secs(3);
    ctx.dimse_timeout = Duration::from_secs(20);
    ctx
}

async fn sim(patients: usize, faults: Faults) -> SimHandle {
    let data = DataSource::Synthetic(SyntheticSpec { patients, seed: 7, ..Default::default() });
    Sim::start(SimConfig::new("SIM", data).with_faults(faults), "127.0.0.1:0").await.expect("start simulator")
}

fn show(findings: &[Finding]) -> String {
    findings.iter().map(|f| f.to_string()).collect::<Vec<_>>().join("\n")
}

fn one(findings: &[Finding], check: Check, severity: Severity) -> &Finding {
    findings
        .iter()
        .find(|f| f.check == check && f.severity == severity)
        .unwrap_or_else(|| panic!("no {check} {severity} finding in:\n{}", show(findings)))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cap_that_refuses_with_a700_and_one_that_truncates_silently() {
    let refuse = sim(
        10,
        Faults { match_cap: Some(MatchCap { limit: 10, behaviour: CapBehaviour::Refuse }), ..Default::default() },
    )
    .await;
    let mut config = archive(refuse.port(), RetrieveMethod::Get, None);
    let findings = diagnose(&config, 0, &ctx()).await;
    let warn = one(&findings, Check::MatchCap, Severity::Warn);
    assert!(warn.message.contains("refuses a broad C-FIND with 0xA700"), "{}", show(&findings));
    assert!(warn.fix.as_deref().unwrap().contains("archives[0].max_matches"), "{}", show(&findings));
    config.max_matches = Some(10);
    let findings = diagnose(&config, 0, &ctx()).await;
    assert!(one(&findings, Check::MatchCap, Severity::Ok).message.contains("0xA700"), "{}", show(&findings));
    refuse.shutdown().await;

    // 40 patients hold more than 100 studies; the archive says success after 100
    let truncate = sim(
        40,
        Faults { match_cap: Some(MatchCap { limit: 100, behaviour: CapBehaviour::Truncate }), ..Default::default() },
    )
    .await;
    assert!(truncate.index().len() > 100);
    let findings = diagnose(&archive(truncate.port(), RetrieveMethod::Get, None), 0, &ctx()).await;
    let warn = one(&findings, Check::MatchCap, Severity::Warn);
    assert!(warn.message.contains("exactly 100 matches"), "{}", show(&findings));
    assert!(warn.fix.as_deref().unwrap().contains("archives[0].max_matches = 100"), "{}", show(&findings));
    truncate.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_reject_reason_gets_its_fix() {
    let cases = [
        (RejectReason::CalledAe, "called AE title not recognized", "set archives[0].ae_title"),
        (RejectReason::CallingAe, "calling AE title not recognized", "add PRIORFETCH (service.ae_title)"),
        (RejectReason::NoReason, "permanently: no reason given", "add PRIORFETCH (service.ae_title)"),
        (RejectReason::Busy, "transiently: no reason given", "association limit"),
        (RejectReason::Congestion, "transiently: temporary congestion", "association limit"),
        (RejectReason::LocalLimit, "transiently: local limit exceeded", "lower archives[0].max_associations"),
    ];
    let sim = sim(2, Faults::default()).await;
    for (reason, message, fix) in cases {
        sim.set_faults(Faults { reject: Some(reason), ..Default::default() });
        let findings = diagnose(&archive(sim.port(), RetrieveMethod::Move, Some("DEST")), 0, &ctx()).await;
        let fail = one(&findings, Check::Association, Severity::Fail);
        assert!(fail.message.contains(message), "{reason:?}: {}", show(&findings));
        assert!(fail.fix.as_deref().unwrap().contains(fix), "{reason:?}: {}", show(&findings));
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_archive_capped_at_one_association_passes_every_check_with_c_get() {
    let sim = sim(3, Faults { max_associations: Some(1), ..Default::default() }).await;
    let findings = diagnose(&archive(sim.port(), RetrieveMethod::Get, None), 0, &ctx()).await;
    assert!(findings.iter().all(|f| f.severity == Severity::Ok), "{}", show(&findings));
    assert!(one(&findings, Check::Get, Severity::Ok).message.contains("one instance received"), "{}", show(&findings));
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_archive_checking_the_destination_first_fails_without_the_move_probe() {
    let sim = sim(2, Faults::default()).await;
    let findings = diagnose(&archive(sim.port(), RetrieveMethod::Move, Some("NOWHERE")), 0, &ctx()).await;
    let fail = one(&findings, Check::MoveDestination, Severity::Fail);
    assert!(fail.message.contains("'NOWHERE' (0xA801)"), "{}", show(&findings));
    assert!(fail.fix.as_deref().unwrap().contains("add NOWHERE=host:port"), "{}", show(&findings));
    assert!(sim.received().is_empty());
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_known_destination_the_archive_cannot_reach_is_told_apart() {
    let closed = priorfetch_testkit::ports::free_port();
    let data = DataSource::Synthetic(SyntheticSpec { patients: 2, seed: 7, ..Default::default() });
    let sim = Sim::start(SimConfig::new("SIM", data).with_destination("DEST", "127.0.0.1", closed), "127.0.0.1:0")
        .await
        .unwrap();
    let mut ctx = ctx();
    ctx.move_probe = true;
    let findings = diagnose(&archive(sim.port(), RetrieveMethod::Move, Some("DEST")), 0, &ctx).await;
    let fail = one(&findings, Check::MoveDestination, Severity::Fail);
    assert!(
        fail.message.contains("knows 'DEST' but could not perform the sub-operation (0xA702)"),
        "{}",
        show(&findings)
    );
    assert!(
        fail.fix.as_deref().unwrap().contains("host:port the archive's AE table has for DEST"),
        "{}",
        show(&findings)
    );
    sim.shutdown().await;
}
