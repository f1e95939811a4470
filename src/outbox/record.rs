//! Recording outcomes: delivered, retry later, dead, or released at shutdown.
//!
//! A batch's outcomes are recorded in one transaction that first locks the `queue` rows
//! of its keys in key order (the same order captures take them), then, in one
//! statement that runs after the lock (so it sees every event a concurrent capture
//! committed for those keys), finishes delivered and dead events, schedules retries,
//! and moves each key's head past the events that finished (or removes the key from
//! the queue).
//!
//! The outcomes of one key must be a prefix of the run it was claimed with, in order:
//! delivered events, then at most one failure. Events of the run after that prefix
//! were not attempted; they stay waiting, behind the new head.

use std::collections::{BTreeSet, HashMap};

use sqlx::{PgConnection, Postgres, Transaction};

use super::store::{BatchSql, batch_sql, count_round_trips};
use super::{Event, Failure, NOTIFY_CHANNEL, Outbox, OutboxError};

/// Locks the queue rows of the keys `$2` (sorted), in key order.
const LOCK_KEYS: BatchSql = batch_sql!(
    r#"
SELECT 1 FROM batisync.queue
WHERE flow = $1 AND entity_key = ANY($2)
ORDER BY flow, entity_key
FOR UPDATE
"#
);

/// The keys of events, for callers that only hold their ids.
const KEYS_OF: &str = "SELECT id, entity_key FROM batisync.outbox WHERE id = ANY($1)";

/// Records attempts (the attempt is counted): delivered (`kind` NULL) and dead events
/// (`delay_ms` NULL, with their reason code and parameters) are finished, retried ones are due again after their delay. Then
/// each key's head moves: to its retried event, or to its next open event after the
/// last finished one (keeping the key's place in the queue if that event was already
/// waiting when the run was claimed), or the key leaves the queue. Fenced by the queue
/// row: an outcome counts only while this worker holds the key's claim and the event
/// is in the claimed run (a lease that expired, maybe taken by another worker since,
/// leaves the event alone).
const RECORD: BatchSql = batch_sql!(
    r#"
WITH f AS (
    SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[],
                         $10::text[], $11::text[])
           AS t(id, entity_key, outcome, kind, message, delay_ms, reason, reason_params)
),
fin AS (
    UPDATE batisync.outbox o
    SET status = CASE WHEN f.delay_ms IS NOT NULL THEN 'pending'
                      WHEN f.kind IS NULL THEN 'done' ELSE 'dead' END,
        attempts = o.attempts + 1,
        first_attempt_at = coalesce(o.first_attempt_at, q.claimed_at),
        next_attempt_at = CASE WHEN f.delay_ms IS NULL THEN o.next_attempt_at
                               ELSE now() + f.delay_ms * interval '1 millisecond' END,
        finished_at = CASE WHEN f.delay_ms IS NULL THEN now() END,
        outcome = CASE WHEN f.delay_ms IS NULL THEN f.outcome ELSE o.outcome END,
        last_error = coalesce(f.message, o.last_error)
    FROM f, batisync.queue q
    WHERE o.id = f.id AND o.entity_key = f.entity_key AND o.status IN ('waiting', 'pending')
      AND q.flow = $8 AND q.entity_key = f.entity_key AND q.locked_by = $7
      AND f.id BETWEEN q.event_id AND q.run_end
    RETURNING o.id, o.entity_key, o.attempts, o.next_attempt_at, f.kind, f.message, f.delay_ms,
              f.reason, f.reason_params
),
dead AS (
    INSERT INTO batisync.dead_events (event_id, flow, reason, reason_params)
    SELECT id, $8, coalesce(reason, 'other'), coalesce(reason_params::jsonb, '{}')
    FROM fin WHERE kind IS NOT NULL AND delay_ms IS NULL
),
log AS (
    INSERT INTO batisync.outbox_failures (event_id, attempt, kind, message)
    SELECT id, attempts, kind, message FROM fin WHERE kind IS NOT NULL
),
keys AS (
    SELECT entity_key,
           max(id) FILTER (WHERE delay_ms IS NULL) AS last_finished,
           min(id) FILTER (WHERE delay_ms IS NOT NULL) AS retried,
           min(next_attempt_at) FILTER (WHERE delay_ms IS NOT NULL) AS retry_at
    FROM fin GROUP BY entity_key
),
nxt AS (
    SELECT k.entity_key, coalesce(k.retried, n.id) AS next_id,
           n.captured_at AS next_captured_at, k.retry_at
    FROM keys k
    LEFT JOIN LATERAL (
        SELECT o.id, o.captured_at FROM batisync.outbox o
        WHERE k.retried IS NULL
          AND o.flow = $8 AND o.entity_key = k.entity_key AND o.id > k.last_finished
          AND o.status IN ('waiting', 'pending')
        ORDER BY o.id LIMIT 1) n ON true
),
moved AS (
    UPDATE batisync.queue q
    SET event_id = nxt.next_id, locked_by = NULL, locked_until = NULL, claimed_at = NULL,
        run_end = NULL, next_attempt_at = coalesce(nxt.retry_at, now()),
        -- The key keeps its place for events that were waiting when its run was
        -- claimed (no indexed column changes), and goes to the back for newer ones.
        position = CASE WHEN nxt.next_captured_at > q.claimed_at THEN nxt.next_id
                        ELSE q.position END
    FROM nxt
    WHERE q.flow = $8 AND q.entity_key = nxt.entity_key AND nxt.next_id IS NOT NULL
    RETURNING nxt.retry_at
),
gone AS (
    DELETE FROM batisync.queue q USING nxt
    WHERE q.flow = $8 AND q.entity_key = nxt.entity_key AND nxt.next_id IS NULL
),
note AS (
    SELECT pg_notify($9, $8) WHERE EXISTS (SELECT 1 FROM moved WHERE retry_at IS NULL)
)
SELECT (SELECT count(*) FROM fin WHERE kind IS NULL), (SELECT count(*) FROM note)
"#
);

