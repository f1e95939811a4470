//! The poller: reads `ChantierDef` changes every `poll_interval_ms` and stores them in
//! the outbox with the cursor, in one transaction. Only the process holding the
//! source's PostgreSQL advisory lock polls; the others only dispatch.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use super::FLOW;
use super::mapping::payload_of;
use super::settings::ChantiersSettings;
use super::source::ChangeSource;
use crate::batigest::{BatigestError, CaptureBatch, Change, snapshot_store};
use crate::control::{FlowControl, FlowControls};
use crate::flows::polling::{self, Poll, Schedule};
pub use crate::flows::polling::{PollerLock, lock_key};
use crate::outbox::loads::{self, LoadStarted};
use crate::outbox::runs::{self, RunStarted};
use crate::outbox::{self, CaptureReport, CursorAdvance, NewEvent, Operation, OutboxError};

/// Entity key of a row whose code is empty (the outbox refuses an empty key); its
/// event becomes a dead letter naming the empty code.
pub const EMPTY_CODE_KEY: &str = "(vide)";

/// Why a poll failed; the poller logs it and tries again at the next interval.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("lecture Batigest / Batigest read: {0}")]
    Source(#[from] BatigestError),
    #[error("outbox: {0}")]
    Outbox(#[from] OutboxError),
    #[error("PostgreSQL: {0}")]
    Database(#[from] sqlx::Error),
}

/// What one poll did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PollReport {
    /// Changes read from the source.
    pub read: usize,
    /// Changes left out by the `chantiers.states` filter.
    pub filtered: usize,
    /// The whole table was read (first run, resync, cursor too old).
    pub full_snapshot: bool,
    /// What the outbox stored.
    pub captured: CaptureReport,
    /// The load recorded with a full snapshot (its progress: [`loads::latest`]).
    pub load: Option<LoadStarted>,
    /// The run recorded when the poll stored events (its figures: [`runs::recent`]).
    pub run: Option<RunStarted>,
}

/// Polls one source into the outbox.
pub struct Poller<S> {
    source: S,
    pool: PgPool,
    settings: Arc<ChantiersSettings>,
    /// Pause, "sync now" and the last poll's outcome, shared with the console.
    control: Arc<FlowControl>,
}

impl<S: ChangeSource> Poller<S> {
    /// A poller of `source` writing to `pool`'s outbox.
    pub fn new(source: S, pool: PgPool, settings: Arc<ChantiersSettings>) -> Self {
        Self {
            source,
            pool,
            settings,
            control: FlowControls::default().flow(FLOW),
        }
    }

    /// Obeys (and reports to) the given flow control instead of a private one.
    #[must_use]
    pub fn with_control(mut self, control: Arc<FlowControl>) -> Self {
        self.control = control;
        self
    }

    /// One step: reads after the stored cursor, then stores the events, the new cursor
    /// and the snapshot hashes in one transaction.
    ///
    /// # Errors
    /// Source or database failure; [`OutboxError::CursorConflict`] when another process
    /// moved the cursor. Nothing is stored on error.
    #[tracing::instrument(skip_all, fields(flow = FLOW, source), err)]
    pub async fn try_poll_once(&mut self) -> Result<PollReport, PollError> {
        let source = self.source.source_name();
        tracing::Span::current().record("source", source.as_str());
        let mut conn = self.pool.acquire().await?;
        let cursor = load_cursor(&mut conn, &source).await?;
        let batch = self.source.read(cursor.as_ref(), &mut conn).await;
        self.control.set_capture(self.source.capture_mode());
        let batch = batch?;
        if batch.changes.is_empty() && cursor.as_ref() == Some(&batch.next_cursor) {
            return Ok(PollReport::default());
        }
        let (events, filtered) = to_events(&batch, &self.settings);
        let mut tx = conn.begin().await?;
        let advance = CursorAdvance {
            source: &source,
            expected: cursor.as_ref(),
            next: &batch.next_cursor,
        };
        // The poll's events (a run; a load too for a full snapshot) are those stored
        // after this mark.
        let mark = loads::event_mark(&mut tx).await?;
        let captured = outbox::capture(&mut tx, FLOW, &events, Some(advance), true).await?;
        if let Some(delta) = &batch.snapshot_delta {
            snapshot_store::record_hashes(&mut tx, &source, delta).await?;
        }
        let load = if batch.full_snapshot {
            Some(loads::record(&mut tx, FLOW, &source, mark).await?)
        } else {
            None
        };
        let run = if captured.inserted > 0 {
            runs::record(&mut tx, FLOW, mark).await?
        } else {
            None
        };
        tx.commit().await?;
        crate::metrics::get().captured(FLOW, captured.inserted, captured.superseded);
        let report = PollReport {
            read: batch.changes.len(),
            filtered,
            full_snapshot: batch.full_snapshot,
            captured,
            load,
            run,
        };
        log_poll(&report);
        Ok(report)
    }

    /// Polls every `poll_interval_ms` while this process holds the source's advisory
    /// lock; waits for the lock otherwise. Returns when `stop` fires.
    ///
    /// # Errors
    /// None so far: failures are logged and retried; the signature leaves room.
    pub async fn run_until_stopped(mut self, stop: CancellationToken) -> anyhow::Result<()> {
        let schedule = Schedule {
            flow: FLOW,
            source: self.source.source_name(),
            interval: Duration::from_millis(self.settings.poll_interval_ms),
            pool: self.pool.clone(),
            control: self.control.clone(),
        };
        polling::run_until_stopped(&mut self, &schedule, &stop).await;
        Ok(())
    }
}

impl<S: ChangeSource> Poll for Poller<S> {
    type Report = PollReport;
    type Error = PollError;

    fn poll_once(&mut self) -> impl Future<Output = Result<PollReport, PollError>> + Send {
        self.try_poll_once()
    }
}

/// The events of a batch, and how many changes the state filter left out. An event's
/// `source_modified_at` is the change's commit time where the source knows it (Change
/// Tracking with `sys.dm_tran_commit_table` readable), never the poll time.
#[must_use]
pub fn to_events(batch: &CaptureBatch, settings: &ChantiersSettings) -> (Vec<NewEvent>, usize) {
    let mut events = Vec::with_capacity(batch.changes.len());
    let mut filtered = 0;
    for change in batch.changes.iter().filter(|c| !c.own_write) {
        match to_event(change) {
            Some(event) if selected(&event, settings) => events.push(event),
            _ => filtered += 1,
        }
    }
    (events, filtered)
}

fn to_event(change: &Change) -> Option<NewEvent> {
    let key = if change.key.trim().is_empty() {
        EMPTY_CODE_KEY
    } else {
        change.key.trim()
    };
    let payload = match (change.operation, &change.row) {
        (Operation::Upsert, Some(row)) => payload_of(row),
        (Operation::Delete, _) => json!({ "code": key }),
        (Operation::Upsert, None) => return None,
    };
    Some(NewEvent {
        entity_key: key.to_owned(),
        source_version: change.version.clone(),
        operation: change.operation,
        payload,
        source_modified_at: change.committed_at,
    })
}

/// Deletes and invalid rows always pass (the latter to become dead letters).
fn selected(event: &NewEvent, settings: &ChantiersSettings) -> bool {
    if event.operation == Operation::Delete || event.payload.get("invalid").is_some() {
        return true;
    }
    settings.selects(event.payload.get("state").and_then(Value::as_str))
}

fn log_poll(report: &PollReport) {
    if report.full_snapshot {
        tracing::info!(
            flow = FLOW,
            read = report.read,
            captured = report.captured.inserted,
            filtered = report.filtered,
            load_id = report.load.map(|l| l.id),
            "full read of ChantierDef enqueued (initial load or resync)"
        );
    } else if report.captured.inserted > 0 {
        tracing::debug!(
            flow = FLOW,
            captured = report.captured.inserted,
            "changes captured"
        );
    }
}

async fn load_cursor(conn: &mut PgConnection, source: &str) -> Result<Option<Value>, sqlx::Error> {
    sqlx::query_scalar("SELECT position FROM batisync.cursors WHERE source = $1")
        .bind(source)
        .fetch_optional(conn)
        .await
}

#[cfg(test)]
#[path = "poller_tests.rs"]
mod tests;
