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

const UPSERT_HASHES: &str = "INSERT INTO batisync.snapshot_rows (source, row_key, row_hash) \
     SELECT $1, k, h FROM UNNEST($2::text[], $3::text[]) AS u(k, h) \
     ON CONFLICT (source, row_key) DO UPDATE SET row_hash = EXCLUDED.row_hash, updated_at = now()";

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
