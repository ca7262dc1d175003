//! The day's workload, deterministic from the seed: when each exam is scheduled, when its
//! order arrives, which are STAT, rescheduled or cancelled, and the archive profiles.
//!
//! Times are simulated seconds from the start of the day; the runner maps them onto the
//! wall clock with the speed factor.

use pacs_sim::synthetic::mix;

pub const HOUR: f64 = 3600.0;

/// Which day to simulate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Three archives as a hospital has them, a short outage of the VNA.
    Default,
    /// The long-term archive slower and narrower, and a long VNA outage in the morning
    /// peak: the day where the dispatch policy decides.
    Stress,
}

impl Kind {
    pub fn parse(text: &str) -> Result<Kind, String> {
        match text {
            "default" => Ok(Kind::Default),
            "stress" => Ok(Kind::Stress),
            other => Err(format!("unknown scenario '{other}': use default or stress")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Default => "default",
            Kind::Stress => "stress",
        }
    }
}

/// How one simulated archive behaves.
#[derive(Debug, Clone)]
pub struct ArchiveProfile {
    pub name: &'static str,
    pub ae_title: &'static str,
    /// Archive preference (lower first).
    pub priority: i32,
    /// `move` or `get`.
    pub retrieve: &'static str,
    /// Our cap of retrieve associations (the archive serves twice that plus two).
    pub max_associations: u32,
    /// Sleep before each retrieve response (each sub-operation's progress and the end);
    /// queries are answered within 2 ms.
    pub response_delay_ms: u64,
    /// Only studies this young (a short-term archive); None: everything.
    pub max_age_days: Option<u32>,
    /// Share of sub-operations failing on a study's first retrieve.
    pub transient_failures: f64,
    /// Simulated (start, end) seconds during which the host is away.
    pub outage: Option<(f64, f64)>,
}

/// The three archives of a kind of day.
pub fn archives(kind: Kind) -> Vec<ArchiveProfile> {
    let stress = kind == Kind::Stress;
    vec![
        ArchiveProfile {
            name: "sta",
            ae_title: "STA",
            priority: 1,
            retrieve: "move",
            max_associations: 4,
            response_delay_ms: 0,
            max_age_days: Some(730),
            transient_failures: 0.0,
            outage: None,
        },
        ArchiveProfile {
            name: "vna",
            ae_title: "VNA",
            priority: 2,
            retrieve: "get",
            max_associations: 3,
            response_delay_ms: 5,
            max_age_days: Some(6 * 365),
            transient_failures: 0.1,
            outage: Some(if stress { (7.5 * HOUR, 11.0 * HOUR) } else { (9.0 * HOUR, 9.75 * HOUR) }),
        },
        ArchiveProfile {
            name: "lta",
            ae_title: "LTA",
            priority: 3,
            retrieve: "move",
            max_associations: 2,
            response_delay_ms: if stress { 60 } else { 25 },
            max_age_days: None,
            transient_failures: 0.0,
            outage: None,
        },
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Urgency {
    Stat,
    Urgent,
    Routine,
}

impl Urgency {
    pub fn as_str(self) -> &'static str {
        match self {
            Urgency::Stat => "stat",
            Urgency::Urgent => "urgent",
            Urgency::Routine => "routine",
        }
    }
}

/// One exam of the day and what happens to its order.
#[derive(Debug, Clone)]
pub struct DayExam {
    /// Index of the synthetic patient (one patient per exam).
    pub patient: usize,
    pub urgency: Urgency,
    /// When the order arrives (clamped to the start of the day: yesterday's orders come
    /// in a burst at the start).
    pub ordered_at: f64,
    /// The schedule as first ordered.
    pub scheduled_at: f64,
    /// An `exam.updated` moving the exam: (when it is sent, the new schedule).
    pub rescheduled: Option<(f64, f64)>,
    /// An `exam.cancelled` sent at this time.
    pub cancelled_at: Option<f64>,
    /// Index into the patient's studies whose modality the exam has; None: a modality
    /// the patient has no study of (nothing to fetch).
    pub like_study: Option<u64>,
}

impl DayExam {
    /// The schedule that holds at the end of the day.
    pub fn final_schedule(&self) -> f64 {
        self.rescheduled.map_or(self.scheduled_at, |(_, at)| at)
    }
}

/// A uniform draw in [lo, hi) from the seed and a path.
fn uniform(seed: u64, path: &[u64], lo: f64, hi: f64) -> f64 {
    let mut input = vec![seed];
    input.extend_from_slice(path);
    let r = mix(&input) >> 11; // 53 bits
    lo + (hi - lo) * (r as f64 / (1u64 << 53) as f64)
}

/// The day's exams, sorted by nothing in particular (each is independent).
pub fn exams(seed: u64, count: usize, day: f64) -> Vec<DayExam> {
    (0..count)
        .map(|i| {
            let at = |k: u64, lo: f64, hi: f64| uniform(seed, &[i as u64, k], lo, hi);
            // Three in four exams in the day shift (07:00-19:00, scaled to the day).
            let scheduled_at = if at(1, 0.0, 1.0) < 0.75 {
                at(2, day * 7.0 / 24.0, day * 19.0 / 24.0)
            } else {
                at(2, day * 0.5 / 24.0, day)
            };
            let kind = at(3, 0.0, 1.0);
            let (urgency, lead) = if kind < 0.04 {
                (Urgency::Stat, at(4, 10.0 * 60.0, 30.0 * 60.0))
            } else if kind < 0.14 {
                (Urgency::Urgent, at(4, 0.5 * HOUR, 3.0 * HOUR))
            } else {
                (Urgency::Routine, at(4, 2.0 * HOUR, 30.0 * HOUR))
            };
            let ordered_at = (scheduled_at - lead).max(0.0);
            let change = at(5, 0.0, 1.0);
            let midway = ordered_at + (scheduled_at - ordered_at) * at(6, 0.2, 0.8);
            let rescheduled = (change < 0.04 && urgency != Urgency::Stat)
                .then(|| (midway, (scheduled_at + at(7, 1.0 * HOUR, 4.0 * HOUR)).min(day - 0.25 * HOUR)));
            let cancelled_at = (0.04..0.07).contains(&change).then_some(midway);
            let like_study = (at(8, 0.0, 1.0) >= 0.1).then(|| mix(&[seed, i as u64, 9]));
            DayExam { patient: i, urgency, ordered_at, scheduled_at, rescheduled, cancelled_at, like_study }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_day_is_deterministic_and_realistic() {
        let a = exams(7, 2000, 24.0 * HOUR);
        let b = exams(7, 2000, 24.0 * HOUR);
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        let stat = a.iter().filter(|e| e.urgency == Urgency::Stat).count();
        let moved = a.iter().filter(|e| e.rescheduled.is_some()).count();
        let cancelled = a.iter().filter(|e| e.cancelled_at.is_some()).count();
        assert!((40..130).contains(&stat), "{stat} STAT exams");
        assert!((40..130).contains(&moved), "{moved} rescheduled");
        assert!((30..100).contains(&cancelled), "{cancelled} cancelled");
        assert!(a.iter().all(|e| e.ordered_at <= e.scheduled_at && e.final_schedule() < 24.0 * HOUR));
        let overnight = a.iter().filter(|e| e.ordered_at == 0.0).count();
        assert!(overnight > 100, "yesterday's orders arrive at the start: {overnight}");
    }
}
