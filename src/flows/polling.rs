//! The loop every poller runs: poll while this process holds the source's PostgreSQL
//! advisory lock (one poller per source across processes), obey pause and "sync now"
//! from the flow's control, and report each poll's outcome to it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use crate::control::FlowControl;

/// One poller's step, as the shared loop drives it.
pub trait Poll: Send {
    type Report: Send;
    type Error: std::fmt::Display + Send;

    /// Reads the source once and stores what changed.
    fn poll_once(&mut self) -> impl Future<Output = Result<Self::Report, Self::Error>> + Send;

    /// Work after each poll, failed or not (nothing by default).
    fn after_poll(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// Where and how often a poller runs.
pub struct Schedule {
    /// Flow name, for logs.
    pub flow: &'static str,
    /// Source name: the advisory lock is taken on it.
    pub source: String,
    pub interval: Duration,
    pub pool: PgPool,
    pub control: Arc<FlowControl>,
}

/// Polls every `interval` while this process holds the source's advisory lock; waits
/// for the lock otherwise. Returns when `stop` fires.
pub async fn run_until_stopped<P: Poll>(
    poller: &mut P,
    schedule: &Schedule,
    stop: &CancellationToken,
) {
    let (flow, interval) = (schedule.flow, schedule.interval);
    let key = lock_key(&schedule.source);
    while !stop.is_cancelled() {
        match PollerLock::try_acquire(&schedule.pool, key).await {
            Ok(Some(lock)) => {
                tracing::info!(flow, source = %schedule.source, "this process polls the source (advisory lock held)");
                poll_while_locked(poller, schedule, &lock, stop).await;
                lock.release().await;
            }
            Ok(None) => tracing::debug!(flow, "another process polls; dispatching only"),
            Err(error) => tracing::warn!(flow, %error, "cannot take the poller lock"),
        }
        sleep_or_stop(interval.saturating_mul(2), stop).await;
    }
}

async fn poll_while_locked<P: Poll>(
    poller: &mut P,
    schedule: &Schedule,
    lock: &PollerLock,
    stop: &CancellationToken,
) {
    let (flow, control) = (schedule.flow, &schedule.control);
    if !control.wait_while_paused(stop).await {
        return;
    }
    while !stop.is_cancelled() {
        let result = poller.poll_once().await;
        control.record_poll(&result);
        if let Err(error) = result {
            tracing::warn!(flow, %error, "poll failed; trying again at the next interval");
        }
        poller.after_poll().await;
        if !control
            .wait_turn(control.interval_or(schedule.interval), stop)
            .await
        {
            return;
        }
        if !lock.is_held().await {
            tracing::warn!(flow, "lost the poller lock connection; taking it again");
            return;
        }
    }
}

/// The advisory lock key of a source: the first 8 bytes of a SHA-256 of its name.
#[must_use]
pub fn lock_key(source: &str) -> i64 {
    let digest = Sha256::digest(format!("batisync:poller:{source}").as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}

/// A session advisory lock on a connection of its own, taken out of the pool: the lock
/// lives exactly as long as this connection, so a crashed process releases it.
pub struct PollerLock {
    /// Locked so that the liveness check and the release do not overlap.
    conn: tokio::sync::Mutex<PgConnection>,
    key: i64,
}

impl PollerLock {
    /// Takes the lock if no other session holds it.
    ///
    /// # Errors
    /// Database errors.
    pub async fn try_acquire(pool: &PgPool, key: i64) -> Result<Option<Self>, sqlx::Error> {
        let mut conn = pool.acquire().await?.detach();
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut conn)
            .await?;
        Ok(locked.then(|| Self {
            conn: tokio::sync::Mutex::new(conn),
            key,
        }))
    }

    /// Whether the lock's connection is still alive (so the lock still held).
    pub async fn is_held(&self) -> bool {
        let mut conn = self.conn.lock().await;
        sqlx::query("SELECT 1").execute(&mut *conn).await.is_ok()
    }

    /// Releases the lock and closes its connection.
    pub async fn release(self) {
        let mut conn = self.conn.into_inner();
        let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(self.key)
            .execute(&mut conn)
            .await;
        let _ = conn.close().await;
    }
}

/// Sleeps for `delay`, or less when `stop` fires.
pub async fn sleep_or_stop(delay: Duration, stop: &CancellationToken) {
    tokio::select! {
        () = stop.cancelled() => {}
        () = tokio::time::sleep(delay) => {}
    }
}
