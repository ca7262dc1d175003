//! C-STORE: instances received from others (kept in memory, bounded).

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
            let size = bytes.len();
            let dataset = Arc::new(bytes);
            match priorfetch_dimse::scu::decode_identifier(dataset.to_vec(), &ts).await {
                Ok(obj) => {
                    let attrs = crate::index::attrs_of(&obj);
                    let study_uid = attrs.get(&STUDY_INSTANCE_UID).cloned().unwrap_or_default();
                    let instance = Instance {
                        attrs: crate::index::pick(&attrs, crate::index::INSTANCE_KEYS.iter()),
                        sop_class_uid: class.clone(),
                        sop_instance_uid: uid.clone(),
                        source: Source::Received { dataset, transfer_syntax: ts.clone() },
                    };
                    if let Ok(mut index) = shared.index.write() {
                        index.add_instance(&attrs, instance);
                    }
                    if let Ok(mut received) = shared.received.lock() {
                        received.push(ReceivedInstance {
                            calling_ae: calling_ae.to_string(),
                            sop_class_uid: class.clone(),
                            sop_instance_uid: uid.clone(),
                            study_instance_uid: study_uid,
                            transfer_syntax: ts,
                            size,
                            move_originator_ae: command.string(ct::MOVE_ORIGINATOR_AE).filter(|s| !s.is_empty()),
                            move_originator_message_id: command.u16(ct::MOVE_ORIGINATOR_MESSAGE_ID),
                        });
                    }
                    Counters::add(&shared.counters.stores_received, 1);
                    0x0000
                }
                Err(e) => {
                    debug!(error = %e, "received data set cannot be parsed");
                    0xC000
                }
            }
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
