//! C-FIND matching rules, each cross-checked: the same query against DCMTK's dcmqrscp and
//! the simulator, both loaded with the same files, gives the same matches. Then what
//! dcmqrscp cannot show, cross-checked with Orthanc (person names ignore case there, value
//! lists work): configurable case sensitivity and CS value lists.

use dicom_core::{Tag, VR};
use pacs_sim::{CaseMatching, DataSource, Sim, SimConfig};
use priorfetch_dimse::scu::query_contexts;
use priorfetch_dimse::{AeTitle, Association, Peer, QueryModel, ScuOptions, identifier};
use priorfetch_testkit::dicom::{Dcmqrscp, Orthanc, StudySpec, store_files, write_study};
use std::collections::BTreeSet;
use std::ops::ControlFlow;

const STUDY_UID: Tag = Tag(0x0020, 0x000D);

fn studies() -> Vec<StudySpec> {
    let names = ["DOE^JANE", "DOE^JOHN", "ROE^JANE", "DOEX^JIM", "SMITH^ANNA", "DOE^JANE"];
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let mut s = StudySpec::small(&format!("MATCH{}", i % 4), 70 + i as u32);
            s.patient_name = name.to_string();
            s.series = 1;
            s.instances_per_series = 1;
            s.rows = 8;
            s.columns = 8;
            s
        })
        .collect()
}

