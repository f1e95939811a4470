//! Every SQL statement of the outbox engine, next to the Rust that sends it.
//!
//! Round trips are batched: a capture is one statement (plus BEGIN/SELECT/COMMIT when a
//! cursor is compared), a claim is one statement, acks and failures of a batch are one
//! statement each.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Postgres, Transaction};

use super::{CaptureReport, CursorAdvance, Event, NewEvent, Operation, Outbox, OutboxError};
use super::{Failure, NOTIFY_CHANNEL};

static ROUND_TRIPS: AtomicU64 = AtomicU64::new(0);

/// Statements sent to PostgreSQL by the outbox engine since the process started
/// (transaction control included). Used by the benchmark.
pub fn round_trips() -> u64 {
    ROUND_TRIPS.load(Ordering::Relaxed)
}

fn count_round_trips(n: u64) {
    ROUND_TRIPS.fetch_add(n, Ordering::Relaxed);
}

/// Stores a batch as `waiting` (or directly `superseded` when a later event of the same
/// key follows in the batch), supersedes older open events of those keys when asked,
/// and moves the cursor: one statement, atomic on its own.
const INSERT_EVENTS: &str = r#"
WITH input AS (
    SELECT * FROM UNNEST($2::text[], $3::text[], $4::text[], $5::jsonb[], $6::timestamptz[], $7::text[])
           WITH ORDINALITY AS t(entity_key, source_version, operation, payload, source_modified_at, status, ord)
),
ins AS (
    INSERT INTO batisync.outbox
           (flow, entity_key, source_version, operation, payload, source_modified_at, status, finished_at, outcome)
    SELECT $1, entity_key, source_version, operation, payload, source_modified_at, status,
           CASE WHEN status = 'superseded' THEN now() END,
           CASE WHEN status = 'superseded' THEN 'superseded within its capture batch' END
    FROM input ORDER BY ord
    ON CONFLICT (flow, entity_key, source_version) DO NOTHING
    RETURNING id, entity_key, status
),
sup AS (
    UPDATE batisync.outbox o
    SET status = 'superseded', superseded_by = i.id, finished_at = now(),
        outcome = 'superseded by event ' || i.id
    FROM ins i
    WHERE $8 AND i.status = 'waiting'
      AND o.flow = $1 AND o.entity_key = i.entity_key AND o.status IN ('waiting', 'pending')
      AND o.id < i.id
    RETURNING o.id
),
cur AS (
    INSERT INTO batisync.cursors (source, position)
    SELECT $9, $10 WHERE $9 IS NOT NULL
    ON CONFLICT (source) DO UPDATE SET position = EXCLUDED.position, updated_at = now()
    RETURNING 1
)
SELECT (SELECT count(*) FROM ins) AS inserted,
       (SELECT count(*) FROM sup) + (SELECT count(*) FROM ins WHERE status = 'superseded') AS superseded,
       (SELECT count(*) FROM cur) AS cursor_rows
"#;

/// For each key, promotes its oldest open event to `pending` when that event is
/// `waiting`. Run after every commit that may unblock a key (capture, ack, dead letter,
/// supersede, re-drive): run after the commit, it sees the committed state, so of two
/// racing writers on one key the later one always promotes. The `status = 'waiting'`
/// re-check makes concurrent promotions of one key harmless, and `SKIP LOCKED` means a
/// promotion never waits (so never deadlocks): a row locked by someone else is being
/// promoted or changed by a writer that promotes after its own commit.
const PROMOTE: &str = r#"
WITH heads AS (
    SELECT h.id
    FROM unnest($2::text[]) AS k(entity_key)
    CROSS JOIN LATERAL (
        SELECT o.id, o.status FROM batisync.outbox o
        WHERE o.flow = $1 AND o.entity_key = k.entity_key
          AND o.status IN ('waiting', 'pending', 'in_flight')
        ORDER BY o.id LIMIT 1) h
    WHERE h.status = 'waiting'
),
locked AS (
    SELECT o.id FROM batisync.outbox o
    WHERE o.id IN (SELECT id FROM heads) AND o.status = 'waiting'
    ORDER BY o.id
    FOR UPDATE SKIP LOCKED
),
upd AS (
    UPDATE batisync.outbox o SET status = 'pending'
    FROM locked WHERE o.id = locked.id
    RETURNING o.id
),
note AS (
    SELECT pg_notify($3, $1) WHERE EXISTS (SELECT 1 FROM upd)
)
SELECT (SELECT count(*) FROM upd), (SELECT count(*) FROM note)
"#;

