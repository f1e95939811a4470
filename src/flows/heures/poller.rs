//! The poller: reads BatiSimply time slots every `poll_interval_ms` and stores in the
//! outbox only the slots that are new, changed or gone since the last capture, with the
//! cursor and the capture hashes, in one transaction.
//!
//! Reads: the whole watched window (`days_back` before now to `days_ahead` after, in
//! windows the API accepts) on the first poll and every `deletion_sweep_secs`; in
//! between, with `batisimply.timeslot_modified_since_param` set, the slots modified
//! since the previous read (minus `overlap_secs`; such an answer cannot show deleted
//! slots), otherwise the recent part of the window (`recent_days` before now to
//! `days_ahead` after). A slot missing from a window read is a delete only when
//! its start lies inside that window by more than `overlap_secs`, and only when every
//! record of the answer could be identified.
//!
//! Only the process holding the source's advisory lock polls; it also keeps the
//! employee map fresh and re-drives dead letters whose missing link appeared.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use super::FLOW;
use super::batigest::{EmployeeDirectory, EmployeeSource};
use super::redrive::redrive_resolved;
use super::settings::HeuresSettings;
use super::slot::SlotPayload;
use super::store::{self, CaptureRow};
use crate::batigest::EmployeeMap;
use crate::batisimply::{BatisimplyClient, BatisimplyError, Listing, RecordError, TimeSlot};
use crate::control::{FlowControl, FlowControls};
use crate::flows::polling::{self, Poll, Schedule};
use crate::outbox::loads::{self, LoadStarted};
use crate::outbox::runs::{self, RunStarted};
use crate::outbox::{self, CaptureReport, CursorAdvance, NewEvent, Operation, Outbox, OutboxError};

/// Cursor name of the time-slot source in `batisync.cursors`.
pub const SOURCE: &str = "batisimply:timeSlots";

/// Rejected records logged one by one per poll (the rest are counted).
const REJECTED_LOGGED: usize = 10;

/// Why a poll failed; the poller logs it and tries again at the next interval.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("lecture BatiSimply / BatiSimply read: {0}")]
    Api(#[from] BatisimplyError),
    #[error("outbox: {0}")]
    Outbox(#[from] OutboxError),
    #[error("PostgreSQL: {0}")]
    Database(#[from] sqlx::Error),
}

/// What one poll did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollReport {
    /// A window was read (deletes can be seen inside it): the recent part of the
    /// watched window, or all of it.
    pub window_read: bool,
    /// The whole watched window was read.
    pub full_read: bool,
    /// Slots read.
    pub read: usize,
    /// Records of the answer that could not be read (reported, not captured).
    pub rejected: Vec<RecordError>,
    /// Slots new or changed since their last capture.
    pub changed: usize,
    /// Slots gone from the watched window.
    pub vanished: usize,
    /// What the outbox stored.
    pub captured: CaptureReport,
    /// The load recorded by a first full read (first run, resync; its progress:
    /// [`loads::latest`]).
    pub load: Option<LoadStarted>,
    /// The run recorded when the poll stored events (its figures: [`runs::recent`]).
    pub run: Option<RunStarted>,
}

/// What one poll reads.
#[derive(Debug, Clone, Copy)]
enum Read {
    /// Slots modified since this instant.
    Since(DateTime<Utc>),
    /// Slots starting in `range`; `full`: the whole watched window.
    Window {
        range: (DateTime<Utc>, DateTime<Utc>),
        full: bool,
    },
}

/// Where the reads stand.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct PollCursor {
    /// Start of the previous read.
    since: Option<DateTime<Utc>>,
    /// Start of the previous whole-window read.
    swept_at: Option<DateTime<Utc>>,
}

/// Polls BatiSimply time slots into the outbox.
pub struct Poller<E> {
    client: BatisimplyClient,
    outbox: Outbox,
    settings: Arc<HeuresSettings>,
    employees: Arc<EmployeeDirectory<E>>,
    /// The employee map the last re-drive pass used, and when it ran.
    redriven_with: Option<(Arc<EmployeeMap>, std::time::Instant)>,
    /// Pause, "sync now" and poll status shared with the console.
    control: Arc<FlowControl>,
}

impl<E: EmployeeSource> Poller<E> {
    pub fn new(
        client: BatisimplyClient,
        pool: PgPool,
        settings: Arc<HeuresSettings>,
        employees: Arc<EmployeeDirectory<E>>,
    ) -> Self {
        Self {
            client,
            outbox: Outbox::new(pool),
            settings,
            employees,
            redriven_with: None,
            control: FlowControls::default().flow(FLOW),
        }
    }

    /// Obeys (and reports to) the given flow control instead of a private one.
    #[must_use]
    pub fn with_control(mut self, control: Arc<FlowControl>) -> Self {
        self.control = control;
        self
    }

