//! C-STORE: instances received from others (kept in memory, bounded). STOW-RS
//! (`stow.rs`) records what it receives through the same [`record`].

use super::*;

pub(super) async fn store(
    assoc: &mut ServerAssociation,
    pc: u8,
    command: &Command,
    shared: &Arc<Shared>,
    calling_ae: &str,
) -> Result<Flow, DimseError> {
    let class = command.string(ct::AFFECTED_SOP_CLASS_UID).unwrap_or_default();
    let uid = command.string(ct::AFFECTED_SOP_INSTANCE_UID).unwrap_or_default();
    let mut bytes = Vec::new();
    let mut too_big = false;
    if command.has_data_set() {
        assoc
            .receive_data(|chunk| {
                if bytes.len() + chunk.len() > MAX_RECEIVED {
                    too_big = true;
                } else if !too_big {
                    bytes.extend_from_slice(chunk);
                }
                Ok(())
            })
            .await?;
    }
    let ts = context_ts(assoc, pc);
    let status = match ts {
        None => 0x0122,
        Some(_) if too_big => 0xA700,
        Some(_) if bytes.is_empty() => 0xC000,
        Some(ts) => {
            let offered = Offered {
                calling_ae,
                sop_class_uid: &class,
                sop_instance_uid: &uid,
                transfer_syntax: ts,
                move_originator: (
                    command.string(ct::MOVE_ORIGINATOR_AE).filter(|s| !s.is_empty()),
                    command.u16(ct::MOVE_ORIGINATOR_MESSAGE_ID),
                ),
            };
            record(shared, offered, bytes).await
        }
    };
    let mut rsp = Command::new(field::C_STORE_RSP);
    rsp.put_u16(ct::MESSAGE_ID_BEING_RESPONDED_TO, command.u16(ct::MESSAGE_ID).unwrap_or(0))
        .put_uid(ct::AFFECTED_SOP_CLASS_UID, &class)
        .put_uid(ct::AFFECTED_SOP_INSTANCE_UID, &uid)
        .put_u16(ct::STATUS, status);
    assoc.send(pc, &rsp, None).await?;
    Ok(Flow::Continue)
}

/// An instance offered for storage, as the protocol described it.
pub(super) struct Offered<'a> {
    pub calling_ae: &'a str,
    pub sop_class_uid: &'a str,
    pub sop_instance_uid: &'a str,
    pub transfer_syntax: String,
    /// C-MOVE sub-operations name their originator.
    pub move_originator: (Option<String>, Option<u16>),
}

/// Adds a received data set (encoded in `offered.transfer_syntax`) to the index and the
/// received list; answers the storage status (0x0000 or 0xC000 when it cannot be parsed).
pub(super) async fn record(shared: &Arc<Shared>, offered: Offered<'_>, dataset: Vec<u8>) -> u16 {
    let size = dataset.len();
    let obj = match priorfetch_dimse::scu::decode_identifier(dataset.clone(), &offered.transfer_syntax).await {
        Ok(obj) => obj,
        Err(e) => {
            debug!(error = %e, "received data set cannot be parsed");
            return 0xC000;
        }
    };
    let attrs = crate::index::attrs_of(&obj);
    let study_uid = attrs.get(&STUDY_INSTANCE_UID).cloned().unwrap_or_default();
    let instance = Instance {
        attrs: crate::index::pick(&attrs, crate::index::INSTANCE_KEYS.iter()),
        sop_class_uid: offered.sop_class_uid.to_string(),
        sop_instance_uid: offered.sop_instance_uid.to_string(),
        source: Source::Received { dataset: Arc::new(dataset), transfer_syntax: offered.transfer_syntax.clone() },
    };
    if let Ok(mut index) = shared.index.write() {
        index.add_instance(&attrs, instance);
    }
    if let Ok(mut received) = shared.received.lock() {
        received.push(ReceivedInstance {
            calling_ae: offered.calling_ae.to_string(),
            sop_class_uid: offered.sop_class_uid.to_string(),
            sop_instance_uid: offered.sop_instance_uid.to_string(),
            study_instance_uid: study_uid,
            transfer_syntax: offered.transfer_syntax,
            size,
            move_originator_ae: offered.move_originator.0,
            move_originator_message_id: offered.move_originator.1,
            received_at: chrono::Utc::now(),
        });
    }
    Counters::add(&shared.counters.stores_received, 1);
    0x0000
}
