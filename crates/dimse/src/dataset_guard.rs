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

/// Whether `uid` is a DICOM UID (PS3.5 9.1): at most 64 characters, numeric components
/// separated by single dots, no leading zero in a component of more than one digit.
pub fn is_valid_uid(uid: &str) -> bool {
    !uid.is_empty()
        && uid.len() <= 64
        && uid
            .split('.')
            .all(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()) && (c == "0" || !c.starts_with('0')))
}

/// What the start of a data set says about the instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leading {
    /// (0008,0016) SOP Class UID and (0008,0018) SOP Instance UID, both valid UIDs.
    Found { sop_class: String, sop_instance: String },
    /// The bytes end before (0008,0018): more are needed.
    NeedMore,
}

const SOP_CLASS: u32 = 0x0008_0016;
const SOP_INSTANCE: u32 = 0x0008_0018;

/// Reads the top-level elements at the start of a data set up to (0008,0018) and returns
/// the SOP Class and Instance UIDs. Tags must ascend (PS3.5 7.1), VRs and lengths must be
/// sound; `complete` says `bytes` is the whole data set (else running out is `NeedMore`).
/// Only the head is read: it is what identifies the instance, and it lets a receiver
/// refuse garbage before writing anything.
pub fn leading_uids(bytes: &[u8], ts_uid: &str, complete: bool) -> Result<Leading, DimseError> {
    let r = Reader { bytes, explicit: ts_uid != "1.2.840.10008.1.2", big_endian: ts_uid == "1.2.840.10008.1.2.2" };
    let bad = |what: String| Err(DimseError::Protocol(format!("data set head: {what}")));
    let (mut pos, mut last, mut class) = (0usize, None::<u32>, None::<String>);
    loop {
        let Some(e) = r.element(pos).transpose() else {
            return if complete {
                bad(format!("ends at offset {pos} before the SOP Instance UID"))
            } else {
                Ok(Leading::NeedMore)
            };
        };
        let e = e?;
        if e.tag >> 16 == 0 || e.tag >> 16 == u32::from(ITEM_GROUP) || last.is_some_and(|l| l >= e.tag) {
            return bad(format!("element ({:08X}) out of order at offset {pos}", e.tag));
        }
        last = Some(e.tag);
        if e.tag > SOP_INSTANCE {
            return bad("no SOP Instance UID (0008,0018)".into());
        }
        let end = match e.length {
            Some(length) => match pos.checked_add(e.header + length).filter(|end| *end <= bytes.len()) {
                Some(end) => end,
                None if complete => return bad(format!("element ({:08X}) longer than the data set", e.tag)),
                None => return Ok(Leading::NeedMore),
            },
            None => match r.skip_sequence(pos + e.header, 0)? {
                Some(end) => end,
                None if complete => return bad(format!("sequence ({:08X}) not closed", e.tag)),
                None => return Ok(Leading::NeedMore),
            },
        };
        if e.tag == SOP_CLASS || e.tag == SOP_INSTANCE {
            let value = &bytes[pos + e.header..end];
            let uid = std::str::from_utf8(value).unwrap_or("").trim_end_matches(['\0', ' ']);
            if e.vr.is_some_and(|vr| &vr != b"UI") || !is_valid_uid(uid) {
                return bad(format!("({:08X}) is not a valid UID", e.tag));
            }
            if e.tag == SOP_CLASS {
                class = Some(uid.to_string());
            } else {
                return match class {
                    Some(sop_class) => Ok(Leading::Found { sop_class, sop_instance: uid.to_string() }),
                    None => bad("no SOP Class UID (0008,0016)".into()),
                };
            }
        }
        pos = end;
    }
}

/// An element header: tag (group << 16 | element), explicit VR, header size, and value
/// length (`None`: undefined).
struct Element {
    tag: u32,
    vr: Option<[u8; 2]>,
    header: usize,
    length: Option<usize>,
}

struct Reader<'a> {
    bytes: &'a [u8],
    explicit: bool,
    big_endian: bool,
}

