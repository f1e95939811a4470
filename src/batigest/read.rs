//! Change capture, the I/O half: reads Batigest with the statements of `tsql`
//! and turns rows into [`CaptureBatch`]es. Nothing here writes anywhere; the caller
//! stores events, cursor and snapshot hashes in one PostgreSQL transaction.

use chrono::Utc;
use serde_json::Value;
use sqlx::PgConnection;
use tiberius::Row;

use super::capture::{
    CaptureBatch, Change, CtPlan, CtState, Cursor, Strategy, choose_strategy, diff_snapshot,
    plan_change_tracking,
};
use super::employees::EmployeeMap;
use super::error::BatigestError;
use super::pool::{Client, Pool};
use super::settings::CaptureStrategy;
use super::snapshot_store;
use super::spec::TableSpec;
use super::tsql;
use super::value::{Cell, SourceRow, normalise_key};
use crate::outbox::Operation;

/// A row with the capture metadata columns (`__key`, `__version`, ...) split off.
#[derive(Debug)]
struct RawRow {
    /// The key exactly as stored (with `CHAR` padding), for keyset pagination.
    raw_key: String,
    version: Option<i64>,
    context: Option<Vec<u8>>,
    exists: bool,
    row: SourceRow,
}

fn key_text(cell: Cell) -> Result<String, BatigestError> {
    match cell {
        Cell::Text(s) => Ok(s),
        Cell::Int(i) => Ok(i.to_string()),
        other => Err(BatigestError::Protocol(format!(
            "unsupported key value {other:?}"
        ))),
    }
}

fn split_row(row: Row, spec: &TableSpec) -> Result<RawRow, BatigestError> {
    let names: Vec<String> = row.columns().iter().map(|c| c.name().to_owned()).collect();
    let mut raw = RawRow {
        raw_key: String::new(),
        version: None,
        context: None,
        exists: true,
        row: SourceRow {
            key: String::new(),
            cells: Default::default(),
        },
    };
    for (name, data) in names.iter().zip(row) {
        let cell = Cell::from_column(&data).map_err(|e| BatigestError::Protocol(e.to_string()))?;
        match (name.as_str(), cell) {
            ("__key", cell) => raw.raw_key = key_text(cell)?,
            ("__version", Cell::Int(v)) => raw.version = Some(v),
            ("__context", Cell::Bytes(b)) => raw.context = Some(b),
            ("__exists", Cell::Int(e)) => raw.exists = e == 1,
            (meta, _) if meta.starts_with("__") => {}
            (role, cell) => {
                if let Some(mapped) = spec.columns.iter().find(|c| c.role == role) {
                    raw.row.cells.insert(mapped.role, cell);
                }
            }
        }
    }
    raw.row.key = normalise_key(&raw.raw_key);
    Ok(raw)
}

/// Reads the Change Tracking facts of a table (`object`: `[schema].[table]`, from a
/// resolved mapping).
///
/// # Errors
/// Connection or query failure.
pub async fn read_ct_state(pool: &Pool, object: &str) -> Result<CtState, BatigestError> {
    let object = object.to_owned();
    let mut attempt = 1;
    loop {
        let result = async {
            let mut conn = pool.get().await?;
            let rows = pool
                .fetch(conn.client(), tsql::CHANGE_TRACKING_STATE, &[&object])
                .await?;
            conn.release();
            let row = rows
                .first()
                .ok_or_else(|| BatigestError::Protocol("no row".into()))?;
            Ok(CtState {
                min_valid_version: row.get::<i64, _>(0),
                current_version: row.get::<i64, _>(1),
                can_view: row.get::<i32, _>(2) == Some(1),
                snapshot_isolation: row.get::<i32, _>(3) == Some(1),
            })
        }
        .await;
        match result {
            Err(e)
                if pool
                    .should_retry("read change tracking state", &mut attempt, &e)
                    .await => {}
            other => return other,
        }
    }
}

/// Reads every row by keyset pages, ordered by key.
async fn read_pages(
    client: &mut Client,
    pool: &Pool,
    spec: &TableSpec,
) -> Result<Vec<RawRow>, BatigestError> {
    let page = i32::try_from(pool.settings().snapshot_page_rows).unwrap_or(i32::MAX);
    let (first, next) = (tsql::first_page(spec), tsql::next_page(spec));
    let mut all: Vec<RawRow> = Vec::new();
    loop {
        let rows = match all.last() {
            None => pool.fetch(client, &first, &[&page]).await?,
            Some(last) => {
                let after = last.raw_key.clone();
                pool.fetch(client, &next, &[&page, &after]).await?
            }
        };
        let count = rows.len();
        for row in rows {
            all.push(split_row(row, spec)?);
        }
        if count < usize::try_from(page).unwrap_or(usize::MAX) {
            return Ok(all);
        }
    }
}

fn upsert(raw: RawRow, version: String) -> Change {
    Change {
        key: raw.row.key.clone(),
        operation: Operation::Upsert,
        row: Some(raw.row),
        version,
        own_write: false,
    }
}

