//! The part every source shares: decode a batch of payloads, commit what they mean in the
//! database, and say per payload what happened, so the source acknowledges only after the
//! commit and dead-letters the invalid ones.

use crate::metrics;
use priorfetch_events::{DecodeOptions, EventKind, ExamEvent};
use priorfetch_store::{Inserted, NewExam, Store, StoreError};

/// What became of one payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accepted(i64),
    /// Seen before (redelivery, replay): nothing changed.
    Duplicate(i64),
    Updated,
    Cancelled,
    /// An update or cancel for an order we never received.
    Unmatched,
    /// Not usable: goes to the dead-letter queue/topic with this reason.
    Invalid { code: &'static str, reason: String },
}

impl Verdict {
    pub fn outcome(&self) -> &'static str {
        match self {
            Verdict::Accepted(_) => "accepted",
            Verdict::Duplicate(_) => "duplicate",
            Verdict::Updated => "updated",
            Verdict::Cancelled => "cancelled",
            Verdict::Unmatched => "unmatched",
            Verdict::Invalid { .. } => "invalid",
        }
    }
}

#[derive(Clone)]
pub struct Intake {
    store: Store,
    options: DecodeOptions,
}

fn new_exam(event: &ExamEvent) -> NewExam {
    NewExam {
        event_key: event.event_key.clone(),
        patient_id: event.patient.id.clone(),
        issuer: event.patient.issuer.clone(),
        accession_number: event.accession_number.clone(),
        study_instance_uid: event.study_instance_uid.clone(),
        scheduled_at: event.scheduled_at.map(|t| t.with_timezone(&chrono::Utc)),
        modality: event.modality.clone(),
        body_part: event.body_part.clone(),
        procedure_code: event.procedure.as_ref().and_then(|p| p.code.clone()),
        procedure_text: event.procedure.as_ref().and_then(|p| p.text.clone()),
        priority: event.priority.as_str().to_string(),
        trace_parent: None,
    }
}

impl Intake {
    pub fn new(store: Store, options: DecodeOptions) -> Self {
        Intake { store, options }
    }

    pub fn source(&self) -> &str {
        &self.options.source
    }

    /// Decodes and commits a batch: new exams in one transaction, dead letters in the
    /// table, updates and cancels applied. Returns one verdict per payload, in order.
    /// On a database error nothing may be acknowledged: the broker redelivers and the
    /// idempotent insert makes the retry safe.
    pub async fn process(&self, payloads: &[&[u8]]) -> Result<Vec<Verdict>, StoreError> {
        let decoded: Vec<Result<ExamEvent, priorfetch_events::DecodeError>> =
            payloads.iter().map(|p| priorfetch_events::decode(p, &self.options)).collect();
        let mut verdicts: Vec<Option<Verdict>> = vec![None; payloads.len()];
        let mut scheduled = Vec::new();
        let mut scheduled_at_index = Vec::new();
        let mut dead = Vec::new();
        for (i, result) in decoded.iter().enumerate() {
            match result {
                Ok(event) if event.kind == EventKind::Scheduled => {
                    scheduled.push(new_exam(event));
                    scheduled_at_index.push(i);
                }
                Ok(_) => {}
                Err(e) => {
                    let code = e.reason_code();
                    let reason = e.to_string();
                    dead.push((self.options.source.clone(), payloads[i].to_vec(), format!("{code}: {reason}")));
                    verdicts[i] = Some(Verdict::Invalid { code, reason });
                }
            }
        }
        let inserted = self.store.insert_exams(&scheduled).await?;
        for (outcome, i) in inserted.into_iter().zip(scheduled_at_index) {
            verdicts[i] = Some(match outcome {
                Inserted::New(id) => Verdict::Accepted(id),
                Inserted::Duplicate(id) => Verdict::Duplicate(id),
            });
        }
        // Updates and cancels are rare: one at a time, in message order.
        for (i, result) in decoded.iter().enumerate() {
            let Ok(event) = result else { continue };
            if event.kind == EventKind::Scheduled {
                continue;
            }
            let exams = self
                .store
                .find_exams_for_order(
                    &event.patient.id,
                    event.accession_number.as_deref(),
                    event.study_instance_uid.as_deref(),
                )
                .await?;
            verdicts[i] = Some(match (event.kind, exams.is_empty()) {
                (EventKind::Updated, true) => {
                    // An update for an order we missed: take it as the order itself.
                    match self.store.insert_exam(&new_exam(event)).await? {
                        Inserted::New(id) => Verdict::Accepted(id),
                        Inserted::Duplicate(id) => Verdict::Duplicate(id),
                    }
                }
                (EventKind::Updated, false) => {
                    for exam in &exams {
                        self.store.update_exam(exam.id, &new_exam(event)).await?;
                    }
                    Verdict::Updated
                }
                (_, true) => Verdict::Unmatched,
                (_, false) => {
                    for exam in &exams {
                        let running = self.store.cancel_exam(exam.id).await?;
                        if !running.is_empty() {
                            tracing::info!(exam_id = exam.id, running = running.len(), "cancel sent to running retrieves");
                        }
                    }
                    Verdict::Cancelled
                }
            });
        }
        self.store.insert_dead_letters(&dead).await?;
        let verdicts: Vec<Verdict> = verdicts.into_iter().map(|v| v.unwrap_or(Verdict::Unmatched)).collect();
        for v in &verdicts {
            metrics::EVENTS.with_label_values(&[self.options.source.as_str(), v.outcome()]).inc();
            if let Verdict::Invalid { code, .. } = v {
                metrics::DEAD_LETTERS.with_label_values(&[self.options.source.as_str(), code]).inc();
            }
        }
        Ok(verdicts)
    }
}
