//! The part every source shares: decode a batch of payloads, commit what they mean in the
//! database, and say per payload what happened, so the source acknowledges only after the
//! commit and dead-letters the invalid ones.
//!
//! Every input error is permanent and isolated: the decoder's checks catch what they can
//! (`priorfetch_events::validate`); a batch the database still refuses is split in halves
//! until the rows it refuses are alone, and only those become dead letters. Only a
//! database that is unavailable fails the whole batch (the source retries it later).
//!
//! Traces: each new exam starts its trace here (an `intake` span), or continues the
//! `traceparent` its message carried; the trace context is stored with the exam so the
//! planner and mover join it. Without an exporter no span is made (this is the hot
//! path): an incoming `traceparent` is still stored, so an upstream trace continues.

use crate::metrics;
use priorfetch_events::{DecodeOptions, EventKind, ExamEvent, clip_to};
use priorfetch_store::{Inserted, NewExam, Store, StoreError};
use priorfetch_telemetry::traces;

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
    /// Not usable: goes to the dead-letter queue/topic with this reason; `field` names
    /// the offending field when one is to blame (`patient.id`, `PID-3`).
    Invalid {
        code: &'static str,
        field: Option<String>,
        reason: String,
    },
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

/// Reason code of a message the decoder accepted but the database refused (a value it
/// cannot store): permanent, like every decode error.
pub const REJECTED_BY_DATABASE: &str = "rejected_by_database";
/// Longest reason kept with a dead letter (table, AMQP header, Kafka header, HTTP body).
pub const MAX_REASON_CHARS: usize = 500;
/// Largest payload kept in the `dead_letters` table; longer ones keep their head only
/// (the dead-letter queue/topic still gets the whole message).
pub const MAX_DEAD_LETTER_PAYLOAD: usize = 256 * 1024;
/// Default bound on the `dead_letters` table (`intake.dead_letter_limit`): the oldest rows
/// beyond it are deleted, so a flood of bad messages cannot fill the database.
pub const DEFAULT_DEAD_LETTER_LIMIT: u64 = 100_000;

#[derive(Clone)]
pub struct Intake {
    store: Store,
    options: DecodeOptions,
    dead_letter_limit: u64,
}

/// The row an event asks for (also the worklist poller's comparison and update).
pub(crate) fn new_exam(event: &ExamEvent) -> NewExam {
    NewExam {
        event_key: event.event_key.clone(),
        patient_id: event.patient.id.clone(),
        issuer: event.patient.issuer.clone(),
        identifiers: event.patient.identifiers.clone(),
        accession_number: event.accession_number.clone(),
        study_instance_uid: event.study_instance_uid.clone(),
        scheduled_at: event.scheduled_at.map(|t| t.with_timezone(&chrono::Utc)),
        modality: event.modality.clone(),
        body_part: event.body_part.clone(),
        procedure_code: event.procedure.as_ref().and_then(|p| p.code.clone()),
        procedure_text: event.procedure.as_ref().and_then(|p| p.text.clone()),
        priority: event.priority,
        trace_parent: None,
    }
}

/// A database refusal as a dead-letter verdict; an unavailable database stays an error.
fn refusal(error: StoreError) -> Result<Verdict, StoreError> {
    if error.is_unavailable() {
        return Err(error);
    }
    Ok(Verdict::Invalid {
        code: REJECTED_BY_DATABASE,
        field: None,
        reason: clip_to(&error.to_string(), MAX_REASON_CHARS),
    })
}

impl Intake {
    pub fn new(store: Store, options: DecodeOptions) -> Self {
        Intake { store, options, dead_letter_limit: DEFAULT_DEAD_LETTER_LIMIT }
    }

    /// Keeps at most `rows` dead letters in the table (0: no bound).
    pub fn with_dead_letter_limit(mut self, rows: u64) -> Self {
        self.dead_letter_limit = rows;
        self
    }

    pub fn source(&self) -> &str {
        &self.options.source
    }

    /// Decodes and commits a batch: new exams in one transaction, dead letters in the
    /// table, updates and cancels applied. Returns one verdict per payload, in order.
    /// An error means the database is unavailable and nothing may be acknowledged: the
    /// broker redelivers and the idempotent insert makes the retry safe.
    pub async fn process(&self, payloads: &[&[u8]]) -> Result<Vec<Verdict>, StoreError> {
        self.process_traced(payloads, &[]).await
    }

    /// [`Intake::process`] for messages that may carry a W3C `traceparent` (HTTP, AMQP and
    /// Kafka headers): `traceparents[i]` belongs to `payloads[i]` (missing entries: none).
    /// A new exam's trace continues it; an invalid one is ignored (a new trace starts).
    pub async fn process_traced(
        &self,
        payloads: &[&[u8]],
        traceparents: &[Option<&str>],
    ) -> Result<Vec<Verdict>, StoreError> {
        let decoded: Vec<Result<ExamEvent, priorfetch_events::DecodeError>> =
            payloads.iter().map(|p| priorfetch_events::decode(p, &self.options)).collect();
        self.finish_batch(decoded, payloads, traceparents).await
    }

