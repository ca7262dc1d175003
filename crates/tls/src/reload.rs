//! A configuration rebuilt from its files when one of them changes: the check is a
//! `stat` of each file, at most every few seconds, on use. A rebuild that fails (a
//! half-written file during rotation) keeps the previous configuration and says so.

use crate::TlsSetupError;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tracing::{info, warn};

const CHECK_EVERY: Duration = Duration::from_secs(2);

type Build<T> = Box<dyn Fn() -> Result<T, TlsSetupError> + Send + Sync>;

pub(crate) struct Reloading<T> {
    what: String,
    files: Vec<PathBuf>,
    build: Build<T>,
    state: Mutex<State<T>>,
}

struct State<T> {
    current: Arc<T>,
    stamps: Vec<Option<SystemTime>>,
    checked: Instant,
}

impl<T> Reloading<T> {
    pub(crate) fn new(what: String, files: Vec<PathBuf>, build: Build<T>) -> Result<Self, TlsSetupError> {
        let stamps = stamps(&files);
        let current = Arc::new(build()?);
        Ok(Reloading { what, files, build, state: Mutex::new(State { current, stamps, checked: Instant::now() }) })
    }

    pub(crate) fn current(&self) -> Arc<T> {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if state.checked.elapsed() >= CHECK_EVERY {
            state.checked = Instant::now();
            let now = stamps(&self.files);
            if now != state.stamps {
                match (self.build)() {
                    Ok(fresh) => {
                        info!(tls = %self.what, "TLS files changed: configuration reloaded");
                        state.current = Arc::new(fresh);
                        state.stamps = now;
                    }
                    Err(e) => {
                        warn!(tls = %self.what, error = %e, "TLS files changed but cannot be used; keeping the previous ones")
                    }
                }
            }
        }
        state.current.clone()
    }
}

fn stamps(files: &[PathBuf]) -> Vec<Option<SystemTime>> {
    files.iter().map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok()).collect()
}
