//! What a capture leaves in PostgreSQL: outbox events, the cursor and, for snapshot
//! diff, row hashes. Every function takes the CALLER's connection: hashes are loaded
//! before the diff; [`store_capture`] writes events, cursor and hashes inside the
//! caller's transaction (ARCHITECTURE guarantee 1).

use std::collections::HashMap;

use serde_json::Value;
use sqlx::PgConnection;

use super::capture::{CaptureBatch, SnapshotDelta};
use crate::outbox::{self, CaptureReport, CursorAdvance, NewEvent, OutboxError};

const LOAD_HASHES: &str = "SELECT row_key, row_hash FROM batisync.snapshot_rows WHERE source = $1";

const COUNT_HASHES: &str = "SELECT count(*) FROM batisync.snapshot_rows WHERE source = $1";

/// One index lookup per key (a join on the unnested keys): `row_key = ANY($2)` let the
/// planner scan every row of the source for each page, quadratic in the table size.
const LOAD_HASHES_OF: &str = "SELECT s.row_key, s.row_hash \
     FROM UNNEST($2::text[]) AS k(row_key) \
     JOIN batisync.snapshot_rows AS s ON s.source = $1 AND s.row_key = k.row_key";

const KEYS_PAGE: &str = "SELECT row_key FROM batisync.snapshot_rows \
     WHERE source = $1 AND ($2::text IS NULL OR row_key > $2) ORDER BY row_key LIMIT $3";

const UPSERT_HASHES: &str = "INSERT INTO batisync.snapshot_rows (source, row_key, row_hash) \
     SELECT $1, k, h FROM UNNEST($2::text[], $3::text[]) AS u(k, h) \
     ON CONFLICT (source, row_key) DO UPDATE SET row_hash = EXCLUDED.row_hash, updated_at = now()";

/// Fresh statistics after a large snapshot, so page lookups use the primary key.
const ANALYZE_HASHES: &str = "ANALYZE batisync.snapshot_rows";

/// Upserts past which the statistics are refreshed at once (autovacuum comes later).
const ANALYZE_AFTER_UPSERTS: usize = 1_000;

const DELETE_HASHES: &str =
    "DELETE FROM batisync.snapshot_rows WHERE source = $1 AND row_key = ANY($2::text[])";

/// Hashes of the previous snapshot of `source`, by row key.
///
/// # Errors
/// PostgreSQL failure.
pub async fn load_hashes(
    conn: &mut PgConnection,
    source: &str,
) -> Result<HashMap<String, String>, sqlx::Error> {
    let rows: Vec<(String, String)> = sqlx::query_as(LOAD_HASHES)
        .bind(source)
        .fetch_all(conn)
        .await?;
    Ok(rows.into_iter().collect())
}

/// How many row hashes the previous snapshot of `source` left.
///
/// # Errors
/// PostgreSQL failure.
pub async fn count_hashes(conn: &mut PgConnection, source: &str) -> Result<u64, sqlx::Error> {
    let n: i64 = sqlx::query_scalar(COUNT_HASHES)
        .bind(source)
        .fetch_one(conn)
        .await?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// The stored hashes of `keys` only (one page of a snapshot read).
///
/// # Errors
/// PostgreSQL failure.
pub async fn load_hashes_of(
    conn: &mut PgConnection,
    source: &str,
    keys: &[&str],
) -> Result<HashMap<String, String>, sqlx::Error> {
    let rows: Vec<(String, String)> = sqlx::query_as(LOAD_HASHES_OF)
        .bind(source)
        .bind(keys)
        .fetch_all(conn)
        .await?;
    Ok(rows.into_iter().collect())
}

/// Up to `limit` stored keys after `after` (PostgreSQL's order), to look for deletes.
///
/// # Errors
/// PostgreSQL failure.
pub async fn stored_keys_page(
    conn: &mut PgConnection,
    source: &str,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(KEYS_PAGE)
        .bind(source)
        .bind(after)
        .bind(limit)
        .fetch_all(conn)
        .await
}

/// Records a snapshot diff; call inside the transaction that captures its events.
///
/// # Errors
/// PostgreSQL failure (the caller's transaction then rolls back as a whole).
pub async fn record_hashes(
    conn: &mut PgConnection,
    source: &str,
    delta: &SnapshotDelta,
) -> Result<(), sqlx::Error> {
    if !delta.upserts.is_empty() {
        let (keys, hashes): (Vec<&str>, Vec<&str>) = delta
            .upserts
            .iter()
            .map(|(k, h)| (k.as_str(), h.as_str()))
            .unzip();
        sqlx::query(UPSERT_HASHES)
            .bind(source)
            .bind(keys)
            .bind(hashes)
            .execute(&mut *conn)
            .await?;
        if delta.upserts.len() >= ANALYZE_AFTER_UPSERTS {
            sqlx::query(ANALYZE_HASHES).execute(&mut *conn).await?;
        }
    }
    if !delta.deletes.is_empty() {
        sqlx::query(DELETE_HASHES)
            .bind(source)
            .bind(&delta.deletes)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Stores a capture batch in the caller's transaction: the outbox events of `flow`, the
/// cursor of `source` moved from `read_from` (the cursor the capture started from) to
/// `batch.next_cursor`, and the snapshot-diff hashes. Newer events supersede older
/// waiting ones of the same key. The events are claimable once the caller commits.
///
/// # Errors
/// [`OutboxError::CursorConflict`] when another poller moved the cursor (roll back);
/// database errors otherwise.
pub async fn store_capture(
    conn: &mut PgConnection,
    flow: &str,
    source: &str,
    read_from: Option<&Value>,
    batch: &CaptureBatch,
) -> Result<CaptureReport, OutboxError> {
    let events: Vec<NewEvent> = batch.changes.iter().map(|c| c.to_new_event(None)).collect();
    let advance = CursorAdvance {
        source,
        expected: read_from,
        next: &batch.next_cursor,
    };
    let captured = outbox::capture(conn, flow, &events, Some(advance), true).await?;
    if let Some(delta) = &batch.snapshot_delta {
        record_hashes(conn, source, delta).await?;
    }
    Ok(captured)
}
