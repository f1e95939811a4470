//! Dispatchers: N workers per flow claim outbox events and hand them to the flow's
//! [`Handler`], then record each outcome.
//!
//! A worker is a loop around one testable step, [`Dispatcher::try_dispatch_batch`].
//! Retryability is decided in one place, `Dispatcher::decide`, from the handler's
//! [`DispatchError`] and the flow's [`RetryPolicy`].

mod settings;
mod worker;

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio_util::sync::CancellationToken;

use crate::control::{FlowControl, FlowControls};
use crate::outbox::{
    Event, Failure, Outbox, OutboxError, Reason, ReasonCode, RetryPolicy, notify::Wakers,
};

pub use settings::DispatchSettings;
pub use worker::{Runtime, spawn_workers};

/// What a handler did with an event it applied; stored as the event's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// One short line for people: "created project 42", "skipped: BatiSimply is newer".
    pub summary: String,
}

impl Applied {
    pub fn new(summary: impl Into<String>) -> Self {
        Self {
            summary: summary.into(),
        }
    }
}

/// Why a handler could not apply an event. The variant decides what happens next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DispatchError {
    /// Worth retrying later (network, timeout, 5xx, a locked row).
    #[error("{0}")]
    Transient(String),
    /// Retrying cannot help (bad data, 4xx): the event goes dead with this reason,
    /// stored as data with the dead letter, and this message for people.
    #[error("{message}")]
    Permanent { reason: Reason, message: String },
    /// The target refuses our credentials: retried like a transient failure (an
    /// operator fixes them and the events go on), dead as `credentials` once the
    /// attempts run out.
    #[error("{0}")]
    Credentials(String),
    /// The target asked us to slow down; retry after the hint (or the backoff).
    #[error("{message}")]
    RateLimited {
        retry_after: Option<Duration>,
        message: String,
    },
}

impl DispatchError {
    /// A permanent refusal for `reason`.
    pub fn permanent(reason: Reason, message: impl Into<String>) -> Self {
        Self::Permanent {
            reason,
            message: message.into(),
        }
    }

    /// The reason of a permanent refusal.
    #[must_use]
    pub fn reason(&self) -> Option<&Reason> {
        match self {
            Self::Permanent { reason, .. } => Some(reason),
            _ => None,
        }
    }
}

/// Applies one event to a target. Implementations must be idempotent: an event may be
/// applied again after a crash between the write and the ack.
pub trait Handler: Send + Sync + 'static {
    fn apply(&self, event: &Event) -> impl Future<Output = Result<Applied, DispatchError>> + Send;
}

/// What one step of a worker did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    pub claimed: usize,
    pub applied: usize,
    pub retried: usize,
    pub dead: usize,
}

impl BatchOutcome {
    pub fn is_empty(&self) -> bool {
        self.claimed == 0
    }
}

/// One worker's view of a flow: where to claim from, what to apply with, how to retry.
pub struct Dispatcher<H> {
    outbox: Outbox,
    flow: String,
    worker_id: String,
    handler: Arc<H>,
    settings: DispatchSettings,
    policy: RetryPolicy,
    wakers: Wakers,
    /// Paused from the console: the worker loop claims nothing.
    control: Arc<FlowControl>,
}

/// The result of running the handler on one event.
struct Attempt<'a> {
    event: &'a Event,
    result: Result<Applied, (DispatchError, &'static str)>,
    elapsed: Duration,
}

impl<H: Handler> Dispatcher<H> {
    pub fn new(
        outbox: Outbox,
        flow: &str,
        worker_id: String,
        handler: Arc<H>,
        settings: DispatchSettings,
        wakers: Wakers,
    ) -> Self {
        let policy = settings.retry_policy();
        Self {
            outbox,
            flow: flow.to_owned(),
            worker_id,
            handler,
            settings,
            policy,
            wakers,
            control: FlowControls::default().flow(flow),
        }
    }

