//! Periodic upkeep: rescue expired leases, refresh the backlog gauges, prune old events.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::metrics::BacklogRow;
use crate::outbox::{Outbox, OutboxError, inspect};
use crate::settings::OutboxSettings;

/// Prune at most this often: it scans and deletes, and need not run every few seconds.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// Runs [`try_maintain`] every `maintenance_interval_ms` until `stop` fires. Failures
/// are logged and retried at the next tick.
pub async fn run_until_stopped(outbox: Outbox, settings: OutboxSettings, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(settings.maintenance_interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_prune: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let prune = last_prune.is_none_or(|at| at.elapsed() >= PRUNE_EVERY);
        match try_maintain(&outbox, &settings, prune).await {
            Ok(()) if prune => last_prune = Some(tokio::time::Instant::now()),
            Ok(()) => {}
            Err(error) => tracing::warn!(%error, "outbox maintenance failed; will retry"),
        }
    }
}

/// One round of upkeep.
///
/// # Errors
/// Database errors.
pub async fn try_maintain(
    outbox: &Outbox,
    settings: &OutboxSettings,
    prune: bool,
) -> Result<(), OutboxError> {
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
    if prune {
        let retention = Duration::from_secs(u64::from(settings.retention_days) * 86_400);
        let pruned = outbox.prune(retention, settings.prune_batch_size).await?;
        if pruned > 0 {
            tracing::info!(events = pruned, "pruned delivered events past retention");
        }
    }
    Ok(())
}