/// A capture committed (or about to be) whose keys still need [`Outbox::promote`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    pub report: CaptureReport,
    flow: String,
    keys: Vec<String>,
}

/// Stores `events` for `flow` and moves the cursor on `conn`, typically inside the
/// caller's transaction (when other writes, such as snapshot-diff hashes, must commit
/// with the capture). After the commit, pass the result to [`Outbox::promote_captured`]
/// so the events become claimable at once; if the process dies in between, the
/// maintenance sweep promotes them.
///
/// With `supersede`, an event replaces the older waiting or pending events of its key,
/// including older ones of the same batch. When `cursor` is given, its `expected`
/// position is checked under a row lock first.
///
/// # Errors
/// [`OutboxError::CursorConflict`] when another process moved the cursor; database
/// errors otherwise. Nothing is written on error when run in a transaction.
#[tracing::instrument(skip_all, fields(flow, events = events.len()), err)]
pub async fn capture(
    conn: &mut PgConnection,
    flow: &str,
    events: &[NewEvent],
    cursor: Option<CursorAdvance<'_>>,
    supersede: bool,
) -> Result<Captured, OutboxError> {
    if let Some(advance) = &cursor {
        check_cursor(conn, advance).await?;
    }
    let statuses = initial_statuses(events, supersede);
    let row: (i64, i64, i64) = sqlx::query_as(INSERT_EVENTS)
        .bind(flow)
        .bind(
            events
                .iter()
                .map(|e| e.entity_key.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            events
                .iter()
                .map(|e| e.source_version.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            events
                .iter()
                .map(|e| e.operation.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(events.iter().map(|e| &e.payload).collect::<Vec<_>>())
        .bind(
            events
                .iter()
                .map(|e| e.source_modified_at)
                .collect::<Vec<_>>(),
        )
        .bind(statuses)
        .bind(supersede)
        .bind(cursor.as_ref().map(|c| c.source))
        .bind(cursor.as_ref().map(|c| c.next))
        .fetch_one(&mut *conn)
        .await?;
    count_round_trips(1);
    let inserted = row.0 as u64;
    let superseded = row.1 as u64;
    crate::metrics::get().captured(flow, inserted, superseded);
    Ok(Captured {
        report: CaptureReport {
            inserted,
            duplicates: events.len() as u64 - inserted,
            superseded,
        },
        flow: flow.to_owned(),
        keys: if inserted == 0 {
            Vec::new()
        } else {
            distinct_keys(events.iter().map(|e| e.entity_key.as_str()))
        },
    })
}

/// With `supersede`, every event followed later in the batch by one of the same key is
/// stored directly as superseded; every other event starts `waiting`.
fn initial_statuses(events: &[NewEvent], supersede: bool) -> Vec<&'static str> {
    if !supersede {
        return vec!["waiting"; events.len()];
    }
    let mut last_index: HashMap<&str, usize> = HashMap::with_capacity(events.len());
    for (i, e) in events.iter().enumerate() {
        last_index.insert(e.entity_key.as_str(), i);
    }
    events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            if last_index.get(e.entity_key.as_str()) == Some(&i) {
                "waiting"
            } else {
                "superseded"
            }
        })
        .collect()
}

pub(crate) fn distinct_keys<'a>(keys: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut keys: Vec<&str> = keys.collect();
    keys.sort_unstable();
    keys.dedup();
    keys.into_iter().map(str::to_owned).collect()
}

async fn check_cursor(
    conn: &mut PgConnection,
    advance: &CursorAdvance<'_>,
) -> Result<(), OutboxError> {
    let found: Option<serde_json::Value> =
        sqlx::query_scalar("SELECT position FROM batisync.cursors WHERE source = $1 FOR UPDATE")
            .bind(advance.source)
            .fetch_optional(&mut *conn)
            .await?;
    count_round_trips(1);
    if found.as_ref() == advance.expected {
        return Ok(());
    }
    let show = |v: Option<&serde_json::Value>| v.map_or("none".to_owned(), |v| v.to_string());
    Err(OutboxError::CursorConflict {
        source_name: advance.source.to_owned(),
        expected: show(advance.expected),
        found: show(found.as_ref()),
    })
}

#[derive(sqlx::FromRow)]
struct EventRow {
    id: i64,
    flow: String,
    entity_key: String,
    source_version: String,
    operation: String,
    payload: serde_json::Value,
    source_modified_at: Option<DateTime<Utc>>,
    attempts: i32,
    captured_at: DateTime<Utc>,
}

impl TryFrom<EventRow> for Event {
    type Error = OutboxError;

