//! Console sessions: kept in this process's memory, keyed by a random 256-bit ID that
//! only the browser's HttpOnly cookie carries. A session holds the caller (token name
//! and role, never the token), its CSRF token and a one-shot notice for the next page.
//!
//! Sessions end after [`IDLE`] without a request, after [`LIFETIME`] in any case, on
//! logout, and when the process restarts: behind several replicas, route the console
//! with sticky sessions (or script against the API with bearer tokens).

use priorfetch_api::access::Caller;
use rand::RngExt;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The session cookie's name.
pub const COOKIE: &str = "priorfetch_session";
/// A session unused this long is gone.
pub const IDLE: Duration = Duration::from_secs(8 * 3600);
/// No session outlives this, however busy.
pub const LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Sessions kept at most; the least recently used goes first.
const MAX_SESSIONS: usize = 10_000;

/// A notice shown once on the next page (what an action did).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// `ok` or `error`: the notice's colour.
    pub kind: &'static str,
    pub text: String,
}

/// What a request learns of its session.
#[derive(Debug, Clone)]
pub struct Session {
    pub id: String,
    pub caller: Caller,
    /// The hidden field every POST form carries; compared in constant time.
    pub csrf: String,
    /// Taken from the session when the request was admitted.
    pub notice: Option<Notice>,
}

impl Session {
    pub fn csrf_matches(&self, given: &str) -> bool {
        constant_time_eq(self.csrf.as_bytes(), given.as_bytes())
    }
}

struct Entry {
    caller: Caller,
    csrf: String,
    created: Instant,
    last_seen: Instant,
    notice: Option<Notice>,
}

impl Entry {
    fn expired(&self, now: Instant) -> bool {
        now.duration_since(self.last_seen) >= IDLE || now.duration_since(self.created) >= LIFETIME
    }
}

/// The session table; cheap to clone.
#[derive(Clone, Default)]
pub struct Sessions {
    entries: Arc<Mutex<HashMap<String, Entry>>>,
}

impl Sessions {
    /// A new session for `caller`; returns its ID (the cookie value).
    pub fn open(&self, caller: Caller) -> String {
        let id = random_token();
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_SESSIONS {
            entries.retain(|_, e| !e.expired(now));
        }
        if entries.len() >= MAX_SESSIONS
            && let Some(oldest) = entries.iter().min_by_key(|(_, e)| e.last_seen).map(|(k, _)| k.clone())
        {
            entries.remove(&oldest);
        }
        let entry = Entry { caller, csrf: random_token(), created: now, last_seen: now, notice: None };
        entries.insert(id.clone(), entry);
        id
    }

    /// The live session `id` names, touched and with its notice taken; None when
    /// unknown or expired (an expired one is dropped).
    pub fn admit(&self, id: &str) -> Option<Session> {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let entry = entries.get_mut(id)?;
        if entry.expired(now) {
            entries.remove(id);
            return None;
        }
        entry.last_seen = now;
        Some(Session {
            id: id.to_string(),
            caller: entry.caller.clone(),
            csrf: entry.csrf.clone(),
            notice: entry.notice.take(),
        })
    }

    /// Leaves `notice` for the session's next page.
    pub fn notify(&self, id: &str, notice: Notice) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = entries.get_mut(id) {
            entry.notice = Some(notice);
        }
    }

    pub fn close(&self, id: &str) {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
    }
}

/// 256 random bits as 64 hex digits (the thread RNG is a CSPRNG seeded by the OS).
fn random_token() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    hex::encode(bytes)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The session ID in a `Cookie` header, if any.
pub fn cookie_value(header: &str) -> Option<&str> {
    header.split(';').map(str::trim).find_map(|pair| pair.strip_prefix(COOKIE)?.strip_prefix('='))
}

/// `Set-Cookie` for session `id`: HttpOnly, SameSite=Strict, scoped to `/ui`, `Secure`
/// when the admin listener speaks TLS.
pub fn set_cookie(id: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}={id}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}{secure}", LIFETIME.as_secs())
}

