//! Capture and claim: the SQL of the hot path, next to the Rust that sends it.
//!
//! Round trips are batched: a capture is one statement (plus BEGIN/SELECT/COMMIT when a
//! cursor is compared), a claim is one statement; outcomes are recorded by
//! [`super::record`].
//!
//! Locking rule, which keeps the engine free of deadlocks: a statement that may wait
//! for `queue` rows takes them in `(flow, entity_key)` order; the others use
//! `SKIP LOCKED` and never wait.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection, Postgres, Transaction};

use super::NOTIFY_CHANNEL;
use super::{CaptureReport, CursorAdvance, Event, NewEvent, Operation, Outbox, OutboxError};

static ROUND_TRIPS: AtomicU64 = AtomicU64::new(0);

/// Statements sent to PostgreSQL by the outbox engine since the process started
/// (transaction control included). Used by the benchmark.
pub fn round_trips() -> u64 {
    ROUND_TRIPS.load(Ordering::Relaxed)
}

/// Batches up to this size run as prepared statements; larger ones are planned with
/// their arrays (see [`BatchSql`]).
const SMALL_BATCH: usize = 16;

/// A statement that takes a whole batch as array parameters, in two spellings. Prepared
/// (parsed once per connection), PostgreSQL keeps a generic plan after five runs, which
/// guesses 10 elements per array: right for small batches, but for 250 events it picked
/// nested loops the wrong way round (measured with `batisync bench outbox`: the drain
/// took 1.7 times as long). Unprepared, it is planned at each run with the real arrays,
/// for one more round trip (parse and describe). The two texts differ by a comment, so
/// sqlx's statement cache never hands the prepared one out for a large batch.
pub(crate) struct BatchSql {
    prepared: &'static str,
    planned: &'static str,
}

/// Builds a [`BatchSql`] from one SQL literal.
macro_rules! batch_sql {
    ($sql:literal) => {
        $crate::outbox::store::BatchSql::new($sql, concat!($sql, "-- planned with its arrays\n"))
    };
}
pub(crate) use batch_sql;

impl BatchSql {
    pub(crate) const fn new(prepared: &'static str, planned: &'static str) -> Self {
        Self { prepared, planned }
    }

    /// The text to send for a batch of `n`, whether to keep it prepared, and the round
    /// trips it costs.
    pub(crate) fn for_batch(&self, n: usize) -> (&'static str, bool, u64) {
        if n <= SMALL_BATCH {
            (self.prepared, true, 1)
        } else {
            (self.planned, false, 2)
        }
    }
}

pub(crate) fn count_round_trips(n: u64) {
    ROUND_TRIPS.fetch_add(n, Ordering::Relaxed);
}

/// Stores a batch (events already replaced by a later one of the same batch are stored
/// as superseded), gives every key without a queue row one (its first new event is the
/// head), wakes the dispatchers and moves the cursor: one statement, atomic on its own.
///
/// The queue upsert takes the key's queue row lock until commit (in key order), so a
/// concurrent ack of that key waits and then sees these events when it looks for the
/// key's next event, and no claim takes the key meanwhile.
///
/// Two spellings, differing only in how an event captured before is handled: see
/// [`INSERT_NEW_EVENTS`] and [`INSERT_EVENTS_SKIPPING_KNOWN`].
macro_rules! insert_events {
    ($on_conflict:literal) => {
        concat!(
            r#"
WITH input AS (
    SELECT * FROM UNNEST($2::text[], $3::text[], $4::text[], $5::jsonb[], $6::timestamptz[], $7::text[])
           WITH ORDINALITY AS t(entity_key, source_version, operation, payload, source_modified_at, status, ord)
),
ins AS (
    INSERT INTO batisync.outbox
           (flow, entity_key, source_version, operation, payload, source_modified_at, status, finished_at, outcome)
    SELECT $1, i.entity_key, i.source_version, i.operation, i.payload, i.source_modified_at,
           i.status,
           CASE WHEN i.status = 'superseded' THEN now() END,
           CASE WHEN i.status = 'superseded' THEN 'superseded within its capture batch' END
    FROM input i ORDER BY i.ord
"#,
            $on_conflict,
            r#"    RETURNING id, entity_key, status
),
heads AS (
    INSERT INTO batisync.queue (flow, entity_key, event_id, position)
    SELECT $1, entity_key, min(id), min(id) FROM ins WHERE status <> 'superseded'
    GROUP BY entity_key ORDER BY entity_key
    -- An existing row is locked (so a concurrent ack of the key waits for this commit)
    -- but not rewritten: `DO UPDATE ... WHERE false` locks without a new row version.
    ON CONFLICT (flow, entity_key) DO UPDATE SET event_id = batisync.queue.event_id WHERE false
    RETURNING event_id
),
cur AS (
    INSERT INTO batisync.cursors (source, position)
    SELECT $8, $9 WHERE $8 IS NOT NULL
    ON CONFLICT (source) DO UPDATE SET position = EXCLUDED.position, updated_at = now()
    RETURNING 1
),
note AS (
    SELECT pg_notify($10, $1) WHERE EXISTS (SELECT 1 FROM heads)
)
SELECT (SELECT count(*) FROM ins) AS inserted,
       (SELECT count(*) FROM ins WHERE status = 'superseded') AS superseded,
       (SELECT count(*) FROM cur) + (SELECT count(*) FROM note) AS side_effects,
       -- The keys given new open events (their queue rows are now held), when asked.
       CASE WHEN $11 THEN ARRAY(SELECT DISTINCT entity_key FROM ins WHERE status <> 'superseded')
       END AS keys
"#
        )
    };
}

