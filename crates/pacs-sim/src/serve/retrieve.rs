//! C-MOVE and C-GET: sub-operations in windows, progress responses, cancels and the configured faults.

use super::find::{Comment, Item, select_items};
use super::*;

/// Is this instance's sub-operation one that fails? Deterministic per instance and seed.
fn fails(seed: u64, uid: &str, ratio: f64) -> bool {
    if ratio <= 0.0 {
        return false;
    }
    let h = crate::synthetic::mix(&[
        seed,
        uid.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3)),
    ]);
    (h as f64 / u64::MAX as f64) < ratio
}

#[derive(Default)]
struct Progress {
    remaining: usize,
    completed: u16,
    failed: u16,
    warning: u16,
    failed_uids: Vec<String>,
    cancelled: bool,
}

impl Progress {
    fn put(&self, rsp: &mut Command, with_remaining: bool) {
        if with_remaining {
            rsp.put_u16(ct::REMAINING, self.remaining.min(u16::MAX as usize) as u16);
        }
        rsp.put_u16(ct::COMPLETED, self.completed).put_u16(ct::FAILED, self.failed).put_u16(ct::WARNING, self.warning);
    }

    fn fail(&mut self, uid: &str) {
        self.failed = self.failed.saturating_add(1);
        self.failed_uids.push(uid.to_string());
    }
}

