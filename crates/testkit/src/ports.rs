//! Free loopback ports for peers started by tests.

use std::net::TcpListener;

/// A TCP port on 127.0.0.1 that was free a moment ago. The kernel does not hand
/// the same ephemeral port out again at once, so the race with other tests is small.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}