/// `Set-Cookie` that removes the session cookie.
pub fn clear_cookie(secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0{secure}")
}

/// Failed logins per peer address: after [`Throttle::LIMIT`] failures within
/// [`Throttle::WINDOW`], further attempts from that address are refused until the window
/// has passed (a token is 256 bits, so this limits noise and load more than guessing).
#[derive(Clone, Default)]
pub struct Throttle {
    failures: Arc<Mutex<HashMap<IpAddr, (Instant, u32)>>>,
}

impl Throttle {
    pub const LIMIT: u32 = 5;
    pub const WINDOW: Duration = Duration::from_secs(300);
    /// Addresses tracked at most (a flood of addresses forgets the oldest first).
    const MAX_PEERS: usize = 10_000;

    /// Whether `peer` may try to log in now.
    pub fn allows(&self, peer: Option<IpAddr>) -> bool {
        let Some(peer) = peer else { return true };
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        match failures.get(&peer) {
            Some((since, n)) => since.elapsed() >= Self::WINDOW || *n < Self::LIMIT,
            None => true,
        }
    }

    /// Counts a failed login of `peer`; returns its failures in the current window.
    pub fn failed(&self, peer: Option<IpAddr>) -> u32 {
        let Some(peer) = peer else { return 0 };
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() >= Self::MAX_PEERS {
            failures.retain(|_, (since, _)| now.duration_since(*since) < Self::WINDOW);
        }
        let entry = failures.entry(peer).or_insert((now, 0));
        if now.duration_since(entry.0) >= Self::WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
        entry.1
    }

    pub fn succeeded(&self, peer: Option<IpAddr>) {
        if let Some(peer) = peer {
            self.failures.lock().unwrap_or_else(|e| e.into_inner()).remove(&peer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use priorfetch_config::Role;

    fn caller() -> Caller {
        Caller { name: "oscar".into(), role: Role::Operator }
    }

    #[test]
    fn sessions_open_admit_notify_and_close() {
        let sessions = Sessions::default();
        let id = sessions.open(caller());
        assert_eq!(id.len(), 64);
        let s = sessions.admit(&id).unwrap();
        assert_eq!(s.caller, caller());
        assert!(s.csrf_matches(&s.csrf.clone()) && !s.csrf_matches("nope"));
        assert_ne!(s.csrf, id, "the CSRF token is not the session ID");
        sessions.notify(&id, Notice { kind: "ok", text: "done".into() });
        assert_eq!(sessions.admit(&id).unwrap().notice.unwrap().text, "done");
        assert!(sessions.admit(&id).unwrap().notice.is_none(), "a notice shows once");
        assert!(sessions.admit("0".repeat(64).as_str()).is_none());
        sessions.close(&id);
        assert!(sessions.admit(&id).is_none());
    }

    #[test]
    fn cookies_are_read_and_scoped() {
        assert_eq!(cookie_value("a=1; priorfetch_session=abc; b=2"), Some("abc"));
        assert_eq!(cookie_value("priorfetch_sessionx=abc"), None);
        let set = set_cookie("abc", true);
        for part in ["HttpOnly", "SameSite=Strict", "Path=/ui", "Secure"] {
            assert!(set.contains(part), "{set}");
        }
        assert!(!set_cookie("abc", false).contains("Secure"));
    }

    #[test]
    fn failed_logins_are_throttled_per_peer() {
        let throttle = Throttle::default();
        let (a, b) = (Some("10.0.0.1".parse().unwrap()), Some("10.0.0.2".parse().unwrap()));
        for _ in 0..Throttle::LIMIT {
            assert!(throttle.allows(a));
            throttle.failed(a);
        }
        assert!(!throttle.allows(a));
        assert!(throttle.allows(b));
        throttle.succeeded(a);
        assert!(throttle.allows(a));
    }
}