    /// Inserts the batch in one transaction; when the database refuses it for what a row
    /// carries, halves are retried until each refused row stands alone (a poison message
    /// costs about 2·log2(batch) extra statements, and every other row still commits).
    async fn insert_isolating(&self, exams: &[NewExam]) -> Result<Vec<Verdict>, StoreError> {
        let mut verdicts = Vec::with_capacity(exams.len());
        // Ranges still to insert, in order (a stack: the front half is pushed last).
        let mut pending: Vec<std::ops::Range<usize>> = Vec::new();
        pending.push(0..exams.len());
        while let Some(range) = pending.pop() {
            if range.is_empty() {
                continue;
            }
            match self.store.insert_exams(&exams[range.clone()]).await {
                Ok(inserted) => verdicts.extend(inserted.into_iter().map(|outcome| match outcome {
                    Inserted::New(id) => Verdict::Accepted(id),
                    Inserted::Duplicate(id) => Verdict::Duplicate(id),
                })),
                Err(e) if range.len() == 1 || e.is_unavailable() => verdicts.push(refusal(e)?),
                Err(_) => {
                    let middle = range.start + range.len() / 2;
                    pending.push(middle..range.end);
                    pending.push(range.start..middle);
                }
            }
        }
        Ok(verdicts)
    }

    /// An `exam.updated` or `exam.cancelled` event applied to the exams of its order.
    async fn apply_change(&self, event: &ExamEvent) -> Result<Verdict, StoreError> {
        let exams = self
            .store
            .find_exams_for_order(
                &event.patient.id,
                event.accession_number.as_deref(),
                event.study_instance_uid.as_deref(),
            )
            .await?;
        Ok(match (event.kind, exams.is_empty()) {
            (EventKind::Updated, true) => {
                // An update for an order we missed: take it as the order itself.
                match self.store.insert_exam(&new_exam(event)).await? {
                    Inserted::New(id) => Verdict::Accepted(id),
                    Inserted::Duplicate(id) => Verdict::Duplicate(id),
                }
            }
            (EventKind::Updated, false) => {
                for exam in &exams {
                    self.store.update_exam(exam.exam.id, &new_exam(event)).await?;
                }
                Verdict::Updated
            }
            (_, true) => Verdict::Unmatched,
            (_, false) => {
                for exam in &exams {
                    let running = self.store.cancel_exam(exam.exam.id).await?;
                    if !running.is_empty() {
                        tracing::info!(
                            exam_id = exam.exam.id,
                            running = running.len(),
                            "cancel sent to running retrieves"
                        );
                    }
                }
                Verdict::Cancelled
            }
        })
    }

    /// The invalid payloads of a batch go to the `dead_letters` table (payload clipped to
    /// [`MAX_DEAD_LETTER_PAYLOAD`]), and the table is kept within its row limit.
    async fn keep_dead_letters(&self, payloads: &[&[u8]], verdicts: &[Verdict]) -> Result<(), StoreError> {
        let dead: Vec<(String, Vec<u8>, String)> = payloads
            .iter()
            .zip(verdicts)
            .filter_map(|(payload, verdict)| {
                let Verdict::Invalid { code, reason, .. } = verdict else { return None };
                let mut reason = format!("{code}: {reason}");
                if payload.len() > MAX_DEAD_LETTER_PAYLOAD {
                    reason.push_str(&format!(
                        " (payload of {} bytes kept to its first {MAX_DEAD_LETTER_PAYLOAD})",
                        payload.len()
                    ));
                }
                let kept = &payload[..payload.len().min(MAX_DEAD_LETTER_PAYLOAD)];
                Some((self.options.source.clone(), kept.to_vec(), reason))
            })
            .collect();
        if dead.is_empty() {
            return Ok(());
        }
        self.store.insert_dead_letters(&dead).await?;
        if self.dead_letter_limit > 0 {
            let trimmed = self.store.trim_dead_letters(self.dead_letter_limit).await?;
            if trimmed > 0 {
                metrics::DEAD_LETTERS_TRIMMED.inc_by(trimmed);
                tracing::warn!(trimmed, limit = self.dead_letter_limit, "dead-letter table full; oldest rows deleted");
            }
        }
        Ok(())
    }

    /// Commits events a source decoded itself (the worklist poller maps DICOM items):
    /// `decoded[i]` came from `payloads[i]`, which an invalid event's dead letter keeps.
    /// Same verdicts, metrics and dead letters as [`Intake::process`].
    pub async fn process_events(
        &self,
        decoded: Vec<Result<ExamEvent, priorfetch_events::DecodeError>>,
        payloads: &[&[u8]],
    ) -> Result<Vec<Verdict>, StoreError> {
        self.finish_batch(decoded, payloads, &[]).await
    }