    fn try_from(r: EventRow) -> Result<Self, OutboxError> {
        Ok(Event {
            id: r.id,
            flow: r.flow,
            entity_key: r.entity_key,
            source_version: r.source_version,
            operation: Operation::parse(&r.operation)?,
            payload: r.payload,
            source_modified_at: r.source_modified_at,
            attempts: r.attempts,
            captured_at: r.captured_at,
        })
    }
}

/// Oldest due pending events. Only the oldest open event of a key is ever pending
/// (see [`PROMOTE`]), so this never hands out two events of one key. Rows locked by a
/// concurrent claim are skipped.
const CLAIM: &str = r#"
WITH picked AS (
    SELECT id FROM batisync.outbox
    WHERE flow = $1 AND status = 'pending' AND next_attempt_at <= now()
    ORDER BY id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE batisync.outbox o
SET status = 'in_flight', locked_by = $3, locked_until = now() + $4 * interval '1 millisecond',
    attempts = o.attempts + 1, first_attempt_at = coalesce(o.first_attempt_at, now())
FROM picked
WHERE o.id = picked.id
RETURNING o.id, o.flow, o.entity_key, o.source_version, o.operation, o.payload,
          o.source_modified_at, o.attempts, o.captured_at
"#;

const ACK: &str = r#"
UPDATE batisync.outbox o
SET status = 'done', finished_at = now(), locked_by = NULL, locked_until = NULL, outcome = a.outcome
FROM UNNEST($1::bigint[], $2::text[]) AS a(id, outcome)
WHERE o.id = a.id AND o.status = 'in_flight' AND o.locked_by = $3
RETURNING o.entity_key
"#;

const FAIL: &str = r#"
WITH f AS (
    SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::bigint[])
           AS t(id, kind, message, delay_ms)
),
upd AS (
    UPDATE batisync.outbox o
    SET status = CASE WHEN f.delay_ms IS NULL THEN 'dead' ELSE 'pending' END,
        next_attempt_at = CASE WHEN f.delay_ms IS NULL THEN o.next_attempt_at
                               ELSE now() + f.delay_ms * interval '1 millisecond' END,
        finished_at = CASE WHEN f.delay_ms IS NULL THEN now() END,
        last_error = f.message, locked_by = NULL, locked_until = NULL
    FROM f
    WHERE o.id = f.id AND o.status = 'in_flight' AND o.locked_by = $5
    RETURNING o.id, o.entity_key, o.status, o.attempts, f.kind, f.message
),
log AS (
    INSERT INTO batisync.outbox_failures (event_id, attempt, kind, message)
    SELECT id, attempts, kind, message FROM upd
)
SELECT entity_key FROM upd WHERE status = 'dead'
"#;

const RELEASE: &str = r#"
UPDATE batisync.outbox
SET status = 'pending', locked_by = NULL, locked_until = NULL,
    attempts = greatest(attempts - 1, 0), next_attempt_at = now()
WHERE id = ANY($1) AND status = 'in_flight' AND locked_by = $2
"#;

impl Outbox {
    /// Claims up to `limit` events of `flow` for `worker` under a lease of `lease`.
    ///
    /// # Errors
    /// Database errors; a corrupt row (unknown operation) fails the claim.
    #[tracing::instrument(skip_all, fields(flow, worker), err)]
    pub async fn claim(
        &self,
        flow: &str,
        worker: &str,
        limit: i64,
        lease: Duration,
    ) -> Result<Vec<Event>, OutboxError> {
        let rows: Vec<EventRow> = sqlx::query_as(CLAIM)
            .bind(flow)
            .bind(limit)
            .bind(worker)
            .bind(lease.as_millis() as i64)
            .fetch_all(&self.pool)
            .await?;
        count_round_trips(1);
        rows.into_iter().map(Event::try_from).collect()
    }

    /// Marks events delivered, then promotes the next event of each key. Events whose
    /// lease was lost (rescued and re-claimed) are left alone; returns how many were
    /// acknowledged.
    ///
    /// # Errors
    /// Database errors.
    pub async fn ack(
        &self,
        flow: &str,
        worker: &str,
        done: &[(i64, String)],
    ) -> Result<u64, OutboxError> {
        if done.is_empty() {
            return Ok(0);
        }
        let keys: Vec<String> = sqlx::query_scalar(ACK)
            .bind(done.iter().map(|d| d.0).collect::<Vec<_>>())
            .bind(done.iter().map(|d| d.1.as_str()).collect::<Vec<_>>())
            .bind(worker)
            .fetch_all(&self.pool)
            .await?;
        count_round_trips(1);
        self.promote(flow, &keys).await?;
        Ok(keys.len() as u64)
    }

