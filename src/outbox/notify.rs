//! Waking dispatchers: one LISTEN connection per process fans NOTIFYs out to the idle
//! workers of the named flow. Polling remains as a fallback; a lost notification only
//! delays work until the next poll.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::NOTIFY_CHANNEL;

/// Per-flow wake-up signals shared by the listener and the workers of this process.
#[derive(Debug, Clone, Default)]
pub struct Wakers {
    /// Flow name → signal. The mutex guards only map insertions; it is never held
    /// across an await.
    flows: Arc<Mutex<HashMap<String, Arc<Notify>>>>,
}

impl Wakers {
    /// The signal of `flow`, created on first use.
    pub fn for_flow(&self, flow: &str) -> Arc<Notify> {
        let mut flows = self.flows.lock().unwrap_or_else(PoisonError::into_inner);
        flows.entry(flow.to_owned()).or_default().clone()
    }

    /// Wakes every idle worker of `flow`.
    pub fn wake(&self, flow: &str) {
        self.for_flow(flow).notify_waiters();
    }

    /// Wakes every idle worker of every flow (after a reconnect, notifications may have
    /// been missed).
    pub fn wake_all(&self) {
        let flows = self.flows.lock().unwrap_or_else(PoisonError::into_inner);
        for notify in flows.values() {
            notify.notify_waiters();
        }
    }
}

/// Listens on [`NOTIFY_CHANNEL`] until `stop` fires, reconnecting with a capped backoff
/// when the connection drops.
pub async fn listen_until_stopped(pool: PgPool, wakers: Wakers, stop: CancellationToken) {
    let mut failures: u32 = 0;
    while !stop.is_cancelled() {
        match listen_once(&pool, &wakers, &stop).await {
            Ok(()) => return,
            Err(error) => {
                failures = failures.saturating_add(1);
                let delay = Duration::from_millis(200 * 2u64.pow(failures.min(6)));
                tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64,
                    "outbox notification listener lost its connection");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

async fn listen_once(
    pool: &PgPool,
    wakers: &Wakers,
    stop: &CancellationToken,
) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.ignore_pool_close_event(true);
    listener.listen(NOTIFY_CHANNEL).await?;
    tracing::debug!("listening for outbox notifications");
    wakers.wake_all();
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            received = listener.try_recv() => match received? {
                Some(notification) => wakers.wake(notification.payload()),
                // The connection was lost and will be re-established by the next call;
                // anything sent meanwhile is caught up by waking everyone.
                None => wakers.wake_all(),
            }
        }
    }
}