async fn query(port: u16, ae: &str, level: &str, keys: &[(Tag, VR, &str)]) -> BTreeSet<String> {
    let peer = Peer::new(ae, "127.0.0.1", port).unwrap();
    let mut assoc = Association::connect(
        &peer,
        &ScuOptions::new(AeTitle::parse("PF").unwrap()),
        &query_contexts(QueryModel::StudyRoot),
    )
    .await
    .unwrap();
    let mut all: Vec<(Tag, VR, &str)> = keys.to_vec();
    if !keys.iter().any(|(t, _, _)| *t == STUDY_UID) {
        all.push((STUDY_UID, VR::UI, ""));
    }
    let mut found = BTreeSet::new();
    assoc
        .find(QueryModel::StudyRoot, &identifier(level, &all), None, |m| {
            let uid =
                m.element(STUDY_UID).ok().and_then(|e| e.to_str().ok().map(|s| s.trim_end_matches('\0').to_string()));
            found.insert(uid.unwrap_or_default());
            ControlFlow::Continue(())
        })
        .await
        .unwrap();
    assoc.release().await;
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rule_matches_like_dcmqrscp() {
    let data = tempfile::tempdir().unwrap();
    let specs = studies();
    for s in &specs {
        write_study(data.path(), s);
    }
    let qr = Dcmqrscp::start("QR", "PF", &[]);
    store_files("QR", qr.port, data.path());
    let sim =
        Sim::start(SimConfig::new("SIM", DataSource::Folder(data.path().to_path_buf())), "127.0.0.1:0").await.unwrap();
    assert_eq!(sim.index().len(), specs.len());
    let uid = |i: usize| specs[i].study_uid.clone();
    let (u0, u3) = (uid(0), uid(3));
    let uid_list = format!("{u0}\\{u3}");
    let dates: Vec<&str> = specs.iter().map(|s| s.study_date.as_str()).collect();
    let (lo, hi) = (dates.iter().min().unwrap().to_string(), dates.iter().max().unwrap().to_string());
    let mid = {
        let mut d = dates.clone();
        d.sort();
        d[d.len() / 2].to_string()
    };
    let cases: Vec<(&str, Vec<(Tag, VR, String)>)> = vec![
        ("universal", vec![(Tag(0x0010, 0x0020), VR::LO, "".into())]),
        ("single value", vec![(Tag(0x0010, 0x0020), VR::LO, "MATCH1".into())]),
        ("single value, no match", vec![(Tag(0x0010, 0x0020), VR::LO, "MATCH".into())]),
        ("wildcard *", vec![(Tag(0x0010, 0x0010), VR::PN, "DOE^*".into())]),
        ("wildcard ?", vec![(Tag(0x0010, 0x0010), VR::PN, "?OE^JANE".into())]),
        ("wildcard * inside", vec![(Tag(0x0010, 0x0010), VR::PN, "D*J*".into())]),
        ("case sensitive", vec![(Tag(0x0010, 0x0010), VR::PN, "doe^*".into())]),
        ("accession wildcard", vec![(Tag(0x0008, 0x0050), VR::SH, "ACC7*".into())]),
        ("uid list", vec![(STUDY_UID, VR::UI, uid_list.clone())]),
        ("single uid", vec![(STUDY_UID, VR::UI, u3.clone())]),
        ("date range", vec![(Tag(0x0008, 0x0020), VR::DA, format!("{lo}-{mid}"))]),
        ("date open start", vec![(Tag(0x0008, 0x0020), VR::DA, format!("-{mid}"))]),
        ("date open end", vec![(Tag(0x0008, 0x0020), VR::DA, format!("{mid}-"))]),
        ("single date", vec![(Tag(0x0008, 0x0020), VR::DA, hi.clone())]),
        ("time range in", vec![(Tag(0x0008, 0x0030), VR::TM, "100000-110000".into())]),
        ("time range out", vec![(Tag(0x0008, 0x0030), VR::TM, "110000-120000".into())]),
        ("time open end", vec![(Tag(0x0008, 0x0030), VR::TM, "101500-".into())]),
        (
            "combined keys",
            vec![(Tag(0x0010, 0x0010), VR::PN, "DOE*".into()), (Tag(0x0008, 0x0020), VR::DA, format!("{mid}-"))],
        ),
    ];
    let mut nontrivial = 0;
    for (name, keys) in &cases {
        let keys: Vec<(Tag, VR, &str)> = keys.iter().map(|(t, v, s)| (*t, *v, s.as_str())).collect();
        let ours = query(sim.port(), "SIM", "STUDY", &keys).await;
        let theirs = query(qr.port, "QR", "STUDY", &keys).await;
        assert_eq!(ours, theirs, "{name}: simulator vs dcmqrscp");
        if !ours.is_empty() && ours.len() < specs.len() {
            nontrivial += 1;
        }
    }
    assert!(nontrivial >= 10, "most cases select a proper subset ({nontrivial})");
    // series level, single CS value
    let keys = [(STUDY_UID, VR::UI, u0.as_str()), (Tag(0x0008, 0x0060), VR::CS, specs[0].modality.as_str())];
    assert_eq!(query(sim.port(), "SIM", "SERIES", &keys).await, query(qr.port, "QR", "SERIES", &keys).await);
    assert_eq!(query(sim.port(), "SIM", "SERIES", &keys).await.len(), 1);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_rules_and_value_lists_like_orthanc() {
    let data = tempfile::tempdir().unwrap();
    let specs = studies();
    for s in &specs {
        write_study(data.path(), s);
    }
    let orthanc = Orthanc::start("ORTHANC", "PF", &[], None);
    store_files(&orthanc.ae, orthanc.port, data.path());
    let folder = DataSource::Folder(data.path().to_path_buf());
    let pn = Sim::start(
        SimConfig::new("SIM", folder.clone()).with_case_matching(CaseMatching::PersonNamesInsensitive),
        "127.0.0.1:0",
    )
    .await
    .unwrap();
    let all = Sim::start(SimConfig::new("SIM", folder).with_case_matching(CaseMatching::Insensitive), "127.0.0.1:0")
        .await
        .unwrap();
    let expected_ct = specs.iter().filter(|s| s.modality == "CT").count();
    let cases: Vec<(&str, &str, Vec<(Tag, VR, &str)>, usize)> = vec![
        ("person name ignores case", "STUDY", vec![(Tag(0x0010, 0x0010), VR::PN, "doe^*")], 3),
        ("other text keeps case", "STUDY", vec![(Tag(0x0008, 0x0050), VR::SH, "acc7*")], 0),
        ("CS list", "SERIES", vec![(Tag(0x0008, 0x0060), VR::CS, "CT\\MR")], specs.len()),
        ("ModalitiesInStudy", "STUDY", vec![(Tag(0x0008, 0x0061), VR::CS, "CT")], expected_ct),
        ("ModalitiesInStudy list", "STUDY", vec![(Tag(0x0008, 0x0061), VR::CS, "US\\DX")], 0),
        ("LO list", "STUDY", vec![(Tag(0x0010, 0x0020), VR::LO, "MATCH1\\MATCH2")], 3),
    ];
    for (name, level, keys, expected) in &cases {
        let ours = query(pn.port(), "SIM", level, keys).await;
        assert_eq!(ours.len(), *expected, "{name}");
        assert_eq!(ours, query(orthanc.port, "ORTHANC", level, keys).await, "{name}: simulator vs Orthanc");
    }
    let acc = [(Tag(0x0008, 0x0050), VR::SH, "acc7*")];
    assert_eq!(query(all.port(), "SIM", "STUDY", &acc).await.len(), specs.len(), "everything ignores case");
    pn.shutdown().await;
    all.shutdown().await;
}
