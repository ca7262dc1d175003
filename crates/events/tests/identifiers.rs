//! Every patient identifier of an event: each PID-3 repetition with its assigning
//! authority, JSON `patient.identifiers` alongside or instead of `patient.id`, the bounds
//! each one keeps, and `Debug` that shows issuers, never IDs.

use priorfetch_events::{DecodeError, DecodeOptions, ExamEvent, Hl7FieldMap, PatientIdentifier, decode};

fn opts() -> DecodeOptions {
    DecodeOptions { source: "mllp".into(), hl7: Hl7FieldMap::default(), sender_in_key: false }
}

fn id(id: &str, issuer: Option<&str>) -> PatientIdentifier {
    PatientIdentifier::new(id, issuer.map(str::to_string))
}

fn orm(pid3: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|RIS|HOSP|PF|HOSP|20261122083000||ORM^O01|C1|P|2.5.1\rPID|1||{pid3}||DOE^JOHN\r\
         ORC|NW|PL1|FL1||SC||^^^20261123093000+0100^^R\rOBR|1|PL1|FL1|CT^CT chest|||||||||||||||ACC1\r"
    )
    .into_bytes()
}

fn event(patient: serde_json::Value) -> Result<ExamEvent, DecodeError> {
    let v = serde_json::json!({ "event_id": "e1", "type": "exam.scheduled", "patient": patient,
        "accession_number": "ACC1", "scheduled_at": "2026-11-23T09:30:00+01:00" });
    decode(v.to_string().as_bytes(), &opts())
}

#[test]
fn hl7_every_pid3_repetition_with_its_assigning_authority() {
    // CX.4 as HD: namespace id, universal id, its type; only the namespace id is the issuer
    let e = decode(&orm("N-100^^^HOSP_N&1.2.3&ISO^MR~S-200^^^HOSP_S^PI~X-1~N-100^^^HOSP_N^MR"), &opts()).unwrap();
    assert_eq!(
        e.patient.identifiers,
        vec![id("N-100", Some("HOSP_N")), id("S-200", Some("HOSP_S")), id("X-1", None)],
        "all repetitions, in message order, without repeats"
    );
    assert_eq!((e.patient.id.as_str(), e.patient.issuer.as_deref()), ("N-100", Some("HOSP_N")), "primary: the first");
    let mut preferred = opts();
    preferred.hl7.preferred_issuer = Some("HOSP_S".into());
    let e = decode(&orm("N-100^^^HOSP_N^MR~S-200^^^HOSP_S^PI"), &preferred).unwrap();
    assert_eq!((e.patient.id.as_str(), e.patient.issuer.as_deref()), ("S-200", Some("HOSP_S")));
    assert_eq!(e.patient.identifiers.len(), 2, "the preferred one does not drop the others");
    // a repetition without an ID is no identifier
    let e = decode(&orm("^^^EMPTY^MR~M-1^^^HOSP^MR"), &opts()).unwrap();
    assert_eq!(e.patient.identifiers, vec![id("M-1", Some("HOSP"))]);
}

#[test]
fn hl7_identifiers_keep_the_bounds_of_the_primary() {
    // a wildcard in any repetition could reach an archive as PatientID
    let err = decode(&orm("N-100^^^HOSP_N^MR~S*^^^HOSP_S^PI"), &opts()).unwrap_err();
    assert_eq!(err.field(), Some("patient.identifiers[1].id"));
    let err = decode(&orm("N-100^^^HOSP_N^MR~S-200^^^HO?SP^PI"), &opts()).unwrap_err();
    assert_eq!(err.field(), Some("patient.identifiers[1].issuer"));
    let many: Vec<String> = (0..21).map(|i| format!("ID{i}^^^H{i}^MR")).collect();
    let err = decode(&orm(&many.join("~")), &opts()).unwrap_err();
    assert_eq!(err.field(), Some("patient.identifiers"));
    assert!(err.to_string().contains("21 identifiers, at most 20"), "{err}");
}