pub(super) async fn retrieve(
    assoc: &mut ServerAssociation,
    pc: u8,
    command: &Command,
    shared: &Arc<Shared>,
    is_move: bool,
) -> Result<Flow, DimseError> {
    let rsp_field = if is_move { field::C_MOVE_RSP } else { field::C_GET_RSP };
    Counters::add(if is_move { &shared.counters.moves } else { &shared.counters.gets }, 1);
    let faults = shared.faults();
    let sop = command.string(ct::AFFECTED_SOP_CLASS_UID).unwrap_or_default();
    let identifier = read_identifier(assoc, pc, command).await?;
    let ts = context_ts(assoc, pc).unwrap_or_else(|| IMPLICIT_VR_LE.to_string());
    let parsed = identifier.and_then(|i| level_of(&i, &sop).map(|l| (keys_of(&i), l)));
    let Some((keys, level)) = parsed.filter(|(keys, _)| keys.iter().any(|(_, _, v)| !v.is_empty())) else {
        return answer(assoc, pc, response(rsp_field, command, 0xA900), &faults).await;
    };
    if faults.refuse_image_level && level == Level::Image {
        let mut rsp = response(rsp_field, command, 0xC000);
        rsp.put_text_comment("IMAGE level retrieve not supported");
        return answer(assoc, pc, rsp, &faults).await;
    }
    // the destination is checked before anything else, as archives do
    let destination = if is_move {
        let ae = command.string(ct::MOVE_DESTINATION).unwrap_or_default();
        match shared.config.destinations.iter().find(|d| d.ae == ae) {
            Some(d) => Some(d.clone()),
            None => {
                debug!(destination = %ae, "unknown move destination");
                let mut rsp = response(rsp_field, command, 0xA801);
                rsp.put_text_comment("move destination unknown");
                return answer(assoc, pc, rsp, &faults).await;
            }
        }
    } else {
        None
    };
    let items = select_items(shared, level, &keys);
    let active_studies = count_attempts(shared, &faults, &items)?;
    let faulty = !active_studies.is_empty();
    if faulty && (faults.out_of_resources || faults.empty_success) {
        let mut rsp = response(rsp_field, command, if faults.out_of_resources { 0xA702 } else { 0x0000 });
        Progress::default().put(&mut rsp, false);
        if faults.out_of_resources {
            rsp.put_text_comment("out of resources");
        }
        return answer(assoc, pc, rsp, &faults).await;
    }
    let abort_after = faults.abort_after_suboperations.filter(|_| faulty).map(|n| n as usize);
    let mut progress = Progress { remaining: items.len(), ..Default::default() };
    let message_id = command.u16(ct::MESSAGE_ID).unwrap_or(0);
    let mut target = match &destination {
        Some(d) => connect_destination(shared, d, &items, &mut progress).await?,
        None => None,
    };
    let window = shared.config.store_window.max(1);
    let mut done = 0usize;
    let originator = is_move.then(|| (assoc.peer.ae_title.clone(), message_id));
    let stall_after = faults.stall_after_suboperations.filter(|_| faulty).map(|n| n as usize);
    while progress.remaining > 0 && !progress.cancelled {
        if stall_after.is_some_and(|n| done >= n) {
            stall(assoc, pc, command, rsp_field, message_id, &mut progress).await?;
            break;
        }
        if abort_after.is_some_and(|n| done >= n) {
            if let Some(t) = target.take() {
                t.release().await;
            }
            return Ok(Flow::Abort);
        }
        let start = items.len() - progress.remaining;
        let mut end = (start + window).min(items.len());
        if let Some(n) = abort_after.or(stall_after) {
            end = end.min(start.max(n));
        }
        let batch = &items[start..end];
        if batch.is_empty() {
            break;
        }
        let result = match target.as_mut() {
            Some(t) => {
                // the requesting association is idle meanwhile: a C-CANCEL may arrive on it
                let mut cancelled = false;
                let work = send_batch(
                    t,
                    batch,
                    shared,
                    &faults,
                    &active_studies,
                    originator.as_ref().map(|(a, id)| (a, *id)),
                    &mut progress,
                    false,
                );
                let watched = watching_for_cancel(assoc, message_id, work, &mut cancelled).await;
                let result = match watched {
                    Ok(r) => r,
                    Err(e) => {
                        if let Some(mut t) = target.take() {
                            t.abort().await;
                        }
                        return Err(e);
                    }
                };
                progress.cancelled |= cancelled;
                result
            }
            None => send_batch(assoc, batch, shared, &faults, &active_studies, None, &mut progress, true).await,
        };
        progress.remaining -= batch.len();
        done += batch.len();
        if let Err(e) = result {
            // the destination broke: everything left fails
            if let Some(mut t) = target.take() {
                warn!(error = %e, "move destination association failed");
                t.abort().await;
                for i in &items[items.len() - progress.remaining..] {
                    progress.fail(&i.instance.sop_instance_uid);
                }
                progress.remaining = 0;
            } else {
                return Err(e);
            }
        }
        if abort_after.is_some_and(|n| done >= n) {
            if let Some(t) = target.take() {
                t.release().await;
            }
            return Ok(Flow::Abort);
        }
        if progress.remaining > 0 && !progress.cancelled {
            let mut cancelled = false;
            if let Err(e) = delay_or_cancel(assoc, message_id, &faults, &mut cancelled).await {
                if let Some(mut t) = target.take() {
                    t.abort().await;
                }
                return Err(e);
            }
            if cancelled {
                progress.cancelled = true;
                break;
            }
            let mut rsp = response(rsp_field, command, 0xFF00);
            progress.put(&mut rsp, true);
            assoc.send(pc, &rsp, None).await?;
        }
    }
    if let Some(t) = target.take() {
        t.release().await;
    }
    final_response(assoc, pc, command, rsp_field, shared, &faults, &progress, &ts).await
}

/// The stall fault: pending responses with unchanged counts every 500 ms until a C-CANCEL
/// (bounded: ten minutes, then the association's own end).
async fn stall(
    assoc: &mut ServerAssociation,
    pc: u8,
    command: &Command,
    rsp_field: u16,
    message_id: u16,
    progress: &mut Progress,
) -> Result<(), DimseError> {
    let keep_alive = Faults { response_delay: Some(std::time::Duration::from_millis(500)), ..Faults::default() };
    for _ in 0..1200 {
        let mut cancelled = false;
        delay_or_cancel(assoc, message_id, &keep_alive, &mut cancelled).await?;
        if cancelled {
            progress.cancelled = true;
            return Ok(());
        }
        let mut rsp = response(rsp_field, command, 0xFF00);
        progress.put(&mut rsp, true);
        assoc.send(pc, &rsp, None).await?;
    }
    Ok(())
}

