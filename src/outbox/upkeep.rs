//! Outbox upkeep: lease rescue, supersede, re-drive of dead letters, pruning.

use std::time::Duration;

use super::{NOTIFY_CHANNEL, Outbox, OutboxError};

/// Claimed heads whose lease ran out are due again. The attempt they used is counted
/// (a hanging handler or a crashed worker costs one retry) and logged; the rest of
/// the run is due again too, without a counted attempt. Rows locked by
/// someone else (the worker acking right now) are skipped.
const RESCUE: &str = r#"
WITH expired AS (
    SELECT flow, entity_key, claimed_at FROM batisync.queue
    WHERE locked_by IS NOT NULL AND locked_until < now()
    ORDER BY flow, entity_key
    FOR UPDATE SKIP LOCKED
),
freed AS (
    UPDATE batisync.queue q
    SET locked_by = NULL, locked_until = NULL, claimed_at = NULL, run_end = NULL,
        next_attempt_at = now()
    FROM expired e WHERE q.flow = e.flow AND q.entity_key = e.entity_key
    RETURNING q.event_id, q.flow, e.claimed_at
),
r AS (
    UPDATE batisync.outbox o
    SET status = 'pending', attempts = o.attempts + 1, next_attempt_at = now(),
        first_attempt_at = coalesce(o.first_attempt_at, freed.claimed_at),
        last_error = 'lease expired: the worker crashed, hung or lost its connection'
    FROM freed WHERE o.id = freed.event_id AND o.status IN ('waiting', 'pending')
    RETURNING o.id, o.attempts, o.last_error
),
log AS (
    INSERT INTO batisync.outbox_failures (event_id, attempt, kind, message)
    SELECT id, attempts, 'lease_expired', last_error FROM r
),
note AS (
    SELECT pg_notify($1, flow) FROM (SELECT DISTINCT flow FROM freed) f
)
SELECT (SELECT count(*) FROM r), (SELECT count(*) FROM note)
"#;

/// Older waiting events of one key become superseded by the newest one (the key's
/// head and claimed run, possibly being delivered, are left alone).
const SUPERSEDE: &str = r#"
WITH newest AS (
    SELECT max(id) AS id FROM batisync.outbox
    WHERE flow = $1 AND entity_key = $2 AND status = 'waiting'
)
UPDATE batisync.outbox o
SET status = 'superseded', superseded_by = newest.id, finished_at = now(),
    outcome = 'superseded by event ' || newest.id
FROM newest
WHERE o.flow = $1 AND o.entity_key = $2 AND o.status = 'waiting' AND o.id < newest.id
  AND NOT EXISTS (SELECT 1 FROM batisync.queue q
                  WHERE q.flow = $1 AND q.entity_key = $2
                    AND o.id BETWEEN q.event_id AND coalesce(q.run_end, q.event_id))
"#;

/// Dead letters go back to the queue with a fresh attempt budget, unless a newer event
/// of the same key exists (delivered, open, or re-driven in the same call):
/// re-applying older state over newer state would break per-key order, so those are
/// superseded. A key that meanwhile has a head again also supersedes its dead letter.
const REDRIVE: &str = r#"
WITH chosen AS (
    SELECT o.id, o.flow, o.entity_key
    FROM batisync.dead_events d JOIN batisync.outbox o ON o.id = d.event_id
    WHERE ($1::bigint[] IS NOT NULL AND d.event_id = ANY($1))
       OR ($1::bigint[] IS NULL AND ($2::text IS NULL OR d.flow = $2))
),
decided AS (
    SELECT c.id, c.flow, c.entity_key,
           (SELECT max(n.id) FROM batisync.outbox n
            WHERE n.flow = c.flow AND n.entity_key = c.entity_key AND n.id > c.id
              AND (n.status IN ('waiting', 'pending', 'done')
                   OR n.id IN (SELECT id FROM chosen))) AS newer
    FROM chosen c
),
undead AS (
    DELETE FROM batisync.dead_events d USING decided WHERE d.event_id = decided.id
),
heads AS (
    INSERT INTO batisync.queue (flow, entity_key, event_id, position)
    SELECT flow, entity_key, id, id FROM decided WHERE newer IS NULL
    ORDER BY flow, entity_key
    ON CONFLICT (flow, entity_key) DO NOTHING
    RETURNING event_id, flow
),
upd AS (
    UPDATE batisync.outbox o
    SET status = CASE WHEN h.event_id IS NULL THEN 'superseded' ELSE 'pending' END,
        superseded_by = d.newer,
        attempts = 0, next_attempt_at = now(),
        finished_at = CASE WHEN h.event_id IS NULL THEN now() END,
        outcome = CASE WHEN h.event_id IS NOT NULL THEN 're-driven'
                       ELSE 're-drive skipped: a newer event of this key exists' END
    FROM decided d LEFT JOIN heads h ON h.event_id = d.id
    WHERE o.id = d.id
    RETURNING o.id, o.status
),
note AS (
    SELECT pg_notify($3, flow) FROM (SELECT DISTINCT flow FROM heads) f
)
SELECT id, status FROM upd, (SELECT count(*) AS notified FROM note) n ORDER BY id
"#;

