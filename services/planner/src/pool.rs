//! Query associations per archive: at most `max_associations` C-FINDs at once (a
//! semaphore), and associations reused across queries and exams. An idle association is
//! released after `idle` (a reaper task): archives have few association threads (Orthanc
//! has 4) and held idle associations starve their other clients.

use dicom_object::InMemDicomObject;
use priorfetch_dimse::scu::FindOutcome;
use priorfetch_dimse::{Association, ContextRequest, DimseError, Peer, QueryModel, ScuOptions};
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

pub struct Pool {
    pub name: String,
    peer: Peer,
    options: ScuOptions,
    permits: Semaphore,
    /// Released associations ready for the next query, with when they became idle.
    idle: Mutex<Vec<(Association, Instant)>>,
    idle_timeout: Duration,
    /// false: one association per query (the benchmark's baseline).
    reuse: bool,
    /// Associations opened so far (the benchmark reports it).
    opened: std::sync::atomic::AtomicU64,
}

impl Pool {
    pub fn new(
        name: &str,
        peer: Peer,
        options: ScuOptions,
        max: u32,
        idle_timeout: Duration,
        reuse: bool,
    ) -> Arc<Pool> {
        let pool = Arc::new(Pool {
            name: name.to_string(),
            peer,
            options,
            permits: Semaphore::new(max.max(1) as usize),
            idle: Mutex::new(Vec::new()),
            idle_timeout,
            reuse,
            opened: Default::default(),
        });
        if reuse {
            tokio::spawn(reap(Arc::downgrade(&pool), idle_timeout));
        }
        pool
    }

    pub fn associations_opened(&self) -> u64 {
        self.opened.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn take_idle(&self) -> Option<Association> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((assoc, since)) = idle.pop() {
            if since.elapsed() < self.idle_timeout {
                return Some(assoc);
            }
            tokio::spawn(assoc.release());
        }
        None
    }

    fn put_back(&self, assoc: Association) {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).push((assoc, Instant::now()));
    }

    async fn connect(&self) -> Result<Association, DimseError> {
        self.opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Association::connect(&self.peer, &self.options, &[ContextRequest::new(QueryModel::StudyRoot.find_uid())]).await
    }

    /// A Study Root C-FIND collecting every match, bounded by `timeout` as a whole.
    pub async fn find(
        &self,
        query: &InMemDicomObject,
        timeout: Duration,
    ) -> Result<(Vec<InMemDicomObject>, FindOutcome), DimseError> {
        let _permit = self.permits.acquire().await.map_err(|_| DimseError::Protocol("pool closed".into()))?;
        let pooled = if self.reuse { self.take_idle() } else { None };
        let reused = pooled.is_some();
        let assoc = match pooled {
            Some(a) => a,
            None => self.connect().await?,
        };
        match self.find_on(assoc, query, timeout).await {
            // The archive may have closed an idle association we still held: once more
            // on a fresh one.
            Err(e) if reused && is_broken(&e) => {
                let assoc = self.connect().await?;
                self.find_on(assoc, query, timeout).await
            }
            other => other,
        }
    }

    async fn find_on(
        &self,
        mut assoc: Association,
        query: &InMemDicomObject,
        timeout: Duration,
    ) -> Result<(Vec<InMemDicomObject>, FindOutcome), DimseError> {
        let mut matches = Vec::new();
        let find = assoc.find(QueryModel::StudyRoot, query, None, |m| {
            matches.push(m);
            ControlFlow::Continue(())
        });
        let result = match tokio::time::timeout(timeout, find).await {
            Ok(r) => r,
            Err(_) => {
                Err(DimseError::Timeout { peer: self.peer.to_string(), what: "the end of the C-FIND", after: timeout })
            }
        };
        match result {
            Ok(outcome) => {
                self.done(assoc).await;
                Ok((matches, outcome))
            }
            // a failure status leaves the association usable
            Err(e @ DimseError::Status { .. }) => {
                self.done(assoc).await;
                Err(e)
            }
            Err(e) => {
                assoc.abort().await;
                Err(e)
            }
        }
    }

    async fn done(&self, assoc: Association) {
        if self.reuse { self.put_back(assoc) } else { assoc.release().await }
    }

    /// Releases every idle association (shutdown).
    pub async fn close(&self) {
        let idle: Vec<_> = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|e| e.into_inner()));
        for (assoc, _) in idle {
            assoc.release().await;
        }
    }
}

fn is_broken(e: &DimseError) -> bool {
    matches!(e, DimseError::Io(_) | DimseError::Aborted { .. } | DimseError::Released { .. })
}

/// Releases associations idle for longer than `idle`; ends when the pool is dropped.
async fn reap(pool: Weak<Pool>, idle: Duration) {
    let tick = (idle / 2).max(Duration::from_millis(50));
    loop {
        tokio::time::sleep(tick).await;
        let Some(pool) = pool.upgrade() else { return };
        let expired: Vec<Association> = {
            let mut list = pool.idle.lock().unwrap_or_else(|e| e.into_inner());
            let (old, fresh): (Vec<_>, Vec<_>) = list.drain(..).partition(|(_, since)| since.elapsed() >= idle);
            *list = fresh;
            old.into_iter().map(|(a, _)| a).collect()
        };
        drop(pool);
        for assoc in expired {
            assoc.release().await;
        }
    }
}