/// Claims given back at shutdown: only the queue rows change, the attempt is not
/// counted.
const RELEASE: &str = r#"
UPDATE batisync.queue q
SET locked_by = NULL, locked_until = NULL, claimed_at = NULL, run_end = NULL,
    next_attempt_at = now()
WHERE q.flow = $3 AND q.entity_key = ANY($1) AND q.locked_by = $2
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
    /// acknowledged. Looks the events' keys up first; [`Outbox::record_claimed`] does
    /// not need to.
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
        let keys = self.keys_of(&outcome_ids(done, failures)).await?;
        let keys: HashMap<i64, &str> = keys.iter().map(|(id, key)| (*id, key.as_str())).collect();
        self.record_keyed(flow, worker, &keys, done, failures).await
    }

    /// Records the outcomes of events claimed as `claimed` (see [`Outbox::record`]).
    /// Outcomes that break a run's order (an event recorded while an earlier one of
    /// its run is not, or after a failure) are not recorded: those events stay open
    /// and are claimed again.
    ///
    /// # Errors
    /// Database errors; nothing is recorded then, and the leases bring the events back.
    pub async fn record_claimed(
        &self,
        flow: &str,
        worker: &str,
        claimed: &[Event],
        done: &[(i64, String)],
        failures: &[Failure],
    ) -> Result<u64, OutboxError> {
        let keys = run_prefixes(claimed, done, failures);
        if keys.len() < done.len() + failures.len() {
            tracing::error!(
                flow,
                worker,
                outcomes = done.len() + failures.len(),
                kept = keys.len(),
                "outcomes out of their runs' order were not recorded; those events will be claimed again"
            );
        }
        self.record_keyed(flow, worker, &keys, done, failures).await
    }

    async fn record_keyed(
        &self,
        flow: &str,
        worker: &str,
        keys: &HashMap<i64, &str>,
        done: &[(i64, String)],
        failures: &[Failure],
    ) -> Result<u64, OutboxError> {
        // Events the outbox does not know (pruned, or never claimed) have nothing to record.
        let rows = Rows::new(keys, done, failures);
        if rows.ids.is_empty() {
            return Ok(0);
        }
        let mut tx: Transaction<'_, Postgres> = self.pool.begin().await?;
        let trips = lock_keys(&mut tx, flow, &rows.locked_keys()).await?;
        let (sql, persistent, record_trips) = RECORD.for_batch(rows.ids.len());
        let (acked, _): (i64, i64) = sqlx::query_as(sql)
            .persistent(persistent)
            .bind(&rows.ids)
            .bind(&rows.keys)
            .bind(&rows.outcomes)
            .bind(&rows.kinds)
            .bind(&rows.messages)
            .bind(&rows.delays)
            .bind(worker)
            .bind(flow)
            .bind(NOTIFY_CHANNEL)
            .bind(&rows.reasons)
            .bind(&rows.reason_params)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        count_round_trips(2 + trips + record_trips);
        Ok(acked as u64)
    }

    /// Gives claimed events back without counting the attempt (graceful shutdown).
    /// Returns how many keys were released.
    ///
    /// # Errors
    /// Database errors.
    pub async fn release(&self, flow: &str, worker: &str, ids: &[i64]) -> Result<u64, OutboxError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let keys: BTreeSet<String> = self
            .keys_of(ids)
            .await?
            .into_iter()
            .map(|(_, key)| key)
            .collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let mut tx: Transaction<'_, Postgres> = self.pool.begin().await?;
        let trips = lock_keys(&mut tx, flow, &keys).await?;
        let released = sqlx::query(RELEASE)
            .bind(&keys)
            .bind(worker)
            .bind(flow)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        count_round_trips(3 + trips);
        Ok(released)
    }

    async fn keys_of(&self, ids: &[i64]) -> Result<Vec<(i64, String)>, OutboxError> {
        let keys = sqlx::query_as(KEYS_OF)
            .bind(ids)
            .fetch_all(&self.pool)
            .await?;
        count_round_trips(1);
        Ok(keys)
    }
}

