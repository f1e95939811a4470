//! Outbox upkeep: lease rescue, supersede, re-drive of dead letters, pruning.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{NOTIFY_CHANNEL, Outbox, OutboxError};

/// In-flight events whose lease ran out go back to pending. The attempt they used is
/// kept (a hanging handler or a crashed worker costs one retry) and logged.
const RESCUE: &str = r#"
WITH r AS (
    UPDATE batisync.outbox
    SET status = 'pending', locked_by = NULL, locked_until = NULL, next_attempt_at = now(),
        last_error = 'lease expired: the worker crashed, hung or lost its connection'
    WHERE status = 'in_flight' AND locked_until < now()
    RETURNING id, flow, attempts, last_error
),
log AS (
    INSERT INTO batisync.outbox_failures (event_id, attempt, kind, message)
    SELECT id, attempts, 'lease_expired', last_error FROM r
),
note AS (
    SELECT pg_notify($1, flow) FROM (SELECT DISTINCT flow FROM r) f
)
SELECT (SELECT count(*) FROM r), (SELECT count(*) FROM note)
"#;

/// Older waiting or pending events of one key become superseded by the newest one.
const SUPERSEDE: &str = r#"
WITH newest AS (
    SELECT max(id) AS id FROM batisync.outbox
    WHERE flow = $1 AND entity_key = $2 AND status IN ('waiting', 'pending')
)
UPDATE batisync.outbox o
SET status = 'superseded', superseded_by = newest.id, finished_at = now(),
    outcome = 'superseded by event ' || newest.id
FROM newest
WHERE o.flow = $1 AND o.entity_key = $2 AND o.status IN ('waiting', 'pending')
  AND o.id < newest.id
"#;

/// Safety net: waiting events that are the oldest open event of their key but were not
/// promoted (the process died between a commit and its promotion).
const SWEEP: &str = r#"
WITH orphans AS (
    SELECT o.id FROM batisync.outbox o
    WHERE o.status = 'waiting'
      AND o.id = (SELECT p.id FROM batisync.outbox p
                  WHERE p.flow = o.flow AND p.entity_key = o.entity_key
                    AND p.status IN ('waiting', 'pending', 'in_flight')
                  ORDER BY p.id LIMIT 1)
    LIMIT 10000
),
locked AS (
    SELECT o.id FROM batisync.outbox o
    WHERE o.id IN (SELECT id FROM orphans) AND o.status = 'waiting'
    ORDER BY o.id
    FOR UPDATE SKIP LOCKED
),
upd AS (
    UPDATE batisync.outbox o SET status = 'pending'
    FROM locked WHERE o.id = locked.id
    RETURNING o.flow
),
note AS (
    SELECT pg_notify($1, flow) FROM (SELECT DISTINCT flow FROM upd) f
)
SELECT (SELECT count(*) FROM upd), (SELECT count(*) FROM note)
"#;

/// Dead letters go back to waiting (then promoted) with a fresh attempt budget, unless a
/// newer event of the same key exists (delivered, open, or re-driven in the same call):
/// re-applying older state over newer state would break per-key order, so those are
/// superseded.
const REDRIVE: &str = r#"
WITH chosen AS (
    SELECT id, flow, entity_key FROM batisync.outbox
    WHERE status = 'dead'
      AND (($1::bigint[] IS NOT NULL AND id = ANY($1))
           OR ($1::bigint[] IS NULL AND ($2::text IS NULL OR flow = $2)))
),
decided AS (
    SELECT c.id, c.flow,
           (SELECT max(n.id) FROM batisync.outbox n
            WHERE n.flow = c.flow AND n.entity_key = c.entity_key AND n.id > c.id
              AND (n.status IN ('waiting', 'pending', 'in_flight', 'done')
                   OR n.id IN (SELECT id FROM chosen))) AS newer
    FROM chosen c
),
upd AS (
    UPDATE batisync.outbox o
    SET status = CASE WHEN d.newer IS NULL THEN 'waiting' ELSE 'superseded' END,
        superseded_by = d.newer,
        attempts = 0, next_attempt_at = now(), locked_by = NULL, locked_until = NULL,
        finished_at = CASE WHEN d.newer IS NULL THEN NULL ELSE now() END,
        outcome = CASE WHEN d.newer IS NULL THEN 're-driven'
                       ELSE 're-drive skipped: superseded by newer event ' || d.newer END
    FROM decided d
    WHERE o.id = d.id
    RETURNING o.id, o.flow, o.entity_key, o.status
)
SELECT id, flow, entity_key, status FROM upd ORDER BY id
"#;

const PRUNE: &str = r#"
DELETE FROM batisync.outbox
WHERE id IN (
    SELECT id FROM batisync.outbox
    WHERE status IN ('done', 'superseded') AND finished_at < now() - $1 * interval '1 second'
    LIMIT $2)
"#;

/// What a re-drive did to each requested dead letter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedriveReport {
    /// Back in the queue (waiting, then pending when it is its key's turn).
    pub requeued: Vec<i64>,
    /// Not re-applied: a newer event of the same key exists.
    pub superseded: Vec<i64>,
}

impl Outbox {
    /// Returns events with an expired lease to pending; returns how many.
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

    /// Supersedes every pending event of `key` but the newest; returns how many.
    ///
    /// # Errors
    /// Database errors.
    pub async fn supersede(&self, flow: &str, key: &str) -> Result<u64, OutboxError> {
        let result = sqlx::query(SUPERSEDE)
            .bind(flow)
            .bind(key)
            .execute(&self.pool)
            .await?;
        self.promote(flow, &[key.to_owned()]).await?;
        Ok(result.rows_affected())
    }

    /// Promotes waiting events left unpromoted by a process that died between a commit
    /// and its promotion; returns how many.
    ///
    /// # Errors
    /// Database errors.
    pub async fn sweep_unpromoted(&self) -> Result<u64, OutboxError> {
        let (count, _): (i64, i64) = sqlx::query_as(SWEEP)
            .bind(NOTIFY_CHANNEL)
            .fetch_one(&self.pool)
            .await?;
        if count > 0 {
            tracing::info!(
                events = count,
                "promoted events left waiting by an interrupted process"
            );
        }
        Ok(count as u64)
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
        let rows: Vec<(i64, String, String, String)> = sqlx::query_as(REDRIVE)
            .bind(ids)
            .bind(flow)
            .fetch_all(&self.pool)
            .await?;
        let mut report = RedriveReport::default();
        let mut keys_by_flow: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (id, flow, key, status) in rows {
            if status == "waiting" {
                report.requeued.push(id);
                keys_by_flow.entry(flow).or_default().push(key);
            } else {
                report.superseded.push(id);
            }
        }
        for (flow, keys) in keys_by_flow {
            let keys = super::store::distinct_keys(keys.iter().map(String::as_str));
            self.promote(&flow, &keys).await?;
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