impl Reader<'_> {
    fn u16_at(&self, p: usize) -> Option<u16> {
        let b = [*self.bytes.get(p)?, *self.bytes.get(p + 1)?];
        Some(if self.big_endian { u16::from_be_bytes(b) } else { u16::from_le_bytes(b) })
    }

    fn u32_at(&self, p: usize) -> Option<u32> {
        let b = [*self.bytes.get(p)?, *self.bytes.get(p + 1)?, *self.bytes.get(p + 2)?, *self.bytes.get(p + 3)?];
        Some(if self.big_endian { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) })
    }

    /// The element header at `pos`; `Ok(None)` when the bytes end inside it.
    fn element(&self, pos: usize) -> Result<Option<Element>, DimseError> {
        let (Some(group), Some(element)) = (self.u16_at(pos), self.u16_at(pos + 2)) else { return Ok(None) };
        let tag = (u32::from(group) << 16) | u32::from(element);
        if group == ITEM_GROUP || !self.explicit {
            return Ok(self.u32_at(pos + 4).map(|l| Element { tag, vr: None, header: 8, length: defined(l) }));
        }
        let (Some(&a), Some(&b)) = (self.bytes.get(pos + 4), self.bytes.get(pos + 5)) else { return Ok(None) };
        let vr = [a, b];
        if !known_vr(vr) {
            return Err(DimseError::Protocol(format!("data set head: ({tag:08X}) has no valid VR at offset {pos}")));
        }
        Ok(if long_vr(vr) {
            self.u32_at(pos + 8).map(|l| Element { tag, vr: Some(vr), header: 12, length: defined(l) })
        } else {
            self.u16_at(pos + 6).map(|l| Element { tag, vr: Some(vr), header: 8, length: Some(l as usize) })
        })
    }

    /// Skips the items of an undefined-length sequence whose first item starts at `pos`:
    /// the offset after its delimiter, `Ok(None)` when the bytes end first.
    fn skip_sequence(&self, mut pos: usize, depth: usize) -> Result<Option<usize>, DimseError> {
        let bad = |what: &str, at: usize| Err(DimseError::Protocol(format!("data set head: {what} at offset {at}")));
        if depth > 16 {
            return bad("sequences nested deeper than 16", pos);
        }
        loop {
            let Some(item) = self.element(pos)? else { return Ok(None) };
            match (item.tag, item.length) {
                (0xFFFE_E0DD, _) => return Ok(Some(pos + 8)),
                (0xFFFE_E000, Some(length)) => pos += 8 + length,
                (0xFFFE_E000, None) => match self.skip_item(pos + 8, depth)? {
                    Some(end) => pos = end,
                    None => return Ok(None),
                },
                _ => return bad("no item inside a sequence", pos),
            }
            if pos > self.bytes.len() {
                return Ok(None);
            }
        }
    }

    /// Skips the elements of an undefined-length item up to and past its delimiter.
    fn skip_item(&self, mut pos: usize, depth: usize) -> Result<Option<usize>, DimseError> {
        loop {
            let Some(e) = self.element(pos)? else { return Ok(None) };
            if e.tag == 0xFFFE_E00D {
                return Ok(Some(pos + 8));
            }
            if e.tag >> 16 == u32::from(ITEM_GROUP) {
                return Err(DimseError::Protocol(format!("data set head: item tag inside an item at offset {pos}")));
            }
            pos = match e.length {
                Some(length) => pos + e.header + length,
                None => match self.skip_sequence(pos + e.header, depth + 1)? {
                    Some(end) => end,
                    None => return Ok(None),
                },
            };
            if pos > self.bytes.len() {
                return Ok(None);
            }
        }
    }
}

fn defined(length: u32) -> Option<usize> {
    (length != UNDEFINED).then_some(length as usize)
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

    #[test]
    fn uids_are_checked_by_syntax() {
        for good in ["1.2.3", "0.1", "1.2.840.10008.5.1.4.1.1.2", &format!("1.{}", "2".repeat(62))] {
            assert!(is_valid_uid(good), "{good}");
        }
        for bad in ["", "1.2.3abc", "1.2.3xyz", "1..2", "1.02", ".1", "1.", "1.2 ", &format!("1.{}", "2".repeat(63))] {
            assert!(!is_valid_uid(bad), "{bad}");
        }
    }

    #[test]
    fn the_head_gives_the_sop_uids_or_needs_more_or_fails() {
        let obj = dicom_object::InMemDicomObject::from_element_iter([
            dicom_core::DataElement::new(dicom_core::Tag(0x0008, 0x0005), dicom_core::VR::CS, "ISO_IR 100"),
            dicom_core::DataElement::new(
                dicom_core::Tag(0x0008, 0x0016),
                dicom_core::VR::UI,
                "1.2.840.10008.5.1.4.1.1.7",
            ),
            dicom_core::DataElement::new(dicom_core::Tag(0x0008, 0x0018), dicom_core::VR::UI, "1.2.3.4"),
            dicom_core::DataElement::new(dicom_core::Tag(0x0010, 0x0020), dicom_core::VR::LO, "P1"),
        ]);
        for ts in ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"] {
            let mut bytes = Vec::new();
            crate::scu::encode_identifier_into(&obj, ts, &mut bytes).unwrap();
            let found =
                Leading::Found { sop_class: "1.2.840.10008.5.1.4.1.1.7".into(), sop_instance: "1.2.3.4".into() };
            assert_eq!(leading_uids(&bytes, ts, true).unwrap(), found, "{ts}");
            assert_eq!(leading_uids(&bytes[..20], ts, false).unwrap(), Leading::NeedMore, "{ts}");
            assert!(leading_uids(&bytes[..20], ts, true).is_err(), "{ts}");
        }
        assert!(leading_uids(&[], "1.2.840.10008.1.2.1", true).is_err());
    }
}
