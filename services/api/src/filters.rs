//! Filters as the API's query parameters, the bulk retry's JSON body and the CLI's flags
//! give them: parsed once here into the store's [`ExamFilter`] and [`JobFilter`], each
//! error naming its parameter.

use chrono::{DateTime, Local, NaiveDate, NaiveDateTime, TimeZone, Utc};
use priorfetch_store::{ExamFilter, ExamStatus, JobFilter, JobState};
use serde::Deserialize;

/// Longest list an API call or a CLI listing returns.
pub const MAX_LIMIT: u64 = 1000;
pub const DEFAULT_LIMIT: u64 = 100;

/// A bad filter value: which parameter, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{param}: {message}")]
pub struct FilterError {
    pub param: &'static str,
    pub message: String,
}

fn bad(param: &'static str, message: impl Into<String>) -> FilterError {
    FilterError { param, message: message.into() }
}

/// A point in time: RFC 3339 (`2026-12-06T19:00:00+01:00`), a date (`2026-12-06`,
/// midnight UTC), or a duration back from now (`12h`, `2d`).
pub fn parse_time(param: &'static str, text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, FilterError> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc());
    }
    if let Ok(ago) = humantime::parse_duration(text) {
        let ago = chrono::Duration::from_std(ago).map_err(|_| bad(param, "duration too long"))?;
        return Ok(now - ago);
    }
    Err(bad(param, format!("'{text}' is not an RFC 3339 time, a date (YYYY-MM-DD) or a duration ago (12h)")))
}

/// A reschedule time (console, API, CLI): `in 2h` / `2h` from now, a `YYYY-MM-DDTHH:MM` in the
/// server's time zone, or RFC 3339.
pub fn parse_when(text: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let text = text.trim();
    let ahead = text.strip_prefix("in ").unwrap_or(text).trim();
    if let Ok(d) = humantime::parse_duration(ahead) {
        return chrono::Duration::from_std(d).ok().map(|d| now + d);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    ["%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
        .and_then(|t| Local.from_local_datetime(&t).earliest())
        .map(|t| t.with_timezone(&Utc))
}

fn parse_limit(text: Option<&str>) -> Result<u64, FilterError> {
    match text {
        None => Ok(DEFAULT_LIMIT),
        Some(t) => match t.trim().parse::<u64>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            _ => Err(bad("limit", format!("must be 1..={MAX_LIMIT}"))),
        },
    }
}

fn job_state(text: &str) -> Result<JobState, FilterError> {
    JobState::parse(text.trim()).ok_or_else(|| {
        let known: Vec<&str> = JobState::ALL.iter().map(|s| s.as_str()).collect();
        bad("state", format!("unknown state '{text}' (one of {})", known.join(", ")))
    })
}

fn nonempty(text: &Option<String>) -> Option<String> {
    text.as_deref().map(str::trim).filter(|t| !t.is_empty()).map(str::to_string)
}

/// `GET /api/exams` parameters.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ExamParams {
    pub scheduled_from: Option<String>,
    pub scheduled_to: Option<String>,
    pub state: Option<String>,
    pub accession: Option<String>,
    pub patient_id: Option<String>,
    pub limit: Option<String>,
}

impl ExamParams {
    pub fn parse(&self, now: DateTime<Utc>) -> Result<(ExamFilter, u64), FilterError> {
        let time = |param, v: &Option<String>| nonempty(v).map(|t| parse_time(param, &t, now)).transpose();
        let status = match nonempty(&self.state) {
            None => None,
            Some(s) => Some(ExamStatus::parse(&s).ok_or_else(|| {
                let known: Vec<&str> = ExamStatus::ALL.iter().map(|s| s.as_str()).collect();
                bad("state", format!("unknown state '{s}' (one of {})", known.join(", ")))
            })?),
        };
        let filter = ExamFilter {
            scheduled_from: time("scheduled_from", &self.scheduled_from)?,
            scheduled_to: time("scheduled_to", &self.scheduled_to)?,
            status,
            accession: nonempty(&self.accession),
            patient_id: nonempty(&self.patient_id),
        };
        Ok((filter, parse_limit(self.limit.as_deref())?))
    }
}

