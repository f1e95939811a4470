//! `batisync.conflicts`: every latest-modification-wins decision where both sides had
//! changed, whichever flow made it.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;

/// A latest-modification-wins decision where both sides had changed.
#[derive(Debug, Clone)]
pub struct Conflict<'a> {
    /// Flow that decided.
    pub flow: &'a str,
    /// Entity key in the flow (chantier code, slot id).
    pub key: &'a str,
    pub event_id: i64,
    /// `source` (the flow's source won) or `target` (the target's version was kept).
    pub winner: &'static str,
    /// The rule that decided, for people.
    pub rule: &'static str,
    pub source_modified_at: Option<DateTime<Utc>>,
    pub target_modified_at: Option<DateTime<Utc>>,
    pub source_state: Value,
    pub target_state: Value,
}

/// Records a conflict and counts it in the metrics.
///
/// # Errors
/// Database errors.
#[tracing::instrument(skip_all, fields(flow = c.flow, key = c.key, winner = c.winner), err)]
pub async fn record_conflict(pool: &PgPool, c: &Conflict<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO batisync.conflicts
             (flow, entity_key, event_id, winner, rule, source_modified_at, target_modified_at,
              source_state, target_state)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(c.flow)
    .bind(c.key)
    .bind(c.event_id)
    .bind(c.winner)
    .bind(c.rule)
    .bind(c.source_modified_at)
    .bind(c.target_modified_at)
    .bind(&c.source_state)
    .bind(&c.target_state)
    .execute(pool)
    .await?;
    crate::metrics::get().conflict(c.flow, c.winner);
    Ok(())
}
