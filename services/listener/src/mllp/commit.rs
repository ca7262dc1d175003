//! Group commit: messages from all connections wait in one queue, and whatever is queued
//! when the database is free is committed in one transaction. Each connection has at most
//! one message in flight, so a batch holds at most one per connection, and a commit costs
//! one round of fsync whatever the number of senders.
//!
//! Senders answered together send again together, but not at the same instant: taking only
//! what is queued would commit the first alone and the rest a moment later, two fsyncs a
//! round. So while fewer messages wait than connections are open, the loop gathers for at
//! most [`GATHER`] more.

use crate::intake::{Intake, Verdict};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Most messages committed together.
const MAX_BATCH: usize = 256;
/// Longest a batch waits for the messages of other open connections (far below a commit).
const GATHER: Duration = Duration::from_micros(300);

struct Submission {
    payload: Vec<u8>,
    /// `None`: the database could not take it (answer AR).
    reply: oneshot::Sender<Option<Verdict>>,
}

#[derive(Clone)]
pub(super) struct Committer {
    queue: mpsc::Sender<Submission>,
    /// Open connections: how many messages a batch may expect.
    open: Arc<AtomicUsize>,
}

impl Committer {
    pub(super) fn start(intake: Intake, timeout: Duration) -> Committer {
        let (queue, receiver) = mpsc::channel(MAX_BATCH * 4);
        let open = Arc::new(AtomicUsize::new(0));
        tokio::spawn(commit_loop(intake, receiver, timeout, open.clone()));
        Committer { queue, open }
    }

    /// Counts a connection as open until the guard drops.
    pub(super) fn connection(&self) -> OpenConnection {
        self.open.fetch_add(1, Ordering::Relaxed);
        OpenConnection(self.open.clone())
    }

    /// What became of the message once committed; `None` when the database is unavailable.
    pub(super) async fn submit(&self, payload: Vec<u8>) -> Option<Verdict> {
        let (reply, answer) = oneshot::channel();
        self.queue.send(Submission { payload, reply }).await.ok()?;
        answer.await.ok().flatten()
    }
}

pub(super) struct OpenConnection(Arc<AtomicUsize>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn commit_loop(
    intake: Intake,
    mut receiver: mpsc::Receiver<Submission>,
    timeout: Duration,
    open: Arc<AtomicUsize>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let deadline = tokio::time::Instant::now() + GATHER;
        while batch.len() < open.load(Ordering::Relaxed).min(MAX_BATCH) {
            let room = MAX_BATCH - batch.len();
            match tokio::time::timeout_at(deadline, receiver.recv_many(&mut batch, room)).await {
                Ok(n) if n > 0 => {}
                _ => break,
            }
        }
        let payloads: Vec<&[u8]> = batch.iter().map(|s| s.payload.as_slice()).collect();
        let verdicts = match tokio::time::timeout(timeout, intake.process(&payloads)).await {
            Ok(Ok(verdicts)) => verdicts.into_iter().map(Some).collect(),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, messages = batch.len(), "MLLP messages not committed; answering AR");
                vec![None; batch.len()]
            }
            Err(_) => {
                tracing::warn!(messages = batch.len(), "database slower than {timeout:?}; answering AR");
                vec![None; batch.len()]
            }
        };
        for (submission, verdict) in batch.drain(..).zip(verdicts) {
            let _ = submission.reply.send(verdict);
        }
    }
}
