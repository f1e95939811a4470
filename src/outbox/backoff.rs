//! Retry arithmetic: exponential backoff with jitter and a cap. Pure, so it is tested
//! without a database or a clock.

use std::time::Duration;

/// How failed attempts are retried.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Delay after the first failed attempt.
    pub base: Duration,
    /// Longest delay between two attempts.
    pub cap: Duration,
    /// Attempts after which a retryable failure is quarantined as dead.
    pub max_attempts: u32,
    /// Share of the delay that is randomised, 0.0 (none) to 1.0 ("full jitter").
    pub jitter: f64,
}

/// Longest delay accepted from a `Retry-After` hint; beyond it the hint is clamped.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

impl RetryPolicy {
    /// Delay before the next attempt after `attempts` failed ones (1-based).
    /// `unit` is a random number in `[0, 1)`; the result lies in
    /// `[d × (1 − jitter), d]` where `d = min(cap, base × 2^(attempts − 1))`.
    pub fn delay(&self, attempts: u32, unit: f64) -> Duration {
        let exponent = attempts.saturating_sub(1).min(62);
        let factor = 2f64.powi(exponent as i32);
        let ceiling = (self.base.as_secs_f64() * factor).min(self.cap.as_secs_f64());
        let jitter = self.jitter.clamp(0.0, 1.0);
        let unit = unit.clamp(0.0, 1.0);
        Duration::from_secs_f64(ceiling * (1.0 - jitter + jitter * unit))
    }

    /// Delay honouring a server's `Retry-After` hint when there is one.
    pub fn delay_with_hint(&self, attempts: u32, hint: Option<Duration>, unit: f64) -> Duration {
        match hint {
            Some(hint) => hint.min(MAX_RETRY_AFTER),
            None => self.delay(attempts, unit),
        }
    }

    /// Whether `attempts` used up the budget.
    pub fn exhausted(&self, attempts: u32) -> bool {
        attempts >= self.max_attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(60),
            max_attempts: 5,
            jitter: 0.5,
        }
    }

    #[test]
    fn the_delay_doubles_per_attempt_until_the_cap() {
        let p = RetryPolicy {
            jitter: 0.0,
            ..policy()
        };
        let secs: Vec<u64> = (1..=8).map(|a| p.delay(a, 0.3).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60]);
    }

    #[test]
    fn jitter_stays_within_its_share_of_the_delay() {
        let p = policy();
        for attempt in 1..10 {
            let full = p.delay(attempt, 1.0);
            let low = p.delay(attempt, 0.0);
            assert_eq!(low.as_secs_f64(), full.as_secs_f64() * 0.5);
            let mid = p.delay(attempt, 0.37);
            assert!(low <= mid && mid <= full);
        }
    }

    #[test]
    fn a_retry_after_hint_wins_over_the_backoff() {
        let p = policy();
        assert_eq!(
            p.delay_with_hint(1, Some(Duration::from_secs(7)), 0.0),
            Duration::from_secs(7)
        );
        assert_eq!(
            p.delay_with_hint(1, Some(Duration::from_secs(10 * 86_400)), 0.0),
            MAX_RETRY_AFTER
        );
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        assert_eq!(policy().delay(u32::MAX, 1.0), Duration::from_secs(60));
    }

    #[test]
    fn the_budget_is_spent_at_max_attempts() {
        assert!(!policy().exhausted(4));
        assert!(policy().exhausted(5));
    }
}