    /// Obeys the given flow control (pause/resume) instead of a private one.
    #[must_use]
    pub fn with_control(mut self, control: Arc<FlowControl>) -> Self {
        self.control = control;
        self
    }

    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// Claims one batch, applies it and records the outcomes.
    ///
    /// # Errors
    /// Database errors while claiming or recording; events already claimed are then
    /// rescued when their lease expires.
    pub async fn try_dispatch_batch(&self) -> Result<BatchOutcome, OutboxError> {
        let events = self.claim().await?;
        self.process(events, None).await
    }

    async fn claim(&self) -> Result<Vec<Event>, OutboxError> {
        let lease = Duration::from_millis(self.settings.lease_ms);
        self.outbox
            .claim_runs(
                &self.flow,
                &self.worker_id,
                self.settings.batch_size,
                self.settings.run_length,
                lease,
            )
            .await
    }

    /// Applies the claimed runs concurrently (they all have distinct keys), the events
    /// of each run in order, and records the outcomes in one transaction. Once `stop`
    /// fires, runs start no further event: what was done is recorded, the rest waits.
    async fn process(
        &self,
        events: Vec<Event>,
        stop: Option<&CancellationToken>,
    ) -> Result<BatchOutcome, OutboxError> {
        let claimed = events.len();
        if claimed == 0 {
            return Ok(BatchOutcome::default());
        }
        let claimed_at = Instant::now();
        let runs = futures::future::join_all(
            runs_by_key(&events)
                .into_iter()
                .map(|run| self.apply_run(run, claimed_at, stop)),
        )
        .await;
        let mut done = Vec::with_capacity(claimed);
        let mut failures = Vec::new();
        let metrics = crate::metrics::get();
        for attempt in runs.into_iter().flatten() {
            match attempt.result {
                Ok(applied) => {
                    let since = (chrono::Utc::now() - attempt.event.captured_at)
                        .to_std()
                        .unwrap_or_default();
                    metrics.dispatched(&self.flow, attempt.elapsed, since);
                    done.push((attempt.event.id, applied.summary));
                }
                Err((error, kind)) => {
                    let failure = self.decide(attempt.event, &error, kind);
                    metrics.failed(
                        &self.flow,
                        kind,
                        failure.retry_in.is_none(),
                        attempt.elapsed,
                    );
                    log_failure(attempt.event, &failure);
                    failures.push(failure);
                }
            }
        }
        let dead = failures.iter().filter(|f| f.retry_in.is_none()).count();
        let outcome = BatchOutcome {
            claimed,
            applied: done.len(),
            retried: failures.len() - dead,
            dead,
        };
        self.outbox
            .record_claimed(&self.flow, &self.worker_id, &events, &done, &failures)
            .await?;
        // Finishing events may unblock later events of the same keys, and a retry may be
        // due before the idle workers' next poll: let them look.
        self.wakers.wake(&self.flow);
        Ok(outcome)
    }

