//! The worker loop around [`Dispatcher`]'s step, with wake-ups and graceful shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{DispatchSettings, Dispatcher, Handler};
use crate::control::FlowControls;
use crate::outbox::{Event, Outbox, notify::Wakers};

/// The shared pieces every worker of a process runs with.
#[derive(Clone)]
pub struct Runtime {
    /// Tracks every spawned task so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// Cancelled once, on shutdown; every loop selects on it.
    pub stop: CancellationToken,
    pub outbox: Outbox,
    pub wakers: Wakers,
    /// How long in-flight work may continue after `stop`.
    pub grace: Duration,
    /// Pause, resume and "sync now" of every flow (shared with the console).
    pub controls: FlowControls,
}

impl Runtime {
    pub fn new(outbox: Outbox, grace: Duration) -> Self {
        Self {
            tracker: TaskTracker::new(),
            stop: CancellationToken::new(),
            outbox,
            wakers: Wakers::default(),
            grace,
            controls: FlowControls::default(),
        }
    }
}

/// Starts `settings.workers` workers for `flow` on the runtime. They stop claiming when
/// `rt.stop` fires, let in-flight work finish within `rt.grace`, then release the rest.
pub fn spawn_workers<H: Handler>(
    rt: &Runtime,
    flow: &str,
    handler: Arc<H>,
    settings: &DispatchSettings,
) {
    let process = format!("{:x}{:04x}", std::process::id(), fastrand::u16(..));
    for n in 0..settings.workers {
        let dispatcher = Dispatcher::new(
            rt.outbox.clone(),
            flow,
            format!("{process}/{flow}/{n}"),
            handler.clone(),
            settings.clone(),
            rt.wakers.clone(),
        )
        .with_control(rt.controls.flow(flow));
        let stop = rt.stop.clone();
        let grace = rt.grace;
        rt.tracker
            .spawn(async move { dispatcher.run_until_stopped(stop, grace).await });
    }
}

impl<H: Handler> Dispatcher<H> {
    /// Claims and applies batches until `stop` fires.
    pub async fn run_until_stopped(self, stop: CancellationToken, grace: Duration) {
        tracing::debug!(flow = %self.flow, worker = %self.worker_id, "dispatcher started");
        let notify = self.wakers.for_flow(&self.flow);
        let mut db_failures: u32 = 0;
        while !stop.is_cancelled() {
            if self.control.is_paused() {
                // Paused from the console: claim nothing until resumed.
                if !self.control.wait_while_paused(&stop).await {
                    break;
                }
                continue;
            }
            // Registered before claiming so that a NOTIFY arriving meanwhile is not lost.
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let events = match self.claim().await {
                Ok(events) => {
                    db_failures = 0;
                    events
                }
                Err(error) => {
                    db_failures = db_failures.saturating_add(1);
                    let delay = db_retry_delay(db_failures);
                    tracing::warn!(flow = %self.flow, %error, retry_in_ms = delay.as_millis() as u64,
                        "cannot claim events; PostgreSQL unavailable?");
                    sleep_or_stop(delay, &stop).await;
                    continue;
                }
            };
            if events.is_empty() {
                let wait = self.idle_wait().await;
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = &mut notified => {}
                    () = tokio::time::sleep(wait) => {}
                }
                continue;
            }
            if !self.process_or_release(events, &stop, grace).await {
                break;
            }
        }
        tracing::debug!(flow = %self.flow, worker = %self.worker_id, "dispatcher stopped");
    }

    /// Processes a claimed batch; after a stop request, waits at most `grace` and then
    /// releases the unfinished claims. Returns false when the worker must exit.
    async fn process_or_release(
        &self,
        events: Vec<Event>,
        stop: &CancellationToken,
        grace: Duration,
    ) -> bool {
        let ids: Vec<i64> = events.iter().map(|e| e.id).collect();
        let deadline = async {
            stop.cancelled().await;
            tokio::time::sleep(grace).await;
        };
        tokio::select! {
            result = self.process(events, Some(stop)) => {
                if let Err(error) = result {
                    tracing::warn!(flow = %self.flow, %error,
                        "could not record outcomes; the leases will bring the events back");
                }
                true
            }
            () = deadline => {
                match self.outbox.release(&self.flow, &self.worker_id, &ids).await {
                    Ok(keys) => tracing::info!(flow = %self.flow, events = ids.len(), keys,
                        "shutdown deadline reached; unfinished events released"),
                    Err(error) => tracing::warn!(flow = %self.flow, %error,
                        "could not release events at shutdown; their leases will expire"),
                }
                false
            }
        }
    }

    /// How long an idle worker sleeps when no notification comes: until the next
    /// pending retry is due, at most the fallback poll interval.
    async fn idle_wait(&self) -> Duration {
        let fallback = Duration::from_millis(self.settings.fallback_poll_ms);
        // A due event that could not be claimed waits behind an in-flight event of its
        // key; the worker finishing that one wakes its peers, so no need to spin.
        match self.outbox.next_due(&self.flow).await {
            Ok(Some(due)) => (due - chrono::Utc::now())
                .to_std()
                .map_or(fallback, |wait| {
                    wait.clamp(Duration::from_millis(1), fallback)
                }),
            Ok(None) | Err(_) => fallback,
        }
    }
}

fn db_retry_delay(failures: u32) -> Duration {
    Duration::from_millis(250u64.saturating_mul(1 << failures.min(7)))
}

async fn sleep_or_stop(delay: Duration, stop: &CancellationToken) {
    tokio::select! {
        () = stop.cancelled() => {}
        () = tokio::time::sleep(delay) => {}
    }
}
