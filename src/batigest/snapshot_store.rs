//! Row hashes of snapshot-diff captures, in PostgreSQL. Both functions take the CALLER's
//! connection: loading happens before the diff, recording inside the transaction that
//! also stores the outbox events and the cursor (ARCHITECTURE guarantee 1).

use std::collections::HashMap;

use sqlx::PgConnection;

use super::capture::SnapshotDelta;

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
