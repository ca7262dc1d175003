//! Simulated time on the wall clock: `speed` simulated seconds pass per wall second,
//! from `start` (simulated 00:00) onwards.

use chrono::{DateTime, Utc};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
    start_utc: DateTime<Utc>,
    speed: f64,
}

impl Clock {
    /// Simulated 00:00 is `lead_in` from now (time to start the services).
    pub fn new(speed: f64, lead_in: Duration) -> Clock {
        Clock {
            start: Instant::now() + lead_in,
            start_utc: Utc::now() + chrono::Duration::from_std(lead_in).unwrap_or_default(),
            speed: speed.max(1.0),
        }
    }

    /// A simulated span on the wall clock.
    pub fn span(&self, sim_seconds: f64) -> Duration {
        Duration::from_secs_f64((sim_seconds / self.speed).max(0.0))
    }

    pub fn wall(&self, sim_seconds: f64) -> Instant {
        self.start + self.span(sim_seconds)
    }

    pub fn utc(&self, sim_seconds: f64) -> DateTime<Utc> {
        self.start_utc + chrono::Duration::from_std(self.span(sim_seconds)).unwrap_or_default()
    }

    /// A wall-clock instant as simulated seconds.
    pub fn sim_of(&self, at: DateTime<Utc>) -> f64 {
        (at - self.start_utc).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6 * self.speed
    }

    /// A span as the config writes it (whole milliseconds).
    pub fn config_span(&self, sim_seconds: f64) -> String {
        format!("{}ms", self.span(sim_seconds).as_millis().max(1))
    }
}