/// Locks the queue rows of `keys` (sorted, distinct); returns the round trips used.
async fn lock_keys(conn: &mut PgConnection, flow: &str, keys: &[&str]) -> Result<u64, OutboxError> {
    let (sql, persistent, trips) = LOCK_KEYS.for_batch(keys.len());
    sqlx::query(sql)
        .persistent(persistent)
        .bind(flow)
        .bind(keys)
        .execute(&mut *conn)
        .await?;
    Ok(trips)
}

/// The key of each outcome that belongs to its run's recordable prefix: the claimed
/// events of each key in id order, each with an outcome, up to the first failure.
fn run_prefixes<'a>(
    claimed: &'a [Event],
    done: &[(i64, String)],
    failures: &[Failure],
) -> HashMap<i64, &'a str> {
    let failed: BTreeSet<i64> = failures.iter().map(|f| f.event_id).collect();
    let delivered: BTreeSet<i64> = done.iter().map(|d| d.0).collect();
    let mut ordered: Vec<&Event> = claimed.iter().collect();
    ordered.sort_by_key(|e| e.id);
    // Keys whose run is over: an event without an outcome, or a failure, was met.
    let mut ended: BTreeSet<&str> = BTreeSet::new();
    let mut keys = HashMap::with_capacity(claimed.len());
    for event in ordered {
        let key = event.entity_key.as_str();
        if ended.contains(key) {
            continue;
        }
        if delivered.contains(&event.id) {
            keys.insert(event.id, key);
        } else if failed.contains(&event.id) {
            keys.insert(event.id, key);
            ended.insert(key);
        } else {
            ended.insert(key);
        }
    }
    keys
}