/// The usual case: none of the events was captured before. A repeated capture makes the
/// statement fail on the capture key (and write nothing); [`capture`] then runs
/// [`INSERT_EVENTS_SKIPPING_KNOWN`]. Measured with psql (20 batches of 2,000 events),
/// the `ON CONFLICT` check of every row costs about a fifth of the capture.
const INSERT_NEW_EVENTS: &str = insert_events!("");

/// Stores the events not captured before and ignores the others.
const INSERT_EVENTS_SKIPPING_KNOWN: &str =
    insert_events!("    ON CONFLICT (flow, entity_key, source_version) DO NOTHING\n");

/// Older waiting events of the keys a capture gave new events are replaced by the
/// newest one. Runs after [`INSERT_NEW_EVENTS`] in the same transaction: that statement
/// holds those keys' queue rows until commit, so this one (with a fresh snapshot) sees
/// each key's current head and claimed run, which are never superseded (they may be
/// being delivered), and no ack can move a head meanwhile. Events before the head are
/// all finished, so the scan starts there.
const SUPERSEDE_OLDER: &str = r#"
WITH newest AS (
    SELECT q.entity_key, coalesce(q.run_end, q.event_id) AS head,
           (SELECT max(o.id) FROM batisync.outbox o
            WHERE o.flow = $1 AND o.entity_key = q.entity_key AND o.status = 'waiting') AS id
    FROM batisync.queue q
    WHERE q.flow = $1 AND q.entity_key = ANY($2)
)
UPDATE batisync.outbox o
SET status = 'superseded', superseded_by = n.id, finished_at = now(),
    outcome = 'superseded by event ' || n.id
FROM newest n
WHERE o.flow = $1 AND o.entity_key = n.entity_key AND o.id > n.head AND o.id < n.id
  AND o.status = 'waiting'
"#;

/// Stores `events` for `flow` and moves the cursor on `conn`, possibly inside the
/// caller's transaction (when other writes, such as snapshot-diff hashes, must commit
/// with the capture). The events are claimable as soon as it commits.
///
/// With `supersede`, an event replaces the older waiting events of its key, including
/// older ones of the same batch (the event being delivered, if any, is not touched).
/// When `cursor` is given or `supersede` is set, run this in a transaction: the
/// cursor's `expected` position is checked under a row lock first; superseding is a
/// second statement.
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
) -> Result<CaptureReport, OutboxError> {
    if let Some(advance) = &cursor {
        check_cursor(conn, advance).await?;
    }
    let statuses = initial_statuses(events, supersede);
    let batch = Batch {
        flow,
        events,
        statuses: &statuses,
        cursor: &cursor,
        supersede,
    };
    let first = if conn.is_in_transaction() {
        // A failed statement would abort the caller's transaction: try in a savepoint.
        let mut attempt = conn.begin().await?;
        let result = batch.insert(&mut attempt, INSERT_NEW_EVENTS).await;
        match result {
            Ok(_) => attempt.commit().await?,
            Err(_) => attempt.rollback().await?,
        }
        count_round_trips(2);
        result
    } else {
        batch.insert(conn, INSERT_NEW_EVENTS).await
    };
    let row = match first {
        Err(error) if is_known_capture(&error) => {
            batch.insert(conn, INSERT_EVENTS_SKIPPING_KNOWN).await?
        }
        other => other?,
    };
    let (inserted, mut superseded) = (row.0 as u64, row.1 as u64);
    if let Some(keys) = row.3.filter(|keys| !keys.is_empty()) {
        superseded += sqlx::query(SUPERSEDE_OLDER)
            .bind(flow)
            .bind(keys)
            .execute(&mut *conn)
            .await?
            .rows_affected();
        count_round_trips(1);
    }
    crate::metrics::get().captured(flow, inserted, superseded);
    Ok(CaptureReport {
        inserted,
        duplicates: events.len() as u64 - inserted,
        superseded,
    })
}

