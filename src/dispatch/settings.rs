//! Dispatch settings of a flow.

use std::time::Duration;

use serde::Deserialize;

use crate::outbox::RetryPolicy;
use crate::settings::SettingsError;

/// How a flow's events are dispatched.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DispatchSettings {
    /// Concurrent workers per flow in this process.
    pub workers: u32,
    /// Entity keys one worker claims at once (applied concurrently: they are distinct).
    pub batch_size: i64,
    /// Consecutive events of one key a claim may take (applied in order, one after the
    /// other); 1 claims only each key's oldest event.
    pub run_length: i64,
    /// A run starts no further event once its batch has been running this long, so a
    /// slow target does not hold the batch's other keys (and the worker) behind it.
    pub run_budget_ms: u64,
    /// How long a claim stays valid; an event whose worker vanished returns after this.
    pub lease_ms: u64,
    /// Longest time one handler call may take before it counts as a failed attempt.
    pub handler_timeout_ms: u64,
    /// Attempts before a retryable failure becomes a dead letter.
    pub max_attempts: u32,
    /// Delay after the first failure; doubles per attempt.
    pub backoff_base_ms: u64,
    /// Longest delay between attempts.
    pub backoff_cap_ms: u64,
    /// Randomised share of each delay (0.0 to 1.0), so retries do not arrive in waves.
    pub backoff_jitter: f64,
    /// Idle workers look for work at least this often, even without a notification.
    pub fallback_poll_ms: u64,
}

impl Default for DispatchSettings {
    fn default() -> Self {
        Self {
            workers: 2,
            batch_size: 16,
            run_length: 16,
            run_budget_ms: 1_000,
            lease_ms: 120_000,
            handler_timeout_ms: 60_000,
            max_attempts: 12,
            backoff_base_ms: 1_000,
            backoff_cap_ms: 900_000,
            backoff_jitter: 0.5,
            fallback_poll_ms: 5_000,
        }
    }
}

impl DispatchSettings {
    /// The retry policy these settings describe.
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            base: Duration::from_millis(self.backoff_base_ms),
            cap: Duration::from_millis(self.backoff_cap_ms),
            max_attempts: self.max_attempts,
            jitter: self.backoff_jitter,
        }
    }

    /// Checks the settings found under `section` (for error messages).
    ///
    /// # Errors
    /// [`SettingsError::Invalid`] naming the offending key.
    pub fn validate(&self, section: &str) -> Result<(), SettingsError> {
        let key = |name: &str| format!("{section}.{name}");
        if self.workers == 0 {
            return Err(SettingsError::invalid(key("workers"), "must be at least 1"));
        }
        if !(1..=10_000).contains(&self.batch_size) {
            return Err(SettingsError::invalid(
                key("batch_size"),
                "must be between 1 and 10000",
            ));
        }
        if !(1..=1_000).contains(&self.run_length) {
            return Err(SettingsError::invalid(
                key("run_length"),
                "must be between 1 and 1000",
            ));
        }
        if self.max_attempts == 0 {
            return Err(SettingsError::invalid(
                key("max_attempts"),
                "must be at least 1",
            ));
        }
        if !(0.0..=1.0).contains(&self.backoff_jitter) {
            return Err(SettingsError::invalid(
                key("backoff_jitter"),
                "must be between 0.0 and 1.0",
            ));
        }
        if self.backoff_base_ms == 0 || self.backoff_base_ms > self.backoff_cap_ms {
            return Err(SettingsError::invalid(
                key("backoff_base_ms"),
                "must be at least 1 and not above backoff_cap_ms",
            ));
        }
        if self.fallback_poll_ms == 0 {
            return Err(SettingsError::invalid(
                key("fallback_poll_ms"),
                "must be at least 1",
            ));
        }
        // A batch's keys are applied concurrently, so the first event of each lasts at
        // most one handler timeout (a run's later events start only while they can end
        // well within the lease); the lease must outlive it or a slow batch would be
        // rescued while still running.
        if self.lease_ms < self.handler_timeout_ms.saturating_mul(2) {
            return Err(SettingsError::invalid(
                key("lease_ms"),
                format!(
                    "must be at least twice {} ({} ms)",
                    key("handler_timeout_ms"),
                    self.handler_timeout_ms
                ),
            ));
        }
        Ok(())
    }
}
