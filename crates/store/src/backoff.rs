//! Retry delays that grow with the attempt number, with jitter and a cap (as River's
//! default policy): `initial * factor^(attempt-1)`, at most `max`, then +-`jitter`.

use rand::RngExt;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub factor: f64,
    pub max: Duration,
    /// Fraction of the delay added or removed at random; spreads retries of jobs that
    /// failed together (an archive restart) so they do not return together.
    pub jitter: f64,
}

impl RetryPolicy {
    /// The delay before attempt `attempt + 1`, after `attempt` (1-based) failed.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(64) as i32;
        let base = self.initial.as_secs_f64() * self.factor.max(1.0).powi(exponent);
        let capped = base.min(self.max.as_secs_f64());
        let jitter = self.jitter.clamp(0.0, 1.0);
        let spread = if jitter > 0.0 { rand::rng().random_range(-jitter..=jitter) } else { 0.0 };
        Duration::from_secs_f64((capped * (1.0 + spread)).max(0.0))
    }

    /// The same policy, but never shorter than `wait` (an archive's `Retry-After`).
    pub fn at_least(self, wait: Duration) -> RetryPolicy {
        if wait.is_zero() {
            return self;
        }
        RetryPolicy { initial: self.initial.max(wait), max: self.max.max(wait), jitter: 0.0, ..self }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_archive_that_asks_us_to_wait_is_not_retried_sooner() {
        let policy = super::RetryPolicy {
            initial: std::time::Duration::from_secs(1),
            factor: 2.0,
            max: std::time::Duration::from_secs(4),
            jitter: 0.5,
        };
        let wait = std::time::Duration::from_secs(30);
        for attempt in 1..6 {
            assert!(policy.at_least(wait).delay(attempt) >= wait, "attempt {attempt}");
        }
        assert_eq!(policy.at_least(std::time::Duration::ZERO), policy);
    }

    use super::*;

    #[test]
    fn grows_caps_and_jitters() {
        let p =
            RetryPolicy { initial: Duration::from_secs(30), factor: 2.0, max: Duration::from_secs(1800), jitter: 0.0 };
        assert_eq!(p.delay(1), Duration::from_secs(30));
        assert_eq!(p.delay(2), Duration::from_secs(60));
        assert_eq!(p.delay(4), Duration::from_secs(240));
        assert_eq!(p.delay(30), Duration::from_secs(1800));
        let j = RetryPolicy { jitter: 0.1, ..p };
        for _ in 0..100 {
            let d = j.delay(2).as_secs_f64();
            assert!((54.0..=66.0).contains(&d), "{d}");
        }
    }
}
