//! MLLP framing (HL7 v2 Minimal Lower Layer Protocol, release 2): a message is
//! `0x0B <bytes> 0x1C 0x0D`. Senders put nothing between frames but, at times, a stray
//! CR/LF; anything else means the two ends disagree on framing, and the only safe answer
//! is to close the connection (no byte of what follows can be trusted as a message).

use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub const START: u8 = 0x0b;
pub const END: u8 = 0x1c;
pub const CR: u8 = 0x0d;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("bytes outside an MLLP frame (0x{0:02x} where a start block 0x0b was expected)")]
    Garbage(u8),
    #[error("message larger than {0} bytes")]
    TooLarge(usize),
    #[error("no message within the idle timeout")]
    Idle,
    #[error("message not complete within the read timeout")]
    Slow,
    #[error("connection closed in the middle of a message")]
    Truncated,
    #[error("end block 0x1c not followed by 0x0d")]
    BadTrailer,
    #[error("read failed: {0}")]
    Io(String),
}

impl FrameError {
    /// The label of `priorfetch_mllp_refused_total{reason}`.
    pub fn reason(&self) -> &'static str {
        match self {
            FrameError::Garbage(_) | FrameError::BadTrailer => "framing",
            FrameError::TooLarge(_) => "too_large",
            FrameError::Idle => "idle",
            FrameError::Slow => "read_timeout",
            FrameError::Truncated => "truncated",
            FrameError::Io(_) => "io",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_message: usize,
    pub idle: Duration,
    pub read: Duration,
}

/// Reads frames from one connection; keeps bytes that arrived past a frame's end.
pub struct FrameReader<R> {
    io: R,
    buffer: Vec<u8>,
    limits: Limits,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(io: R, limits: Limits) -> Self {
        FrameReader { io, buffer: Vec::with_capacity(4096), limits }
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.io
    }

    /// The first bytes of the message being read (after its start block): after
    /// [`FrameError::TooLarge`], enough to find its MSH and acknowledge it.
    pub fn head(&self) -> &[u8] {
        let end = self.buffer.len().min(4096);
        self.buffer.get(1..end).unwrap_or_default()
    }

    /// The next message (framing removed); `Ok(None)` when the peer closed cleanly
    /// between messages.
    pub async fn next(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        // Up to the start block: the idle timeout applies.
        let idle = tokio::time::sleep(self.limits.idle);
        tokio::pin!(idle);
        loop {
            let skip = self.buffer.iter().take_while(|b| matches!(b, b'\r' | b'\n')).count();
            self.buffer.drain(..skip);
            match self.buffer.first() {
                Some(&START) => break,
                Some(&other) => return Err(FrameError::Garbage(other)),
                None => {}
            }
            tokio::select! {
                read = self.fill() => if read? == 0 { return Ok(None) },
                _ = &mut idle => return Err(FrameError::Idle),
            }
        }
        // The body: the read timeout bounds the whole message.
        let deadline = tokio::time::sleep(self.limits.read);
        tokio::pin!(deadline);
        let mut searched = 1;
        loop {
            if let Some(at) = memchr(END, &self.buffer[searched..]).map(|i| i + searched) {
                if at - 1 > self.limits.max_message {
                    return Err(FrameError::TooLarge(self.limits.max_message));
                }
                while self.buffer.len() < at + 2 {
                    tokio::select! {
                        read = self.fill() => if read? == 0 { return Err(FrameError::Truncated) },
                        _ = &mut deadline => return Err(FrameError::Slow),
                    }
                }
                if self.buffer[at + 1] != CR {
                    return Err(FrameError::BadTrailer);
                }
                let message = self.buffer[1..at].to_vec();
                self.buffer.drain(..at + 2);
                return Ok(Some(message));
            }
            searched = self.buffer.len();
            if searched - 1 > self.limits.max_message {
                return Err(FrameError::TooLarge(self.limits.max_message));
            }
            tokio::select! {
                read = self.fill() => if read? == 0 { return Err(FrameError::Truncated) },
                _ = &mut deadline => return Err(FrameError::Slow),
            }
        }
    }

    async fn fill(&mut self) -> Result<usize, FrameError> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.io.read(&mut chunk).await.map_err(|e| FrameError::Io(e.to_string()))?;
        self.buffer.extend_from_slice(&chunk[..n]);
        Ok(n)
    }
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == needle)
}

/// Writes one framed message.
pub async fn write_frame<W: AsyncWrite + Unpin>(io: &mut W, message: &[u8]) -> std::io::Result<()> {
    let mut framed = Vec::with_capacity(message.len() + 3);
    framed.push(START);
    framed.extend_from_slice(message);
    framed.extend_from_slice(&[END, CR]);
    io.write_all(&framed).await?;
    io.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits { max_message: 64, idle: Duration::from_secs(5), read: Duration::from_secs(5) }
    }

    async fn frames(input: &[u8]) -> (Vec<Vec<u8>>, Option<FrameError>) {
        let mut reader = FrameReader::new(input, limits());
        let mut out = Vec::new();
        loop {
            match reader.next().await {
                Ok(Some(m)) => out.push(m),
                Ok(None) => return (out, None),
                Err(e) => return (out, Some(e)),
            }
        }
    }

    #[tokio::test]
    async fn frames_in_one_read_and_stray_line_ends_between_them() {
        let (out, err) = frames(b"\x0bMSH|a\x1c\x0d\r\n\x0bMSH|b\x1c\x0d").await;
        assert_eq!(out, vec![b"MSH|a".to_vec(), b"MSH|b".to_vec()]);
        assert_eq!(err, None);
    }

    #[tokio::test]
    async fn garbage_truncation_size_and_trailer_are_errors() {
        assert_eq!(frames(b"GET / HTTP/1.1\r\n").await.1, Some(FrameError::Garbage(b'G')));
        assert_eq!(frames(b"\x0bMSH|a").await.1, Some(FrameError::Truncated));
        assert_eq!(frames(b"\x0bMSH|a\x1cX").await.1, Some(FrameError::BadTrailer));
        let big = [&[START][..], &[b'x'; 100], &[END, CR]].concat();
        assert_eq!(frames(&big).await.1, Some(FrameError::TooLarge(64)));
        let unended = [&[START][..], &[b'x'; 100]].concat();
        assert_eq!(frames(&unended).await.1, Some(FrameError::TooLarge(64)));
    }

    fn short() -> Limits {
        Limits { max_message: 64, idle: Duration::from_millis(100), read: Duration::from_millis(100) }
    }

    #[tokio::test]
    async fn a_silent_peer_meets_the_idle_timeout() {
        let (_client, server) = tokio::io::duplex(64);
        let mut reader = FrameReader::new(server, short());
        assert_eq!(reader.next().await, Err(FrameError::Idle));
    }

    #[tokio::test]
    async fn a_message_that_stalls_meets_the_read_timeout() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b"\x0bMSH|half").await.unwrap();
        let mut reader = FrameReader::new(server, short());
        assert_eq!(reader.next().await, Err(FrameError::Slow));
    }
}
