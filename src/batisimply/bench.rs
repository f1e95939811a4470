//! Client benchmark against the in-process simulator.

use std::fmt;
use std::time::{Duration, Instant};

use futures::StreamExt;

use super::client::BatisimplyClient;
use super::error::BatisimplyError;
use super::settings::BatisimplySettings;
use super::sim::{Faults, SimConfig, SimError, SimHandle, Simulator};

/// Benchmark parameters.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// `GET /api/project/{id}` calls of the unthrottled phase.
    pub calls: usize,
    /// Concurrency cap of the client.
    pub max_concurrent_requests: u32,
    /// Client rate limit of the throttled phases, in requests per second.
    pub limited_rate_per_sec: u32,
    /// Rate the simulator accepts before answering 429, in requests per second.
    pub sim_allowed_rate_per_sec: u32,
    /// Duration of each throttled phase.
    pub limited_duration: Duration,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            calls: 2_000,
            max_concurrent_requests: 4,
            limited_rate_per_sec: 20,
            sim_allowed_rate_per_sec: 25,
            limited_duration: Duration::from_secs(10),
        }
    }
}

/// Figures of one phase.
#[derive(Debug, Clone, Default)]
pub struct PhaseFigures {
    /// Phase label.
    pub label: String,
    /// Client rate limit, in requests per second (None: lifted).
    pub client_rate_per_sec: Option<u32>,
    /// Successful calls.
    pub calls_ok: u64,
    /// Failed calls (after the client's own retries).
    pub calls_failed: u64,
    /// HTTP requests sent by the client (token and retries included).
    pub requests_sent: u64,
    /// Wall-clock duration.
    pub elapsed: Duration,
    /// 429 answers served by the simulator.
    pub served_429: u64,
    /// Retries performed by the client.
    pub retries: u64,
    /// TCP connections accepted by the simulator.
    pub connections: u64,
}

impl PhaseFigures {
    /// Requests sent per second of wall-clock time.
    #[must_use]
    pub fn requests_per_sec(&self) -> f64 {
        self.requests_sent as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    /// Requests per second once the initial burst is spent (the burst equals the rate
    /// in the throttled phases): the figure to compare with the limit.
    #[must_use]
    pub fn sustained_requests_per_sec(&self) -> Option<f64> {
        let burst = u64::from(self.client_rate_per_sec?);
        let after_burst = self.requests_sent.saturating_sub(burst) as f64;
        Some(after_burst / self.elapsed.as_secs_f64().max(f64::EPSILON))
    }
}

/// Results of [`bench_client`].
#[derive(Debug, Clone, Default)]
pub struct BenchReport {
    /// One entry per phase.
    pub phases: Vec<PhaseFigures>,
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<30} {:>8} {:>7} {:>6} {:>9} {:>9} {:>11} {:>6} {:>7} {:>6}",
            "phase",
            "limit/s",
            "ok",
            "failed",
            "requests",
            "req/s",
            "after burst",
            "429s",
            "retries",
            "conns"
        )?;
        for p in &self.phases {
            let limit = p
                .client_rate_per_sec
                .map_or_else(|| "none".to_owned(), |r| r.to_string());
            writeln!(
                f,
                "{:<30} {:>8} {:>7} {:>6} {:>9} {:>9.1} {:>11} {:>6} {:>7} {:>6}",
                p.label,
                limit,
                p.calls_ok,
                p.calls_failed,
                p.requests_sent,
                p.requests_per_sec(),
                p.sustained_requests_per_sec()
                    .map_or_else(|| "-".to_owned(), |r| format!("{r:.1}")),
                p.served_429,
                p.retries,
                p.connections
            )?;
        }
        Ok(())
    }
}

