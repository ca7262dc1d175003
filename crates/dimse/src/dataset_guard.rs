//! A structural check of a data set received from the network before dicom-object parses
//! it: every defined length must fit in the bytes that follow. dicom-object 0.10 trusts
//! lengths, and a garbage identifier (e.g. a 2.6 GB length in 117 bytes) makes it allocate
//! or loop for seconds to forever; this walk is linear and allocation-free.

use crate::error::DimseError;

const ITEM_GROUP: u16 = 0xFFFE;
const UNDEFINED: u32 = 0xFFFF_FFFF;

/// VRs with a 2-byte reserved field and a 32-bit length in Explicit VR encodings.
fn long_vr(vr: [u8; 2]) -> bool {
    matches!(&vr, b"OB" | b"OD" | b"OF" | b"OL" | b"OV" | b"OW" | b"SQ" | b"UC" | b"UR" | b"UT" | b"UN" | b"SV" | b"UV")
}

/// The VRs of PS3.5 6.2: dicom-object guesses at others and can loop on them.
fn known_vr(vr: [u8; 2]) -> bool {
    long_vr(vr)
        || matches!(
            &vr,
            b"AE"
                | b"AS"
                | b"AT"
                | b"CS"
                | b"DA"
                | b"DS"
                | b"DT"
                | b"FL"
                | b"FD"
                | b"IS"
                | b"LO"
                | b"LT"
                | b"PN"
                | b"SH"
                | b"SL"
                | b"SS"
                | b"ST"
                | b"TM"
                | b"UI"
                | b"UL"
                | b"US"
        )
}

/// What the walk is inside of: a sequence (or encapsulated pixel data, whose items are raw
/// fragments) or an item; `end` is the offset a defined length ends at.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Open {
    Sequence { end: Option<usize>, fragments: bool },
    Item { end: Option<usize> },
}

