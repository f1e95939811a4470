//! Read-only queries for people: status, listings, one event in full.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::OutboxError;

/// One line of the backlog: events of a flow in one status.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct BacklogLine {
    pub flow: String,
    pub status: String,
    pub events: i64,
    pub oldest_captured_at: Option<DateTime<Utc>>,
    pub oldest_age_seconds: Option<f64>,
}

/// Backlog per flow and status (pending, in flight, dead), from the `backlog` view.
///
/// # Errors
/// Database errors.
pub async fn backlog(pool: &PgPool) -> Result<Vec<BacklogLine>, OutboxError> {
    Ok(sqlx::query_as(
        "SELECT flow, status, events, oldest_captured_at, \
                extract(epoch FROM oldest_age)::float8 AS oldest_age_seconds \
         FROM batisync.backlog ORDER BY flow, status",
    )
    .fetch_all(pool)
    .await?)
}

/// A row of an outbox listing.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct EventSummary {
    pub id: i64,
    pub flow: String,
    pub entity_key: String,
    pub operation: String,
    pub status: String,
    pub attempts: i32,
    pub captured_at: DateTime<Utc>,
    pub next_attempt_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub outcome: Option<String>,
}

/// Filters of [`list`]; `None` means any.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub flow: Option<String>,
    pub status: Option<String>,
    pub key: Option<String>,
    /// Only events with an id below this one (for paging backwards).
    pub before_id: Option<i64>,
    pub limit: i64,
}

/// Newest events first, filtered.
///
/// # Errors
/// Database errors.
pub async fn list(pool: &PgPool, filter: &ListFilter) -> Result<Vec<EventSummary>, OutboxError> {
    Ok(sqlx::query_as(
        "SELECT id, flow, entity_key, operation, status, attempts, captured_at, next_attempt_at, \
                finished_at, last_error, outcome \
         FROM batisync.events \
         WHERE ($1::text IS NULL OR flow = $1) AND ($2::text IS NULL OR status = $2) \
           AND ($3::text IS NULL OR entity_key = $3) AND ($4::bigint IS NULL OR id < $4) \
         ORDER BY id DESC \
         LIMIT $5",
    )
    .bind(&filter.flow)
    .bind(&filter.status)
    .bind(&filter.key)
    .bind(filter.before_id)
    .bind(filter.limit.clamp(1, 10_000))
    .fetch_all(pool)
    .await?)
}

/// One failed attempt.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct FailureLine {
    pub attempt: i32,
    pub failed_at: DateTime<Utc>,
    pub kind: String,
    pub message: String,
}

/// One event with its payload and every failed attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct EventDetail {
    pub summary: EventSummary,
    pub source_version: String,
    pub payload: serde_json::Value,
    pub source_modified_at: Option<DateTime<Utc>>,
    pub locked_by: Option<String>,
    pub locked_until: Option<DateTime<Utc>>,
    pub first_attempt_at: Option<DateTime<Utc>>,
    pub superseded_by: Option<i64>,
    pub failures: Vec<FailureLine>,
}

type DetailRow = (
    String,
    serde_json::Value,
    Option<DateTime<Utc>>,
    Option<String>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    Option<i64>,
);

/// The event `id` in full, or `None` if there is no such event.
///
/// # Errors
/// Database errors.
pub async fn show(pool: &PgPool, id: i64) -> Result<Option<EventDetail>, OutboxError> {
    let filter = ListFilter {
        before_id: Some(id + 1),
        limit: 1,
        ..ListFilter::default()
    };
    let Some(summary) = list(pool, &filter).await?.into_iter().find(|e| e.id == id) else {
        return Ok(None);
    };
    let row: DetailRow = sqlx::query_as(
        "SELECT source_version, payload, source_modified_at, locked_by, locked_until, \
                first_attempt_at, superseded_by FROM batisync.events WHERE id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await?;
    let failures = sqlx::query_as(
        "SELECT attempt, failed_at, kind, message FROM batisync.outbox_failures \
         WHERE event_id = $1 ORDER BY id",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    Ok(Some(EventDetail {
        summary,
        source_version: row.0,
        payload: row.1,
        source_modified_at: row.2,
        locked_by: row.3,
        locked_until: row.4,
        first_attempt_at: row.5,
        superseded_by: row.6,
        failures,
    }))
}