/// Benchmark failures.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The simulator did not start.
    #[error(transparent)]
    Sim(#[from] SimError),
    /// The client could not be built.
    #[error(transparent)]
    Client(#[from] BatisimplyError),
}

/// Runs the benchmark: unthrottled throughput, then the client rate limit
/// against a simulator allowing a bit more, then twice the allowed rate.
///
/// # Errors
/// [`BenchError`] when the simulator or the client cannot be started.
pub async fn bench_client(options: &BenchOptions) -> Result<BenchReport, BenchError> {
    let mut report = BenchReport::default();
    report.phases.push(throughput_phase(options).await?);
    let allowed = options.sim_allowed_rate_per_sec;
    for (label, rate) in [
        (
            "rate-limited (sim allows more)",
            options.limited_rate_per_sec,
        ),
        ("over the sim's allowance", allowed * 2),
    ] {
        report
            .phases
            .push(limited_phase(options, label, rate).await?);
    }
    Ok(report)
}

fn settings_for(sim: &SimHandle, options: &BenchOptions, rate: Option<u32>) -> BatisimplySettings {
    let config = SimConfig::default();
    let (username, password) = config.users.first().cloned().unwrap_or_default();
    BatisimplySettings {
        api_base_url: sim.base_url.clone(),
        sso_base_url: sim.sso_url.clone(),
        client_id: config.client_id,
        client_secret: config.client_secret.into(),
        username,
        password: password.into(),
        rate_limit_per_sec: rate.unwrap_or(1_000_000),
        rate_limit_burst: rate.unwrap_or(1_000_000),
        max_concurrent_requests: options.max_concurrent_requests,
        retry_base_ms: 50,
        retry_cap_ms: 5_000,
        ..BatisimplySettings::default()
    }
}

async fn throughput_phase(options: &BenchOptions) -> Result<PhaseFigures, BenchError> {
    let sim = Simulator::builder().spawn("127.0.0.1:0").await?;
    let ids: Vec<i64> = sim.seed_projects(50).iter().map(|p| p.id).collect();
    let client = BatisimplyClient::new(settings_for(&sim, options, None))?;
    let started = Instant::now();
    let width = options.max_concurrent_requests.max(1) as usize * 2;
    let results: Vec<bool> = futures::stream::iter(0..options.calls)
        .map(|n| {
            let client = client.clone();
            let id = ids.get(n % ids.len().max(1)).copied().unwrap_or(1);
            async move { client.get_project(id).await.is_ok() }
        })
        .buffer_unordered(width)
        .collect()
        .await;
    Ok(figures(
        "throughput (limit lifted)",
        None,
        &client,
        &sim,
        started.elapsed(),
        &results,
    ))
}

async fn limited_phase(
    options: &BenchOptions,
    label: &str,
    rate: u32,
) -> Result<PhaseFigures, BenchError> {
    let faults = Faults {
        allowed_rate_per_sec: Some(options.sim_allowed_rate_per_sec),
        ..Faults::default()
    };
    let sim = Simulator::builder()
        .faults(faults)
        .spawn("127.0.0.1:0")
        .await?;
    let id = sim.seed_projects(1).first().map_or(1, |p| p.id);
    let client = BatisimplyClient::new(settings_for(&sim, options, Some(rate)))?;
    let started = Instant::now();
    let workers = (0..options.max_concurrent_requests.max(1)).map(|_| {
        let client = client.clone();
        async move {
            let mut outcomes = Vec::new();
            while started.elapsed() < options.limited_duration {
                outcomes.push(client.get_project(id).await.is_ok());
            }
            outcomes
        }
    });
    let results: Vec<bool> = futures::future::join_all(workers)
        .await
        .into_iter()
        .flatten()
        .collect();
    Ok(figures(
        label,
        Some(rate),
        &client,
        &sim,
        started.elapsed(),
        &results,
    ))
}

fn figures(
    label: &str,
    rate: Option<u32>,
    client: &BatisimplyClient,
    sim: &SimHandle,
    elapsed: Duration,
    results: &[bool],
) -> PhaseFigures {
    let (client_stats, sim_stats) = (client.stats(), sim.stats());
    let ok = results.iter().filter(|ok| **ok).count() as u64;
    PhaseFigures {
        label: label.to_owned(),
        client_rate_per_sec: rate,
        calls_ok: ok,
        calls_failed: results.len() as u64 - ok,
        requests_sent: client_stats.requests_sent,
        elapsed,
        served_429: sim_stats.served_429,
        retries: client_stats.retries,
        connections: sim_stats.connections,
    }
}
