//! Event payloads for the intake tests: valid JSON and HL7, duplicates, and the invalid
//! kinds the issue names (bad JSON, missing patient ID, bad dates, truncated HL7).

#![allow(dead_code)]

pub fn json_event(i: usize) -> Vec<u8> {
    serde_json::json!({
        "event_id": format!("ris-{i}"), "type": "exam.scheduled",
        "patient": { "id": format!("MRN{}", i % 997), "issuer": "HOSP", "name": "DOE^JANE", "birth_date": "19700101" },
        "accession_number": format!("ACC{i}"), "study_instance_uid": format!("1.2.826.0.1.3680043.10.1.{i}"),
        "scheduled_at": "2026-11-23T09:30:00+01:00", "priority": if i % 10 == 0 { "stat" } else { "routine" },
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
