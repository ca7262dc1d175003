//! Event payloads for the intake tests: valid JSON and HL7, duplicates, and the invalid
//! kinds the issue names (bad JSON, missing patient ID, bad dates, truncated HL7).

#![allow(dead_code)]

pub fn json_event(i: usize) -> Vec<u8> {
    serde_json::json!({
        "event_id": format!("ris-{i}"), "type": "exam.scheduled",
        "patient": { "id": format!("MRN{}", i % 997), "issuer": "HOSP", "name": "DOE^JANE", "birth_date": "19700101" },
        "accession_number": format!("ACC{i}"), "study_instance_uid": format!("1.2.826.0.1.3680043.10.1.{i}"),
        "scheduled_at": "2026-11-23T09:30:00+01:00", "priority": if i.is_multiple_of(10) { "stat" } else { "routine" },
        "modality": "CT", "body_part": "CHEST", "procedure": { "code": "CTCHEST", "text": "CT chest" }
    })
    .to_string()
    .into_bytes()
}

pub fn hl7_event(i: usize) -> Vec<u8> {
    let mut obr = vec![String::new(); 25];
    obr[0] = "OBR".into();
    obr[1] = "1".into();
    obr[2] = format!("PL{i}");
    obr[3] = format!("FL{i}");
    obr[4] = "CTCHEST^CT chest".into();
    obr[18] = format!("HACC{i}");
    obr[24] = "CT".into();
    format!(
        "MSH|^~\\&|RIS|HOSP|PRIORFETCH|HOSP|20261122083000||ORM^O01|HL7-{i}|P|2.5.1\r\
         PID|1||MRN{p}^^^HOSP^MR||DOE^JOHN||19650304|M\r\
         ORC|NW|PL{i}|FL{i}||SC||^^^20261123093000+0100^^R\r{obr}\r",
        p = i % 997,
        obr = obr.join("|")
    )
    .into_bytes()
}

/// The i-th invalid payload, cycling through the kinds.
pub fn invalid_event(i: usize) -> Vec<u8> {
    match i % 4 {
        0 => format!("{{\"event_id\": \"bad-{i}\", \"type\": \"exam.sched").into_bytes(),
        1 => serde_json::json!({
            "event_id": format!("nopid-{i}"), "type": "exam.scheduled", "patient": { "name": "X^Y" },
            "accession_number": format!("B{i}"), "scheduled_at": "2026-11-23T09:30:00+01:00"
        })
        .to_string()
        .into_bytes(),
        2 => serde_json::json!({
            "event_id": format!("baddate-{i}"), "type": "exam.scheduled", "patient": { "id": "MRN1" },
            "accession_number": format!("C{i}"), "scheduled_at": "2026-13-45T29:30:00+01:00"
        })
        .to_string()
        .into_bytes(),
        _ => {
            let full = hl7_event(1_000_000 + i);
            full[..40].to_vec()
        }
    }
}

/// 10% invalid, 10% duplicates of earlier valid messages, the rest valid (1 in 5 HL7).
/// Returns the payloads and how many distinct valid events they hold.
pub fn mixed_batch(total: usize) -> (Vec<Vec<u8>>, usize, usize) {
    let mut payloads = Vec::with_capacity(total);
    let mut unique = 0;
    let mut invalid = 0;
    for n in 0..total {
        match n % 10 {
            3 => {
                payloads.push(invalid_event(n));
                invalid += 1;
            }
            7 if unique > 0 => {
                let earlier = (n * 7919) % unique;
                payloads.push(if earlier % 5 == 4 { hl7_event(earlier) } else { json_event(earlier) });
            }
            _ => {
                payloads.push(if unique % 5 == 4 { hl7_event(unique) } else { json_event(unique) });
                unique += 1;
            }
        }
    }
    (payloads, unique, invalid)
}

/// The poison messages a hostile tester found (issue: "one message stops intake for
/// good"), each with the field its dead letter must name.
pub fn poison_events() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let json = |patient: serde_json::Value| {
        serde_json::json!({ "event_id": format!("poison-{}", uuid::Uuid::new_v4()), "type": "exam.scheduled",
            "patient": patient, "accession_number": "ACCP", "scheduled_at": "2026-11-23T09:30:00+01:00" })
        .to_string()
        .into_bytes()
    };
    let hl7_with_order_control = |control: &str| {
        format!(
            "MSH|^~\\&|RIS|HOSP|PRIORFETCH|HOSP|20261122083000||ORM^O01|HL7-POISON|P|2.5.1\r\
             PID|1||MRN1^^^HOSP^MR||DOE^JOHN||19650304|M\r\
             ORC|{control}|PL1|FL1||SC||^^^20261123093000+0100^^R\rOBR|1|PL1|FL1|CTCHEST^CT chest\r"
        )
        .into_bytes()
    };
    vec![
        ("NUL in patient.id", json(serde_json::json!({ "id": "MRN\u{0}1" })), "patient.id"),
        (
            "NUL in birth_date",
            json(serde_json::json!({ "id": "MRN1", "birth_date": "1970\u{0}0101" })),
            "patient.birth_date",
        ),
        ("5,000-character patient ID", json(serde_json::json!({ "id": "7".repeat(5000) })), "patient.id"),
        ("HL7 with a 200 KB field", hl7_with_order_control(&"X".repeat(200 * 1024)), "ORC-1"),
        ("wildcard patient ID", json(serde_json::json!({ "id": "SIM-P*" })), "patient.id"),
        (
            "year 0",
            String::from_utf8(json(serde_json::json!({ "id": "MRN1" })))
                .unwrap()
                .replace("2026-11-23", "0000-11-23")
                .into_bytes(),
            "scheduled_at",
        ),
        (
            "year 9999",
            String::from_utf8(json(serde_json::json!({ "id": "MRN1" })))
                .unwrap()
                .replace("2026-11-23", "9999-11-23")
                .into_bytes(),
            "scheduled_at",
        ),
    ]
}
