//! DIMSE command sets: always Implicit VR Little Endian, with the group length computed.

use crate::error::DimseError;
use dicom_core::Tag;

pub mod tags {
    use dicom_core::Tag;
    pub const GROUP_LENGTH: Tag = Tag(0x0000, 0x0000);
    pub const AFFECTED_SOP_CLASS_UID: Tag = Tag(0x0000, 0x0002);
    pub const REQUESTED_SOP_CLASS_UID: Tag = Tag(0x0000, 0x0003);
    pub const COMMAND_FIELD: Tag = Tag(0x0000, 0x0100);
    pub const MESSAGE_ID: Tag = Tag(0x0000, 0x0110);
    pub const MESSAGE_ID_BEING_RESPONDED_TO: Tag = Tag(0x0000, 0x0120);
    pub const MOVE_DESTINATION: Tag = Tag(0x0000, 0x0600);
    pub const PRIORITY: Tag = Tag(0x0000, 0x0700);
    pub const DATA_SET_TYPE: Tag = Tag(0x0000, 0x0800);
    pub const STATUS: Tag = Tag(0x0000, 0x0900);
    pub const ERROR_COMMENT: Tag = Tag(0x0000, 0x0902);
    pub const AFFECTED_SOP_INSTANCE_UID: Tag = Tag(0x0000, 0x1000);
    pub const REMAINING: Tag = Tag(0x0000, 0x1020);
    pub const COMPLETED: Tag = Tag(0x0000, 0x1021);
    pub const FAILED: Tag = Tag(0x0000, 0x1022);
    pub const WARNING: Tag = Tag(0x0000, 0x1023);
    pub const MOVE_ORIGINATOR_AE: Tag = Tag(0x0000, 0x1030);
    pub const MOVE_ORIGINATOR_MESSAGE_ID: Tag = Tag(0x0000, 0x1031);
    /// (0008,0058) in the identifier of a final C-MOVE/C-GET response.
    pub const FAILED_SOP_INSTANCE_UID_LIST: Tag = Tag(0x0008, 0x0058);
}

/// Command Field values.
pub mod field {
    pub const C_STORE_RQ: u16 = 0x0001;
    pub const C_STORE_RSP: u16 = 0x8001;
    pub const C_GET_RQ: u16 = 0x0010;
    pub const C_GET_RSP: u16 = 0x8010;
    pub const C_FIND_RQ: u16 = 0x0020;
    pub const C_FIND_RSP: u16 = 0x8020;
    pub const C_MOVE_RQ: u16 = 0x0021;
    pub const C_MOVE_RSP: u16 = 0x8021;
    pub const C_ECHO_RQ: u16 = 0x0030;
    pub const C_ECHO_RSP: u16 = 0x8030;
    pub const C_CANCEL_RQ: u16 = 0x0FFF;
}

/// (0000,0800) value meaning "no data set follows".
pub const NO_DATA_SET: u16 = 0x0101;

/// A command set being built or read: group 0000 elements by element number, raw values.
/// Parsed by hand (tag, 32-bit length, value) rather than by a general DICOM parser: the
/// structure is fixed, and every length is checked against what was received.
#[derive(Debug, Clone, Default)]
pub struct Command {
    elements: std::collections::BTreeMap<u16, Vec<u8>>,
}

impl Command {
    pub fn new(command_field: u16) -> Command {
        let mut c = Command::default();
        c.put_u16(tags::COMMAND_FIELD, command_field);
        c.put_u16(tags::DATA_SET_TYPE, NO_DATA_SET);
        c
    }

    pub fn put_u16(&mut self, tag: Tag, value: u16) -> &mut Self {
        self.elements.insert(tag.1, value.to_le_bytes().to_vec());
        self
    }

    /// UIDs are padded with NUL to even length.
    pub fn put_uid(&mut self, tag: Tag, uid: &str) -> &mut Self {
        self.put_text(tag, uid, 0)
    }

    /// AE titles and other text are padded with a space.
    pub fn put_ae(&mut self, tag: Tag, ae: &str) -> &mut Self {
        self.put_text(tag, ae, b' ')
    }

