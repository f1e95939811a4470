//! The flow's PostgreSQL rows, SQL next to the Rust: `slot_captures` (what the poller
//! last captured of each slot) and `links` (what the handler last wrote to `SuiviMO`).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sha2::Digest as _;
use sqlx::{PgConnection, PgPool};

use super::FLOW;
use crate::batigest::ledger::LedgerRow;

/// What the poller last captured of one slot.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Captured {
    pub slot_id: String,
    pub content_hash: String,
    pub slot_start: DateTime<Utc>,
}

/// One slot's new capture.
#[derive(Debug, Clone)]
pub struct CaptureRow {
    pub slot_id: String,
    pub content_hash: String,
    pub slot_start: DateTime<Utc>,
    pub user_id: String,
    pub project_code: Option<String>,
    pub status: Option<String>,
}

/// The capture hashes of `ids`.
///
/// # Errors
/// Database errors.
pub async fn captured_hashes(
    conn: &mut PgConnection,
    ids: &[&str],
) -> Result<HashMap<String, String>, sqlx::Error> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT slot_id, content_hash FROM batisync.slot_captures WHERE slot_id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().collect())
}

/// The slots captured with a start in `[from, to)`.
///
/// # Errors
/// Database errors.
pub async fn captured_between(
    conn: &mut PgConnection,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<Captured>, sqlx::Error> {
    sqlx::query_as(
        "SELECT slot_id, content_hash, slot_start FROM batisync.slot_captures
         WHERE slot_start >= $1 AND slot_start < $2",
    )
    .bind(from)
    .bind(to)
    .fetch_all(conn)
    .await
}

/// Records captures and forgets vanished slots; call in the poll's transaction.
///
/// # Errors
/// Database errors (the caller's transaction then rolls back as a whole).
pub async fn record_captures(
    conn: &mut PgConnection,
    rows: &[CaptureRow],
    vanished: &[String],
) -> Result<(), sqlx::Error> {
    if !rows.is_empty() {
        let ids: Vec<&str> = rows.iter().map(|r| r.slot_id.as_str()).collect();
        let hashes: Vec<&str> = rows.iter().map(|r| r.content_hash.as_str()).collect();
        let starts: Vec<DateTime<Utc>> = rows.iter().map(|r| r.slot_start).collect();
        let users: Vec<&str> = rows.iter().map(|r| r.user_id.as_str()).collect();
        let codes: Vec<Option<&str>> = rows.iter().map(|r| r.project_code.as_deref()).collect();
        let statuses: Vec<Option<&str>> = rows.iter().map(|r| r.status.as_deref()).collect();
        sqlx::query(
            "INSERT INTO batisync.slot_captures
                 (slot_id, content_hash, slot_start, user_id, project_code, status)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::timestamptz[], $4::text[],
                                  $5::text[], $6::text[])
             ON CONFLICT (slot_id) DO UPDATE SET
                 content_hash = EXCLUDED.content_hash, slot_start = EXCLUDED.slot_start,
                 user_id = EXCLUDED.user_id, project_code = EXCLUDED.project_code,
                 status = EXCLUDED.status, captured_at = now()",
        )
        .bind(ids)
        .bind(hashes)
        .bind(starts)
        .bind(users)
        .bind(codes)
        .bind(statuses)
        .execute(&mut *conn)
        .await?;
    }
    if !vanished.is_empty() {
        sqlx::query("DELETE FROM batisync.slot_captures WHERE slot_id = ANY($1)")
            .bind(vanished)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Forgets captures of slots that started before `before` (no longer watched; a slot
/// moved back into the window is then captured again, and its link keeps it on its row).
///
/// # Errors
/// Database errors.
pub async fn forget_captures_before(
    conn: &mut PgConnection,
    before: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    Ok(
        sqlx::query("DELETE FROM batisync.slot_captures WHERE slot_start < $1")
            .bind(before)
            .execute(conn)
            .await?
            .rows_affected(),
    )
}

/// What `links` remembers of the `SuiviMO` row of one slot.
#[derive(Debug, Clone, PartialEq)]
pub struct SlotLink {
    /// The row batisync last wrote (`None`: removed, or never written).
    pub row: Option<LedgerRow>,
    /// Latest known change of that row: batisync's write, or the moment batisync found
    /// it edited in Batigest.
    pub row_changed_at: DateTime<Utc>,
}

/// Reads the link of a slot.
///
/// # Errors
/// Database errors; an unreadable stored row is reported as a decode error.
pub async fn load_link(pool: &PgPool, slot_id: &str) -> Result<Option<SlotLink>, sqlx::Error> {
    type Stored = (
        Option<serde_json::Value>,
        Option<DateTime<Utc>>,
        DateTime<Utc>,
    );
    let found: Option<Stored> = sqlx::query_as(
        "SELECT state, target_modified_at, updated_at FROM batisync.links
             WHERE flow = $1 AND source_key = $2",
    )
    .bind(FLOW)
    .bind(slot_id)
    .fetch_optional(pool)
    .await?;
    found
        .map(|(state, changed, updated)| {
            let row = state
                .map(serde_json::from_value::<LedgerRow>)
                .transpose()
                .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
            Ok(SlotLink {
                row,
                row_changed_at: changed.unwrap_or(updated),
            })
        })
        .transpose()
}

/// The slot (other than `slot_id`) whose last written row has this key, if any.
///
/// # Errors
/// Database errors.
pub async fn slot_at_key(
    pool: &PgPool,
    key_text: &str,
    slot_id: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT source_key FROM batisync.links
         WHERE flow = $1 AND target_id = $2 AND source_key <> $3 LIMIT 1",
    )
    .bind(FLOW)
    .bind(key_text)
    .bind(slot_id)
    .fetch_optional(pool)
    .await
}

/// Records what was written for a slot (`row = None`: its row was removed).
///
/// # Errors
/// Database errors.
pub async fn save_link(
    pool: &PgPool,
    slot_id: &str,
    event_id: i64,
    source_version: &str,
    row: Option<&LedgerRow>,
    row_changed_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let state = row
        .map(serde_json::to_value)
        .transpose()
        .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let target = row.map(|r| super::slot::key_text(&r.key));
    let hash = state
        .as_ref()
        .map(|s| super::slot::hex(&sha2::Sha256::digest(s.to_string().as_bytes())));
    sqlx::query(
        "INSERT INTO batisync.links
             (flow, source_key, target_id, last_event_id, last_source_version, last_hash,
              target_modified_at, state, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now())
         ON CONFLICT (flow, source_key) DO UPDATE SET
             target_id = EXCLUDED.target_id, last_event_id = EXCLUDED.last_event_id,
             last_source_version = EXCLUDED.last_source_version, last_hash = EXCLUDED.last_hash,
             target_modified_at = EXCLUDED.target_modified_at, state = EXCLUDED.state,
             updated_at = now()",
    )
    .bind(FLOW)
    .bind(slot_id)
    .bind(target)
    .bind(event_id)
    .bind(source_version)
    .bind(hash)
    .bind(row_changed_at)
    .bind(state)
    .execute(pool)
    .await?;
    Ok(())
}

/// Notes that the slot's row was found edited in Batigest (and kept) at `seen_at`.
///
/// # Errors
/// Database errors.
pub async fn note_batigest_edit(
    pool: &PgPool,
    slot_id: &str,
    seen_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE batisync.links SET target_modified_at = $3, updated_at = now()
         WHERE flow = $1 AND source_key = $2",
    )
    .bind(FLOW)
    .bind(slot_id)
    .bind(seen_at)
    .execute(pool)
    .await?;
    Ok(())
}