/// Checks `bytes` as a data set in transfer syntax `ts_uid` (Explicit/Implicit VR Little
/// Endian, Explicit VR Big Endian and the encapsulated syntaxes, which encode like Explicit
/// VR Little Endian): lengths fit, items only inside sequences, delimiters match what they
/// close, and nothing is left open at the end.
pub fn check(bytes: &[u8], ts_uid: &str) -> Result<(), DimseError> {
    let explicit = ts_uid != "1.2.840.10008.1.2";
    let big_endian = ts_uid == "1.2.840.10008.1.2.2";
    let u16_at = |p: usize| -> u16 {
        let b = [bytes[p], bytes[p + 1]];
        if big_endian { u16::from_be_bytes(b) } else { u16::from_le_bytes(b) }
    };
    let u32_at = |p: usize| -> u32 {
        let b = [bytes[p], bytes[p + 1], bytes[p + 2], bytes[p + 3]];
        if big_endian { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) }
    };
    let bad = |what: String| Err(DimseError::Protocol(format!("malformed data set: {what}")));
    let mut open: Vec<Open> = Vec::new();
    let mut pos = 0usize;
    loop {
        // close the defined-length containers that end here
        while let Some(top) = open.last().copied() {
            let end = match top {
                Open::Sequence { end, .. } | Open::Item { end } => end,
            };
            match end {
                Some(e) if e == pos => {
                    open.pop();
                }
                Some(e) if e < pos => return bad(format!("a value overruns its container at offset {pos}")),
                _ => break,
            }
        }
        if pos >= bytes.len() {
            break;
        }
        if open.len() > 64 {
            return bad("sequences nested deeper than 64".into());
        }
        let left = bytes.len() - pos;
        if left < 8 {
            return bad(format!("{left} stray bytes at offset {pos}"));
        }
        let group = u16_at(pos);
        let element = u16_at(pos + 2);
        if group == ITEM_GROUP {
            let length = u32_at(pos + 4);
            let top = open.last().copied();
            match (element, top) {
                (0xE000, Some(Open::Sequence { fragments, .. })) => {
                    if length == UNDEFINED {
                        if fragments {
                            return bad("encapsulated fragment of undefined length".into());
                        }
                        open.push(Open::Item { end: None });
                        pos += 8;
                    } else if length as usize > left - 8 {
                        return bad(format!("item of {length} bytes with {} left", left - 8));
                    } else if fragments {
                        pos += 8 + length as usize;
                    } else {
                        open.push(Open::Item { end: Some(pos + 8 + length as usize) });
                        pos += 8;
                    }
                }
                (0xE00D, Some(Open::Item { end: None })) | (0xE0DD, Some(Open::Sequence { end: None, .. }))
                    if length == 0 =>
                {
                    open.pop();
                    pos += 8;
                }
                _ => return bad(format!("(FFFE,{element:04X}) out of place at offset {pos}")),
            }
            continue;
        }
        if matches!(open.last(), Some(Open::Sequence { .. })) {
            return bad(format!("element ({group:04X},{element:04X}) directly inside a sequence"));
        }
        let (header, length, vr) = if explicit {
            let vr = [bytes[pos + 4], bytes[pos + 5]];
            if !known_vr(vr) {
                return bad(format!("element ({group:04X},{element:04X}) has no valid VR"));
            }
            if long_vr(vr) {
                if left < 12 {
                    return bad(format!("element ({group:04X},{element:04X}) header truncated"));
                }
                (12, u32_at(pos + 8), Some(vr))
            } else {
                (8, u16_at(pos + 6) as u32, Some(vr))
            }
        } else {
            (8, u32_at(pos + 4), None)
        };
        let pixel_data = group == 0x7FE0 && element == 0x0010;
        if length == UNDEFINED {
            // a sequence, or encapsulated pixel data: items follow, then a delimiter
            if matches!(vr, Some(v) if &v != b"SQ" && &v != b"UN" && !(pixel_data && (&v == b"OB" || &v == b"OW"))) {
                return bad(format!("element ({group:04X},{element:04X}) of undefined length"));
            }
            open.push(Open::Sequence { end: None, fragments: pixel_data });
            pos += header;
            continue;
        }
        let length = length as usize;
        // PS3.5 7.1.1: values have even length; command elements never belong in a data set
        if length % 2 == 1 || group == 0x0000 {
            return bad(format!("element ({group:04X},{element:04X}) of odd length {length} or in group 0000"));
        }
        if length > left - header {
            return bad(format!("element ({group:04X},{element:04X}) claims {length} bytes, {} left", left - header));
        }
        // Descend into defined-length sequences (implicit VR: values that start with an
        // item tag) so nested lengths are checked too; skip any other value.
        let starts_with_item = length >= 8 && u16_at(pos + header) == ITEM_GROUP && u16_at(pos + header + 2) == 0xE000;
        if vr == Some(*b"SQ") || (vr.is_none() && starts_with_item) {
            open.push(Open::Sequence { end: Some(pos + header + length), fragments: false });
            pos += header;
        } else {
            pos += header + length;
        }
    }
    if !open.is_empty() {
        return bad("a sequence or item is not closed".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_a_real_identifier_and_rejects_lying_lengths() {
        let obj = crate::scu::identifier("STUDY", &[(dicom_core::Tag(0x0010, 0x0020), dicom_core::VR::LO, "P1")]);
        for ts in ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"] {
            let mut bytes = Vec::new();
            crate::scu::encode_identifier_into(&obj, ts, &mut bytes).unwrap();
            check(&bytes, ts).unwrap();
            let mut lying = bytes.clone();
            lying.extend_from_slice(&[0x10, 0x00, 0x10, 0x00, b'P', b'N', 0xFF, 0x7F]);
            assert!(check(&lying, ts).is_err(), "{ts}");
        }
        let spin = [0x89, 0x3b, 0x17, 0xb6, 0xfe, 0x59, 0x89, 0xfd, 0xfd, 0x9c, 0xeb, 0xf5];
        assert!(check(&spin, "1.2.840.10008.1.2.1").is_err());
    }
}