    fn put_text(&mut self, tag: Tag, text: &str, pad: u8) -> &mut Self {
        let mut bytes = text.as_bytes().to_vec();
        if bytes.len() % 2 == 1 {
            bytes.push(pad);
        }
        self.elements.insert(tag.1, bytes);
        self
    }

    pub fn with_data_set(&mut self) -> &mut Self {
        self.put_u16(tags::DATA_SET_TYPE, 0x0000)
    }

    pub fn u16(&self, tag: Tag) -> Option<u16> {
        let v = self.elements.get(&tag.1)?;
        Some(u16::from_le_bytes([*v.first()?, *v.get(1)?]))
    }

    pub fn string(&self, tag: Tag) -> Option<String> {
        let v = self.elements.get(&tag.1)?;
        Some(String::from_utf8_lossy(v).trim_end_matches(['\0', ' ']).trim_start().to_string())
    }

    pub fn command_field(&self) -> Option<u16> {
        self.u16(tags::COMMAND_FIELD)
    }

    pub fn has_data_set(&self) -> bool {
        self.u16(tags::DATA_SET_TYPE).is_some_and(|t| t != NO_DATA_SET)
    }

    pub fn status(&self) -> Option<u16> {
        self.u16(tags::STATUS)
    }

    /// Encodes (Implicit VR LE) with the group length first.
    pub fn encode(&self) -> Result<Vec<u8>, DimseError> {
        let mut body = Vec::with_capacity(128);
        for (element, value) in self.elements.iter().filter(|(e, _)| **e != 0) {
            let length =
                u32::try_from(value.len()).map_err(|_| DimseError::Encode("command element too long".into()))?;
            body.extend_from_slice(&0u16.to_le_bytes());
            body.extend_from_slice(&element.to_le_bytes());
            body.extend_from_slice(&length.to_le_bytes());
            body.extend_from_slice(value);
        }
        let mut out = Vec::with_capacity(body.len() + 12);
        out.extend_from_slice(&[0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00]);
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Decodes a command set received from the network; garbage is an error, never a
    /// panic or a hang.
    pub fn decode(bytes: &[u8]) -> Result<Command, DimseError> {
        let mut elements = std::collections::BTreeMap::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            if rest.len() < 8 {
                return Err(DimseError::Protocol(format!("command set truncated: {} stray bytes", rest.len())));
            }
            let group = u16::from_le_bytes([rest[0], rest[1]]);
            let element = u16::from_le_bytes([rest[2], rest[3]]);
            let length = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
            if group != 0x0000 {
                return Err(DimseError::Protocol(format!("command set has an element of group {group:04X}")));
            }
            let value = rest.get(8..8 + length.min(rest.len())).filter(|v| v.len() == length).ok_or_else(|| {
                DimseError::Protocol(format!(
                    "command element (0000,{element:04X}) claims {length} bytes, {} left",
                    rest.len() - 8
                ))
            })?;
            elements.insert(element, value.to_vec());
            rest = &rest[8 + length..];
        }
        let command = Command { elements };
        if command.command_field().is_none() {
            return Err(DimseError::Protocol("command set without (0000,0100) command field".into()));
        }
        Ok(command)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_group_length() {
        let mut c = Command::new(field::C_ECHO_RQ);
        c.put_u16(tags::MESSAGE_ID, 7).put_uid(tags::AFFECTED_SOP_CLASS_UID, "1.2.840.10008.1.1");
        let bytes = c.encode().unwrap();
        let length = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
        assert_eq!(length, bytes.len() - 12);
        let back = Command::decode(&bytes).unwrap();
        assert_eq!(back.command_field(), Some(field::C_ECHO_RQ));
        assert_eq!(back.u16(tags::MESSAGE_ID), Some(7));
        assert_eq!(back.string(tags::AFFECTED_SOP_CLASS_UID).as_deref(), Some("1.2.840.10008.1.1"));
        assert!(!back.has_data_set());
    }
}
