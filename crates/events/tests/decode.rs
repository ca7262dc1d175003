//! Decoding tests: realistic messages of several vendor styles, every mapped field
//! asserted; JSON rules; PHI kept out of Debug; no input panics the decoder.

use priorfetch_events::{DecodeError, DecodeOptions, EventKind, ExamPriority, FieldPath, Format, Hl7FieldMap, decode};
use proptest::prelude::*;

fn opts() -> DecodeOptions {
    DecodeOptions { source: "rabbitmq".into(), hl7: Hl7FieldMap::default(), sender_in_key: false }
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn epic_style_orm_with_tq1_escapes_and_repeated_identifiers() {
    let e = decode(&fixture("epic_orm_o01.hl7"), &opts()).unwrap();
    assert_eq!(e.event_key, "hl7:rabbitmq:EPIC-000123");
    assert_eq!(e.kind, EventKind::Scheduled);
    assert_eq!(e.message_type, "ORM^O01");
    assert_eq!(e.format, Format::Hl7);
    assert_eq!(e.patient.id, "E1234567");
    assert_eq!(e.patient.issuer.as_deref(), Some("EPI"));
    assert_eq!(e.patient.name.as_deref(), Some("O^BRIEN^MARY"), "\\S\\ is the component separator");
    assert_eq!(e.patient.birth_date.unwrap().to_string(), "1958-02-14");
    assert_eq!(e.accession_number.as_deref(), Some("ACC55501"));
    assert_eq!(e.scheduled_at.unwrap().to_rfc3339(), "2026-11-24T14:00:00-05:00");
    assert_eq!(e.priority, ExamPriority::Stat);
    assert_eq!(e.modality.as_deref(), Some("CT"));
    let p = e.procedure.unwrap();
    assert_eq!(p.code.as_deref(), Some("IMG123"));
    assert_eq!(p.text.as_deref(), Some("CT CHEST W/O CONTRAST & ANGIO"));
    // another assigning authority preferred by configuration
    let mut o = opts();
    o.hl7.preferred_issuer = Some("SSA".into());
    let e = decode(&fixture("epic_orm_o01.hl7"), &o).unwrap();
    assert_eq!((e.patient.id.as_str(), e.patient.issuer.as_deref()), ("998877", Some("SSA")));
}

#[test]
fn cerner_style_update_with_custom_delimiters_and_newlines() {
    let e = decode(&fixture("cerner_orm_xo.hl7"), &opts()).unwrap();
    assert_eq!(e.kind, EventKind::Updated);
    assert_eq!(e.event_key, "hl7:rabbitmq:CRN-9981");
    assert_eq!(e.patient.id, "MRN-42");
    assert_eq!(e.message_type, "ORM^O01");
    assert_eq!(e.format, Format::Hl7);
    assert_eq!(e.patient.issuer.as_deref(), Some("CMC"));
    assert_eq!(e.patient.name.as_deref(), Some("SMITH^JOHN"));
    assert_eq!(e.patient.birth_date.unwrap().to_string(), "1970-01-01");
    assert_eq!(e.accession_number.as_deref(), Some("CRN-ACC-314"), "OBR-18 before the filler order number");
    assert_eq!(e.study_instance_uid, None);
    assert_eq!(e.scheduled_at.unwrap().to_rfc3339(), "2026-11-25T08:00:00+00:00", "ORC-7.4, site offset");
    assert_eq!(e.priority, ExamPriority::Routine);
    assert_eq!(e.modality.as_deref(), Some("CR"));
    assert_eq!(e.body_part, None, "no body part position by default");
    let p = e.procedure.unwrap();
    assert_eq!((p.code.as_deref(), p.text.as_deref()), (Some("71020"), Some("XR CHEST 2V")));
    let mut o = opts();
    o.hl7.default_utc_offset = "+01:00".into();
    o.hl7.body_part = vec![FieldPath::parse("OBR-15").unwrap()];
    let e = decode(&fixture("cerner_orm_xo.hl7"), &o).unwrap();
    assert_eq!(e.scheduled_at.unwrap().to_rfc3339(), "2026-11-25T08:00:00+01:00");
    assert_eq!(e.body_part.as_deref(), Some("CHEST"));
    // a site whose RIS keeps the accession in the filler order number
    o.hl7.accession = vec![FieldPath::parse("ORC-3").unwrap()];
    assert_eq!(decode(&fixture("cerner_orm_xo.hl7"), &o).unwrap().accession_number.as_deref(), Some("FIL-1"));
}

#[test]
fn agfa_style_omi_with_ipc_study_uid_in_mllp_frame() {
    let e = decode(&fixture("agfa_omi_o23.hl7"), &opts()).unwrap();
    assert_eq!(e.message_type, "OMI^O23");
    assert_eq!(e.event_key, "hl7:rabbitmq:AGFA-77");
    assert_eq!(e.kind, EventKind::Scheduled);
    assert_eq!(e.patient.id, "P778");
    assert_eq!(e.patient.issuer.as_deref(), Some("AGFAHOSP"));
    assert_eq!(e.patient.name.as_deref(), Some("MUELLER^HANS"));
    assert_eq!(e.patient.birth_date.unwrap().to_string(), "1944-12-31");
    assert_eq!(e.priority, ExamPriority::Routine);
    assert_eq!(e.body_part, None);
    assert_eq!(e.accession_number.as_deref(), Some("AGF-ACC-9"));
    assert_eq!(e.study_instance_uid.as_deref(), Some("1.2.276.0.7230010.3.1.2.8323329.1234.1"));
    assert_eq!(e.modality.as_deref(), Some("MR"));
    assert_eq!(e.scheduled_at.unwrap().to_rfc3339(), "2026-11-26T08:30:00+01:00");
    let p = e.procedure.unwrap();
    assert_eq!((p.code.as_deref(), p.text.as_deref()), (Some("MRKNEE"), Some("MR knee left")));
}

#[test]
fn siu_schedule_update_and_cancel() {
    let s12 = fixture("sched_siu_s12.hl7");
    let e = decode(&s12, &opts()).unwrap();
    assert_eq!(e.kind, EventKind::Scheduled);
    assert_eq!(e.event_key, "hl7:rabbitmq:SIU-501");
    assert_eq!(e.message_type, "SIU^S12");
    assert_eq!(e.patient.id, "SIU-PAT-1");
    assert_eq!(e.patient.issuer.as_deref(), Some("CLINIC"));
    assert_eq!(e.patient.name.as_deref(), Some("LEE^ANN"));
    assert_eq!(e.patient.birth_date.unwrap().to_string(), "1990-05-05");
    assert_eq!(e.priority, ExamPriority::Routine, "SCH-7 ROUTINE");
    assert_eq!((e.modality.as_deref(), e.body_part.as_deref(), e.study_instance_uid.as_deref()), (None, None, None));
    assert_eq!(e.accession_number.as_deref(), Some("APT-9001"));
    assert_eq!(e.scheduled_at.unwrap().to_rfc3339(), "2026-11-27T10:00:00+00:00");
    assert_eq!(e.procedure.as_ref().unwrap().code.as_deref(), Some("USABD"));
    let text = String::from_utf8(s12).unwrap();
    for (trigger, kind) in [("S13", EventKind::Updated), ("S14", EventKind::Updated), ("S15", EventKind::Cancelled)] {
        let msg = text.replace("SIU^S12", &format!("SIU^{trigger}"));
        assert_eq!(decode(msg.as_bytes(), &opts()).unwrap().kind, kind, "{trigger}");
    }
    // a cancel needs no scheduled time
    let cancel = text.replace("SIU^S12", "SIU^S15").replace("^^30^20261127100000+0000^20261127103000+0000", "");
    let cancel = cancel.replace("|20261127100000+0000\n", "|\n");
    assert_eq!(decode(cancel.as_bytes(), &opts()).unwrap().scheduled_at, None);
}

#[test]
fn siu_reschedule_and_cancel_fixtures_mllp_framed() {
    let e = decode(&fixture("sched_siu_s14.hl7"), &opts()).unwrap();
    assert_eq!(e.kind, EventKind::Updated);
    assert_eq!(e.message_type, "SIU^S14");
    assert_eq!(e.event_key, "hl7:rabbitmq:SIU-502");
    assert_eq!(e.patient.id, "SIU-PAT-1");
    assert_eq!(e.accession_number.as_deref(), Some("APT-9001"));
    assert_eq!(e.scheduled_at.unwrap().to_rfc3339(), "2026-11-28T14:15:00+00:00", "SCH-11.4 without offset");
    assert_eq!(e.priority, ExamPriority::Stat, "SCH-11.6 S");
    let p = e.procedure.unwrap();
    assert_eq!((p.code.as_deref(), p.text.as_deref()), (Some("USABD"), Some("US abdomen")));
    let e = decode(&fixture("sched_siu_s15.hl7"), &opts()).unwrap();
    assert_eq!(e.kind, EventKind::Cancelled);
    assert_eq!(e.event_key, "hl7:rabbitmq:SIU-503");
    assert_eq!(e.accession_number.as_deref(), Some("APT-9001"));
    assert_eq!(e.scheduled_at, None);
    assert_eq!(e.priority, ExamPriority::Routine);
}

#[test]
fn escape_sequences_decode() {
    // \X..\ hex, \E\ escape, \.br\ line break, \F\ \R\ field and repetition separators
    let msg = r"MSH|^~\&|A|B|C|D|20261122||ORM^O01|ESC-1|P|2.5
PID|1||ID1||M\XC39C\LLER^J\F\\R\\E\\.br\X
ORC|NW|P1
OBR|1|P1|F1|C1^A\R\B||||||||||||||ACC1||||||CT|||^^^202611251000
"
    .replace('\n', "\r");
    let e = decode(msg.as_bytes(), &opts()).unwrap();
    assert_eq!(e.patient.name.as_deref(), Some("M\u{dc}LLER^J|~\\\nX"));
    assert_eq!(e.procedure.unwrap().text.as_deref(), Some("A~B"));
}

#[test]
fn orm_cancel_by_order_control() {
    let text = String::from_utf8(fixture("epic_orm_o01.hl7")).unwrap().replace("ORC|NW|", "ORC|CA|");
    assert_eq!(decode(text.as_bytes(), &opts()).unwrap().kind, EventKind::Cancelled);
}

#[test]
fn hl7_rejections_name_the_field() {
    let base = String::from_utf8(fixture("epic_orm_o01.hl7")).unwrap();
    let cases: Vec<(String, &str)> = vec![
        (base.replace("|EPIC-000123|", "||"), "MSH-10: message control id missing"),
        (base.replace("E1234567^^^EPI^MR~998877^^^SSA^SS", ""), "PID-3: patient id missing"),
        (base.replace("\rPID|", "\rZZZ|"), "truncated HL7: no PID segment"),
        (base.replace("ORM^O01^ORM_O01", "ADT^A01"), "MSH-9: unsupported message type ADT^A01"),
        (
            base.replace("20261124140000-0500|20261124143000", "2026133|20261124143000"),
            "TQ1-7: bad timestamp '2026133'",
        ),
        (base[..60].to_string(), "truncated HL7"),
        (base.replace("ORC|NW|", "ORC|ZZ|"), "ORC-1"),
        ("MSH|^~\\&|A".into(), "MSH-9"),
    ];
    for (msg, expected) in cases {
        let err = decode(msg.as_bytes(), &opts()).unwrap_err();
        assert!(err.to_string().contains(expected), "expected '{expected}' in '{err}'");
    }
}

#[test]
fn field_paths_parse_and_reject() {
    assert_eq!(FieldPath::parse("OBR-4.2").unwrap().to_string(), "OBR-4.2");
    assert_eq!(FieldPath::parse("PID-3").unwrap().component, 1);
    for bad in ["OBR", "obr-4", "OBR-0", "OBR-4.x", "OBRX-1", "OBR-1.2.3.4"] {
        assert!(FieldPath::parse(bad).is_err(), "{bad}");
    }
    let map = Hl7FieldMap { default_utc_offset: "CET".into(), ..Hl7FieldMap::default() };
    assert!(map.validate().is_err());
}

fn json(v: serde_json::Value) -> Result<priorfetch_events::ExamEvent, DecodeError> {
    decode(v.to_string().as_bytes(), &opts())
}

fn valid_json() -> serde_json::Value {
    serde_json::json!({ "event_id": "ris-7781-1", "type": "exam.scheduled",
      "patient": { "id": "MRN123", "issuer": "HOSP", "name": "DOE^JANE", "birth_date": "19700101" },
      "accession_number": "ACC991", "study_instance_uid": "1.2.3.4",
      "scheduled_at": "2026-11-23T09:30:00+01:00", "priority": "routine",
      "modality": "CT", "body_part": "CHEST", "procedure": { "code": "CTCHEST", "text": "CT chest" },
      "x-engine-extra": { "anything": [1, 2] } })
}

#[test]
fn json_event_of_the_contract() {
    let e = json(valid_json()).unwrap();
    assert_eq!(e.event_key, "json:ris-7781-1");
    assert_eq!(e.patient.id, "MRN123");
    assert_eq!(e.scheduled_at.unwrap().to_rfc3339(), "2026-11-23T09:30:00+01:00");
    assert_eq!(e.body_part.as_deref(), Some("CHEST"));
    assert_eq!(e.priority, ExamPriority::Routine);
    let mut stat = valid_json();
    stat["priority"] = "STAT".into();
    assert_eq!(json(stat).unwrap().priority, ExamPriority::Stat);
}

#[test]
fn json_rejections_name_the_field() {
    let remove = |path: &[&str]| {
        let mut v = valid_json();
        let mut target = &mut v;
        for p in &path[..path.len() - 1] {
            target = &mut target[*p];
        }
        target.as_object_mut().unwrap().remove(path[path.len() - 1]);
        v
    };
    for path in [&["event_id"][..], &["type"], &["patient"], &["patient", "id"], &["scheduled_at"]] {
        let err = json(remove(path)).unwrap_err();
        assert_eq!((err.reason_code(), err.field()), ("missing_field", Some(path.join(".").as_str())), "{err}");
    }
    let mut v = valid_json();
    v["patient"]["id"] = " ".into();
    assert_eq!(json(v).unwrap_err().to_string(), "patient.id: patient id missing");
    let mut v = valid_json();
    v["modality"] = "C T/X".into();
    assert_eq!(json(v).unwrap_err().field(), Some("modality"));
    let mut v = valid_json();
    v["modality"] = "mr".into();
    assert_eq!(json(v).unwrap().modality.as_deref(), Some("MR"));
    let mut v = valid_json();
    v["study_instance_uid"] = format!("1.{}", "2".repeat(63)).into();
    assert_eq!(json(v).unwrap_err().field(), Some("study_instance_uid"), "longer than 64");
    let mut v = valid_json();
    v["scheduled_at"] = "2026-11-23T09:30:00".into();
    assert_eq!(
        json(v).unwrap_err().to_string(),
        "scheduled_at: bad timestamp '2026-11-23T09:30:00'",
        "offset required"
    );
    let mut v = remove(&["accession_number"]);
    assert_eq!(json(v.clone()).unwrap().study_instance_uid.as_deref(), Some("1.2.3.4"), "UID alone suffices");
    v["patient"]["birth_date"] = "1970-02-30".into();
    assert_eq!(json(v).unwrap_err().reason_code(), "bad_date");
    let mut v = remove(&["accession_number"]);
    v.as_object_mut().unwrap().remove("study_instance_uid");
    assert_eq!(json(v).unwrap_err().field(), Some("accession_number"));
    let mut v = valid_json();
    v["scheduled_at"] = "2026-13-45T29:30:00+01:00".into();
    assert_eq!(json(v).unwrap_err().reason_code(), "bad_date");
    let mut v = valid_json();
    v["patient"]["birth_date"] = "19701301".into();
    assert_eq!(json(v).unwrap_err().field(), Some("patient.birth_date"));
    let mut v = valid_json();
    v["study_instance_uid"] = "1.2.abc".into();
    assert_eq!(json(v).unwrap_err().field(), Some("study_instance_uid"));
    let mut v = valid_json();
    v["type"] = "exam.deleted".into();
    assert_eq!(json(v).unwrap_err().field(), Some("type"));
    assert_eq!(decode(b"{\"event_id\": ", &opts()).unwrap_err().reason_code(), "bad_json");
    assert_eq!(decode(&[0xff, 0xfe, b'{'], &opts()).unwrap_err().reason_code(), "bad_encoding");
    assert_eq!(decode(b"   ", &opts()).unwrap_err().reason_code(), "empty");
    // a cancel needs no time
    let mut v = remove(&["scheduled_at"]);
    v["type"] = "exam.cancelled".into();
    assert_eq!(json(v).unwrap().kind, EventKind::Cancelled);
}

#[test]
fn debug_output_has_no_phi() {
    for e in [json(valid_json()).unwrap(), decode(&fixture("epic_orm_o01.hl7"), &opts()).unwrap()] {
        let shown = format!("{e:?} {}", e.redacted_summary());
        for phi in ["MRN123", "DOE", "JANE", "1970", "E1234567", "BRIEN", "MARY", "1958", "ACC991", "ACC55501"] {
            assert!(!shown.contains(phi), "{phi} in {shown}");
        }
    }
}

fn fixtures() -> Vec<Vec<u8>> {
    let mut all: Vec<Vec<u8>> = [
        "epic_orm_o01.hl7",
        "cerner_orm_xo.hl7",
        "agfa_omi_o23.hl7",
        "sched_siu_s12.hl7",
        "sched_siu_s14.hl7",
        "sched_siu_s15.hl7",
    ]
    .iter()
    .map(|f| fixture(f))
    .collect();
    all.push(valid_json().to_string().into_bytes());
    all
}

/// Any JSON value, nested a few levels: what a confused producer could put anywhere.
fn any_json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null)),
        ".{0,24}".prop_map(Value::String),
        "[0-9.]{0,70}".prop_map(Value::String),
        "20[0-9]{2}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}[+-][0-9]{2}:[0-9]{2}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(".{0,12}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const JSON_KEYS: [&str; 11] = [
    "event_id",
    "type",
    "patient",
    "accession_number",
    "study_instance_uid",
    "scheduled_at",
    "priority",
    "modality",
    "body_part",
    "procedure",
    "extra",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = decode(&bytes, &opts());
        let mut hl7 = b"MSH|^~\\&|".to_vec();
        hl7.extend_from_slice(&bytes);
        let _ = decode(&hl7, &opts());
    }

    #[test]
    fn mutated_fixtures_never_panic(which in 0usize..7, cut in any::<prop::sample::Index>(),
                                    flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
                                    swap in any::<bool>()) {
        let mut msg = fixtures()[which].clone();
        for (at, byte) in flips {
            let i = at.index(msg.len());
            msg[i] = byte;
        }
        if swap {
            msg = String::from_utf8_lossy(&msg).replace('^', "|").replace('~', "\\").into_bytes();
        }
        let end = cut.index(msg.len() + 1);
        let _ = decode(&msg[..end], &opts());
        let _ = decode(&msg, &opts());
    }

    #[test]
    fn arbitrary_json_values_never_panic(root in any_json(), replacements in proptest::collection::vec((0usize..11, any_json()), 0..4),
                                         patient_field in proptest::option::of(("(id|issuer|name|birth_date)", any_json()))) {
        let _ = decode(root.to_string().as_bytes(), &opts());
        // the valid event with some fields replaced by arbitrary values
        let mut v = valid_json();
        for (key, value) in replacements {
            v[JSON_KEYS[key]] = value;
        }
        if let (Some((key, value)), Some(patient)) = (patient_field, v.get_mut("patient").and_then(|p| p.as_object_mut())) {
            patient.insert(key, value);
        }
        let _ = decode(v.to_string().as_bytes(), &opts());
    }

    #[test]
    fn arbitrary_json_never_panics(id in ".{0,20}", t in ".{0,16}", pid in proptest::option::of(".{0,10}"),
                                   when in ".{0,30}", n in any::<i64>()) {
        let v = serde_json::json!({ "event_id": id, "type": t, "patient": { "id": pid, "birth_date": when },
            "scheduled_at": when, "accession_number": n, "priority": t });
        let _ = decode(v.to_string().as_bytes(), &opts());
    }
}