/// `GET /api/jobs` parameters, and the bulk retry's body (`limit` is ignored there).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobParams {
    pub state: Option<String>,
    pub archive: Option<String>,
    /// The exam's numeric ID.
    pub exam: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub limit: Option<String>,
}

impl JobParams {
    pub fn parse(&self, now: DateTime<Utc>) -> Result<(JobFilter, u64), FilterError> {
        let time = |param, v: &Option<String>| nonempty(v).map(|t| parse_time(param, &t, now)).transpose();
        let exam_id = match nonempty(&self.exam) {
            None => None,
            Some(e) => Some(e.parse::<i64>().map_err(|_| bad("exam", format!("'{e}' is not an exam ID")))?),
        };
        let filter = JobFilter {
            state: nonempty(&self.state).map(|s| job_state(&s)).transpose()?,
            archive: nonempty(&self.archive),
            exam_id,
            since: time("since", &self.since)?,
            until: time("until", &self.until)?,
        };
        Ok((filter, parse_limit(self.limit.as_deref())?))
    }

    /// `state=failed,archive=lta,since=12h` (the CLI's `jobs retry --filter`).
    pub fn from_pairs(text: &str) -> Result<JobParams, FilterError> {
        let mut params = JobParams::default();
        for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((key, value)) = pair.split_once('=') else {
                return Err(bad("filter", format!("'{pair}' is not KEY=VALUE")));
            };
            let slot = match key.trim() {
                "state" => &mut params.state,
                "archive" => &mut params.archive,
                "exam" => &mut params.exam,
                "since" => &mut params.since,
                "until" => &mut params.until,
                other => {
                    return Err(bad("filter", format!("unknown key '{other}' (state, archive, exam, since, until)")));
                }
            };
            *slot = Some(value.trim().to_string());
        }
        Ok(params)
    }
}

/// The bulk retry's filter: a state is required to be a finished or waiting one (never
/// `running`), and defaults to `failed`, so an empty body cannot requeue completed jobs.
pub fn retry_filter(params: &JobParams, now: DateTime<Utc>) -> Result<JobFilter, FilterError> {
    let (mut filter, _) = params.parse(now)?;
    match filter.state {
        None => filter.state = Some(JobState::Failed),
        Some(JobState::Running) => return Err(bad("state", "running jobs cannot be retried (cancel them first)")),
        Some(_) => {}
    }
    Ok(filter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_in_three_forms() {
        let now = DateTime::parse_from_rfc3339("2026-12-06T12:00:00Z").unwrap().with_timezone(&Utc);
        let t = |s| parse_time("since", s, now).unwrap().to_rfc3339();
        assert_eq!(t("2026-12-06T10:00:00+01:00"), "2026-12-06T09:00:00+00:00");
        assert_eq!(t("2026-12-05"), "2026-12-05T00:00:00+00:00");
        assert_eq!(t("12h"), "2026-12-06T00:00:00+00:00");
        assert_eq!(parse_time("since", "yesterday-ish", now).unwrap_err().param, "since");
    }

    #[test]
    fn reschedule_times() {
        let now = Utc::now();
        assert_eq!(parse_when("in 2h", now), Some(now + chrono::Duration::hours(2)));
        assert_eq!(parse_when("30m", now), Some(now + chrono::Duration::minutes(30)));
        let t = parse_when("2026-12-24T09:30:00+01:00", now).unwrap();
        assert_eq!(t.to_rfc3339(), "2026-12-24T08:30:00+00:00");
        assert!(parse_when("2026-12-24T09:30", now).is_some());
        assert_eq!(parse_when("tomorrowish", now), None);
    }

    #[test]
    fn filter_pairs_and_retry_defaults() {
        let now = Utc::now();
        let p = JobParams::from_pairs("state=failed, archive=lta,since=2026-12-05").unwrap();
        let f = retry_filter(&p, now).unwrap();
        assert_eq!((f.state, f.archive.as_deref()), (Some(JobState::Failed), Some("lta")));
        assert_eq!(retry_filter(&JobParams::default(), now).unwrap().state, Some(JobState::Failed));
        assert!(retry_filter(&JobParams::from_pairs("state=running").unwrap(), now).is_err());
        assert_eq!(JobParams::from_pairs("colour=red").unwrap_err().param, "filter");
    }
}