type InsertedRow = (i64, i64, i64, Option<Vec<String>>);

/// The parameters of the capture statement.
struct Batch<'a> {
    flow: &'a str,
    events: &'a [NewEvent],
    statuses: &'a [&'static str],
    cursor: &'a Option<CursorAdvance<'a>>,
    supersede: bool,
}

impl Batch<'_> {
    /// Runs one spelling of the capture statement.
    async fn insert(
        &self,
        conn: &mut PgConnection,
        sql: &'static str,
    ) -> Result<InsertedRow, sqlx::Error> {
        let events = self.events;
        let row = sqlx::query_as(sql)
            .bind(self.flow)
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
            .bind(self.statuses)
            .bind(self.cursor.as_ref().map(|c| c.source))
            .bind(self.cursor.as_ref().map(|c| c.next))
            .bind(NOTIFY_CHANNEL)
            .bind(self.supersede)
            .fetch_one(&mut *conn)
            .await;
        count_round_trips(1);
        row
    }
}

/// The capture statement failed because an event was captured before.
fn is_known_capture(error: &sqlx::Error) -> bool {
    error.as_database_error().is_some_and(|e| {
        e.code().as_deref() == Some("23505") && e.constraint() == Some("outbox_capture_key")
    })
}

/// Initial status of each event: `waiting`, or `superseded` when superseding and a
/// later event of the same key follows in the batch.
fn initial_statuses(events: &[NewEvent], supersede: bool) -> Vec<&'static str> {
    let mut seen_from_end: HashSet<&str> = HashSet::with_capacity(events.len());
    let mut statuses: Vec<&'static str> = events
        .iter()
        .rev()
        .map(|e| {
            let later_exists = !seen_from_end.insert(e.entity_key.as_str());
            if supersede && later_exists {
                "superseded"
            } else {
                "waiting"
            }
        })
        .collect();
    statuses.reverse();
    statuses
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

/// The due heads of a flow, in queue order (see `queue.position`: keys in the order
/// they started waiting; a claimed head is due again only when its lease ends). A key
/// has one head at most, so this never hands out two events of one key. Rows locked by
/// a concurrent claim, capture or ack are skipped, never waited for. Only the keys'
/// queue rows are written: the attempt being made is `attempts + 1`, recorded with its
/// outcome.
const CLAIM: BatchSql = batch_sql!(
    r#"
WITH picked AS (
    SELECT entity_key FROM batisync.queue
    WHERE flow = $1 AND next_attempt_at <= now()
    ORDER BY position
    LIMIT $2
    FOR UPDATE SKIP LOCKED
),
claimed AS (
    UPDATE batisync.queue q
    SET next_attempt_at = now() + $4 * interval '1 millisecond', locked_by = $3,
        locked_until = now() + $4 * interval '1 millisecond', claimed_at = now(),
        run_end = q.event_id
    FROM picked
    WHERE q.flow = $1 AND q.entity_key = picked.entity_key
    RETURNING q.event_id
)
SELECT o.id, o.flow, o.entity_key, o.source_version, o.operation, o.payload,
       o.source_modified_at, o.attempts + 1 AS attempts, o.captured_at
FROM claimed c JOIN batisync.outbox o ON o.id = c.event_id
"#
);