/// The bounds of `validate.rs`, in both formats: each names its field, none accepts a value
/// that would break a database index, a log line or a C-FIND's exact match.
#[test]
fn validation_bounds_name_the_field() {
    let with = |path: &[&str], value: serde_json::Value| {
        let mut v = valid_json();
        let mut target = &mut v;
        for p in &path[..path.len() - 1] {
            target = &mut target[*p];
        }
        target[path[path.len() - 1]] = value;
        json(v).err().and_then(|e| e.field().map(str::to_string))
    };
    let field = |p: &str| Some(p.to_string());
    assert_eq!(with(&["patient", "id"], "MRN\u{0}1".into()), field("patient.id"));
    assert_eq!(with(&["patient", "id"], "SIM-P*".into()), field("patient.id"));
    assert_eq!(with(&["patient", "id"], "A?B".into()), field("patient.id"));
    assert_eq!(with(&["patient", "id"], "A\\B".into()), field("patient.id"));
    assert_eq!(with(&["patient", "id"], "7".repeat(65).into()), field("patient.id"));
    assert_eq!(with(&["patient", "id"], "7".repeat(64).into()), None, "64 is the DICOM LO bound");
    assert_eq!(with(&["patient", "issuer"], "HOSP*".into()), field("patient.issuer"));
    assert_eq!(with(&["accession_number"], "ACC\t1".into()), field("accession_number"));
    assert_eq!(with(&["procedure", "text"], "x".repeat(1025).into()), field("procedure.text"));
    assert_eq!(with(&["scheduled_at"], "0000-11-23T09:30:00Z".into()), field("scheduled_at"));
    assert_eq!(with(&["scheduled_at"], "9999-11-23T09:30:00Z".into()), field("scheduled_at"));
    assert_eq!(with(&["patient", "birth_date"], "20301231".into()), field("patient.birth_date"), "born after the exam");
    assert_eq!(with(&["patient", "birth_date"], "17990101".into()), field("patient.birth_date"));
    let err = json({
        let mut v = valid_json();
        v["patient"]["birth_date"] = "20301231".into();
        v
    })
    .unwrap_err();
    assert!(!err.to_string().contains("2030"), "a birth date is PHI: not quoted in the reason: {err}");

    // HL7: a wildcard in PID-3 and a 200 KB order control (the reason stays short).
    let hl7 = |pid3: &str, orc1: &str| {
        format!(
            "MSH|^~\\&|RIS|HOSP|PF|HOSP|20261122083000||ORM^O01|C1|P|2.5.1\rPID|1||{pid3}^^^HOSP^MR||DOE^JOHN\r\
             ORC|{orc1}|PL1|FL1||SC||^^^20261123093000+0100^^R\rOBR|1|PL1|FL1|CT^CT chest|||||||||||||||ACC1\r"
        )
        .into_bytes()
    };
    assert!(decode(&hl7("MRN1", "NW"), &opts()).is_ok());
    assert_eq!(decode(&hl7("SIM-P*", "NW"), &opts()).unwrap_err().field(), Some("patient.id"));
    let long = decode(&hl7("MRN1", &"X".repeat(200 * 1024)), &opts()).unwrap_err();
    assert_eq!(long.field(), Some("ORC-1"));
    assert!(long.to_string().chars().count() < 400, "clipped: {} characters", long.to_string().chars().count());
}