fn outcome_ids(done: &[(i64, String)], failures: &[Failure]) -> Vec<i64> {
    done.iter()
        .map(|d| d.0)
        .chain(failures.iter().map(|f| f.event_id))
        .collect()
}

/// The columns of [`RECORD`]: one entry per outcome whose key is known.
#[derive(Default)]
struct Rows<'a> {
    ids: Vec<i64>,
    keys: Vec<&'a str>,
    outcomes: Vec<Option<&'a str>>,
    kinds: Vec<Option<&'a str>>,
    messages: Vec<Option<&'a str>>,
    delays: Vec<Option<i64>>,
    reasons: Vec<Option<&'static str>>,
    /// JSON objects, as text.
    reason_params: Vec<Option<String>>,
}

impl<'a> Rows<'a> {
    fn new(
        keys: &HashMap<i64, &'a str>,
        done: &'a [(i64, String)],
        failures: &'a [Failure],
    ) -> Self {
        let mut rows = Self::default();
        for (id, summary) in done {
            if let Some(key) = keys.get(id) {
                rows.push(*id, key, Some(summary), None, None, None);
                rows.reasons.push(None);
                rows.reason_params.push(None);
            }
        }
        for f in failures {
            if let Some(key) = keys.get(&f.event_id) {
                let delay = f
                    .retry_in
                    .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
                rows.push(f.event_id, key, None, Some(f.kind), Some(&f.message), delay);
                let reason = f.reason.as_ref().filter(|_| delay.is_none());
                rows.reasons.push(reason.map(|r| r.code.as_str()));
                rows.reason_params
                    .push(reason.map(|r| r.params_json().to_string()));
            }
        }
        rows
    }

    fn push(
        &mut self,
        id: i64,
        key: &'a str,
        outcome: Option<&'a str>,
        kind: Option<&'a str>,
        message: Option<&'a str>,
        delay: Option<i64>,
    ) {
        self.ids.push(id);
        self.keys.push(key);
        self.outcomes.push(outcome);
        self.kinds.push(kind);
        self.messages.push(message);
        self.delays.push(delay);
    }

    /// The distinct keys, sorted: the order captures lock them in.
    fn locked_keys(&self) -> Vec<&'a str> {
        let keys: BTreeSet<&str> = self.keys.iter().copied().collect();
        keys.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::Operation;

    fn claimed(key: &str, id: i64) -> Event {
        Event {
            id,
            flow: "f".into(),
            entity_key: key.into(),
            source_version: id.to_string(),
            operation: Operation::Upsert,
            payload: serde_json::json!({}),
            source_modified_at: None,
            attempts: 1,
            captured_at: chrono::Utc::now(),
        }
    }

    fn failure(id: i64) -> Failure {
        Failure {
            event_id: id,
            kind: "transient",
            message: "down".into(),
            retry_in: None,
            reason: None,
        }
    }

    #[test]
    fn only_each_runs_prefix_up_to_its_first_failure_or_gap_is_recorded() {
        let events = [
            claimed("a", 1),
            claimed("b", 2),
            claimed("a", 3),
            claimed("a", 4),
            claimed("b", 5),
            claimed("c", 6),
            claimed("c", 7),
        ];
        let done = [
            (1, "ok".to_string()),
            (4, "ok".to_string()), // a@3 has no outcome: a@4 must not be recorded
            (2, "ok".to_string()),
            (7, "ok".to_string()),  // after c@6 failed
            (99, "ok".to_string()), // never claimed
        ];
        let failures = [failure(3), failure(5), failure(6)];
        let failures = &failures[1..]; // a@3 not attempted

        let mut kept: Vec<(i64, &str)> =
            run_prefixes(&events, &done, failures).into_iter().collect();
        kept.sort_unstable();

        assert_eq!(kept, [(1, "a"), (2, "b"), (5, "b"), (6, "c")]);
    }
}