/// Inside the snapshot transaction: versions, then changes or a full read.
async fn read_changes(
    client: &mut Client,
    pool: &Pool,
    spec: &TableSpec,
    cursor: Option<&Cursor>,
) -> Result<CaptureBatch, BatigestError> {
    let object = spec.table.quoted();
    let rows = pool
        .fetch(client, tsql::CHANGE_TRACKING_VERSIONS, &[&object])
        .await?;
    let row = rows
        .first()
        .ok_or_else(|| BatigestError::Protocol("no row".into()))?;
    let (Some(current), Some(min_valid)) = (row.get::<i64, _>(0), row.get::<i64, _>(1)) else {
        return Err(BatigestError::ChangeTrackingUnavailable {
            table: spec.table.to_string(),
            reason: "Change Tracking désactivé / Change Tracking is off",
        });
    };
    let ours = pool.settings().change_context.as_bytes();
    let plan = plan_change_tracking(cursor, min_valid, current);
    let changes = match plan {
        CtPlan::Incremental { since } => {
            let rows = pool
                .fetch(client, &tsql::changes_since(spec), &[&since])
                .await?;
            let mut changes = Vec::with_capacity(rows.len());
            for row in rows {
                let raw = split_row(row, spec)?;
                let version = format!("ct:{}", raw.version.unwrap_or(current));
                let own_write = raw.context.as_deref() == Some(ours);
                changes.push(if raw.exists {
                    Change {
                        own_write,
                        ..upsert(raw, version)
                    }
                } else {
                    Change {
                        key: raw.row.key,
                        operation: Operation::Delete,
                        row: None,
                        version,
                        own_write,
                    }
                });
            }
            changes
        }
        CtPlan::FullSnapshot(reason) => {
            tracing::info!(table = %spec.table, ?reason, current, "Change Tracking: full snapshot");
            let rows = read_pages(client, pool, spec).await?;
            rows.into_iter()
                .map(|raw| upsert(raw, format!("ct-snapshot:{current}")))
                .collect()
        }
    };
    Ok(CaptureBatch {
        changes,
        next_cursor: Cursor::ChangeTracking { version: current }.to_json(),
        strategy: Strategy::ChangeTracking,
        full_snapshot: matches!(plan, CtPlan::FullSnapshot(_)),
        snapshot_delta: None,
    })
}

/// Change Tracking capture under snapshot isolation, from the stored cursor.
///
/// # Errors
/// Connection failures after `max_attempts`, snapshot isolation or tracking off.
#[tracing::instrument(skip_all, fields(table = %spec.table), err)]
pub async fn capture_change_tracking(
    pool: &Pool,
    spec: &TableSpec,
    cursor: Option<&Cursor>,
) -> Result<CaptureBatch, BatigestError> {
    let mut attempt = 1;
    loop {
        let result = async {
            let mut conn = pool.get().await?;
            pool.batch(conn.client(), tsql::BEGIN_SNAPSHOT_READ).await?;
            let batch = read_changes(conn.client(), pool, spec, cursor).await?;
            pool.batch(conn.client(), tsql::END_SNAPSHOT_READ).await?;
            conn.release();
            Ok(batch)
        }
        .await;
        // On error the connection was dropped: the server rolls the read back.
        match result {
            Err(e)
                if pool
                    .should_retry("change tracking capture", &mut attempt, &e)
                    .await => {}
            other => return other,
        }
    }
}

/// Reads the whole table (keyset pages), retried as a whole if the connection drops.
///
/// # Errors
/// Connection failures after `max_attempts`.
pub async fn read_table(pool: &Pool, spec: &TableSpec) -> Result<Vec<SourceRow>, BatigestError> {
    let mut attempt = 1;
    loop {
        let result = async {
            let mut conn = pool.get().await?;
            let rows = read_pages(conn.client(), pool, spec).await?;
            conn.release();
            Ok(rows.into_iter().map(|r| r.row).collect())
        }
        .await;
        match result {
            Err(e) if pool.should_retry("full table read", &mut attempt, &e).await => {}
            other => return other,
        }
    }
}

/// Snapshot-diff capture: full read, compared with the hashes in PostgreSQL (read with
/// the caller's connection). Record `snapshot_delta` with the events.
///
/// # Errors
/// SQL Server or PostgreSQL failure.
#[tracing::instrument(skip_all, fields(table = %spec.table), err)]
pub async fn capture_snapshot_diff(
    pool: &Pool,
    spec: &TableSpec,
    pg: &mut PgConnection,
) -> Result<CaptureBatch, BatigestError> {
    let rows = read_table(pool, spec).await?;
    let previous = snapshot_store::load_hashes(pg, &spec.source).await?;
    let at = Utc::now();
    let (changes, delta) = diff_snapshot(&previous, rows, at);
    Ok(CaptureBatch {
        changes,
        next_cursor: Cursor::SnapshotDiff { at }.to_json(),
        strategy: Strategy::SnapshotDiff,
        full_snapshot: true,
        snapshot_delta: Some(delta),
    })
}

/// Captures a table with the strategy its settings and the server allow.
///
/// # Errors
/// Change Tracking forced but unusable, or a read failure.
pub async fn capture(
    pool: &Pool,
    spec: &TableSpec,
    setting: CaptureStrategy,
    cursor: Option<&Value>,
    pg: &mut PgConnection,
) -> Result<CaptureBatch, BatigestError> {
    let state = read_ct_state(pool, &spec.table.quoted()).await?;
    match choose_strategy(setting, &state) {
        Ok(Strategy::ChangeTracking) => {
            capture_change_tracking(pool, spec, Cursor::from_json(cursor).as_ref()).await
        }
        Ok(Strategy::SnapshotDiff) => capture_snapshot_diff(pool, spec, pg).await,
        Err(reason) => Err(BatigestError::ChangeTrackingUnavailable {
            table: spec.table.to_string(),
            reason,
        }),
    }
}

/// Loads the employee map from a full read of `Salarie` (at start-up; keep it fresh with
/// [`EmployeeMap::apply`] on the Salarie capture).
///
/// # Errors
/// Connection failures after `max_attempts`.
pub async fn load_employee_map(
    pool: &Pool,
    salarie: &TableSpec,
) -> Result<EmployeeMap, BatigestError> {
    Ok(EmployeeMap::from_rows(&read_table(pool, salarie).await?))
}
