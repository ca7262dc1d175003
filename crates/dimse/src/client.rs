//! An association owned by one tokio task, driven through a request channel.
//!
//! Callers on other tasks submit C-FIND / C-MOVE / C-GET / C-ECHO; results stream back on
//! channels while the operation runs, and a cancel handle sends C-CANCEL mid-operation
//! (the owning task `select!`s between the network and the cancel signal). Consecutive
//! requests reuse the association; dropping the [`Client`] or calling
//! [`Client::release`] ends it with A-RELEASE.

use crate::association::{Association, ContextRequest, ScuOptions};
use crate::error::DimseError;
use crate::get::StoreSink;
use crate::peer::{AeTitle, Peer};
use crate::scu::{FindOutcome, QueryModel, RetrieveOutcome, SubOperations};
use dicom_object::InMemDicomObject;
use std::ops::ControlFlow;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// A C-FIND under way: matches arrive on `matches` as the archive sends them; `outcome`
/// resolves when the archive's final response arrives.
pub struct FindStream {
    pub matches: mpsc::UnboundedReceiver<InMemDicomObject>,
    pub outcome: oneshot::Receiver<Result<FindOutcome, DimseError>>,
    cancel: watch::Sender<bool>,
}

impl FindStream {
    /// Sends C-CANCEL; matches already on the way are dropped by the association task.
    pub fn cancel(&self) {
        let _ = self.cancel.send(true);
    }

    /// Waits for the end (after draining `matches`, or dropping them).
    pub async fn finish(self) -> Result<FindOutcome, DimseError> {
        self.outcome.await.unwrap_or_else(|_| Err(DimseError::Protocol("association task ended".into())))
    }
}

/// A C-MOVE or C-GET under way: pending responses on `progress`, the final outcome on
/// `outcome`. For a C-GET the sink comes back with the outcome.
pub struct RetrieveStream<T> {
    pub progress: mpsc::UnboundedReceiver<SubOperations>,
    pub outcome: oneshot::Receiver<Result<T, DimseError>>,
    cancel: watch::Sender<bool>,
}

impl<T> RetrieveStream<T> {
    /// Sends C-CANCEL: the archive stops starting sub-operations and answers 0xFE00.
    pub fn cancel(&self) {
        let _ = self.cancel.send(true);
    }

    /// A handle that can cancel from elsewhere (e.g. a progress callback on another task).
    pub fn canceller(&self) -> watch::Sender<bool> {
        self.cancel.clone()
    }

    pub async fn finish(self) -> Result<T, DimseError> {
        self.outcome.await.unwrap_or_else(|_| Err(DimseError::Protocol("association task ended".into())))
    }
}

/// A C-GET sink that can cross tasks.
pub type BoxSink = Box<dyn StoreSink + Send>;

enum Request {
    Find {
        model: QueryModel,
        query: InMemDicomObject,
        cancel_after: Option<usize>,
        matches: mpsc::UnboundedSender<InMemDicomObject>,
        cancel: watch::Receiver<bool>,
        done: oneshot::Sender<Result<FindOutcome, DimseError>>,
    },
    Move {
        model: QueryModel,
        query: InMemDicomObject,
        destination: AeTitle,
        progress: mpsc::UnboundedSender<SubOperations>,
        cancel: watch::Receiver<bool>,
        done: oneshot::Sender<Result<RetrieveOutcome, DimseError>>,
    },
    Get {
        model: QueryModel,
        query: InMemDicomObject,
        sink: BoxSink,
        progress: mpsc::UnboundedSender<SubOperations>,
        cancel: watch::Receiver<bool>,
        done: oneshot::Sender<Result<(RetrieveOutcome, BoxSink), DimseError>>,
    },
}

/// Handle to an association task.
pub struct Client {
    requests: Option<mpsc::Sender<Request>>,
    task: Option<JoinHandle<()>>,
    pub peer: Peer,
}

impl Client {
    /// Connects and spawns the task that owns the association.
    pub async fn connect(peer: &Peer, options: &ScuOptions, contexts: &[ContextRequest]) -> Result<Client, DimseError> {
        let assoc = Association::connect(peer, options, contexts).await?;
        Ok(Client::spawn(assoc))
    }

    /// Moves an established association into its own task.
    pub fn spawn(assoc: Association) -> Client {
        let peer = assoc.peer.clone();
        let (tx, rx) = mpsc::channel(8);
        let task = tokio::spawn(serve(assoc, rx));
        Client { requests: Some(tx), task: Some(task), peer }
    }

    async fn submit(&self, request: Request) -> Result<(), DimseError> {
        let tx = self.requests.as_ref().ok_or_else(|| DimseError::Protocol("client released".into()))?;
        tx.send(request).await.map_err(|_| DimseError::Io(format!("association with {} has ended", self.peer)))
    }

