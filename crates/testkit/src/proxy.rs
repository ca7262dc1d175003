//! A loopback TCP proxy that can cut the line: put it between one store's pool and
//! Postgres to simulate a database outage for that store alone (other tests and other
//! connections of the same test are not disturbed). [`DelayProxy`] adds latency instead
//! (an off-site archive, for the benchmarks).
//!
//! ```no_run
//! # async fn f() -> anyhow::Result<()> {
//! let proxy = priorfetch_testkit::proxy::TcpProxy::start("127.0.0.1:5432").await?;
//! let url = format!("postgres://postgres@{}/db", proxy.addr());
//! proxy.cut();      // existing connections dropped, new ones closed at once
//! proxy.restore();  // new connections pass again
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct TcpProxy {
    addr: SocketAddr,
    /// `true` while cut; every pump watches it.
    cut: Arc<watch::Sender<bool>>,
    /// Armed by [`TcpProxy::cut_next_after`]: the next connection's answer is cut after
    /// this many bytes (0: not armed).
    cut_after: Arc<AtomicU64>,
    accept: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on a free loopback port and forwards each connection to `upstream`.
    pub async fn start(upstream: &str) -> std::io::Result<TcpProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (cut, _) = watch::channel(false);
        let cut = Arc::new(cut);
        let upstream = upstream.to_string();
        let state = cut.clone();
        let cut_after = Arc::new(AtomicU64::new(0));
        let armed = cut_after.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if *state.borrow() {
                    drop(client); // refused: closed at once
                    continue;
                }
                match armed.swap(0, Ordering::Relaxed) {
                    0 => tokio::spawn(pump(client, upstream.clone(), state.subscribe())),
                    bytes => tokio::spawn(pump_then_cut(client, upstream.clone(), bytes)),
                };
            }
        });
        Ok(TcpProxy { addr, cut, cut_after, accept })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every open connection and closes new ones as soon as they arrive.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    pub fn restore(&self) {
        self.cut.send_replace(false);
    }

    /// The next connection's answer is cut after `bytes` (a body cut mid-transfer);
    /// later connections pass whole.
    pub fn cut_next_after(&self, bytes: u64) {
        self.cut_after.store(bytes.max(1), Ordering::Relaxed);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut.send_replace(true);
        self.accept.abort();
    }
}

/// Copies both ways until either side closes or the line is cut.
async fn pump(mut client: TcpStream, upstream: String, mut cut: watch::Receiver<bool>) {
    let Ok(mut server) = TcpStream::connect(&upstream).await else { return };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        _ = cut.wait_for(|c| *c) => {}
    }
}

/// Forwards the request as is and the answer up to `bytes`, then drops both sides.
async fn pump_then_cut(client: TcpStream, upstream: String, bytes: u64) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(server) = TcpStream::connect(&upstream).await else { return };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let requests = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
    });
    let mut left = bytes;
    let mut buf = vec![0u8; 16 * 1024];
    while left > 0 {
        let Ok(n) = server_read.read(&mut buf).await else { break };
        if n == 0 {
            break;
        }
        let take = (n as u64).min(left) as usize;
        if client_write.write_all(&buf[..take]).await.is_err() {
            break;
        }
        left -= take as u64;
    }
    requests.abort();
}

/// A loopback TCP proxy that delays every byte by `delay` in each direction (an off-site
/// archive: 5 ms each way is a 10 ms round trip) without limiting bandwidth: what is read
/// is queued with its due time and written when due.
pub struct DelayProxy {
    addr: SocketAddr,
    accept: tokio::task::JoinHandle<()>,
}

impl DelayProxy {
    pub async fn start(upstream: &str, delay: std::time::Duration) -> std::io::Result<DelayProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let upstream = upstream.to_string();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else { return };
                    let _ = (client.set_nodelay(true), server.set_nodelay(true));
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    let up = tokio::spawn(delayed_copy(client_read, server_write, delay));
                    delayed_copy(server_read, client_write, delay).await;
                    let _ = up.await;
                });
            }
        });
        Ok(DelayProxy { addr, accept })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn delayed_copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: std::time::Duration,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((due, bytes)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 || tx.send((tokio::time::Instant::now() + delay, buf[..n].to_vec())).is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn forwards_then_cuts_then_restores() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = echo.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let proxy = TcpProxy::start(&upstream).await.unwrap();
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        c.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");

        proxy.cut();
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), c.read(&mut buf)).await.unwrap().unwrap_or(0);
        assert_eq!(n, 0, "open connection dropped");
        let mut fresh = TcpStream::connect(proxy.addr()).await.unwrap();
        let n =
            tokio::time::timeout(std::time::Duration::from_secs(5), fresh.read(&mut buf)).await.unwrap().unwrap_or(0);
        assert_eq!(n, 0, "new connection closed at once");

        proxy.restore();
        let mut again = TcpStream::connect(proxy.addr()).await.unwrap();
        again.write_all(b"pong").await.unwrap();
        again.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");
    }
}
