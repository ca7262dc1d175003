//! The simulated archives of a day (one synthetic population; each archive serves the
//! part its profile keeps, with its latency and association limit) and the destination.

use crate::clock::Clock;
use crate::scenario::ArchiveProfile;
use pacs_sim::{DataSource, Faults, Sim, SimConfig, SimHandle, StudySummary, SyntheticSpec};
use std::collections::HashMap;
use std::time::Duration;

pub struct DayArchives {
    pub archives: Vec<(ArchiveProfile, SimHandle)>,
    pub dest: SimHandle,
    /// Every study of the population (the long-term archive's content).
    pub population: Vec<StudySummary>,
    outages: Vec<tokio::task::JoinHandle<()>>,
}

pub fn spec(seed: u64, patients: usize, max_age_days: Option<u32>) -> SyntheticSpec {
    SyntheticSpec {
        patients,
        seed,
        studies_per_patient: (2, 5),
        series_per_study: (1, 2),
        instances_per_series: 3,
        rows: 32,
        columns: 32,
        max_age_days,
        ..Default::default()
    }
}

fn faults(profile: &ArchiveProfile) -> Faults {
    Faults {
        // Our retrieves are capped at `max_associations`; the planner's queries and the
        // outage probe come on top, as an archive's limit for our AE title allows.
        max_associations: Some(profile.max_associations * 2 + 2),
        response_delay: (profile.response_delay_ms > 0).then(|| Duration::from_millis(profile.response_delay_ms)),
        // its database answers queries at once; the images come slowly
        query_delay: Some(Duration::from_millis(2)),
        failed_suboperation_ratio: profile.transient_failures,
        faults_first_attempts: (profile.transient_failures > 0.0).then_some(1),
        ..Default::default()
    }
}

impl DayArchives {
    pub async fn start(seed: u64, patients: usize, profiles: &[ArchiveProfile]) -> anyhow::Result<DayArchives> {
        let dest = Sim::start(SimConfig::new("DEST", DataSource::Empty), "127.0.0.1:0").await?;
        let mut archives = Vec::new();
        for p in profiles {
            let config = SimConfig::new(p.ae_title, DataSource::Synthetic(spec(seed, patients, p.max_age_days)))
                .with_destination("DEST", "127.0.0.1", dest.port())
                .with_faults(faults(p));
            archives.push((p.clone(), Sim::start(config, "127.0.0.1:0").await?));
        }
        let population = spec(seed, patients, None).studies();
        Ok(DayArchives { archives, dest, population, outages: Vec::new() })
    }

    /// Takes each archive with an outage away for its window (on the wall clock).
    pub fn schedule_outages(&mut self, clock: &Clock) {
        for (profile, sim) in &self.archives {
            let Some((from, to)) = profile.outage else { continue };
            let (switch, normal) = (sim.fault_switch(), faults(profile));
            let (down, up) = (clock.wall(from), clock.wall(to));
            self.outages.push(tokio::spawn(async move {
                tokio::time::sleep_until(down).await;
                switch.set(Faults { unreachable: true, ..normal.clone() });
                tokio::time::sleep_until(up).await;
                switch.set(normal);
            }));
        }
    }

    /// The archives' ports by name.
    pub fn ports(&self) -> HashMap<&'static str, u16> {
        self.archives.iter().map(|(p, sim)| (p.name, sim.port())).collect()
    }

    pub async fn shutdown(self) {
        for task in self.outages {
            task.abort();
        }
        for (_, sim) in self.archives {
            sim.shutdown().await;
        }
        self.dest.shutdown().await;
    }
}