    /// Starts a C-FIND; `cancel_after` sends C-CANCEL after that many matches.
    pub async fn find(
        &self,
        model: QueryModel,
        query: InMemDicomObject,
        cancel_after: Option<usize>,
    ) -> Result<FindStream, DimseError> {
        let (matches_tx, matches) = mpsc::unbounded_channel();
        let (done, outcome) = oneshot::channel();
        let (cancel, cancel_rx) = watch::channel(false);
        self.submit(Request::Find { model, query, cancel_after, matches: matches_tx, cancel: cancel_rx, done }).await?;
        Ok(FindStream { matches, outcome, cancel })
    }

    /// Starts a C-MOVE to `destination`.
    pub async fn retrieve_move(
        &self,
        model: QueryModel,
        query: InMemDicomObject,
        destination: AeTitle,
    ) -> Result<RetrieveStream<RetrieveOutcome>, DimseError> {
        let (progress_tx, progress) = mpsc::unbounded_channel();
        let (done, outcome) = oneshot::channel();
        let (cancel, cancel_rx) = watch::channel(false);
        self.submit(Request::Move { model, query, destination, progress: progress_tx, cancel: cancel_rx, done })
            .await?;
        Ok(RetrieveStream { progress, outcome, cancel })
    }

    /// Starts a C-GET; instances stream into `sink`, which is handed back at the end.
    pub async fn retrieve_get(
        &self,
        model: QueryModel,
        query: InMemDicomObject,
        sink: BoxSink,
    ) -> Result<RetrieveStream<(RetrieveOutcome, BoxSink)>, DimseError> {
        let (progress_tx, progress) = mpsc::unbounded_channel();
        let (done, outcome) = oneshot::channel();
        let (cancel, cancel_rx) = watch::channel(false);
        self.submit(Request::Get { model, query, sink, progress: progress_tx, cancel: cancel_rx, done }).await?;
        Ok(RetrieveStream { progress, outcome, cancel })
    }

    /// Ends the association with A-RELEASE once the running request is done.
    pub async fn release(mut self) {
        self.requests = None;
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // Closing the channel makes the task release the association on its own.
        self.requests = None;
    }
}

/// Runs `operation` under the association's whole-operation bound, if it has one.
async fn bounded<T>(
    limit: Option<Duration>,
    peer: &str,
    operation: impl Future<Output = Result<T, DimseError>>,
) -> Result<T, DimseError> {
    match limit {
        None => operation.await,
        Some(after) => tokio::time::timeout(after, operation).await.unwrap_or_else(|_| {
            Err(DimseError::Timeout { peer: peer.to_string(), what: "the end of the operation", after })
        }),
    }
}

async fn serve(mut assoc: Association, mut requests: mpsc::Receiver<Request>) {
    let limit = assoc.options.operation_timeout;
    let peer = assoc.peer.to_string();
    while let Some(request) = requests.recv().await {
        let broken = match request {
            Request::Find { model, query, cancel_after, matches, cancel, done } => {
                let find = assoc.find_with_cancel(model, &query, cancel_after, Some(cancel), |m| {
                    // A caller that stopped listening no longer wants matches.
                    if matches.send(m).is_err() { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
                });
                let result = bounded(limit, &peer, find).await;
                let broken = is_fatal(&result);
                let _ = done.send(result);
                broken
            }
            Request::Move { model, query, destination, progress, cancel, done } => {
                let operation = assoc.retrieve_move(
                    model,
                    &query,
                    &destination,
                    |p| {
                        let _ = progress.send(*p);
                    },
                    Some(cancel),
                );
                let result = bounded(limit, &peer, operation).await;
                let broken = is_fatal(&result);
                let _ = done.send(result);
                broken
            }
            Request::Get { model, query, mut sink, progress, cancel, done } => {
                let operation = assoc.retrieve_get(
                    model,
                    &query,
                    sink.as_mut(),
                    |p| {
                        let _ = progress.send(*p);
                    },
                    Some(cancel),
                );
                let result = bounded(limit, &peer, operation).await;
                let broken = is_fatal(&result);
                let _ = done.send(result.map(|o| (o, sink)));
                broken
            }
        };
        if broken {
            // The association state is unknown after a network or protocol error.
            assoc.abort().await;
            return;
        }
    }
    assoc.release().await;
}

/// A DIMSE failure status leaves the association usable; anything else does not.
fn is_fatal<T>(result: &Result<T, DimseError>) -> bool {
    matches!(result, Err(e) if !matches!(e, DimseError::Status { .. } | DimseError::NoContext { .. } | DimseError::Encode(_)))
}
