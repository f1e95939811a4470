//! Flow control shared by the pollers, the dispatchers and the console: pause and
//! resume, "sync now" wake-ups, and what the last poll did.
//!
//! [`FlowControls`] is a registry held by the [`Application`](crate::app::Application):
//! one [`FlowControl`] per flow name, created on first use. A poller adopts it with two
//! lines:
//!
//! ```ignore
//! let control = controls.flow(FLOW);
//! // in the loop, instead of sleeping `interval`:
//! if !control.wait_turn(interval, &stop).await { break; }
//! // after each poll: control.record_poll(&result);
//! ```
//!
//! Dispatchers call [`FlowControl::wait_while_paused`] before each claim. The state is
//! per process and in memory: a restart resumes every flow (the console says so).

use std::collections::BTreeMap;
use std::fmt::Display;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

/// Requests a full re-read of a flow's source; returns a sentence for people.
pub type ResyncHook =
    Arc<dyn Fn() -> BoxFuture<'static, Result<String, String>> + Send + Sync + 'static>;

/// Every flow's control, by name. Cheap to clone.
#[derive(Clone, Default)]
pub struct FlowControls {
    /// Locked only to look up or insert an entry, never across an await.
    flows: Arc<Mutex<BTreeMap<String, Arc<FlowControl>>>>,
}

impl FlowControls {
    /// The control of `flow`, created (running) on first use.
    pub fn flow(&self, flow: &str) -> Arc<FlowControl> {
        let mut flows = self.flows.lock().unwrap_or_else(PoisonError::into_inner);
        flows
            .entry(flow.to_owned())
            .or_insert_with(|| Arc::new(FlowControl::new(flow)))
            .clone()
    }

    /// The control of `flow` if something registered it.
    pub fn get(&self, flow: &str) -> Option<Arc<FlowControl>> {
        let flows = self.flows.lock().unwrap_or_else(PoisonError::into_inner);
        flows.get(flow).cloned()
    }

    /// Names of the flows registered in this process, sorted.
    pub fn names(&self) -> Vec<String> {
        let flows = self.flows.lock().unwrap_or_else(PoisonError::into_inner);
        flows.keys().cloned().collect()
    }
}

/// What the poller of a flow last did, for the dashboard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollStatus {
    /// End of the last poll that succeeded.
    pub last_ok_at: Option<DateTime<Utc>>,
    /// The last poll error and when it happened (kept after a later success, for
    /// history; compare the instants to know whether the flow is failing now).
    pub last_error: Option<(DateTime<Utc>, String)>,
    /// When a full re-read was last requested from the console.
    pub resync_requested_at: Option<DateTime<Utc>>,
    /// How the source is read and why (e.g. snapshot diff because Change Tracking is
    /// off), as the poller last reported it.
    pub capture: Option<String>,
}

impl PollStatus {
    /// True when the last poll failed.
    #[must_use]
    pub fn is_failing(&self) -> bool {
        match (&self.last_error, self.last_ok_at) {
            (Some((at, _)), Some(ok)) => *at > ok,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }
}

/// The control of one flow.
pub struct FlowControl {
    name: String,
    /// `true` while paused; a watch so that paused loops wake up on resume.
    paused: watch::Sender<bool>,
    /// "Sync now": `notify_one` stores at most one permit, so repeated requests
    /// coalesce into one extra poll.
    wake: Notify,
    /// Set by a request, cleared when the poller takes it: tells the console that a
    /// sync is already on its way.
    sync_requested: AtomicBool,
    /// Plain mutex: held for a copy or an assignment, never across an await.
    status: Mutex<PollStatus>,
    /// Set once, when the flow is registered.
    resync: Mutex<Option<ResyncHook>>,
    /// Poll interval saved from the console since start-up (applied without restart).
    interval: Mutex<Option<Duration>>,
}

/// What a "sync now" request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncRequest {
    /// The poller will poll as soon as it is free.
    Queued,
    /// A request was already waiting: nothing more to do (never two syncs).
    AlreadyQueued,
}

