//! Before an association exists. A connection only costs an association slot once its
//! A-ASSOCIATE-RQ has arrived: we wait for it (ARTIM-style timeout) by peeking, so the
//! bytes stay in the socket for dicom-ul to negotiate on, and answer the rejections
//! dicom-ul cannot send (it only rejects permanently, as service user) ourselves.
//! Connections still waiting are bounded: a new one evicts the oldest, so idle sockets
//! can neither exhaust memory and descriptors nor lock a real sender out.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// The fixed head of an A-ASSOCIATE-RQ (PS3.8 9.3.2): PDU header, protocol version,
/// reserved, called AE, calling AE, 32 reserved bytes.
const RQ_HEAD: usize = 74;
/// Requests up to this size are waited for whole before a slot is taken; a larger one
/// (many contexts) may not fit the socket buffer, so its head is enough.
const PEEK_WHOLE: usize = 64 * 1024;
/// Largest A-ASSOCIATE-RQ we entertain (dicom-ul reads it within our max PDU anyway).
const MAX_RQ: usize = 1 << 20;

/// What the peer asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub called_ae: String,
    pub calling_ae: String,
}

/// How waiting for the A-ASSOCIATE-RQ ended.
#[derive(Debug)]
pub enum Waited {
    Request(Request),
    /// The peer closed, sent something else, or an I/O error: nothing to answer.
    NotARequest(String),
    TimedOut,
}

/// Waits at most `artim` for an A-ASSOCIATE-RQ on `socket` without consuming it.
pub async fn wait_for_request(socket: &TcpStream, artim: Duration) -> Waited {
    match tokio::time::timeout(artim, peek_request(socket)).await {
        Ok(Ok(request)) => Waited::Request(request),
        Ok(Err(why)) => Waited::NotARequest(why),
        Err(_) => Waited::TimedOut,
    }
}

async fn peek_request(socket: &TcpStream) -> Result<Request, String> {
    let mut head = [0u8; RQ_HEAD];
    peek_exactly(socket, &mut head).await?;
    if head[0] != 0x01 {
        return Err(format!("PDU type 0x{:02X} where an A-ASSOCIATE-RQ was expected", head[0]));
    }
    let length = u32::from_be_bytes([head[2], head[3], head[4], head[5]]) as usize;
    if !(RQ_HEAD - 6..=MAX_RQ).contains(&length) {
        return Err(format!("A-ASSOCIATE-RQ of implausible length {length}"));
    }
    if length + 6 <= PEEK_WHOLE {
        let mut whole = vec![0u8; length + 6];
        peek_exactly(socket, &mut whole).await?;
    }
    let ae = |range: std::ops::Range<usize>| String::from_utf8_lossy(&head[range]).trim().to_string();
    Ok(Request { called_ae: ae(10..26), calling_ae: ae(26..42) })
}

/// Peeks until `buf.len()` bytes are buffered. Peek does not wait for more than is
/// already there, so a partial read waits a few milliseconds before looking again (the
/// caller's timeout bounds the loop).
async fn peek_exactly(socket: &TcpStream, buf: &mut [u8]) -> Result<(), String> {
    loop {
        match socket.peek(buf).await {
            Ok(0) => return Err("closed before an A-ASSOCIATE-RQ".into()),
            Ok(n) if n == buf.len() => return Ok(()),
            Ok(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            Err(e) => return Err(format!("reading the A-ASSOCIATE-RQ: {e}")),
        }
    }
}

/// An A-ASSOCIATE-RJ (PS3.8 9.3.4): result, source, reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    pub result: u8,
    pub source: u8,
    pub reason: u8,
}

impl Rejection {
    /// Permanent, service user: calling AE title not recognized.
    pub const CALLING_AE: Rejection = Rejection { result: 1, source: 1, reason: 3 };
    /// Permanent, service user: called AE title not recognized.
    pub const CALLED_AE: Rejection = Rejection { result: 1, source: 1, reason: 7 };
    /// Transient, service provider (presentation): local limit exceeded.
    pub const LOCAL_LIMIT: Rejection = Rejection { result: 2, source: 3, reason: 2 };
}

/// Consumes the A-ASSOCIATE-RQ, answers `rejection`, and closes once the peer had the
/// chance to read it (closing with unread input would send a reset instead). Bounded by
/// `within`.
pub async fn reject(mut socket: TcpStream, rejection: Rejection, within: Duration) {
    let answer = async {
        let mut header = [0u8; 6];
        socket.read_exact(&mut header).await?;
        let length = u32::from_be_bytes([header[2], header[3], header[4], header[5]]) as u64;
        tokio::io::copy(&mut (&mut socket).take(length.min(MAX_RQ as u64)), &mut tokio::io::sink()).await?;
        let Rejection { result, source, reason } = rejection;
        socket.write_all(&[0x03, 0x00, 0, 0, 0, 4, 0x00, result, source, reason]).await?;
        socket.flush().await?;
        socket.shutdown().await?;
        let mut rest = [0u8; 512];
        while socket.read(&mut rest).await? > 0 {}
        Ok::<(), std::io::Error>(())
    };
    let _ = tokio::time::timeout(within, answer).await;
}

/// The connections waiting for their A-ASSOCIATE-RQ, oldest first; at most `cap`.
pub struct Waiting {
    cap: usize,
    queue: Mutex<VecDeque<(u64, CancellationToken)>>,
    next: AtomicU64,
}

/// A place among the waiting connections; cancelled when evicted, freed on drop.
pub struct Ticket {
    waiting: Arc<Waiting>,
    id: u64,
    pub evicted: CancellationToken,
}

impl Waiting {
    pub fn new(cap: usize) -> Waiting {
        Waiting { cap: cap.max(1), queue: Mutex::new(VecDeque::new()), next: AtomicU64::new(0) }
    }

    /// A place for a new connection; evicts the oldest waiting one when full, and says
    /// whether it did.
    pub fn admit(self: &Arc<Self>) -> (Ticket, bool) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let evicted = CancellationToken::new();
        let mut dropped = false;
        if let Ok(mut queue) = self.queue.lock() {
            while queue.len() >= self.cap {
                if let Some((_, oldest)) = queue.pop_front() {
                    oldest.cancel();
                    dropped = true;
                }
            }
            queue.push_back((id, evicted.clone()));
        }
        (Ticket { waiting: self.clone(), id, evicted }, dropped)
    }

    pub fn len(&self) -> usize {
        self.queue.lock().map(|q| q.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Ok(mut queue) = self.waiting.queue.lock()
            && let Some(at) = queue.iter().position(|(id, _)| *id == self.id)
        {
            queue.remove(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_waiting_room_evicts_the_oldest() {
        let waiting = Arc::new(Waiting::new(2));
        let (a, dropped_a) = waiting.admit();
        let (b, _) = waiting.admit();
        let (c, dropped_c) = waiting.admit();
        assert!(!dropped_a && dropped_c);
        assert!(a.evicted.is_cancelled() && !b.evicted.is_cancelled() && !c.evicted.is_cancelled());
        assert_eq!(waiting.len(), 2);
        drop(b);
        assert_eq!(waiting.len(), 1);
        drop(a);
        drop(c);
        assert!(waiting.is_empty());
    }
}
