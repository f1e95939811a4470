//! The SQL behind the console pages. Every statement is parameterised; "today" is the
//! calendar day in `Europe/Paris`, computed by PostgreSQL.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::outbox::inspect::{self, BacklogLine};

/// Time zone of "today" on the dashboard (the offices using Batigest).
pub const OFFICE_TIME_ZONE: &str = "Europe/Paris";

/// Per-flow figures of the dashboard, from the database.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FlowFigures {
    /// Events not delivered yet (waiting, pending, in flight).
    pub backlog: i64,
    /// Age of the oldest of them, in seconds.
    pub oldest_pending_age_seconds: Option<f64>,
    pub delivered_today: i64,
    pub last_delivery_at: Option<DateTime<Utc>>,
    pub dead_letters: i64,
    pub conflicts_today: i64,
    /// The most recent failed attempt of the last day: when and why.
    pub last_failure: Option<(DateTime<Utc>, String)>,
    /// Backlog lines as `batisync status` prints them.
    pub by_status: Vec<(String, i64)>,
}

/// Figures of every flow the database knows, by flow name.
///
/// # Errors
/// Database errors.
pub async fn flow_figures(pool: &PgPool) -> Result<BTreeMap<String, FlowFigures>, sqlx::Error> {
    let mut flows: BTreeMap<String, FlowFigures> = BTreeMap::new();
    let backlog = inspect::backlog(pool).await.map_err(|e| match e {
        crate::outbox::OutboxError::Database(e) => e,
        other => sqlx::Error::Protocol(other.to_string()),
    })?;
    for BacklogLine {
        flow,
        status,
        events,
        oldest_age_seconds,
        ..
    } in backlog
    {
        let f = flows.entry(flow).or_default();
        f.by_status.push((status.clone(), events));
        if status == "dead" {
            f.dead_letters += events;
        } else {
            f.backlog += events;
            f.oldest_pending_age_seconds = match (f.oldest_pending_age_seconds, oldest_age_seconds)
            {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
        }
    }
    // Captured in the last two days: the BRIN index on captured_at bounds the scan.
    let delivered: Vec<(String, i64, Option<DateTime<Utc>>)> = sqlx::query_as(
        "SELECT flow, count(*) FILTER (WHERE finished_at >= date_trunc('day', now() AT TIME ZONE $1) AT TIME ZONE $1), \
                max(finished_at) \
         FROM batisync.outbox \
         WHERE captured_at > now() - interval '2 days' AND status = 'done' \
         GROUP BY flow",
    )
    .bind(OFFICE_TIME_ZONE)
    .fetch_all(pool)
    .await?;
    for (flow, today, last) in delivered {
        let f = flows.entry(flow).or_default();
        f.delivered_today = today;
        f.last_delivery_at = last;
    }
    let conflicts: Vec<(String, i64)> = sqlx::query_as(
        "SELECT flow, count(*) FROM batisync.conflicts \
         WHERE decided_at >= date_trunc('day', now() AT TIME ZONE $1) AT TIME ZONE $1 GROUP BY flow",
    )
    .bind(OFFICE_TIME_ZONE)
    .fetch_all(pool)
    .await?;
    for (flow, n) in conflicts {
        flows.entry(flow).or_default().conflicts_today = n;
    }
    let failures: Vec<(String, DateTime<Utc>, String)> = sqlx::query_as(
        "SELECT DISTINCT ON (o.flow) o.flow, f.failed_at, f.message \
         FROM batisync.outbox_failures f JOIN batisync.outbox o ON o.id = f.event_id \
         WHERE f.failed_at > now() - interval '1 day' \
         ORDER BY o.flow, f.id DESC",
    )
    .fetch_all(pool)
    .await?;
    for (flow, at, message) in failures {
        flows.entry(flow).or_default().last_failure = Some((at, message));
    }
    Ok(flows)
}

/// Filters of the activity table; empty strings mean "any".
#[derive(Debug, Clone, Default, serde::Deserialize, Serialize)]
#[serde(default)]
pub struct ActivityFilter {
    pub flow: String,
    pub status: String,
    pub key: String,
    /// `YYYY-MM-DD`, inclusive, office time.
    pub from: String,
    /// `YYYY-MM-DD`, inclusive, office time.
    pub to: String,
    /// Searched in the last error and every failed attempt's message.
    pub q: String,
    /// Only events older than this id (next page).
    pub before: Option<i64>,
}

/// Rows per activity page.
pub const PAGE_SIZE: i64 = 50;

/// A row of the activity table.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct ActivityRow {
    pub id: i64,
    pub flow: String,
    pub entity_key: String,
    pub operation: String,
    pub status: String,
    pub attempts: i32,
    pub captured_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub outcome: Option<String>,
}

fn blank(s: &str) -> Option<&str> {
    let s = s.trim();
    (!s.is_empty()).then_some(s)
}