    /// Applies one key's run in order. It stops at the first failure (the later events
    /// must wait for that one), and does not start an event after the run budget, or
    /// one that might still be running when the lease is three quarters gone, or one
    /// after `stop` (the rest of the run stays waiting).
    async fn apply_run<'a>(
        &self,
        run: Vec<&'a Event>,
        claimed_at: Instant,
        stop: Option<&CancellationToken>,
    ) -> Vec<Attempt<'a>> {
        let lease = Duration::from_millis(self.settings.lease_ms);
        let timeout = Duration::from_millis(self.settings.handler_timeout_ms);
        let budget = Duration::from_millis(self.settings.run_budget_ms);
        let mut attempts = Vec::with_capacity(run.len());
        for event in run {
            if !attempts.is_empty() {
                let elapsed = claimed_at.elapsed();
                let stopping = stop.is_some_and(CancellationToken::is_cancelled);
                if stopping || elapsed >= budget || elapsed + timeout > lease * 3 / 4 {
                    break;
                }
            }
            let attempt = self.attempt(event).await;
            let failed = attempt.result.is_err();
            attempts.push(attempt);
            if failed {
                break;
            }
        }
        attempts
    }

    /// Runs the handler with a timeout, turning a panic into a failed attempt.
    async fn attempt<'a>(&self, event: &'a Event) -> Attempt<'a> {
        let started = Instant::now();
        let timeout = Duration::from_millis(self.settings.handler_timeout_ms);
        let apply = AssertUnwindSafe(self.handler.apply(event)).catch_unwind();
        let result = match tokio::time::timeout(timeout, apply).await {
            Ok(Ok(Ok(applied))) => Ok(applied),
            Ok(Ok(Err(error))) => {
                let kind = error_kind(&error);
                Err((error, kind))
            }
            Ok(Err(panic)) => Err((
                DispatchError::Transient(format!("handler panicked: {}", panic_text(&panic))),
                "panic",
            )),
            Err(_) => Err((
                DispatchError::Transient(format!(
                    "handler did not finish within {} ms",
                    timeout.as_millis()
                )),
                "timeout",
            )),
        };
        Attempt {
            event,
            result,
            elapsed: started.elapsed(),
        }
    }

    /// The one place that decides retry or dead.
    fn decide(&self, event: &Event, error: &DispatchError, kind: &'static str) -> Failure {
        let attempts = u32::try_from(event.attempts).unwrap_or(u32::MAX);
        let unit = fastrand::f64();
        let retry_in = match error {
            DispatchError::Permanent { .. } => None,
            // Being throttled is not the event's fault: it never exhausts the budget.
            DispatchError::RateLimited { retry_after, .. } => {
                Some(self.policy.delay_with_hint(attempts, *retry_after, unit))
            }
            DispatchError::Transient(_) | DispatchError::Credentials(_)
                if self.policy.exhausted(attempts) =>
            {
                None
            }
            DispatchError::Transient(_) | DispatchError::Credentials(_) => {
                Some(self.policy.delay(attempts, unit))
            }
        };
        let gave_up = |code| Reason::new(code).with("attempts", attempts);
        let (message, reason) = match (error, retry_in) {
            (DispatchError::Permanent { reason, message }, _) => {
                (message.clone(), Some(reason.clone()))
            }
            (DispatchError::Transient(m) | DispatchError::Credentials(m), None) => {
                let code = if matches!(error, DispatchError::Credentials(_)) {
                    ReasonCode::Credentials
                } else {
                    ReasonCode::GaveUp
                };
                let message = format!(
                    "{m} (abandonné après {attempts} tentatives / gave up after {attempts} attempts)"
                );
                (message, Some(gave_up(code)))
            }
            _ => (error.to_string(), None),
        };
        Failure {
            event_id: event.id,
            kind,
            message,
            retry_in,
            reason,
        }
    }
}

/// The claimed events grouped by key, each run in id order (`events` is sorted by id).
fn runs_by_key(events: &[Event]) -> Vec<Vec<&Event>> {
    let mut runs: Vec<Vec<&Event>> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for event in events {
        let n = *index.entry(event.entity_key.as_str()).or_insert_with(|| {
            runs.push(Vec::new());
            runs.len() - 1
        });
        runs[n].push(event);
    }
    runs
}

fn error_kind(error: &DispatchError) -> &'static str {
    match error {
        DispatchError::Transient(_) => "transient",
        DispatchError::Permanent { .. } => "permanent",
        DispatchError::Credentials(_) => "credentials",
        DispatchError::RateLimited { .. } => "rate_limited",
    }
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-text panic payload".to_owned())
}

fn log_failure(event: &Event, failure: &Failure) {
    match failure.retry_in {
        Some(delay) => tracing::info!(
            flow = %event.flow, key = %event.entity_key, event_id = event.id,
            attempt = event.attempts, kind = failure.kind, retry_in_ms = delay.as_millis() as u64,
            error = %failure.message, "attempt failed, will retry"),
        None => tracing::warn!(
            flow = %event.flow, key = %event.entity_key, event_id = event.id,
            attempt = event.attempts, kind = failure.kind, error = %failure.message,
            "event quarantined as dead letter"),
    }
}