/// Like [`CLAIM`], but each key comes with a run: its head and up to `$5 - 1` open
/// events that follow it, in order. Events after the head are all `waiting` (only a
/// head is ever retried or re-driven), so the run is the key's next `$5` events. The
/// run's last event is kept in `queue.run_end`: recording checks outcomes against it.
const CLAIM_RUNS: BatchSql = batch_sql!(
    r#"
WITH picked AS (
    SELECT entity_key, event_id FROM batisync.queue
    WHERE flow = $1 AND next_attempt_at <= now()
    ORDER BY position
    LIMIT $2
    FOR UPDATE SKIP LOCKED
),
runs AS MATERIALIZED (
    SELECT o.id, o.flow, o.entity_key, o.source_version, o.operation, o.payload,
           o.source_modified_at, o.attempts + 1 AS attempts, o.captured_at
    FROM picked p CROSS JOIN LATERAL (
        SELECT * FROM batisync.outbox o
        WHERE o.flow = $1 AND o.entity_key = p.entity_key AND o.id >= p.event_id
          AND o.status IN ('waiting', 'pending')
        ORDER BY o.id
        LIMIT $5) o
),
claimed AS (
    UPDATE batisync.queue q
    SET next_attempt_at = now() + $4 * interval '1 millisecond', locked_by = $3,
        locked_until = now() + $4 * interval '1 millisecond', claimed_at = now(),
        run_end = r.last
    FROM (SELECT entity_key, max(id) AS last FROM runs GROUP BY entity_key) r
    WHERE q.flow = $1 AND q.entity_key = r.entity_key
)
SELECT * FROM runs
"#
);

impl Outbox {
    /// Claims up to `limit` events of `flow`, one per key, for `worker` under a lease
    /// of `lease`.
    ///
    /// # Errors
    /// Database errors; a corrupt row (unknown operation) fails the claim.
    pub async fn claim(
        &self,
        flow: &str,
        worker: &str,
        limit: i64,
        lease: Duration,
    ) -> Result<Vec<Event>, OutboxError> {
        self.claim_runs(flow, worker, limit, 1, lease).await
    }

    /// Claims up to `keys` keys of `flow` for `worker` under a lease of `lease`, each
    /// with a run of up to `run` consecutive events (its head first). The events come
    /// back in id order; the events of one key must be applied in that order, and
    /// their outcomes recorded as a prefix of the run (see [`Outbox::record`]).
    ///
    /// # Errors
    /// Database errors; a corrupt row (unknown operation) fails the claim.
    #[tracing::instrument(skip_all, fields(flow, worker), err)]
    pub async fn claim_runs(
        &self,
        flow: &str,
        worker: &str,
        keys: i64,
        run: i64,
        lease: Duration,
    ) -> Result<Vec<Event>, OutboxError> {
        let statement = if run <= 1 { &CLAIM } else { &CLAIM_RUNS };
        // The plan depends on how many keys the claim may take (a small claim, such as
        // an idle worker's, stays prepared: measured, planning it at each run doubled
        // the idle-worker pickup latency).
        let (sql, persistent, trips) =
            statement.for_batch(usize::try_from(keys).unwrap_or(usize::MAX));
        let mut query = sqlx::query_as::<_, EventRow>(sql)
            .persistent(persistent)
            .bind(flow)
            .bind(keys)
            .bind(worker)
            .bind(lease.as_millis() as i64);
        if run > 1 {
            query = query.bind(run);
        }
        let rows = query.fetch_all(&self.pool).await?;
        count_round_trips(trips);
        let mut events: Vec<Event> = rows
            .into_iter()
            .map(Event::try_from)
            .collect::<Result<_, _>>()?;
        events.sort_by_key(|e| e.id);
        Ok(events)
    }

    /// When the earliest head of `flow` becomes due (a retry, or a lease that ends),
    /// if there is one.
    ///
    /// # Errors
    /// Database errors.
    pub async fn next_due(&self, flow: &str) -> Result<Option<DateTime<Utc>>, OutboxError> {
        let due =
            sqlx::query_scalar("SELECT min(next_attempt_at) FROM batisync.queue WHERE flow = $1")
                .bind(flow)
                .fetch_one(&self.pool)
                .await?;
        count_round_trips(1);
        Ok(due)
    }

    /// Captures (in a transaction when a cursor is compared or older events are
    /// superseded); see [`capture`].
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
        if cursor.is_none() && !supersede {
            // A single statement is atomic on its own: no BEGIN/COMMIT needed.
            let mut conn = self.pool.acquire().await?;
            return capture(&mut conn, flow, events, cursor, supersede).await;
        }
        let mut tx: Transaction<'_, Postgres> = self.pool.begin().await?;
        let report = capture(&mut tx, flow, events, cursor, supersede).await?;
        tx.commit().await?;
        count_round_trips(2);
        Ok(report)
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
    fn only_the_last_event_of_a_key_in_a_batch_is_kept_when_superseding() {
        let events = [ev("a", "1"), ev("b", "1"), ev("a", "2"), ev("a", "3")];
        assert_eq!(
            initial_statuses(&events, true),
            ["superseded", "waiting", "superseded", "waiting"]
        );
        assert_eq!(initial_statuses(&events, false), ["waiting"; 4]);
    }
}