/// Sends a response that ends the operation at once, after the configured delay.
async fn answer(assoc: &mut ServerAssociation, pc: u8, rsp: Command, faults: &Faults) -> Result<Flow, DimseError> {
    delay(faults).await;
    assoc.send(pc, &rsp, None).await?;
    Ok(Flow::Continue)
}

/// Counts an attempt per study; returns the studies retrieve faults apply to (all, or
/// only those within their first `faults_first_attempts` attempts).
fn count_attempts(shared: &Shared, faults: &Faults, items: &[Item]) -> Result<HashSet<String>, DimseError> {
    let mut attempts = shared.attempts.lock().map_err(|_| DimseError::Protocol("lock poisoned".into()))?;
    let mut studies: Vec<&str> = items.iter().map(|i| i.study_uid.as_str()).collect();
    studies.dedup();
    let mut active = HashSet::new();
    for s in studies {
        let n = attempts.entry(s.to_string()).or_insert(0);
        *n += 1;
        if faults.faults_first_attempts.is_none_or(|first| *n <= first) {
            active.insert(s.to_string());
        }
    }
    Ok(active)
}

/// The C-MOVE's association to its destination; when it cannot be reached every
/// sub-operation fails.
async fn connect_destination(
    shared: &Shared,
    d: &crate::config::Destination,
    items: &[Item],
    progress: &mut Progress,
) -> Result<Option<Association>, DimseError> {
    let our_ae = AeTitle::parse(&shared.config.ae_title).map_err(DimseError::Protocol)?;
    let peer = Peer::new(&d.ae, &d.host, d.port).map_err(DimseError::Protocol)?;
    let contexts = storage_contexts(items.iter().map(|i| (i.instance.sop_class_uid.clone(), item_ts(i).to_string())));
    match Association::connect(&peer, &ScuOptions::new(our_ae), &contexts).await {
        Ok(a) => Ok(Some(a)),
        Err(e) => {
            warn!(destination = %d.ae, error = %e, "cannot reach the move destination");
            for i in items {
                progress.fail(&i.instance.sop_instance_uid);
            }
            progress.remaining = 0;
            Ok(None)
        }
    }
}

/// The final response: status from the counts, and the Failed SOP Instance UID List.
#[allow(clippy::too_many_arguments)]
async fn final_response(
    assoc: &mut ServerAssociation,
    pc: u8,
    command: &Command,
    rsp_field: u16,
    shared: &Shared,
    faults: &Faults,
    progress: &Progress,
    ts: &str,
) -> Result<Flow, DimseError> {
    Counters::add(&shared.counters.failed_subops, progress.failed as u64);
    let status = if progress.cancelled {
        Counters::add(&shared.counters.cancels, 1);
        0xFE00
    } else if progress.failed > 0 && progress.completed == 0 && progress.warning == 0 {
        0xA702
    } else if progress.failed > 0 || progress.warning > 0 {
        0xB000
    } else {
        0x0000
    };
    if !progress.cancelled {
        delay(faults).await;
    }
    let mut rsp = response(rsp_field, command, status);
    progress.put(&mut rsp, progress.cancelled);
    let data = if progress.failed_uids.is_empty() {
        None
    } else {
        let mut obj = InMemDicomObject::new_empty();
        obj.put(DataElement::new(
            FAILED_SOP_INSTANCE_UID_LIST,
            VR::UI,
            PrimitiveValue::Strs(progress.failed_uids.iter().cloned().collect()),
        ));
        rsp.with_data_set();
        Some(encode(&obj, ts)?)
    };
    assoc.send(pc, &rsp, data.as_deref()).await?;
    Ok(Flow::Continue)
}

const FAILED_SOP_INSTANCE_UID_LIST: Tag = Tag(0x0008, 0x0058);

