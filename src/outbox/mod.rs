//! The PostgreSQL outbox: durable capture, ordered claim, ack/fail/retry, rescue.
//!
//! - [`capture`] writes a batch of events and advances the source cursor in one
//!   transaction (guarantee 1);
//! - [`Outbox::claim`] hands out the oldest due heads of a flow: each entity key with
//!   open events has one head (its oldest open event) in the `queue` table, so two
//!   events of one key are never out to two workers at once (guarantee 2);
//!   [`Outbox::claim_runs`] hands each key out with its next events, to be applied in
//!   order by the one worker that holds them; claims carry a lease (guarantee 4);
//! - [`Outbox::record`] (or [`Outbox::ack`] / [`Outbox::fail`]) records outcomes and
//!   moves each key's head to its next event; failures retry with backoff or go dead
//!   (guarantee 5); [`Outbox::redrive`] brings dead letters back.
//!
//! Outbox rows are inserted once and then only updated in place (no index covers a
//! column that changes), which keeps status changes cheap. The SQL lives in `store`
//! (capture, claim), `record` (outcomes) and `upkeep` (rescue, re-drive, pruning); the
//! pure retry arithmetic in [`backoff`]. [`loads`] records full snapshots (initial load,
//! resync) and computes their progress from the outbox; [`runs`] records every poll
//! that captured events, for the journal's per-run summaries.

pub mod backoff;
pub mod inspect;
pub mod loads;
pub mod notify;
pub mod reason;
mod record;
pub mod runs;
mod store;
mod upkeep;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

pub use backoff::RetryPolicy;
pub use reason::{Reason, ReasonCode};
pub use store::{capture, round_trips};
pub use upkeep::RedriveReport;

/// Name of the NOTIFY channel; the payload is the flow name.
pub const NOTIFY_CHANNEL: &str = "batisync_outbox";

/// What a captured change asks the target to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    /// Create or update the entity with the payload's state.
    Upsert,
    /// The entity disappeared at the source.
    Delete,
}

impl Operation {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Upsert => "upsert",
            Self::Delete => "delete",
        }
    }

    pub(crate) fn parse(text: &str) -> Result<Self, OutboxError> {
        match text {
            "upsert" => Ok(Self::Upsert),
            "delete" => Ok(Self::Delete),
            other => Err(OutboxError::Corrupt(format!("unknown operation {other:?}"))),
        }
    }
}

/// A change read from a source, not yet stored.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// Identity of the entity in its flow (a chantier code, a time-slot id).
    pub entity_key: String,
    /// Source version of this change; (flow, key, version) is unique.
    pub source_version: String,
    pub operation: Operation,
    /// The normalised state to apply (or the key data of a delete).
    pub payload: serde_json::Value,
    /// When the source says the entity was last modified, for latest-modification-wins.
    pub source_modified_at: Option<DateTime<Utc>>,
}

/// A claimed event, handed to a dispatcher handler.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: i64,
    pub flow: String,
    pub entity_key: String,
    pub source_version: String,
    pub operation: Operation,
    pub payload: serde_json::Value,
    pub source_modified_at: Option<DateTime<Utc>>,
    /// Attempts including the current one.
    pub attempts: i32,
    pub captured_at: DateTime<Utc>,
}

/// Where a source's cursor moves to, checked against where the poller believes it was.
#[derive(Debug, Clone)]
pub struct CursorAdvance<'a> {
    /// Cursor name, usually `<flow>:<table>`.
    pub source: &'a str,
    /// The position the poller read from; `None` when it started without a cursor.
    /// A mismatch means another poller moved it, and the capture is refused.
    pub expected: Option<&'a serde_json::Value>,
    pub next: &'a serde_json::Value,
}

/// What a capture did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaptureReport {
    /// New events stored.
    pub inserted: u64,
    /// Events already captured before (same flow, key and version): ignored.
    pub duplicates: u64,
    /// Older pending events replaced by a newer one of the same key.
    pub superseded: u64,
}

/// How a failed attempt should be recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub event_id: i64,
    /// Short machine-readable kind: `transient`, `permanent`, `rate_limited`, `timeout`,
    /// `panic`, `lease_expired`.
    pub kind: &'static str,
    pub message: String,
    /// Retry after this delay, or `None` to quarantine the event as dead.
    pub retry_in: Option<std::time::Duration>,
    /// Why the event is dead (stored with the dead letter; `None` reads as
    /// [`ReasonCode::Other`]). Ignored for a retry.
    pub reason: Option<Reason>,
}

/// Errors of the outbox API.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("PostgreSQL: {0}")]
    Database(#[from] sqlx::Error),
    #[error(
        "le curseur {source_name} a été déplacé par un autre processus / cursor {source_name} was moved by another process (expected {expected}, found {found})"
    )]
    CursorConflict {
        source_name: String,
        expected: String,
        found: String,
    },
    #[error("outbox row is inconsistent: {0}")]
    Corrupt(String),
}

impl OutboxError {
    /// True when retrying later may succeed (connection lost, server restarting).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Database(e) => crate::db::is_transient(e),
            Self::CursorConflict { .. } | Self::Corrupt(_) => false,
        }
    }
}

/// Handle on the outbox tables; cheap to clone.
#[derive(Debug, Clone)]
pub struct Outbox {
    pool: PgPool,
}

impl Outbox {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}
