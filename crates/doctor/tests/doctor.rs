//! The doctor against real peers: Orthanc (healthy, wrong called AE, unknown calling AE,
//! LimitFindResults, unknown move destination), DCMTK dcmqrscp (healthy, 0xA801), storescp
//! as destination, a closed port and a port that accepts TCP but never speaks DICOM.

use priorfetch_config::{ArchiveConfig, DestinationConfig, Protocol, RetrieveMethod};
use priorfetch_dimse::AeTitle;
use priorfetch_doctor::{Check, DoctorContext, Finding, Severity, diagnose, diagnose_destination};
use priorfetch_testkit::dicom::{Dcmqrscp, Orthanc, Storescp, StudySpec, store_files, write_study};
use std::time::{Duration, Instant};

fn archive(name: &str, ae: &str, port: u16, move_destination: Option<&str>) -> ArchiveConfig {
    ArchiveConfig {
        name: name.into(),
        ae_title: ae.into(),
        host: "127.0.0.1".into(),
        port: port.into(),
        priority: 1,
        protocol: Protocol::Dimse,
        base_url: None,
        auth: Default::default(),
        retrieve: RetrieveMethod::Move,
        move_destination: move_destination.map(Into::into),
        max_associations: 2,
        max_matches: None,
        retrieve_windows: vec![],
        query_issuer: false,
        patient_id_issuer: None,
        tls: None,
    }
}