fn item_ts(item: &Item) -> &str {
    match &item.instance.source {
        Source::Synthetic => EXPLICIT_VR_LE,
        Source::File(f) => &f.transfer_syntax,
        Source::Received { transfer_syntax, .. } => transfer_syntax,
    }
}

/// Sends a window of C-STOREs, then collects their responses. On the requester's own
/// association (C-GET) a C-CANCEL may arrive among the responses.
#[allow(clippy::too_many_arguments)]
async fn send_batch<A>(
    target: &mut Association<A>,
    batch: &[Item],
    shared: &Shared,
    faults: &Faults,
    active_studies: &HashSet<String>,
    originator: Option<(&AeTitle, u16)>,
    progress: &mut Progress,
    same_association: bool,
) -> Result<(), DimseError>
where
    A: priorfetch_dimse::link::Link,
{
    let mut sent = 0usize;
    for item in batch {
        let uid = &item.instance.sop_instance_uid;
        if active_studies.contains(&item.study_uid) && fails(shared.config.seed, uid, faults.failed_suboperation_ratio)
        {
            progress.fail(uid);
            continue;
        }
        let class = &item.instance.sop_class_uid;
        let (data, ts): (Arc<Vec<u8>>, String) = match &item.instance.source {
            Source::Synthetic => {
                let Some(spec) = &shared.synthetic else {
                    progress.fail(uid);
                    continue;
                };
                // encode straight into the syntax the peer takes: no transcoding
                let explicit = match target.storage_context(class, EXPLICIT_VR_LE) {
                    Ok((_, ts)) => ts != IMPLICIT_VR_LE,
                    Err(e) => {
                        debug!(error = %e, "no storage context for a sub-operation");
                        progress.fail(uid);
                        continue;
                    }
                };
                let bytes = spec.encode_instance(&item.study_attrs, &item.series_attrs, &item.instance, explicit);
                (Arc::new(bytes), if explicit { EXPLICIT_VR_LE.into() } else { IMPLICIT_VR_LE.into() })
            }
            Source::File(f) => {
                let f = f.clone();
                let ts = f.transfer_syntax.clone();
                match tokio::task::spawn_blocking(move || f.read_dataset()).await {
                    Ok(Ok(bytes)) => (Arc::new(bytes), ts),
                    _ => {
                        progress.fail(uid);
                        continue;
                    }
                }
            }
            Source::Received { dataset, transfer_syntax } => (dataset.clone(), transfer_syntax.clone()),
        };
        match target.send_store(class, uid, &ts, &data, originator).await {
            Ok(_) => {
                sent += 1;
                Counters::add(&shared.counters.bytes_sent, data.len() as u64);
            }
            Err(DimseError::NoContext { what, .. }) => {
                debug!(%what, "sub-operation not possible");
                progress.fail(uid);
            }
            Err(e) => return Err(e),
        }
    }
    let mut answered = 0usize;
    while answered < sent {
        let msg = target.receive().await?;
        match msg.command.command_field() {
            Some(field::C_STORE_RSP) => {
                answered += 1;
                let status = msg.command.status().unwrap_or(0xC000);
                let uid = msg.command.string(ct::AFFECTED_SOP_INSTANCE_UID).unwrap_or_default();
                match priorfetch_dimse::StoreStatus::from_status(status, None).kind {
                    StoreStatusKind::Success => {
                        progress.completed = progress.completed.saturating_add(1);
                        Counters::add(&shared.counters.stores_sent, 1);
                    }
                    StoreStatusKind::Warning => progress.warning = progress.warning.saturating_add(1),
                    StoreStatusKind::Failure => progress.fail(&uid),
                }
            }
            Some(field::C_CANCEL_RQ) if same_association => progress.cancelled = true,
            other => {
                return Err(DimseError::Protocol(format!("expected C-STORE-RSP, got 0x{:04X}", other.unwrap_or(0))));
            }
        }
    }
    Ok(())
}
