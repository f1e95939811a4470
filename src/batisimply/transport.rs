//! HTTP transport: shared connection pool, rate limit, concurrency cap,
//! retries with backoff, and counters.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::Semaphore;

use super::error::{BatisimplyError, RawResponse, classify};
use super::settings::BatisimplySettings;

/// Snapshot of the client counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// HTTP requests sent (token requests included, retries included).
    pub requests_sent: u64,
    /// Retries performed after a retryable failure.
    pub retries: u64,
    /// HTTP 429 answers received.
    pub rate_limited_429: u64,
    /// Tokens obtained (logins and refreshes).
    pub tokens_fetched: u64,
    /// Token renewals forced by a 401 answer.
    pub renewals_after_401: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub requests_sent: AtomicU64,
    pub retries: AtomicU64,
    pub rate_limited_429: AtomicU64,
    pub tokens_fetched: AtomicU64,
    pub renewals_after_401: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> ClientStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ClientStats {
            requests_sent: get(&self.requests_sent),
            retries: get(&self.retries),
            rate_limited_429: get(&self.rate_limited_429),
            tokens_fetched: get(&self.tokens_fetched),
            renewals_after_401: get(&self.renewals_after_401),
        }
    }
}

/// Retry timing.
#[derive(Debug, Clone, Copy)]
struct RetryPolicy {
    max_retries: u32,
    base: Duration,
    cap: Duration,
}

impl RetryPolicy {
    /// Delay before retry number `attempt` (0-based), or `None` when the
    /// server asks for a longer pause than we are willing to wait.
    fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Option<Duration> {
        let exp = self
            .base
            .saturating_mul(2u32.saturating_pow(attempt))
            .min(self.cap);
        let jittered = exp.mul_f64(0.5 + fastrand::f64() * 0.5);
        match retry_after {
            Some(wanted) if wanted > self.cap => None,
            Some(wanted) => Some(wanted.max(jittered.min(wanted + self.base))),
            None => Some(jittered),
        }
    }
}

/// Shared HTTP machinery used by every request, token requests included.
pub(crate) struct Transport {
    http: reqwest::Client,
    limiter: DefaultDirectRateLimiter,
    permits: Semaphore,
    retry: RetryPolicy,
    pub(crate) counters: Counters,
}

impl Transport {
    /// Builds the transport from the settings.
    pub(crate) fn new(settings: &BatisimplySettings) -> Result<Self, BatisimplyError> {
        let nz = |v: u32| NonZeroU32::new(v.max(1)).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_second(nz(settings.rate_limit_per_sec))
            .allow_burst(nz(settings.rate_limit_burst));
        let max_concurrent = settings.max_concurrent_requests.max(1) as usize;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(settings.connect_timeout_ms))
            .timeout(Duration::from_millis(settings.request_timeout_ms))
            .pool_max_idle_per_host(max_concurrent * 2)
            .user_agent(concat!("batisync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| BatisimplyError::config(format!("HTTP client: {e}")))?;
        Ok(Self {
            http,
            limiter: RateLimiter::direct(quota),
            permits: Semaphore::new(max_concurrent),
            retry: RetryPolicy {
                max_retries: settings.max_retries,
                base: Duration::from_millis(settings.retry_base_ms.max(1)),
                cap: Duration::from_millis(settings.retry_cap_ms.max(settings.retry_base_ms)),
            },
            counters: Counters::default(),
        })
    }

    /// The shared HTTP client, to build requests.
    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Sends the request built by `build`, retrying retryable failures.
    ///
    /// `build` is called once per attempt. A non-`idempotent` request is only
    /// retried when the server certainly did not process it.
    pub(crate) async fn send<F>(
        &self,
        build: F,
        idempotent: bool,
    ) -> Result<RawResponse, BatisimplyError>
    where
        F: Fn() -> reqwest::RequestBuilder,
    {
        let mut attempt = 0;
        loop {
            let err = match self.attempt(build()).await {
                Ok(raw) => return Ok(raw),
                Err(err) => err,
            };
            let may_retry = idempotent || err.certainly_not_processed();
            if !err.is_retryable() || !may_retry || attempt >= self.retry.max_retries {
                return Err(err);
            }
            let Some(delay) = self.retry.delay(attempt, err.retry_after()) else {
                return Err(err);
            };
            tracing::debug!(attempt, delay_ms = delay.as_millis() as u64, error = %err, "retrying");
            Counters::bump(&self.counters.retries);
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    /// One attempt: concurrency permit, rate limit, send, read the body.
    async fn attempt(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<RawResponse, BatisimplyError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| BatisimplyError::config("request semaphore closed"))?;
        self.limiter.until_ready().await;
        Counters::bump(&self.counters.requests_sent);
        let outcome = async {
            let response = request.send().await?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.bytes().await?.to_vec();
            Ok(RawResponse {
                status,
                headers,
                body,
            })
        }
        .await;
        if let Ok(raw) = &outcome {
            tracing::trace!(
                status = raw.status.as_u16(),
                body_bytes = raw.body.len(),
                "answer received"
            );
        }
        let result = classify(outcome);
        if let Err(BatisimplyError::RateLimited { .. }) = &result {
            Counters::bump(&self.counters.rate_limited_429);
        }
        result
    }
}
