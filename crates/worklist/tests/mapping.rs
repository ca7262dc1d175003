//! Worklist items to exam events: one per step, keys, zones, priorities, identifiers, and
//! bad items as errors naming the DICOM attribute.

use chrono::FixedOffset;
use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_object::InMemDicomObject;
use priorfetch_events::{DecodeError, ExamPriority, PatientIdentifier};
use priorfetch_worklist::{MapOptions, StepEvent, key_prefix, map_item};

fn put(obj: &mut InMemDicomObject, tag: (u16, u16), vr: VR, value: &str) {
    obj.put(DataElement::new(Tag(tag.0, tag.1), vr, PrimitiveValue::from(value)));
}

fn seq(obj: &mut InMemDicomObject, tag: (u16, u16), items: Vec<InMemDicomObject>) {
    obj.put(DataElement::new(Tag(tag.0, tag.1), VR::SQ, DataSetSequence::from(items)));
}

fn step(id: &str, date: &str, time: &str, modality: &str) -> InMemDicomObject {
    let mut s = InMemDicomObject::new_empty();
    put(&mut s, (0x0040, 0x0009), VR::SH, id);
    put(&mut s, (0x0040, 0x0002), VR::DA, date);
    if !time.is_empty() {
        put(&mut s, (0x0040, 0x0003), VR::TM, time);
    }
    put(&mut s, (0x0008, 0x0060), VR::CS, modality);
    put(&mut s, (0x0040, 0x0001), VR::AE, "CT1");
    s
}

fn item(steps: Vec<InMemDicomObject>) -> InMemDicomObject {
    let mut obj = InMemDicomObject::new_empty();
    put(&mut obj, (0x0010, 0x0020), VR::LO, "MRN1");
    put(&mut obj, (0x0010, 0x0021), VR::LO, "HOSP");
    put(&mut obj, (0x0008, 0x0050), VR::SH, "ACC1");
    put(&mut obj, (0x0020, 0x000D), VR::UI, "1.2.826.0.1.3680043.10.99.1");
    put(&mut obj, (0x0032, 0x1060), VR::LO, "CT chest");
    put(&mut obj, (0x0040, 0x1003), VR::SH, "ROUTINE");
    let mut code = InMemDicomObject::new_empty();
    put(&mut code, (0x0008, 0x0100), VR::SH, "CTCHEST");
    put(&mut code, (0x0008, 0x0104), VR::LO, "CT of the chest");
    seq(&mut obj, (0x0032, 0x1064), vec![code]);
    seq(&mut obj, (0x0040, 0x0100), steps);
    obj
}

fn options() -> MapOptions {
    MapOptions { worklist: "ris".into(), default_offset: FixedOffset::east_opt(3600).unwrap() }
}

fn error_of(events: &[StepEvent]) -> DecodeError {
    events[0].event.clone().expect_err("an error")
}

#[test]
fn one_event_per_step_with_stable_keys_and_local_times() {
    let obj = item(vec![step("SPS1", "20261123", "093000", "CT"), step("SPS2", "20261123", "1015", "mr")]);
    let events = map_item(&obj, &options());
    assert_eq!(events.len(), 2);
    let first = events[0].event.as_ref().unwrap();
    assert_eq!(first.event_key, "mwl:ris:1.2.826.0.1.3680043.10.99.1:SPS1");
    assert_eq!(events[0].key.as_deref(), Some(first.event_key.as_str()));
    assert!(first.event_key.starts_with(&key_prefix("ris")));
    assert_eq!(first.scheduled_at.unwrap().to_rfc3339(), "2026-11-23T09:30:00+01:00");
    assert_eq!(first.patient.id, "MRN1");
    assert_eq!(first.patient.issuer.as_deref(), Some("HOSP"));
    assert_eq!(first.patient.identifiers, vec![PatientIdentifier::new("MRN1", Some("HOSP".into()))]);
    assert_eq!(first.accession_number.as_deref(), Some("ACC1"));
    assert_eq!(first.modality.as_deref(), Some("CT"));
    let procedure = first.procedure.clone().unwrap();
    assert_eq!((procedure.code.as_deref(), procedure.text.as_deref()), (Some("CTCHEST"), Some("CT chest")));
    assert_eq!(first.priority, ExamPriority::Routine);
    let second = events[1].event.as_ref().unwrap();
    assert_eq!(second.event_key, "mwl:ris:1.2.826.0.1.3680043.10.99.1:SPS2");
    assert_eq!(second.modality.as_deref(), Some("MR"), "upper-cased");
    assert_eq!(second.scheduled_at.unwrap().to_rfc3339(), "2026-11-23T10:15:00+01:00");
    // the same item again maps to the same events (keys stable across polls)
    let again = map_item(&obj, &options());
    assert_eq!(again[0].event.as_ref().unwrap(), first);
}

