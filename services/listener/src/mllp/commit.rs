//! Group commit: messages from all connections wait in one queue, and whatever is queued
//! when the database is free is committed in one transaction. Each connection has at most
//! one message in flight, so a batch holds at most one per connection, and a commit costs
//! one round of fsync whatever the number of senders.

use crate::intake::{Intake, Verdict};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Most messages committed together.
const MAX_BATCH: usize = 256;

struct Submission {
    payload: Vec<u8>,
    /// `None`: the database could not take it (answer AR).
    reply: oneshot::Sender<Option<Verdict>>,
}

#[derive(Clone)]
pub(super) struct Committer {
    queue: mpsc::Sender<Submission>,
}

impl Committer {
    pub(super) fn start(intake: Intake, timeout: Duration) -> Committer {
        let (queue, receiver) = mpsc::channel(MAX_BATCH * 4);
        tokio::spawn(commit_loop(intake, receiver, timeout));
        Committer { queue }
    }

    /// What became of the message once committed; `None` when the database is unavailable.
    pub(super) async fn submit(&self, payload: Vec<u8>) -> Option<Verdict> {
        let (reply, answer) = oneshot::channel();
        self.queue.send(Submission { payload, reply }).await.ok()?;
        answer.await.ok().flatten()
    }
}

async fn commit_loop(intake: Intake, mut receiver: mpsc::Receiver<Submission>, timeout: Duration) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
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
