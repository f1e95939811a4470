//! Runs: each poll that captured at least one event, recorded with its events, and the
//! per-run summaries the console's journal shows.
//!
//! A poller takes [`super::loads::event_mark`] in its capture transaction before the
//! capture and calls [`record`] after it (the same pattern as full loads). The run's
//! events are the flow's outbox rows in an id range; their statuses, failed attempts
//! and conflicts give the figures, computed in SQL when the journal asks.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use super::OutboxError;

/// A run just recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct RunStarted {
    pub id: i64,
    /// Events the poll stored.
    pub total: i64,
}

/// Records the run of a poll in its transaction: the rows of `flow` stored after `mark`
/// (see [`super::loads::event_mark`]). A poll that stored nothing records no run and
/// gives `None`.
///
/// # Errors
/// Database errors.
#[tracing::instrument(skip_all, fields(flow), err)]
pub async fn record(
    conn: &mut PgConnection,
    flow: &str,
    mark: i64,
) -> Result<Option<RunStarted>, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO batisync.runs (flow, total, first_event_id, last_event_id)
         SELECT $1, count(*), min(id), max(id)
         FROM batisync.outbox WHERE flow = $1 AND id > $2
         HAVING count(*) > 0
         RETURNING id, total",
    )
    .bind(flow)
    .bind(mark)
    .fetch_optional(conn)
    .await
}

/// What became of the events of one run.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow, serde::Serialize)]
pub struct RunSummary {
    pub id: i64,
    pub flow: String,
    pub started_at: DateTime<Utc>,
    /// Events the poll stored.
    pub total: i64,
    /// Delivered (events pruned from the outbox count here: only finished ones are).
    pub ok: i64,
    /// Replaced by a newer state of the same entity before delivery.
    pub superseded: i64,
    /// Failed attempts that were tried again (every failure but the last of a dead
    /// letter).
    pub retried: i64,
    pub dead: i64,
    /// Latest-modification-wins decisions taken on the run's events.
    pub conflicts: i64,
    /// Still waiting, pending or in flight.
    pub open: i64,
    /// Seconds from the capture to the last event finished; `None` while events are open.
    pub duration_s: Option<f64>,
}

impl RunSummary {
    /// The run's duration, once none of its events is open.
    #[must_use]
    pub fn duration(&self) -> Option<Duration> {
        self.duration_s.map(|s| Duration::from_secs_f64(s.max(0.0)))
    }
}

/// Which runs to list; empty strings mean "any".
#[derive(Debug, Clone, Default)]
pub struct RunFilter<'a> {
    /// Exactly this flow.
    pub flow: &'a str,
    /// Text found in the flow name, or in the entity key or last error of one of the
    /// run's events.
    pub text: &'a str,
    /// At most this many runs, newest first.
    pub limit: i64,
}

const RECENT_RUNS: &str = r#"
SELECT r.id, r.flow, r.started_at, r.total,
       s.done + greatest(r.total - s.present, 0) AS ok,
       s.superseded,
       greatest(f.failures - s.dead, 0) AS retried,
       s.dead, c.conflicts, s.open,
       CASE WHEN s.open = 0
            THEN extract(epoch FROM greatest(coalesce(s.last_finished, r.started_at) - r.started_at,
                                             interval '0'))::float8
       END AS duration_s
FROM batisync.runs r
CROSS JOIN LATERAL (
    SELECT count(*) AS present,
           count(*) FILTER (WHERE o.status = 'done') AS done,
           count(*) FILTER (WHERE o.status = 'superseded') AS superseded,
           count(*) FILTER (WHERE o.status = 'dead') AS dead,
           count(*) FILTER (WHERE o.status IN ('waiting', 'pending')) AS open,
           max(o.finished_at) AS last_finished
    FROM batisync.outbox o
    WHERE o.flow = r.flow AND o.id BETWEEN r.first_event_id AND r.last_event_id
) s
CROSS JOIN LATERAL (
    SELECT count(*) AS failures
    FROM batisync.outbox_failures fl JOIN batisync.outbox o ON o.id = fl.event_id
    WHERE fl.event_id BETWEEN r.first_event_id AND r.last_event_id AND o.flow = r.flow
) f
CROSS JOIN LATERAL (
    SELECT count(*) AS conflicts FROM batisync.conflicts cf
    WHERE cf.event_id BETWEEN r.first_event_id AND r.last_event_id AND cf.flow = r.flow
) c
WHERE ($1::text IS NULL OR r.flow = $1)
  AND ($2::text IS NULL OR r.flow ILIKE $2 OR EXISTS (
        SELECT 1 FROM batisync.outbox o
        WHERE o.flow = r.flow AND o.id BETWEEN r.first_event_id AND r.last_event_id
          AND (o.entity_key ILIKE $2 OR o.last_error ILIKE $2)))
ORDER BY r.id DESC
LIMIT $3
"#;

/// The most recent runs matching `filter`, newest first, with their figures.
///
/// # Errors
/// Database errors.
pub async fn recent(pool: &PgPool, filter: &RunFilter<'_>) -> Result<Vec<RunSummary>, OutboxError> {
    let flow = Some(filter.flow.trim()).filter(|f| !f.is_empty());
    let text = Some(filter.text.trim())
        .filter(|t| !t.is_empty())
        .map(contains_pattern);
    Ok(sqlx::query_as(RECENT_RUNS)
        .bind(flow)
        .bind(text)
        .bind(filter.limit)
        .fetch_all(pool)
        .await?)
}

/// Deletes the runs started before `retention` ago (their events are pruned by then);
/// returns how many.
///
/// # Errors
/// Database errors.
pub async fn prune(pool: &PgPool, retention: Duration) -> Result<u64, OutboxError> {
    Ok(
        sqlx::query(
            "DELETE FROM batisync.runs WHERE started_at < now() - $1 * interval '1 second'",
        )
        .bind(retention.as_secs() as f64)
        .execute(pool)
        .await?
        .rows_affected(),
    )
}

/// `%text%` for ILIKE, with the pattern characters escaped.
fn contains_pattern(text: &str) -> String {
    let escaped = text
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_text_is_matched_literally() {
        assert_eq!(contains_pattern("a%b_c\\"), "%a\\%b\\_c\\\\%");
    }

    #[test]
    fn a_run_has_a_duration_only_once_finished() {
        let mut run = RunSummary {
            id: 1,
            flow: "f".into(),
            started_at: Utc::now(),
            total: 2,
            ok: 1,
            superseded: 0,
            retried: 0,
            dead: 0,
            conflicts: 0,
            open: 1,
            duration_s: None,
        };
        assert_eq!(run.duration(), None);
        run.duration_s = Some(2.5);
        assert_eq!(run.duration(), Some(Duration::from_millis(2_500)));
    }
}