    /// Records failed attempts: back to pending after the given delay, or dead (then the
    /// key's next event is promoted). Each failure is also appended to `outbox_failures`.
    ///
    /// # Errors
    /// Database errors.
    pub async fn fail(
        &self,
        flow: &str,
        worker: &str,
        failures: &[Failure],
    ) -> Result<(), OutboxError> {
        if failures.is_empty() {
            return Ok(());
        }
        let delays: Vec<Option<i64>> = failures
            .iter()
            .map(|f| f.retry_in.map(|d| d.as_millis() as i64))
            .collect();
        let dead_keys: Vec<String> = sqlx::query_scalar(FAIL)
            .bind(failures.iter().map(|f| f.event_id).collect::<Vec<_>>())
            .bind(failures.iter().map(|f| f.kind).collect::<Vec<_>>())
            .bind(
                failures
                    .iter()
                    .map(|f| f.message.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(delays)
            .bind(worker)
            .fetch_all(&self.pool)
            .await?;
        count_round_trips(1);
        self.promote(flow, &dead_keys).await?;
        Ok(())
    }

    /// Makes the oldest open event of each key claimable (see [`PROMOTE`]); returns how
    /// many events were promoted.
    ///
    /// # Errors
    /// Database errors.
    pub async fn promote(&self, flow: &str, keys: &[String]) -> Result<u64, OutboxError> {
        if keys.is_empty() {
            return Ok(0);
        }
        let (promoted, _): (i64, i64) = sqlx::query_as(PROMOTE)
            .bind(flow)
            .bind(keys)
            .bind(NOTIFY_CHANNEL)
            .fetch_one(&self.pool)
            .await?;
        count_round_trips(1);
        Ok(promoted as u64)
    }

    /// Promotes the keys of a committed [`capture`].
    ///
    /// # Errors
    /// Database errors.
    pub async fn promote_captured(&self, captured: &Captured) -> Result<u64, OutboxError> {
        self.promote(&captured.flow, &captured.keys).await
    }

    /// Gives claimed events back without counting the attempt (graceful shutdown).
    ///
    /// # Errors
    /// Database errors.
    pub async fn release(&self, worker: &str, ids: &[i64]) -> Result<u64, OutboxError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let result = sqlx::query(RELEASE)
            .bind(ids)
            .bind(worker)
            .execute(&self.pool)
            .await?;
        count_round_trips(1);
        Ok(result.rows_affected())
    }

    /// When the earliest pending event of `flow` becomes due, if any is pending.
    ///
    /// # Errors
    /// Database errors.
    pub async fn next_due(&self, flow: &str) -> Result<Option<DateTime<Utc>>, OutboxError> {
        let due = sqlx::query_scalar(
            "SELECT min(next_attempt_at) FROM batisync.outbox WHERE flow = $1 AND status = 'pending'",
        )
        .bind(flow)
        .fetch_one(&self.pool)
        .await?;
        count_round_trips(1);
        Ok(due)
    }

    /// Captures in a transaction of its own, then promotes; see [`capture`].
    ///
    /// # Errors
    /// As [`capture`].
    pub async fn capture(
        &self,
        flow: &str,
        events: &[NewEvent],
        cursor: Option<CursorAdvance<'_>>,
        supersede: bool,
    ) -> Result<CaptureReport, OutboxError> {
        let captured = if cursor.is_none() {
            // A single statement is atomic on its own: no BEGIN/COMMIT needed.
            let mut conn = self.pool.acquire().await?;
            capture(&mut conn, flow, events, cursor, supersede).await?
        } else {
            let mut tx: Transaction<'_, Postgres> = self.pool.begin().await?;
            let captured = capture(&mut tx, flow, events, cursor, supersede).await?;
            tx.commit().await?;
            count_round_trips(2);
            captured
        };
        self.promote_captured(&captured).await?;
        Ok(captured.report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(key: &str, version: &str) -> NewEvent {
        NewEvent {
            entity_key: key.into(),
            source_version: version.into(),
            operation: Operation::Upsert,
            payload: json!({}),
            source_modified_at: None,
        }
    }

    #[test]
    fn only_the_last_event_of_a_key_in_a_batch_stays_pending_when_superseding() {
        let events = [ev("a", "1"), ev("b", "1"), ev("a", "2"), ev("a", "3")];
        assert_eq!(
            initial_statuses(&events, true),
            ["superseded", "waiting", "superseded", "waiting"]
        );
        assert_eq!(initial_statuses(&events, false), ["waiting"; 4]);
    }
}
