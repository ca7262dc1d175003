//! A plan as one `plan` span of the exam's trace (its stored `traceparent`), with the
//! rule's name and counts as attributes, never the exam's patient fields.

use crate::{PlanError, PlanReport, Planner};
use priorfetch_domain::Exam;
use tracing::Instrument;

impl Planner {
    /// [`Planner::plan_exam`] as a `plan` span of the exam's trace (`trace_parent`, as
    /// stored with the exam); `fresh` is false for a re-plan. The span's attributes are
    /// ids, the rule's name and counts, never the exam's patient fields.
    pub async fn plan_exam_traced(
        &self,
        exam: &Exam,
        trace_parent: Option<&str>,
        fresh: bool,
    ) -> Result<PlanReport, PlanError> {
        let span = tracing::info_span!(
            "plan",
            exam_id = exam.id,
            replan = !fresh,
            rule = tracing::field::Empty,
            candidates = tracing::field::Empty,
            selected = tracing::field::Empty,
            jobs = tracing::field::Empty,
            gaps = tracing::field::Empty,
            queries = tracing::field::Empty,
            outcome = tracing::field::Empty,
            "otel.status_code" = tracing::field::Empty,
        );
        priorfetch_telemetry::traces::follow(&span, trace_parent);
        let result = self.plan(exam).instrument(span.clone()).await;
        match &result {
            Ok(report) => {
                span.record("rule", report.rule.as_deref().unwrap_or("none"));
                span.record("candidates", report.decisions.len());
                span.record("selected", report.decisions.iter().filter(|d| d.selected).count());
                span.record("jobs", report.jobs_enqueued);
                span.record("gaps", report.gaps.len());
                span.record("queries", report.cfinds);
                // an `exam` gap: the guard refused it (unsafe patient identifier)
                let outcome = if report.gaps.contains_key("exam") {
                    "refused"
                } else if report.gaps.is_empty() {
                    "planned"
                } else {
                    "planned_with_gaps"
                };
                span.record("outcome", outcome);
            }
            Err(_) => {
                span.record("outcome", "failed");
                span.record("otel.status_code", "ERROR");
            }
        }
        result
    }
}
