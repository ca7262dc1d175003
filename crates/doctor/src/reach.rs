//! Check 1: DNS and TCP. Each way a connect fails has its own cause and fix: refused
//! (nothing listens: wrong port or service down), timeout (a firewall drops the SYN, or
//! the host is down), unreachable (no route).

use crate::finding::{Check, Report};
use crate::target::Target;
use std::io::ErrorKind;
use std::time::{Duration, Instant};

/// How a TCP connect ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    Connected { address: String, elapsed: Duration },
    Unresolved(String),
    Refused,
    TimedOut,
    Unreachable(String),
    Other(String),
}

/// Resolves the host and connects to the first address; bounded by `timeout` per step.
pub async fn probe(host: &str, port: u16, timeout: Duration) -> Reach {
    let started = Instant::now();
    let addresses = match tokio::time::timeout(timeout, tokio::net::lookup_host((host, port))).await {
        Ok(Ok(found)) => found.collect::<Vec<_>>(),
        Ok(Err(e)) => return Reach::Unresolved(e.to_string()),
        Err(_) => return Reach::Unresolved(format!("no DNS answer within {} s", timeout.as_secs())),
    };
    let Some(address) = addresses.first().copied() else {
        return Reach::Unresolved("no address".into());
    };
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(address)).await {
        Ok(Ok(_stream)) => Reach::Connected { address: address.to_string(), elapsed: started.elapsed() },
        Ok(Err(e)) => classify(&e),
        Err(_) => Reach::TimedOut,
    }
}

pub fn classify(e: &std::io::Error) -> Reach {
    match e.kind() {
        ErrorKind::ConnectionRefused => Reach::Refused,
        ErrorKind::TimedOut => Reach::TimedOut,
        ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable | ErrorKind::AddrNotAvailable => {
            Reach::Unreachable(e.to_string())
        }
        _ => Reach::Other(e.to_string()),
    }
}

/// Runs the check; false when nothing after it can work.
pub(crate) async fn check(target: &Target, timeout: Duration, report: &mut Report) -> bool {
    let peer = &target.peer;
    let (host, port, key) = (&peer.host, peer.port, &target.key);
    match probe(host, port, timeout).await {
        Reach::Connected { address, elapsed } => {
            report.ok(Check::Reach, format!("tcp connect to {address} in {} ms", elapsed.as_millis()));
            true
        }
        Reach::Unresolved(why) => {
            report.fail(
                Check::Reach,
                format!("cannot resolve host '{host}': {why}"),
                format!("check {key}.host (a DNS name this machine resolves, or an IP address)"),
            );
            false
        }
        Reach::Refused => {
            report.fail(
                Check::Reach,
                format!("{host}:{port} refused the connection: nothing listens on that port"),
                format!("check {key}.port (the peer's DICOM port) and that the DICOM service is running on {host}"),
            );
            false
        }
        Reach::TimedOut => {
            report.fail(
                Check::Reach,
                format!(
                    "no answer to a TCP connect to {host}:{port} within {} s: packets are dropped",
                    timeout.as_secs()
                ),
                format!("open TCP {port} from this host to {host} in the firewall (or check that {host} is up)"),
            );
            false
        }
        Reach::Unreachable(why) => {
            report.fail(
                Check::Reach,
                format!("{host} is unreachable from here: {why}"),
                format!("check routing/VPN from this host to {host}, and {key}.host"),
            );
            false
        }
        Reach::Other(why) => {
            report.fail(
                Check::Reach,
                format!("tcp connect to {host}:{port} failed: {why}"),
                format!("check {key}.host and {key}.port"),
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_connect_errors() {
        assert_eq!(classify(&std::io::Error::from(ErrorKind::ConnectionRefused)), Reach::Refused);
        assert_eq!(classify(&std::io::Error::from(ErrorKind::TimedOut)), Reach::TimedOut);
        assert!(matches!(classify(&std::io::Error::from(ErrorKind::HostUnreachable)), Reach::Unreachable(_)));
        assert!(matches!(classify(&std::io::Error::from(ErrorKind::NetworkUnreachable)), Reach::Unreachable(_)));
    }
}