impl FlowControl {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            paused: watch::Sender::new(false),
            wake: Notify::new(),
            sync_requested: AtomicBool::new(false),
            status: Mutex::new(PollStatus::default()),
            resync: Mutex::new(None),
            interval: Mutex::new(None),
        }
    }

    /// Changes the poll interval from the next wait on (settings saved in the console).
    pub fn set_interval(&self, interval: Duration) {
        *self.interval.lock().unwrap_or_else(PoisonError::into_inner) = Some(interval);
    }

    /// The interval set with [`Self::set_interval`], else `configured`.
    pub fn interval_or(&self, configured: Duration) -> Duration {
        self.interval
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .unwrap_or(configured)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn is_paused(&self) -> bool {
        *self.paused.borrow()
    }

    /// Stops polling and claiming (in-flight deliveries finish).
    pub fn pause(&self) {
        self.paused.send_replace(true);
        tracing::info!(flow = %self.name, "flow paused from the console");
    }

    pub fn resume(&self) {
        self.paused.send_replace(false);
        tracing::info!(flow = %self.name, "flow resumed from the console");
    }

    /// Asks the poller to poll now instead of at the end of its interval.
    pub fn request_sync(&self) -> SyncRequest {
        if self.sync_requested.swap(true, Ordering::AcqRel) {
            return SyncRequest::AlreadyQueued;
        }
        self.wake.notify_one();
        SyncRequest::Queued
    }

    /// True while a "sync now" waits for the poller.
    pub fn sync_pending(&self) -> bool {
        self.sync_requested.load(Ordering::Acquire)
    }

    /// The poller's sleep: returns after `interval`, on "sync now", or (false) when
    /// `stop` fires. While paused it waits for resume (or stop) first.
    pub async fn wait_turn(&self, interval: Duration, stop: &CancellationToken) -> bool {
        tokio::select! {
            () = stop.cancelled() => return false,
            () = self.wake.notified() => {}
            () = tokio::time::sleep(interval) => {}
        }
        if !self.wait_while_paused(stop).await {
            return false;
        }
        self.sync_requested.store(false, Ordering::Release);
        !stop.is_cancelled()
    }

    /// Waits until the flow is not paused; false when `stop` fired meanwhile.
    pub async fn wait_while_paused(&self, stop: &CancellationToken) -> bool {
        let mut paused = self.paused.subscribe();
        tokio::select! {
            () = stop.cancelled() => false,
            result = paused.wait_for(|p| !*p) => result.is_ok(),
        }
    }

    /// Records the outcome of a poll.
    pub fn record_poll<T, E: Display>(&self, result: &Result<T, E>) {
        let mut status = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        match result {
            Ok(_) => status.last_ok_at = Some(Utc::now()),
            Err(error) => status.last_error = Some((Utc::now(), error.to_string())),
        }
    }

    /// Records how the source is read (shown on the dashboard).
    pub fn set_capture(&self, capture: Option<String>) {
        self.status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .capture = capture;
    }

    /// A copy of the poll status.
    pub fn status(&self) -> PollStatus {
        self.status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Registers how to request a full re-read of this flow's source.
    pub fn set_resync(&self, hook: ResyncHook) {
        *self.resync.lock().unwrap_or_else(PoisonError::into_inner) = Some(hook);
    }

    /// True when the flow can be re-read in full from the console.
    pub fn can_resync(&self) -> bool {
        self.resync
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// Requests a full re-read and wakes the poller.
    ///
    /// # Errors
    /// No resync for this flow, or the request failed (a sentence for people).
    pub async fn request_resync(&self) -> Result<String, String> {
        let hook = self
            .resync
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| format!("flow {} cannot be re-read in full", self.name))?;
        let message = hook().await?;
        self.status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .resync_requested_at = Some(Utc::now());
        self.request_sync();
        Ok(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn two_sync_requests_wake_the_poller_once() {
        let control = FlowControls::default().flow("chantiers");
        let stop = CancellationToken::new();
        assert_eq!(control.request_sync(), SyncRequest::Queued);
        assert_eq!(control.request_sync(), SyncRequest::AlreadyQueued);
        let woke = tokio::time::timeout(
            Duration::from_secs(5),
            control.wait_turn(Duration::from_secs(3600), &stop),
        )
        .await;
        assert_eq!(woke, Ok(true));
        assert!(!control.sync_pending());
        let second = tokio::time::timeout(
            Duration::from_millis(50),
            control.wait_turn(Duration::from_secs(3600), &stop),
        )
        .await;
        assert!(second.is_err(), "a second request must not wake it again");
    }

    #[tokio::test]
    async fn a_paused_flow_waits_for_resume() {
        let controls = FlowControls::default();
        let control = controls.flow("heures");
        let stop = CancellationToken::new();
        control.pause();
        let waiting =
            tokio::time::timeout(Duration::from_millis(50), control.wait_while_paused(&stop)).await;
        assert!(waiting.is_err());
        let resumer = controls.flow("heures");
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            resumer.resume();
        });
        assert!(control.wait_while_paused(&stop).await);
        assert_eq!(controls.names(), ["heures"]);
    }

    #[test]
    fn a_failed_poll_after_a_success_means_failing() {
        let control = FlowControls::default().flow("chantiers");
        control.record_poll::<(), &str>(&Ok(()));
        assert!(!control.status().is_failing());
        std::thread::sleep(Duration::from_millis(2));
        control.record_poll::<(), &str>(&Err("SQL Server unreachable"));
        assert!(control.status().is_failing());
    }
}
