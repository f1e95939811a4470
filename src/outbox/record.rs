//! Recording outcomes: delivered, retry later, dead, or released at shutdown.
//!
//! A batch's outcomes are recorded in one transaction that first locks the `queue` rows
//! of its keys in key order (the same order captures take them), then:
//! - finishes delivered and dead events and moves each key's head to its next event
//!   (or removes the key from the queue), in one statement that runs after the lock,
//!   so it sees every event a concurrent capture committed for those keys;
//! - schedules retries, in a second statement.

use sqlx::{PgConnection, Postgres, Transaction};

use super::store::{BatchSql, batch_sql, count_round_trips};
use super::{Failure, NOTIFY_CHANNEL, Outbox, OutboxError};

/// Locks the queue rows of the keys of the claimed events `$2`, in key order.
const LOCK_HEADS: BatchSql = batch_sql!(
    r#"
SELECT 1 FROM batisync.queue
WHERE flow = $1
  AND entity_key IN (SELECT entity_key FROM batisync.outbox WHERE id = ANY($2))
ORDER BY flow, entity_key
FOR UPDATE
"#
);

/// Delivered (`kind` NULL) and dead events are finished (the attempt is counted); each
/// key's head moves to its next open event (keeping the key's place in the queue if
/// that event was already waiting when this one was claimed), or the key leaves the
/// queue. Fenced by the queue row: an event whose key is no longer claimed by this
/// worker for this event (its lease expired, maybe another worker took it) is left
/// alone.
const FINISH: BatchSql = batch_sql!(
    r#"
WITH f AS (
    SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[])
           AS t(id, outcome, kind, message)
),
fin AS (
    UPDATE batisync.outbox o
    SET status = CASE WHEN f.kind IS NULL THEN 'done' ELSE 'dead' END,
        attempts = o.attempts + 1, first_attempt_at = coalesce(o.first_attempt_at, q.claimed_at),
        finished_at = now(), outcome = f.outcome, last_error = coalesce(f.message, o.last_error)
    FROM f, batisync.queue q
    WHERE o.id = f.id AND o.status IN ('waiting', 'pending')
      AND q.flow = $6 AND q.entity_key = o.entity_key AND q.event_id = o.id AND q.locked_by = $5
    RETURNING o.id, o.entity_key, o.attempts, f.kind, f.message
),
dead AS (
    INSERT INTO batisync.dead_events (event_id, flow)
    SELECT id, $6 FROM fin WHERE kind IS NOT NULL
),
log AS (
    INSERT INTO batisync.outbox_failures (event_id, attempt, kind, message)
    SELECT id, attempts, kind, message FROM fin WHERE kind IS NOT NULL
),
nxt AS (
    SELECT fin.entity_key, n.id AS next_id, n.captured_at AS next_captured_at
    FROM fin
    LEFT JOIN LATERAL (
        SELECT o.id, o.captured_at FROM batisync.outbox o
        WHERE o.flow = $6 AND o.entity_key = fin.entity_key AND o.id > fin.id
          AND o.status IN ('waiting', 'pending')
        ORDER BY o.id LIMIT 1) n ON true
),
moved AS (
    UPDATE batisync.queue q
    SET event_id = nxt.next_id, locked_by = NULL, locked_until = NULL, claimed_at = NULL,
        next_attempt_at = now(),
        -- The key keeps its place for events that were waiting when this one was
        -- claimed (no indexed column changes), and goes to the back for newer ones.
        position = CASE WHEN nxt.next_captured_at > q.claimed_at THEN nxt.next_id
                        ELSE q.position END
    FROM nxt
    WHERE q.flow = $6 AND q.entity_key = nxt.entity_key AND nxt.next_id IS NOT NULL
    RETURNING q.event_id
),
gone AS (
    DELETE FROM batisync.queue q USING nxt
    WHERE q.flow = $6 AND q.entity_key = nxt.entity_key AND nxt.next_id IS NULL
),
note AS (
    SELECT pg_notify($7, $6) WHERE EXISTS (SELECT 1 FROM moved)
)
SELECT (SELECT count(*) FROM fin WHERE kind IS NULL), (SELECT count(*) FROM note)
"#
);

/// Failed attempts that will be retried (the attempt is counted): the head stays,
/// unclaimed, due later. Fenced like [`FINISH`].
const RETRY: BatchSql = batch_sql!(
    r#"
WITH f AS (
    SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::bigint[])
           AS t(id, kind, message, delay_ms)
),
upd AS (
    UPDATE batisync.outbox o
    SET status = 'pending', attempts = o.attempts + 1,
        first_attempt_at = coalesce(o.first_attempt_at, q.claimed_at),
        next_attempt_at = now() + f.delay_ms * interval '1 millisecond', last_error = f.message
    FROM f, batisync.queue q
    WHERE o.id = f.id AND o.status IN ('waiting', 'pending')
      AND q.flow = $6 AND q.entity_key = o.entity_key AND q.event_id = o.id AND q.locked_by = $5
    RETURNING o.id, o.entity_key, o.attempts, o.next_attempt_at, f.kind, f.message
),
queued AS (
    UPDATE batisync.queue q
    SET locked_by = NULL, locked_until = NULL, claimed_at = NULL,
        next_attempt_at = upd.next_attempt_at
    FROM upd WHERE q.flow = $6 AND q.entity_key = upd.entity_key
)
INSERT INTO batisync.outbox_failures (event_id, attempt, kind, message)
SELECT id, attempts, kind, message FROM upd
"#
);