/// `%text%` for ILIKE, with the pattern characters escaped.
fn contains_pattern(text: &str) -> String {
    let escaped = text
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

fn day(text: &str) -> Option<chrono::NaiveDate> {
    blank(text).and_then(|t| chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d").ok())
}

/// One page of events, newest first (one more row than a page tells whether another
/// page exists).
///
/// # Errors
/// Database errors.
pub async fn activity(pool: &PgPool, f: &ActivityFilter) -> Result<Vec<ActivityRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, flow, entity_key, operation, status, attempts, captured_at, finished_at, \
                last_error, outcome \
         FROM batisync.events e \
         WHERE ($1::text IS NULL OR flow = $1) \
           AND ($2::text IS NULL OR status = $2) \
           AND ($3::text IS NULL OR entity_key = $3) \
           AND ($4::date IS NULL OR captured_at >= $4::date::timestamp AT TIME ZONE $8) \
           AND ($5::date IS NULL OR captured_at < ($5::date + 1)::timestamp AT TIME ZONE $8) \
           AND ($6::text IS NULL OR last_error ILIKE $6 OR EXISTS ( \
                SELECT 1 FROM batisync.outbox_failures f WHERE f.event_id = e.id AND f.message ILIKE $6)) \
           AND ($7::bigint IS NULL OR id < $7) \
         ORDER BY id DESC \
         LIMIT $9",
    )
    .bind(blank(&f.flow))
    .bind(blank(&f.status))
    .bind(blank(&f.key))
    .bind(day(&f.from))
    .bind(day(&f.to))
    .bind(blank(&f.q).map(contains_pattern))
    .bind(f.before)
    .bind(OFFICE_TIME_ZONE)
    .bind(PAGE_SIZE + 1)
    .fetch_all(pool)
    .await
}

/// Where an event's entity lives in the target (the `links` row).
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct TargetLink {
    pub target_id: Option<String>,
    pub last_event_id: Option<i64>,
    pub last_source_version: Option<String>,
    pub target_modified_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

/// The target identity of `key` in `flow`, if it was ever written.
///
/// # Errors
/// Database errors.
pub async fn target_link(
    pool: &PgPool,
    flow: &str,
    key: &str,
) -> Result<Option<TargetLink>, sqlx::Error> {
    sqlx::query_as(
        "SELECT target_id, last_event_id, last_source_version, target_modified_at, updated_at \
         FROM batisync.links WHERE flow = $1 AND source_key = $2",
    )
    .bind(flow)
    .bind(key)
    .fetch_optional(pool)
    .await
}

/// A dead letter, for the "À traiter" page.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct DeadLetter {
    pub id: i64,
    pub flow: String,
    pub entity_key: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub dead_since: DateTime<Utc>,
    /// The stored reason code ([`crate::outbox::ReasonCode`]) and its parameters.
    pub reason: String,
    pub reason_params: serde_json::Value,
}

impl DeadLetter {
    /// The stored reason, typed.
    #[must_use]
    pub fn reason(&self) -> crate::outbox::Reason {
        crate::outbox::Reason::from_stored(&self.reason, Some(&self.reason_params))
    }
}

/// Dead letters, oldest first, at most `limit`.
///
/// # Errors
/// Database errors.
pub async fn dead_letters(pool: &PgPool, limit: i64) -> Result<Vec<DeadLetter>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, flow, entity_key, attempts, last_error, dead_since, reason, reason_params \
         FROM batisync.dead_letters ORDER BY id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// A latest-modification-wins decision.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct Conflict {
    pub id: i64,
    pub flow: String,
    pub entity_key: String,
    pub event_id: Option<i64>,
    pub decided_at: DateTime<Utc>,
    pub winner: String,
    pub rule: String,
    pub source_modified_at: Option<DateTime<Utc>>,
    pub target_modified_at: Option<DateTime<Utc>>,
    pub source_state: Option<serde_json::Value>,
    pub target_state: Option<serde_json::Value>,
}

/// The most recent conflicts, optionally of one event.
///
/// # Errors
/// Database errors.
pub async fn conflicts(
    pool: &PgPool,
    event_id: Option<i64>,
    limit: i64,
) -> Result<Vec<Conflict>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, flow, entity_key, event_id, decided_at, winner, rule, source_modified_at, \
                target_modified_at, source_state, target_state \
         FROM batisync.conflicts WHERE ($1::bigint IS NULL OR event_id = $1) \
         ORDER BY decided_at DESC, id DESC LIMIT $2",
    )
    .bind(event_id)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Progress of a full re-read: the flow's events captured since the request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResyncProgress {
    pub requested_at: Option<DateTime<Utc>>,
    pub total: i64,
    pub finished: i64,
    pub dead: i64,
    /// Every captured event is finished (and at least one was captured).
    pub complete: bool,
    pub summary: String,
}

/// Counts of the events of `flow` captured since `since`.
///
/// # Errors
/// Database errors.
pub async fn resync_progress(
    pool: &PgPool,
    flow: &str,
    since: DateTime<Utc>,
) -> Result<(i64, i64, i64), sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE status IN ('done', 'superseded', 'dead')), \
                count(*) FILTER (WHERE status = 'dead') \
         FROM batisync.outbox WHERE flow = $1 AND captured_at >= $2",
    )
    .bind(flow)
    .bind(since)
    .fetch_one(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_text_cannot_inject_like_wildcards() {
        assert_eq!(contains_pattern("50%_x"), "%50\\%\\_x%");
    }
}