#[test]
fn json_identifiers_alongside_or_instead_of_patient_id() {
    // alongside: the primary is patient.id, listed once
    let e = event(serde_json::json!({ "id": "N-100", "issuer": "HOSP_N",
        "identifiers": [{ "id": "S-200", "issuer": "HOSP_S" }, { "id": "N-100", "issuer": "HOSP_N" }] }))
    .unwrap();
    assert_eq!((e.patient.id.as_str(), e.patient.issuer.as_deref()), ("N-100", Some("HOSP_N")));
    assert_eq!(e.patient.identifiers, vec![id("S-200", Some("HOSP_S")), id("N-100", Some("HOSP_N"))]);
    // a primary not in the list is added in front
    let e =
        event(serde_json::json!({ "id": "N-100", "identifiers": [{ "id": "S-200", "issuer": "HOSP_S" }] })).unwrap();
    assert_eq!(e.patient.identifiers, vec![id("N-100", None), id("S-200", Some("HOSP_S"))]);
    // instead: the first is the primary
    let e =
        event(serde_json::json!({ "identifiers": [{ "id": "S-200", "issuer": "HOSP_S" }, { "id": "E-3" }] })).unwrap();
    assert_eq!((e.patient.id.as_str(), e.patient.issuer.as_deref()), ("S-200", Some("HOSP_S")));
    assert_eq!(e.patient.identifiers, vec![id("S-200", Some("HOSP_S")), id("E-3", None)]);
    // the single form alone, as before
    let e = event(serde_json::json!({ "id": "MRN1", "issuer": "HOSP" })).unwrap();
    assert_eq!(e.patient.identifiers, vec![id("MRN1", Some("HOSP"))]);
}

#[test]
fn json_identifier_rejections_name_the_field() {
    let field = |patient: serde_json::Value| event(patient).unwrap_err().field().map(str::to_string);
    assert_eq!(field(serde_json::json!({})).as_deref(), Some("patient.id"));
    assert_eq!(field(serde_json::json!({ "identifiers": [] })).as_deref(), Some("patient.id"));
    assert_eq!(field(serde_json::json!({ "identifiers": "N-100" })).as_deref(), Some("patient.identifiers"));
    assert_eq!(field(serde_json::json!({ "identifiers": ["N-100"] })).as_deref(), Some("patient.identifiers[0]"));
    assert_eq!(
        field(serde_json::json!({ "id": "A", "identifiers": [{ "issuer": "H" }] })).as_deref(),
        Some("patient.identifiers[0].id")
    );
    assert_eq!(
        field(serde_json::json!({ "id": "A", "identifiers": [{ "id": "B", "issuer": 7 }] })).as_deref(),
        Some("patient.identifiers[0].issuer")
    );
    assert_eq!(
        field(serde_json::json!({ "id": "A", "identifiers": [{ "id": "B*", "issuer": "H" }] })).as_deref(),
        Some("patient.identifiers[1].id"),
        "index in the stored list: the primary comes first"
    );
    assert_eq!(
        field(serde_json::json!({ "issuer": "H", "identifiers": [{ "id": "B" }] })).as_deref(),
        Some("patient.issuer"),
        "an issuer without patient.id is ambiguous"
    );
    let many: Vec<serde_json::Value> = (0..21).map(|i| serde_json::json!({ "id": format!("ID{i}") })).collect();
    assert_eq!(field(serde_json::json!({ "identifiers": many })).as_deref(), Some("patient.identifiers"));
}

#[test]
fn debug_shows_issuers_not_identifiers() {
    let e = decode(&orm("N-100^^^HOSP_N^MR~S-200^^^HOSP_S^PI"), &opts()).unwrap();
    let shown = format!("{e:?} {:?} {}", e.patient, e.redacted_summary());
    for phi in ["N-100", "S-200", "DOE", "JOHN"] {
        assert!(!shown.contains(phi), "{phi} in {shown}");
    }
    assert!(shown.contains("HOSP_S"), "issuers help debugging and are not PHI: {shown}");
}