/// Claims given back at shutdown: only the queue rows change, the attempt is not
/// counted.
const RELEASE: &str = r#"
UPDATE batisync.queue q
SET locked_by = NULL, locked_until = NULL, claimed_at = NULL, next_attempt_at = now()
FROM batisync.outbox o
WHERE o.id = ANY($1) AND q.flow = $3 AND q.entity_key = o.entity_key AND q.event_id = o.id
  AND q.locked_by = $2
"#;

impl Outbox {
    /// Marks events delivered; returns how many were acknowledged (events whose lease
    /// was lost are left alone).
    ///
    /// # Errors
    /// Database errors.
    pub async fn ack(
        &self,
        flow: &str,
        worker: &str,
        done: &[(i64, String)],
    ) -> Result<u64, OutboxError> {
        self.record(flow, worker, done, &[]).await
    }

    /// Records failed attempts: retried after their delay, or dead.
    ///
    /// # Errors
    /// Database errors.
    pub async fn fail(
        &self,
        flow: &str,
        worker: &str,
        failures: &[Failure],
    ) -> Result<(), OutboxError> {
        self.record(flow, worker, &[], failures).await.map(|_| ())
    }

    /// Records a batch's outcomes in one transaction; returns how many deliveries were
    /// acknowledged.
    ///
    /// # Errors
    /// Database errors; nothing is recorded then, and the leases bring the events back.
    pub async fn record(
        &self,
        flow: &str,
        worker: &str,
        done: &[(i64, String)],
        failures: &[Failure],
    ) -> Result<u64, OutboxError> {
        if done.is_empty() && failures.is_empty() {
            return Ok(0);
        }
        let mut tx: Transaction<'_, Postgres> = self.pool.begin().await?;
        let ids: Vec<i64> = done
            .iter()
            .map(|d| d.0)
            .chain(failures.iter().map(|f| f.event_id))
            .collect();
        let (sql, persistent, trips) = LOCK_HEADS.for_batch(ids.len());
        sqlx::query(sql)
            .persistent(persistent)
            .bind(flow)
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        let acked = finish(&mut tx, flow, worker, done, failures).await?;
        retry(&mut tx, flow, worker, failures).await?;
        tx.commit().await?;
        count_round_trips(2 + trips);
        Ok(acked)
    }

    /// Gives claimed events back without counting the attempt (graceful shutdown).
    ///
    /// # Errors
    /// Database errors.
    pub async fn release(&self, flow: &str, worker: &str, ids: &[i64]) -> Result<u64, OutboxError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut tx: Transaction<'_, Postgres> = self.pool.begin().await?;
        let (sql, persistent, trips) = LOCK_HEADS.for_batch(ids.len());
        sqlx::query(sql)
            .persistent(persistent)
            .bind(flow)
            .bind(ids)
            .execute(&mut *tx)
            .await?;
        let released = sqlx::query(RELEASE)
            .bind(ids)
            .bind(worker)
            .bind(flow)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        count_round_trips(3 + trips);
        Ok(released)
    }
}

async fn finish(
    conn: &mut PgConnection,
    flow: &str,
    worker: &str,
    done: &[(i64, String)],
    failures: &[Failure],
) -> Result<u64, OutboxError> {
    let dead: Vec<&Failure> = failures.iter().filter(|f| f.retry_in.is_none()).collect();
    if done.is_empty() && dead.is_empty() {
        return Ok(0);
    }
    let ids: Vec<i64> = done
        .iter()
        .map(|d| d.0)
        .chain(dead.iter().map(|f| f.event_id))
        .collect();
    let outcomes: Vec<Option<&str>> = done
        .iter()
        .map(|d| Some(d.1.as_str()))
        .chain(dead.iter().map(|_| None))
        .collect();
    let kinds: Vec<Option<&str>> = done
        .iter()
        .map(|_| None)
        .chain(dead.iter().map(|f| Some(f.kind)))
        .collect();
    let messages: Vec<Option<&str>> = done
        .iter()
        .map(|_| None)
        .chain(dead.iter().map(|f| Some(f.message.as_str())))
        .collect();
    let (sql, persistent, trips) = FINISH.for_batch(ids.len());
    let (acked, _): (i64, i64) = sqlx::query_as(sql)
        .persistent(persistent)
        .bind(ids)
        .bind(outcomes)
        .bind(kinds)
        .bind(messages)
        .bind(worker)
        .bind(flow)
        .bind(NOTIFY_CHANNEL)
        .fetch_one(&mut *conn)
        .await?;
    count_round_trips(trips);
    Ok(acked as u64)
}

async fn retry(
    conn: &mut PgConnection,
    flow: &str,
    worker: &str,
    failures: &[Failure],
) -> Result<(), OutboxError> {
    let retried: Vec<&Failure> = failures.iter().filter(|f| f.retry_in.is_some()).collect();
    if retried.is_empty() {
        return Ok(());
    }
    let (sql, persistent, trips) = RETRY.for_batch(retried.len());
    sqlx::query(sql)
        .persistent(persistent)
        .bind(retried.iter().map(|f| f.event_id).collect::<Vec<_>>())
        .bind(retried.iter().map(|f| f.kind).collect::<Vec<_>>())
        .bind(
            retried
                .iter()
                .map(|f| f.message.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            retried
                .iter()
                .map(|f| f.retry_in.map_or(0, |d| d.as_millis() as i64))
                .collect::<Vec<_>>(),
        )
        .bind(worker)
        .bind(flow)
        .execute(&mut *conn)
        .await?;
    count_round_trips(trips);
    Ok(())
}