    fn pool(&self) -> &PgPool {
        self.outbox.pool()
    }

    /// One read and capture (see the module documentation).
    ///
    /// # Errors
    /// API or database failure; [`OutboxError::CursorConflict`] when another process
    /// moved the cursor. Nothing is stored on error.
    #[tracing::instrument(skip_all, fields(flow = FLOW), err)]
    pub async fn try_poll_once(&mut self) -> Result<PollReport, PollError> {
        let mut conn = self.pool().acquire().await?;
        let stored: Option<Value> = load_cursor(&mut conn).await?;
        let cursor: PollCursor = stored
            .as_ref()
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default();
        let started = Utc::now();
        let settings = &self.settings;
        let window = (
            started - TimeDelta::days(i64::from(settings.days_back)),
            started + TimeDelta::days(i64::from(settings.days_ahead)),
        );
        let overlap = TimeDelta::seconds(i64::try_from(settings.overlap_secs).unwrap_or(0));
        let sweep_every =
            TimeDelta::seconds(i64::try_from(settings.deletion_sweep_secs).unwrap_or(i64::MAX));
        let sweep_due = cursor
            .swept_at
            .is_none_or(|swept| started - swept >= sweep_every);
        let recent_from = started - TimeDelta::days(i64::from(settings.recent_days));
        let read = match cursor.since {
            Some(since) if !sweep_due && self.client.supports_modified_since() => {
                Read::Since(since - overlap)
            }
            _ if !sweep_due && recent_from > window.0 => Read::Window {
                range: (recent_from, window.1),
                full: false,
            },
            _ => Read::Window {
                range: window,
                full: true,
            },
        };
        let listing = match read {
            Read::Since(since) => self.client.list_time_slots_modified_since(since).await?,
            Read::Window { range, .. } => self.client.list_time_slots(range.0, range.1).await?,
        };
        let watched = match read {
            Read::Since(_) => None,
            Read::Window { range, .. } => Some(range),
        };
        let mut report = PollReport {
            window_read: watched.is_some(),
            full_read: matches!(read, Read::Window { full: true, .. }),
            read: listing.records.len(),
            ..PollReport::default()
        };
        let (events, rows, vanished) = self
            .changes(&mut conn, &listing, watched, overlap, &mut report, started)
            .await?;
        let next = json!(PollCursor {
            since: Some(started),
            swept_at: if report.full_read {
                Some(started)
            } else {
                cursor.swept_at
            },
        });
        let mut tx = conn.begin().await?;
        let advance = CursorAdvance {
            source: SOURCE,
            expected: stored.as_ref(),
            next: &next,
        };
        // The poll's events are those stored after this mark: a run when there are
        // any, and a load without a cursor (first run, resync: the whole window).
        let mark = loads::event_mark(&mut tx).await?;
        report.captured = outbox::capture(&mut tx, FLOW, &events, Some(advance), true).await?;
        store::record_captures(&mut tx, &rows, &vanished).await?;
        if report.full_read {
            store::forget_captures_before(&mut tx, window.0 - overlap).await?;
        }
        if stored.is_none() {
            report.load = Some(loads::record(&mut tx, FLOW, SOURCE, mark).await?);
        }
        if report.captured.inserted > 0 {
            report.run = runs::record(&mut tx, FLOW, mark).await?;
        }
        tx.commit().await?;
        let metrics = crate::metrics::get();
        metrics.captured(FLOW, report.captured.inserted, report.captured.superseded);
        metrics.rejected(FLOW, report.rejected.len() as u64);
        log_poll(&report);
        Ok(report)
    }

