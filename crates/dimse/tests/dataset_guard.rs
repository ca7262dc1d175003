//! Structured garbage data sets (plausible headers, random VRs, lengths, items and
//! delimiters) through the guard and then dicom-object, as identifiers from an archive go:
//! each answer (value or error) comes back promptly. Before `dataset_guard`, dicom-object
//! 0.10 looped forever on several of these shapes (items outside a sequence, unknown VRs,
//! odd lengths).

#[test]
fn structured_garbage_data_sets_decode_or_fail_promptly() {
    use rand::RngExt;
    let mut rng = rand::rng();
    let vrs: [&[u8; 2]; 10] = [b"SQ", b"UN", b"OB", b"LO", b"UI", b"CS", b"OW", b"UT", b"PN", b"US"];
    for round in 0..20000 {
        let ts_uid = if round % 2 == 0 { "1.2.840.10008.1.2.1" } else { "1.2.840.10008.1.2" };
        let mut bytes = Vec::new();
        for _ in 0..rng.random_range(1..8) {
            let kind = rng.random_range(0..4);
            if kind == 0 {
                bytes.extend_from_slice(&[0xFE, 0xFF, [0x00, 0x0D, 0xDD][rng.random_range(0..3)], 0xE0]);
                let l: u32 = if rng.random_bool(0.5) { 0xFFFF_FFFF } else { rng.random_range(0..40) };
                bytes.extend_from_slice(&l.to_le_bytes());
            } else {
                bytes.extend_from_slice(&[rng.random_range(0..0x40u8) & 0xFE, 0x00, rng.random(), rng.random()]);
                let vr = vrs[rng.random_range(0..vrs.len())];
                bytes.extend_from_slice(vr);
                let l: u32 = if rng.random_bool(0.3) { 0xFFFF_FFFF } else { rng.random_range(0..30) };
                if matches!(vr, b"SQ" | b"UN" | b"OB" | b"OW" | b"UT") {
                    bytes.extend_from_slice(&[0, 0]);
                    bytes.extend_from_slice(&l.to_le_bytes());
                } else {
                    bytes.extend_from_slice(&(l as u16 & 0x1F).to_le_bytes());
                }
                for _ in 0..rng.random_range(0..20) {
                    bytes.push(rng.random());
                }
            }
        }
        let b2 = bytes.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = priorfetch_dimse::dataset_guard::check(&b2, ts_uid).map(|_| {
                let ts = dicom_encoding::TransferSyntaxIndex::get(
                    &dicom_transfer_syntax_registry::TransferSyntaxRegistry,
                    ts_uid,
                )
                .unwrap();
                let _ = dicom_object::InMemDicomObject::read_dataset_with_ts(&b2[..], ts);
            });
            let _ = tx.send(());
        });
        if rx.recv_timeout(std::time::Duration::from_secs(2)).is_err() {
            panic!("no answer within 2 s for {} bytes ({ts_uid}): {:02x?}", bytes.len(), &bytes);
        }
    }
}