#[test]
fn item_offset_other_ids_priority_body_part_and_accession_keys() {
    let mut s = step("S9", "20261124", "080000.5", "CT");
    put(&mut s, (0x0018, 0x0015), VR::CS, "chest");
    let mut obj = item(vec![s]);
    obj.remove_element(Tag(0x0020, 0x000D));
    put(&mut obj, (0x0008, 0x0201), VR::SH, "-0500");
    put(&mut obj, (0x0040, 0x1003), VR::SH, "STAT");
    let other = |id: &str, issuer: &str| {
        let mut o = InMemDicomObject::new_empty();
        put(&mut o, (0x0010, 0x0020), VR::LO, id);
        put(&mut o, (0x0010, 0x0021), VR::LO, issuer);
        o
    };
    seq(&mut obj, (0x0010, 0x1002), vec![other("NAT-77", "NATIONAL"), other("MRN1", "HOSP")]);
    let events = map_item(&obj, &options());
    let event = events[0].event.as_ref().unwrap();
    assert_eq!(event.event_key, "mwl:ris:ACC1:S9", "accession stands in for a missing UID");
    assert_eq!(event.scheduled_at.unwrap().to_rfc3339(), "2026-11-24T08:00:00.500-05:00");
    assert_eq!(event.priority, ExamPriority::Stat);
    assert_eq!(event.body_part.as_deref(), Some("CHEST"));
    assert_eq!(
        event.patient.identifiers,
        vec![
            PatientIdentifier::new("NAT-77", Some("NATIONAL".into())),
            PatientIdentifier::new("MRN1", Some("HOSP".into()))
        ]
    );
    put(&mut obj, (0x0040, 0x1003), VR::SH, "HIGH");
    assert_eq!(map_item(&obj, &options())[0].event.as_ref().unwrap().priority, ExamPriority::Urgent);
}

#[test]
fn bad_items_are_errors_naming_the_attribute() {
    // no patient id: the step still has its key (it is not a step that left)
    let mut obj = item(vec![step("SPS1", "20261123", "0930", "CT")]);
    obj.remove_element(Tag(0x0010, 0x0020));
    let events = map_item(&obj, &options());
    assert_eq!(events[0].key.as_deref(), Some("mwl:ris:1.2.826.0.1.3680043.10.99.1:SPS1"));
    let e = error_of(&events);
    assert_eq!(e.field(), Some("PatientID (0010,0020)"), "{e}");

    // no date
    let mut s = step("SPS1", "20261123", "0930", "CT");
    s.remove_element(Tag(0x0040, 0x0002));
    let e = error_of(&map_item(&item(vec![s]), &options()));
    assert_eq!(e.field(), Some("ScheduledProcedureStepStartDate (0040,0002)"), "{e}");

    // a date and a time that are not dates and times
    let e = error_of(&map_item(&item(vec![step("SPS1", "20261345", "0930", "CT")]), &options()));
    assert_eq!(e.reason_code(), "bad_date");
    assert_eq!(e.field(), Some("ScheduledProcedureStepStartDate (0040,0002)"));
    let e = error_of(&map_item(&item(vec![step("SPS1", "20261123", "2561", "CT")]), &options()));
    assert_eq!(e.field(), Some("ScheduledProcedureStepStartTime (0040,0003)"));

    // a bad UID
    let mut obj = item(vec![step("SPS1", "20261123", "0930", "CT")]);
    put(&mut obj, (0x0020, 0x000D), VR::UI, "1.2.abc");
    let e = error_of(&map_item(&obj, &options()));
    assert_eq!(e.field(), Some("StudyInstanceUID (0020,000D)"), "{e}");

    // no step id, no steps, a bad offset
    let mut s = step("SPS1", "20261123", "0930", "CT");
    s.remove_element(Tag(0x0040, 0x0009));
    let events = map_item(&item(vec![s]), &options());
    assert_eq!(events[0].key, None);
    assert_eq!(error_of(&events).field(), Some("ScheduledProcedureStepID (0040,0009)"));
    let e = error_of(&map_item(&item(vec![]), &options()));
    assert_eq!(e.field(), Some("ScheduledProcedureStepSequence (0040,0100)"));
    let mut obj = item(vec![step("SPS1", "20261123", "0930", "CT")]);
    put(&mut obj, (0x0008, 0x0201), VR::SH, "CET");
    assert_eq!(error_of(&map_item(&obj, &options())).field(), Some("TimezoneOffsetFromUTC (0008,0201)"));
}

#[test]
fn validation_failures_name_the_attribute_too() {
    let mut obj = item(vec![step("SPS1", "20261123", "0930", "CT")]);
    put(&mut obj, (0x0010, 0x0020), VR::LO, "MRN*");
    let e = error_of(&map_item(&obj, &options()));
    assert_eq!(e.field(), Some("PatientID (0010,0020)"), "{e}");
    assert!(e.to_string().contains("wildcard"), "{e}");

    let e = error_of(&map_item(&item(vec![step("SPS1", "19601123", "0930", "CT")]), &options()));
    assert_eq!(e.field(), Some("ScheduledProcedureStepStartDate (0040,0002)"), "{e}");
}

#[test]
fn no_time_is_midnight_and_nothing_panics_on_an_empty_item() {
    let events = map_item(&item(vec![step("SPS1", "20261123", "", "CT")]), &options());
    assert_eq!(events[0].event.as_ref().unwrap().scheduled_at.unwrap().to_rfc3339(), "2026-11-23T00:00:00+01:00");
    let events = map_item(&InMemDicomObject::new_empty(), &options());
    assert_eq!(events.len(), 1);
    assert!(events[0].event.is_err());
}
