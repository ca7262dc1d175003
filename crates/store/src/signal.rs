//! Wake-ups for idle workers. Each enqueue bumps a counter (locally) and, on Postgres,
//! sends `NOTIFY priorfetch_work`, which a LISTEN task in every process turns into the
//! same counter bump. A worker reads the counter before it claims and waits for a change
//! after an empty claim, so a wake-up between the two is never lost.

use crate::{Store, WORK_CHANNEL};
use std::time::Duration;
use tokio::sync::watch;

pub struct WorkSignal {
    rx: watch::Receiver<u64>,
}

impl WorkSignal {
    /// Call before claiming: later waits return only for work enqueued after this.
    pub fn mark_seen(&mut self) {
        self.rx.borrow_and_update();
    }

    /// Waits until work was enqueued since the last `mark_seen`, or `timeout`
    /// (the fallback poll, for wake-ups missed while the LISTEN connection was down).
    /// Returns true when woken by a signal.
    pub async fn wait(&mut self, timeout: Duration) -> bool {
        matches!(tokio::time::timeout(timeout, self.rx.changed()).await, Ok(Ok(())))
    }
}

impl Store {
    /// A wake-up handle. On Postgres the first call starts the LISTEN task of this process.
    pub async fn work_signal(&self) -> WorkSignal {
        if self.is_postgres() {
            self.listener_started.get_or_init(|| async { self.spawn_listener() }).await;
        }
        let mut rx = self.work.subscribe();
        rx.borrow_and_update();
        WorkSignal { rx }
    }

    fn spawn_listener(&self) {
        let pool = self.db.get_postgres_connection_pool().clone();
        let work = self.work.clone();
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(200);
            loop {
                match sea_orm::sqlx::postgres::PgListener::connect_with(&pool).await {
                    Ok(mut listener) => {
                        if let Err(e) = listener.listen(WORK_CHANNEL).await {
                            tracing::warn!(error = %e, "listen failed");
                        } else {
                            delay = Duration::from_millis(200);
                            // Wake everyone once: work may have arrived while we were not listening.
                            work.send_modify(|n| *n = n.wrapping_add(1));
                            loop {
                                match listener.recv().await {
                                    Ok(_) => work.send_modify(|n| *n = n.wrapping_add(1)),
                                    Err(e) => {
                                        tracing::warn!(error = %e, "listen connection lost");
                                        break;
                                    }
                                }
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot open listen connection"),
                }
                if work.is_closed() && work.receiver_count() == 0 && std::sync::Arc::strong_count(&work) == 1 {
                    return; // the store is gone
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        });
    }
}