fn ctx(move_probe: bool) -> DoctorContext {
    let mut ctx = DoctorContext::new(AeTitle::parse("PRIORFETCH").unwrap());
    ctx.move_probe = move_probe;
    ctx.connect_timeout = Duration::from_secs(3);
    ctx.association_timeout = Duration::from_secs(2);
    ctx.dimse_timeout = Duration::from_secs(20);
    ctx
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

/// `n` small studies of patient DOC1 loaded into a peer.
fn load(ae: &str, port: u16, first: u32, n: u32) -> Vec<StudySpec> {
    let dir = tempfile::tempdir().unwrap();
    let specs: Vec<StudySpec> = (first..first + n).map(|i| StudySpec::small("DOC1", i)).collect();
    for s in &specs {
        write_study(dir.path(), s);
    }
    store_files(ae, port, dir.path());
    specs
}

fn no_phi(findings: &[Finding], specs: &[StudySpec]) {
    for f in findings {
        for s in specs {
            let text = format!("{f}");
            assert!(
                !text.contains(&s.patient_id) && !text.contains(&s.patient_name) && !text.contains(&s.study_uid),
                "PHI in: {text}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn healthy_orthanc_is_all_ok_and_the_move_probe_reaches_the_destination() {
    priorfetch_testkit::db::init_test_log();
    let dest = Storescp::start("DEST");
    let orthanc = Orthanc::start("ORTHANC1", "PRIORFETCH", &[dest.destination()], None);
    let specs = load(&orthanc.ae, orthanc.port, 301, 3);

    let findings = diagnose(&archive("healthy", "ORTHANC1", orthanc.port, Some("DEST")), 0, &ctx(true)).await;
    let all = show(&findings);
    assert!(findings.iter().all(|f| f.severity == Severity::Ok), "{all}");
    for check in Check::ALL.into_iter().filter(|c| *c != Check::Get) {
        assert!(findings.iter().any(|f| f.check == check), "{check} missing:\n{all}");
    }
    assert!(one(&findings, Check::MatchCap, Severity::Ok).message.contains("3 matches, complete"), "{all}");
    let matching = &one(&findings, Check::Matching, Severity::Ok).message;
    // Orthanc: PN case-insensitive (CaseSensitivePN false), PatientID exact-case.
    assert!(
        matching.contains("PatientName is case-insensitive") && matching.contains("PatientID is case-sensitive"),
        "{all}"
    );
    // exactly one instance went to the destination
    let start = Instant::now();
    while dest.files().is_empty() && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(dest.files().len(), 1, "{all}");
    no_phi(&findings, &specs);

    // Without the move probe, Orthanc cannot tell: it checks the study before the destination.
    let findings = diagnose(&archive("healthy", "ORTHANC1", orthanc.port, Some("DEST")), 0, &ctx(false)).await;
    let warn = one(&findings, Check::MoveDestination, Severity::Warn);
    assert!(
        warn.message.contains("0xC000") && warn.fix.as_deref().unwrap().contains("--move-probe"),
        "{}",
        show(&findings)
    );
    assert_eq!(dest.files().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn orthanc_checking_the_called_ae_rejects_a_wrong_ae_title() {
    let orthanc = Orthanc::start("ORTHANC2", "PRIORFETCH", &[], None);
    let findings = diagnose(&archive("wrong-ae", "NOTORTHANC", orthanc.port, Some("DEST")), 3, &ctx(false)).await;
    let all = show(&findings);
    one(&findings, Check::Reach, Severity::Ok);
    let fail = one(&findings, Check::Association, Severity::Fail);
    assert!(fail.message.contains("called AE title not recognized"), "{all}");
    assert!(fail.fix.as_deref().unwrap().contains("archives[3].ae_title"), "{all}");
    for check in [Check::Contexts, Check::Echo, Check::Query, Check::MatchCap, Check::MoveDestination, Check::Matching]
    {
        one(&findings, check, Severity::Skip);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn orthanc_not_knowing_our_calling_ae_aborts_the_first_query() {
    // Orthanc knows SOMEONE, not PRIORFETCH: it accepts the association and the C-ECHO
    // (DicomAlwaysAllowEcho) and aborts on the first C-FIND.
    let orthanc = Orthanc::start("ORTHANC3", "SOMEONE", &[], None);
    let findings = diagnose(&archive("stranger", "ORTHANC3", orthanc.port, Some("DEST")), 0, &ctx(false)).await;
    let all = show(&findings);
    one(&findings, Check::Association, Severity::Ok);
    one(&findings, Check::Echo, Severity::Ok);
    let fail = one(&findings, Check::Query, Severity::Fail);
    assert!(fail.message.contains("aborted") && fail.message.contains("'PRIORFETCH'"), "{all}");
    let fix = fail.fix.as_deref().unwrap();
    assert!(fix.contains("add PRIORFETCH (service.ae_title)") && fix.contains("DicomModalities"), "{all}");
    one(&findings, Check::MatchCap, Severity::Skip);
    one(&findings, Check::MoveDestination, Severity::Skip);
}

#[tokio::test(flavor = "multi_thread")]
async fn orthanc_limit_find_results_is_found_as_the_match_cap() {
    let orthanc = Orthanc::start("ORTHANC4", "PRIORFETCH", &[], Some(3));
    load(&orthanc.ae, orthanc.port, 311, 5);
    let mut config = archive("capped", "ORTHANC4", orthanc.port, None);
    config.retrieve = RetrieveMethod::Get;
    let findings = diagnose(&config, 1, &ctx(false)).await;
    let all = show(&findings);
    let fail = one(&findings, Check::MatchCap, Severity::Fail);
    assert!(fail.message.contains("caps matches at 3"), "{all}");
    assert!(fail.fix.as_deref().unwrap().contains("archives[1].max_matches = 3"), "{all}");
    assert!(!findings.iter().any(|f| f.check == Check::MoveDestination), "{all}");
    // retrieve = "get": one instance fetched by C-GET and discarded
    assert!(one(&findings, Check::Get, Severity::Ok).message.contains("one instance received by C-GET"), "{all}");

    config.max_matches = Some(3);
    let findings = diagnose(&config, 1, &ctx(false)).await;
    assert!(one(&findings, Check::MatchCap, Severity::Ok).message.contains("covers it"), "{}", show(&findings));
    assert!(!priorfetch_doctor::any_failed(&findings), "{}", show(&findings));
}

#[tokio::test(flavor = "multi_thread")]
async fn orthanc_unknown_move_destination_is_named_with_the_fix() {
    let orthanc = Orthanc::start("ORTHANC5", "PRIORFETCH", &[], None);
    load(&orthanc.ae, orthanc.port, 321, 1);
    let findings = diagnose(&archive("no-dest", "ORTHANC5", orthanc.port, Some("NOWHERE")), 0, &ctx(true)).await;
    let all = show(&findings);
    let fail = one(&findings, Check::MoveDestination, Severity::Fail);
    assert!(
        fail.message.contains("does not know move destination 'NOWHERE'") && fail.message.contains("0xC000"),
        "{all}"
    );
    assert!(fail.fix.as_deref().unwrap().contains("add NOWHERE=host:port"), "{all}");
}

#[tokio::test(flavor = "multi_thread")]
async fn dcmqrscp_healthy_and_with_an_unknown_destination() {
    let dest = Storescp::start("DEST");
    let qr = Dcmqrscp::start("QR1", "PRIORFETCH", &[dest.destination()]);
    load(&qr.ae, qr.port, 331, 2);

    let findings = diagnose(&archive("dcmqrscp", "QR1", qr.port, Some("DEST")), 0, &ctx(true)).await;
    let all = show(&findings);
    assert!(findings.iter().all(|f| f.severity == Severity::Ok), "{all}");
    // dcmqrscp matches case-sensitively
    assert!(one(&findings, Check::Matching, Severity::Ok).message.contains("PatientName is case-sensitive"), "{all}");

    let mut get = archive("dcmqrscp", "QR1", qr.port, None);
    get.retrieve = RetrieveMethod::Get;
    let findings = diagnose(&get, 0, &ctx(false)).await;
    assert!(
        one(&findings, Check::Get, Severity::Ok).message.contains("one instance received by C-GET"),
        "{}",
        show(&findings)
    );

    let findings = diagnose(&archive("dcmqrscp", "QR1", qr.port, Some("NOWHERE")), 0, &ctx(true)).await;
    let all = show(&findings);
    let fail = one(&findings, Check::MoveDestination, Severity::Fail);
    assert!(fail.message.contains("0xA801"), "{all}");
    assert!(fail.fix.as_deref().unwrap().contains("add NOWHERE=host:port"), "{all}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_closed_port_is_refused_and_the_rest_skipped() {
    let port = priorfetch_testkit::ports::free_port();
    let findings = diagnose(&archive("closed", "ARCH", port, Some("DEST")), 2, &ctx(false)).await;
    let all = show(&findings);
    let fail = one(&findings, Check::Reach, Severity::Fail);
    assert!(fail.message.contains("refused"), "{all}");
    assert!(fail.fix.as_deref().unwrap().contains("archives[2].port"), "{all}");
    assert_eq!(findings.iter().filter(|f| f.severity == Severity::Skip).count(), 7, "{all}");
    assert!(all.contains("— fix: check archives[2].port"), "{all}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_port_that_never_speaks_dicom_times_out_in_bounded_time() {
    let hole = priorfetch_testkit::ports::Blackhole::start();
    let started = Instant::now();
    let findings = diagnose(&archive("silent", "ARCH", hole.port, Some("DEST")), 0, &ctx(false)).await;
    let all = show(&findings);
    one(&findings, Check::Reach, Severity::Ok);
    let fail = one(&findings, Check::Association, Severity::Fail);
    assert!(fail.message.contains("no answer to A-ASSOCIATE-RQ"), "{all}");
    assert!(fail.fix.as_deref().unwrap().contains("does not speak DICOM"), "{all}");
    // connect_timeout + association_timeout (5 s) bound it; slack for a loaded machine
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread")]
async fn destination_checks_echo_and_c_find_when_check_existing() {
    let dest = Storescp::start("DEST");
    let config = DestinationConfig {
        ae_title: "DEST".into(),
        host: "127.0.0.1".into(),
        port: dest.port.into(),
        check_existing: true,
        protocol: priorfetch_config::Protocol::Dimse,
        base_url: None,
        auth: Default::default(),
        tls: None,
    };
    let findings = diagnose_destination(&config, &ctx(false)).await;
    let all = show(&findings);
    // storescp offers no C-FIND
    let fail = one(&findings, Check::Contexts, Severity::Fail);
    assert!(fail.fix.as_deref().unwrap().contains("destination.check_existing = false"), "{all}");
    one(&findings, Check::Echo, Severity::Ok);

    let config = DestinationConfig { check_existing: false, ..config };
    let findings = diagnose_destination(&config, &ctx(false)).await;
    assert!(findings.iter().all(|f| f.severity == Severity::Ok), "{}", show(&findings));
    assert_eq!(findings.len(), 4, "{}", show(&findings));

    // Orthanc as destination: C-FIND allowed
    let orthanc = Orthanc::start("PACS", "PRIORFETCH", &[], None);
    let config =
        DestinationConfig { ae_title: "PACS".into(), port: orthanc.port.into(), check_existing: true, ..config };
    let findings = diagnose_destination(&config, &ctx(false)).await;
    assert!(findings.iter().all(|f| f.severity == Severity::Ok), "{}", show(&findings));
    one(&findings, Check::Query, Severity::Ok);
}

#[tokio::test(flavor = "multi_thread")]
async fn association_rejections_are_decoded_with_their_fix() {
    use priorfetch_testkit::dicom::Rejector;
    // (result, source, reason) -> words the message and the fix must contain
    let cases: [((u8, u8, u8), &str, &str); 4] = [
        ((1, 1, 3), "permanently: calling AE title not recognized", "add PRIORFETCH (service.ae_title)"),
        ((1, 1, 7), "called AE title not recognized", "set archives[0].ae_title"),
        ((2, 3, 2), "transiently: local limit exceeded", "lower archives[0].max_associations"),
        ((1, 1, 1), "permanently: no reason given", "check that archives[0].ae_title"),
    ];
    for ((result, source, reason), message, fix) in cases {
        let peer = Rejector::start(result, source, reason);
        let findings = diagnose(&archive("strict", "STRICT", peer.port, Some("DEST")), 0, &ctx(false)).await;
        let fail = one(&findings, Check::Association, Severity::Fail);
        assert!(fail.message.contains(message), "{result}/{source}/{reason}: {}", show(&findings));
        assert!(fail.fix.as_deref().unwrap().contains(fix), "{result}/{source}/{reason}: {}", show(&findings));
        one(&findings, Check::Echo, Severity::Skip);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unresolvable_host_names_the_host_key() {
    let mut config = archive("nodns", "ARCH", 104, Some("DEST"));
    config.host = "pacs.invalid".into(); // RFC 6761: never resolves
    let findings = diagnose(&config, 4, &ctx(false)).await;
    let fail = one(&findings, Check::Reach, Severity::Fail);
    assert!(fail.message.contains("cannot resolve host 'pacs.invalid'"), "{}", show(&findings));
    assert!(fail.fix.as_deref().unwrap().contains("archives[4].host"), "{}", show(&findings));
}

fn web_archive(url: &str, auth: priorfetch_config::WebAuth) -> ArchiveConfig {
    ArchiveConfig {
        protocol: Protocol::Dicomweb,
        base_url: Some(url.into()),
        auth,
        retrieve: RetrieveMethod::Wado,
        ae_title: String::new(),
        host: String::new(),
        port: 0,
        ..archive("cloud", "X", 1, None)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dicomweb_archive_is_diagnosed_over_http() {
    let orthanc = Orthanc::start_dicomweb_with_user("WEBDOC", "PRIORFETCH", ("pf", "right"));
    load(&orthanc.ae, orthanc.port, 60, 3);
    let basic = |password: &str| priorfetch_config::WebAuth::Basic {
        user: "pf".into(),
        password: priorfetch_config::Secret::new(password),
    };

    let healthy = diagnose(&web_archive(&orthanc.dicomweb_url(), basic("right")), 0, &ctx(false)).await;
    one(&healthy, Check::Reach, Severity::Ok);
    one(&healthy, Check::Query, Severity::Ok);
    one(&healthy, Check::MatchCap, Severity::Warn); // pages; a silent limit cannot be seen
    one(&healthy, Check::Get, Severity::Ok);
    assert!(!priorfetch_doctor::any_failed(&healthy), "{}", show(&healthy));

    let denied = diagnose(&web_archive(&orthanc.dicomweb_url(), basic("wrong")), 0, &ctx(false)).await;
    let f = one(&denied, Check::Query, Severity::Fail);
    assert!(f.to_string().contains("archives[0].auth"), "{}", show(&denied));
    assert!(!show(&denied).contains("wrong"), "no secret in the report");

    let not_root = format!("http://127.0.0.1:{}/nope", orthanc.http_port);
    let lost = diagnose(&web_archive(&not_root, basic("right")), 0, &ctx(false)).await;
    let f = one(&lost, Check::Query, Severity::Fail);
    assert!(f.to_string().contains("archives[0].base_url"), "{}", show(&lost));

    let closed = format!("http://127.0.0.1:{}/dicom-web", priorfetch_testkit::ports::free_port());
    let down = diagnose(&web_archive(&closed, basic("right")), 0, &ctx(false)).await;
    let f = one(&down, Check::Reach, Severity::Fail);
    assert!(f.to_string().contains("firewall"), "{}", show(&down));
}