const PRUNE: &str = r#"
DELETE FROM batisync.outbox
WHERE id IN (
    SELECT id FROM batisync.outbox
    WHERE captured_at < now() - $1 * interval '1 second'
      AND status IN ('done', 'superseded') AND finished_at < now() - $1 * interval '1 second'
    LIMIT $2)
"#;

/// What a re-drive did to each requested dead letter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedriveReport {
    /// Back in the queue.
    pub requeued: Vec<i64>,
    /// Not re-applied: a newer event of the same key exists.
    pub superseded: Vec<i64>,
}

impl Outbox {
    /// Makes claimed events whose lease expired due again; returns how many.
    ///
    /// # Errors
    /// Database errors.
    pub async fn rescue_expired(&self) -> Result<u64, OutboxError> {
        let (count, _): (i64, i64) = sqlx::query_as(RESCUE)
            .bind(NOTIFY_CHANNEL)
            .fetch_one(&self.pool)
            .await?;
        if count > 0 {
            tracing::warn!(events = count, "rescued events whose lease expired");
            crate::metrics::get().rescued(count as u64);
        }
        Ok(count as u64)
    }

    /// Supersedes every waiting event of `key` but the newest; returns how many.
    ///
    /// # Errors
    /// Database errors.
    pub async fn supersede(&self, flow: &str, key: &str) -> Result<u64, OutboxError> {
        let result = sqlx::query(SUPERSEDE)
            .bind(flow)
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected())
    }

    /// Re-drives the given dead letters.
    ///
    /// # Errors
    /// Database errors.
    pub async fn redrive(&self, ids: &[i64]) -> Result<RedriveReport, OutboxError> {
        self.redrive_where(Some(ids), None).await
    }

    /// Re-drives every dead letter, of one flow or of all.
    ///
    /// # Errors
    /// Database errors.
    pub async fn redrive_all_dead(&self, flow: Option<&str>) -> Result<RedriveReport, OutboxError> {
        self.redrive_where(None, flow).await
    }

    async fn redrive_where(
        &self,
        ids: Option<&[i64]>,
        flow: Option<&str>,
    ) -> Result<RedriveReport, OutboxError> {
        let rows: Vec<(i64, String)> = sqlx::query_as(REDRIVE)
            .bind(ids)
            .bind(flow)
            .bind(NOTIFY_CHANNEL)
            .fetch_all(&self.pool)
            .await?;
        let mut report = RedriveReport::default();
        for (id, status) in rows {
            if status == "pending" {
                report.requeued.push(id);
            } else {
                report.superseded.push(id);
            }
        }
        Ok(report)
    }

    /// Deletes delivered and superseded events older than `retention`, `batch` rows per
    /// statement; returns how many.
    ///
    /// # Errors
    /// Database errors.
    pub async fn prune(&self, retention: Duration, batch: i64) -> Result<u64, OutboxError> {
        let mut total = 0;
        loop {
            let deleted = sqlx::query(PRUNE)
                .bind(retention.as_secs() as f64)
                .bind(batch)
                .execute(&self.pool)
                .await?
                .rows_affected();
            total += deleted;
            if deleted < batch as u64 {
                return Ok(total);
            }
        }
    }
}
