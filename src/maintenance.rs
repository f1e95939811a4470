//! Periodic upkeep: rescue expired leases, refresh the backlog and load gauges (and log
//! the progress of running loads), prune old events and runs.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::metrics::{BacklogRow, LoadRow};
use crate::outbox::loads::{self, LoadProgress};
use crate::outbox::runs;
use crate::outbox::{Outbox, OutboxError, inspect};
use crate::settings::OutboxSettings;

/// Prune at most this often: it scans and deletes, and need not run every few seconds.
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// A running load logs its progress at most this often.
const LOAD_LOG_EVERY: Duration = Duration::from_secs(10);

/// Runs [`try_maintain`] every `maintenance_interval_ms` until `stop` fires. Failures
/// are logged and retried at the next tick.
pub async fn run_until_stopped(outbox: Outbox, settings: OutboxSettings, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(settings.maintenance_interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_prune: Option<tokio::time::Instant> = None;
    let mut last_load_log: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let prune = last_prune.is_none_or(|at| at.elapsed() >= PRUNE_EVERY);
        match try_maintain(&outbox, &settings, prune).await {
            Ok(running) => {
                if prune {
                    last_prune = Some(tokio::time::Instant::now());
                }
                if !running.is_empty()
                    && last_load_log.is_none_or(|at| at.elapsed() >= LOAD_LOG_EVERY)
                {
                    running.iter().for_each(log_progress);
                    last_load_log = Some(tokio::time::Instant::now());
                }
            }
            Err(error) => tracing::warn!(%error, "outbox maintenance failed; will retry"),
        }
    }
}

/// One round of upkeep; returns the loads still running.
///
/// # Errors
/// Database errors.
pub async fn try_maintain(
    outbox: &Outbox,
    settings: &OutboxSettings,
    prune: bool,
) -> Result<Vec<LoadProgress>, OutboxError> {
    outbox.rescue_expired().await?;
    let rows = inspect::backlog(outbox.pool())
        .await?
        .into_iter()
        .map(|line| BacklogRow {
            flow: line.flow,
            status: line.status,
            events: line.events,
            oldest_age_seconds: line.oldest_age_seconds.unwrap_or(0.0),
        })
        .collect();
    crate::metrics::get().set_backlog(rows);
    let running = refresh_loads(outbox).await?;
    if prune {
        let retention = Duration::from_secs(u64::from(settings.retention_days) * 86_400);
        let pruned = outbox.prune(retention, settings.prune_batch_size).await?;
        if pruned > 0 {
            tracing::info!(events = pruned, "pruned delivered events past retention");
        }
        let runs = runs::prune(outbox.pool(), retention).await?;
        if runs > 0 {
            tracing::info!(runs, "pruned runs past retention");
        }
    }
    Ok(running)
}

/// Marks completed loads finished (logging each), refreshes the load gauges and returns
/// the loads still running.
///
/// # Errors
/// Database errors.
pub async fn refresh_loads(outbox: &Outbox) -> Result<Vec<LoadProgress>, OutboxError> {
    for load in loads::finish_completed(outbox.pool()).await? {
        tracing::info!(
            flow = %load.flow,
            load_id = load.id,
            total = load.total,
            done = load.done,
            dead = load.dead,
            seconds = load.elapsed.as_secs(),
            "full load finished: {}",
            load.summary()
        );
    }
    let latest = loads::latest(outbox.pool()).await?;
    crate::metrics::get().set_loads(latest.iter().map(load_row).collect());
    Ok(latest
        .into_iter()
        .filter(LoadProgress::is_running)
        .collect())
}

fn load_row(load: &LoadProgress) -> LoadRow {
    LoadRow {
        flow: load.flow.clone(),
        total: load.total,
        done: load.done,
        dead: load.dead,
        running: load.is_running(),
        rate_per_s: load.rate_per_s.unwrap_or(0.0),
        eta_seconds: load.eta.map(|eta| eta.as_secs_f64()),
    }
}

fn log_progress(load: &LoadProgress) {
    tracing::info!(
        flow = %load.flow,
        load_id = load.id,
        done = load.done,
        total = load.total,
        dead = load.dead,
        rate_per_s = load.rate_per_s.unwrap_or(0.0),
        eta_s = load.eta.map(|eta| eta.as_secs()),
        "full load in progress: {}",
        load.summary()
    );
}