    async fn finish_batch(
        &self,
        decoded: Vec<Result<ExamEvent, priorfetch_events::DecodeError>>,
        payloads: &[&[u8]],
        traceparents: &[Option<&str>],
    ) -> Result<Vec<Verdict>, StoreError> {
        debug_assert_eq!(decoded.len(), payloads.len(), "one payload per event");
        let verdicts = self.commit(decoded, traceparents).await?;
        self.keep_dead_letters(payloads, &verdicts).await?;
        self.count(&verdicts);
        Ok(verdicts)
    }

    /// An operator's replay of a dead letter's payload (`POST /api/dead-letters/{id}/replay`,
    /// `priorfetch dead-letters replay`): decoded and committed exactly as [`Intake::process`]
    /// does, so the event key makes a second replay (or a late redelivery) a duplicate. A
    /// payload still invalid is not dead-lettered again: its letter is already kept.
    pub async fn replay(&self, payload: &[u8]) -> Result<Verdict, StoreError> {
        let decoded = vec![priorfetch_events::decode(payload, &self.options)];
        let verdicts = self.commit(decoded, &[]).await?;
        self.count(&verdicts);
        Ok(verdicts.into_iter().next().unwrap_or(Verdict::Unmatched))
    }

    /// The span of one new exam's intake: the source, a hash of the event key (an
    /// `event_id` may embed an accession number), then the exam id and outcome.
    fn intake_span(&self, event: &ExamEvent) -> tracing::Span {
        tracing::info_span!(
            "intake",
            source = %self.options.source,
            event = %priorfetch_events::short_hash(&event.event_key),
            priority = event.priority.as_str(),
            exam_id = tracing::field::Empty,
            outcome = tracing::field::Empty,
        )
    }

    fn count(&self, verdicts: &[Verdict]) {
        for v in verdicts {
            metrics::EVENTS.with_label_values(&[self.options.source.as_str(), v.outcome()]).inc();
            if let Verdict::Invalid { code, .. } = v {
                metrics::DEAD_LETTERS.with_label_values(&[self.options.source.as_str(), code]).inc();
            }
        }
    }

    /// The verdicts of a decoded batch, its rows committed: new exams inserted (refused
    /// rows isolated), then updates and cancels in message order.
    async fn commit(
        &self,
        decoded: Vec<Result<ExamEvent, priorfetch_events::DecodeError>>,
        traceparents: &[Option<&str>],
    ) -> Result<Vec<Verdict>, StoreError> {
        let mut verdicts: Vec<Option<Verdict>> = vec![None; decoded.len()];
        let mut scheduled = Vec::new();
        let mut scheduled_index = Vec::new();
        // One `intake` span per new exam, only when spans are exported; each ends when
        // its row is committed.
        let exporting = traces::exporting();
        let mut spans = Vec::new();
        for (i, result) in decoded.iter().enumerate() {
            match result {
                Ok(event) if event.kind == EventKind::Scheduled => {
                    let incoming = traceparents.get(i).copied().flatten();
                    let mut exam = new_exam(event);
                    if exporting {
                        let span = self.intake_span(event);
                        traces::follow(&span, incoming);
                        exam.trace_parent = traces::traceparent_of(&span);
                        spans.push(span);
                    } else {
                        exam.trace_parent = incoming.and_then(traces::valid_traceparent);
                    }
                    scheduled.push(exam);
                    scheduled_index.push(i);
                }
                Ok(_) => {}
                Err(e) => {
                    verdicts[i] = Some(Verdict::Invalid {
                        code: e.reason_code(),
                        field: e.field().map(str::to_string),
                        reason: clip_to(&e.to_string(), MAX_REASON_CHARS),
                    })
                }
            }
        }
        for (n, (verdict, i)) in self.insert_isolating(&scheduled).await?.into_iter().zip(scheduled_index).enumerate() {
            if let Some(span) = spans.get(n) {
                if let Verdict::Accepted(id) | Verdict::Duplicate(id) = verdict {
                    span.record("exam_id", id);
                }
                span.record("outcome", verdict.outcome());
            }
            verdicts[i] = Some(verdict);
        }
        drop(spans);
        // Updates and cancels are rare: one at a time, in message order.
        for (i, result) in decoded.iter().enumerate() {
            if let Ok(event) = result
                && event.kind != EventKind::Scheduled
            {
                verdicts[i] = Some(match self.apply_change(event).await {
                    Ok(verdict) => verdict,
                    Err(e) => refusal(e)?,
                });
            }
        }
        Ok(verdicts.into_iter().map(|v| v.unwrap_or(Verdict::Unmatched)).collect())
    }
}