    /// Compares the answer with the last captures: events, capture rows, vanished ids.
    async fn changes(
        &self,
        conn: &mut PgConnection,
        listing: &Listing<TimeSlot>,
        watched: Option<(DateTime<Utc>, DateTime<Utc>)>,
        overlap: TimeDelta,
        report: &mut PollReport,
        now: DateTime<Utc>,
    ) -> Result<(Vec<NewEvent>, Vec<CaptureRow>, Vec<String>), PollError> {
        let ids: Vec<&str> = listing.records.iter().map(|s| s.id.as_str()).collect();
        let known = store::captured_hashes(conn, &ids).await?;
        let stamp = now.timestamp_millis();
        let mut events = Vec::new();
        let mut rows = Vec::new();
        for slot in &listing.records {
            let payload = SlotPayload::from(slot);
            let hash = payload.content_hash();
            if known.get(&slot.id) == Some(&hash) {
                continue;
            }
            rows.push(CaptureRow {
                slot_id: slot.id.clone(),
                content_hash: hash.clone(),
                slot_start: slot.start,
                user_id: slot.user_id.clone(),
                project_code: payload.project_code().map(str::to_owned),
                status: payload.status.clone(),
            });
            events.push(NewEvent {
                entity_key: slot.id.clone(),
                source_version: format!("{stamp}:{}", &hash[..16]),
                operation: Operation::Upsert,
                source_modified_at: Some(slot.last_modified.unwrap_or(now)),
                payload: json!(payload),
            });
        }
        report.changed = events.len();
        report.rejected.clone_from(&listing.rejected);
        let mut vanished = Vec::new();
        if let Some(window) = watched {
            if listing.rejected.iter().any(|r| r.record_id.is_none()) {
                tracing::warn!(
                    flow = FLOW,
                    "some time slots could not even be identified: no slot is taken as deleted in this poll"
                );
            } else {
                let present: HashSet<&str> = ids
                    .iter()
                    .copied()
                    .chain(
                        listing
                            .rejected
                            .iter()
                            .filter_map(|r| r.record_id.as_deref()),
                    )
                    .collect();
                let watched =
                    store::captured_between(conn, window.0 + overlap, window.1 - overlap).await?;
                vanished = watched
                    .into_iter()
                    .filter(|c| !present.contains(c.slot_id.as_str()))
                    .map(|c| c.slot_id)
                    .collect();
            }
        }
        report.vanished = vanished.len();
        events.extend(vanished.iter().map(|id| NewEvent {
            entity_key: id.clone(),
            source_version: format!("{stamp}:deleted"),
            operation: Operation::Delete,
            source_modified_at: Some(now),
            payload: json!({ "id": id }),
        }));
        Ok((events, rows, vanished))
    }

    /// Reads the employee map again when due and, when it changed (or at least every
    /// `employee_refresh_secs`, for chantier codes), re-drives the dead letters whose
    /// missing link now exists (run by [`Self::run_until_stopped`] after each poll).
    pub async fn refresh_and_redrive(&mut self) {
        let map = match self.employees.get().await {
            Ok(map) => map,
            Err(error) => {
                tracing::warn!(flow = FLOW, %error, "cannot read Salarie (employee map)");
                return;
            }
        };
        let every = Duration::from_secs(self.settings.employee_refresh_secs);
        if self
            .redriven_with
            .as_ref()
            .is_some_and(|(previous, at)| Arc::ptr_eq(previous, &map) && at.elapsed() < every)
        {
            return;
        }
        match redrive_resolved(&self.outbox, &map, &self.client).await {
            Ok(_) => self.redriven_with = Some((map, std::time::Instant::now())),
            Err(error) => tracing::warn!(flow = FLOW, %error, "automatic re-drive failed"),
        }
    }

    /// Polls every `poll_interval_ms` while this process holds the source's advisory
    /// lock (refreshing the employee map and re-driving after each poll); waits for the
    /// lock otherwise. Returns when `stop` fires.
    ///
    /// # Errors
    /// None so far: failures are logged and retried.
    pub async fn run_until_stopped(mut self, stop: CancellationToken) -> anyhow::Result<()> {
        let schedule = Schedule {
            flow: FLOW,
            source: SOURCE.to_owned(),
            interval: Duration::from_millis(self.settings.poll_interval_ms),
            pool: self.pool().clone(),
            control: self.control.clone(),
        };
        polling::run_until_stopped(&mut self, &schedule, &stop).await;
        Ok(())
    }
}

impl<E: EmployeeSource> Poll for Poller<E> {
    type Report = PollReport;
    type Error = PollError;

    fn poll_once(&mut self) -> impl Future<Output = Result<PollReport, PollError>> + Send {
        self.try_poll_once()
    }

    fn after_poll(&mut self) -> impl Future<Output = ()> + Send {
        self.refresh_and_redrive()
    }
}

fn log_poll(report: &PollReport) {
    for rejected in report.rejected.iter().take(REJECTED_LOGGED) {
        tracing::warn!(
            flow = FLOW,
            slot = rejected.record_id.as_deref().unwrap_or("?"),
            field = %rejected.field,
            reason = %rejected.reason,
            "créneau illisible, ignoré jusqu'à correction / unreadable time slot, skipped until fixed"
        );
    }
    if report.rejected.len() > REJECTED_LOGGED {
        tracing::warn!(
            flow = FLOW,
            more = report.rejected.len() - REJECTED_LOGGED,
            "more unreadable time slots"
        );
    }
    if report.captured.inserted > 0 {
        tracing::info!(
            flow = FLOW,
            read = report.read,
            changed = report.changed,
            vanished = report.vanished,
            captured = report.captured.inserted,
            "time slots captured"
        );
    }
}

async fn load_cursor(conn: &mut PgConnection) -> Result<Option<Value>, sqlx::Error> {
    sqlx::query_scalar("SELECT position FROM batisync.cursors WHERE source = $1")
        .bind(SOURCE)
        .fetch_optional(conn)
        .await
}
