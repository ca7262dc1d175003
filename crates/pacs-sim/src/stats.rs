//! Counters of what the simulator did.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub associations: AtomicU64,
    pub rejected: AtomicU64,
    pub echoes: AtomicU64,
    pub finds: AtomicU64,
    pub find_matches: AtomicU64,
    pub moves: AtomicU64,
    pub gets: AtomicU64,
    pub stores_sent: AtomicU64,
    pub stores_received: AtomicU64,
    pub failed_subops: AtomicU64,
    pub aborts: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub cancels: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> SimStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SimStats {
            associations: g(&self.associations),
            rejected: g(&self.rejected),
            echoes: g(&self.echoes),
            finds: g(&self.finds),
            find_matches: g(&self.find_matches),
            moves: g(&self.moves),
            gets: g(&self.gets),
            stores_sent: g(&self.stores_sent),
            stores_received: g(&self.stores_received),
            failed_subops: g(&self.failed_subops),
            aborts: g(&self.aborts),
            bytes_sent: g(&self.bytes_sent),
            cancels: g(&self.cancels),
        }
    }
}

/// A snapshot of the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Associations established (rejected ones not included).
    pub associations: u64,
    /// Associations rejected (fault, cap, wrong called AE).
    pub rejected: u64,
    pub echoes: u64,
    pub finds: u64,
    /// Pending C-FIND responses sent.
    pub find_matches: u64,
    pub moves: u64,
    pub gets: u64,
    /// C-STORE sub-operations that succeeded (C-MOVE and C-GET).
    pub stores_sent: u64,
    /// Instances received by the storage SCP.
    pub stores_received: u64,
    pub failed_subops: u64,
    /// Associations we aborted (fault injection).
    pub aborts: u64,
    /// Data set bytes sent in C-STORE sub-operations.
    pub bytes_sent: u64,
    /// C-CANCEL requests honoured (C-FIND, C-MOVE, C-GET).
    pub cancels: u64,
}
