//! Change capture, the I/O half: reads Batigest with the statements of `tsql`
//! and turns rows into [`CaptureBatch`]es. Nothing here writes anywhere; the caller
//! stores events, cursor and snapshot hashes in one PostgreSQL transaction.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;
use tiberius::Row;

use super::capture::{
    CaptureBatch, Change, CtPlan, CtState, Cursor, SnapshotComparer, Strategy, choose_strategy,
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
    committed_at: Option<DateTime<Utc>>,
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
        committed_at: None,
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
            ("__committed_at", Cell::DateTime(t)) => raw.committed_at = Some(t.and_utc()),
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

/// A server error (not a lost connection) answering a probe: the feature is refused.
fn refused_by_server(e: &BatigestError) -> Option<String> {
    match e {
        BatigestError::Server { message, code, .. } => Some(format!("{message} (error {code})")),
        BatigestError::PermissionDenied { message, code } => {
            Some(format!("{message} (error {code})"))
        }
        _ => None,
    }
}

/// Runs a probe statement on its own connection: `Ok(Err(reason))` when the server
/// refuses it (the connection is then closed, never reused).
async fn probe(
    pool: &Pool,
    sql: &'static str,
    params: &[&dyn tiberius::ToSql],
) -> Result<Result<Vec<Row>, String>, BatigestError> {
    let mut conn = pool.get().await?;
    match pool.fetch(conn.client(), sql, params).await {
        Ok(rows) => {
            conn.release();
            Ok(Ok(rows))
        }
        Err(e) => refused_by_server(&e).map(Err).ok_or(e),
    }
}

/// Reads the Change Tracking facts of a table (`object`: `[schema].[table]`, from a
/// resolved mapping). A server that refuses the Change Tracking functions (they do not
/// exist, or permission is denied) gives a state saying so: the capture then falls back
/// to the snapshot diff.
///
/// # Errors
/// Connection failure after `max_attempts`.
pub async fn read_ct_state(pool: &Pool, object: &str) -> Result<CtState, BatigestError> {
    let object = object.to_owned();
    let mut attempt = 1;
    loop {
        let result = async {
            let rows = match probe(pool, tsql::CHANGE_TRACKING_STATE, &[&object]).await? {
                Ok(rows) => rows,
                Err(reason) => return Ok(CtState::refused(reason)),
            };
            let row = rows
                .first()
                .ok_or_else(|| BatigestError::Protocol("no row".into()))?;
            Ok(CtState {
                probe_error: None,
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

/// Can we read commit times (`sys.dm_tran_commit_table`)? A refusal is `false`.
///
/// # Errors
/// Connection failure.
pub async fn commit_time_visible(pool: &Pool) -> Result<bool, BatigestError> {
    Ok(probe(pool, tsql::COMMIT_TIME_PROBE, &[]).await?.is_ok())
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
        committed_at: raw.committed_at,
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
    commit_time: bool,
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
            reason: "Change Tracking désactivé / Change Tracking is off".into(),
        });
    };
    let ours = pool.settings().change_context.as_bytes();
    let plan = plan_change_tracking(cursor, min_valid, current);
    let changes = match plan {
        CtPlan::Incremental { since } => {
            let rows = pool
                .fetch(client, &tsql::changes_since(spec, commit_time), &[&since])
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
                        committed_at: raw.committed_at,
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

/// Change Tracking capture under snapshot isolation, from the stored cursor. Each
/// change carries its commit time where the server lets us read it.
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
            let commit_time = commit_time_visible(pool).await?;
            let mut conn = pool.get().await?;
            pool.batch(conn.client(), tsql::BEGIN_SNAPSHOT_READ).await?;
            let batch = read_changes(conn.client(), pool, spec, cursor, commit_time).await?;
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

/// Where a snapshot-diff read stands: kept across a lost connection, so a retry goes
/// on from the last page compared.
struct DiffProgress {
    comparer: SnapshotComparer,
    /// Raw key of the last row compared (keyset position).
    after: Option<String>,
    done: bool,
}

/// Reads pages after `progress.after` and compares each with the stored hashes of its
/// keys; only one page is held at a time.
async fn diff_pages(
    client: &mut Client,
    pool: &Pool,
    spec: &TableSpec,
    pg: &mut PgConnection,
    progress: &mut DiffProgress,
) -> Result<(), BatigestError> {
    let page = i32::try_from(pool.settings().snapshot_page_rows).unwrap_or(i32::MAX);
    let (first, next) = (tsql::first_page(spec), tsql::next_page(spec));
    while !progress.done {
        let rows = match &progress.after {
            None => pool.fetch(client, &first, &[&page]).await?,
            Some(after) => pool.fetch(client, &next, &[&page, after]).await?,
        };
        let count = rows.len();
        let mut page_rows = Vec::with_capacity(count);
        let mut last = None;
        for row in rows {
            let raw = split_row(row, spec)?;
            last = Some(raw.raw_key);
            page_rows.push(raw.row);
        }
        let keys: Vec<&str> = page_rows.iter().map(|r| r.key.as_str()).collect();
        let stored = snapshot_store::load_hashes_of(pg, &spec.source, &keys).await?;
        progress.comparer.compare_page(&stored, page_rows);
        if last.is_some() {
            progress.after = last;
        }
        progress.done = count < usize::try_from(page).unwrap_or(usize::MAX);
    }
    Ok(())
}

/// Keys at most per `KEYS_PRESENT` statement (SQL Server takes 2,100 parameters).
const KEYS_PER_LOOKUP: i64 = 500;

/// The stored keys the table no longer has: stored keys are paged from PostgreSQL and
/// looked up in the table, a page at a time.
async fn find_deleted(
    client: &mut Client,
    pool: &Pool,
    spec: &TableSpec,
    pg: &mut PgConnection,
) -> Result<Vec<String>, BatigestError> {
    let mut deleted = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let keys =
            snapshot_store::stored_keys_page(pg, &spec.source, after.as_deref(), KEYS_PER_LOOKUP)
                .await?;
        let Some(last) = keys.last().cloned() else {
            return Ok(deleted);
        };
        let params: Vec<&dyn tiberius::ToSql> =
            keys.iter().map(|k| k as &dyn tiberius::ToSql).collect();
        let rows = pool
            .fetch(client, &tsql::keys_present(spec, keys.len()), &params)
            .await?;
        let mut present = std::collections::HashSet::with_capacity(rows.len());
        for row in rows {
            present.insert(split_row(row, spec)?.row.key);
        }
        deleted.extend(keys.into_iter().filter(|k| !present.contains(k)));
        after = Some(last);
    }
}

/// Snapshot-diff capture: the table is read by keyset pages, each compared with the
/// stored hashes of its keys (read with the caller's connection); deletes are looked
/// for only when some stored key was not met. Record `snapshot_delta` with the events.
/// `full_snapshot` is true when there was no snapshot before (initial load, resync).
///
/// # Errors
/// SQL Server or PostgreSQL failure.
#[tracing::instrument(skip_all, fields(table = %spec.table), err)]
pub async fn capture_snapshot_diff(
    pool: &Pool,
    spec: &TableSpec,
    cursor: Option<&Cursor>,
    pg: &mut PgConnection,
) -> Result<CaptureBatch, BatigestError> {
    let at = Utc::now();
    let stored_total = snapshot_store::count_hashes(pg, &spec.source).await?;
    let mut progress = DiffProgress {
        comparer: SnapshotComparer::new(at),
        after: None,
        done: false,
    };
    let mut deleted = None;
    let mut attempt = 1;
    loop {
        let result = async {
            let mut conn = pool.get().await?;
            diff_pages(conn.client(), pool, spec, pg, &mut progress).await?;
            if deleted.is_none() {
                deleted = Some(if progress.comparer.missing(stored_total) > 0 {
                    find_deleted(conn.client(), pool, spec, pg).await?
                } else {
                    Vec::new()
                });
            }
            conn.release();
            Ok::<_, BatigestError>(())
        }
        .await;
        match result {
            Ok(()) => break,
            Err(e)
                if pool
                    .should_retry("snapshot diff read", &mut attempt, &e)
                    .await => {}
            Err(e) => return Err(e),
        }
    }
    progress.comparer.add_deletes(deleted.unwrap_or_default());
    let (changes, delta) = progress.comparer.finish();
    Ok(CaptureBatch {
        changes,
        next_cursor: Cursor::SnapshotDiff { at }.to_json(),
        strategy: Strategy::SnapshotDiff,
        full_snapshot: !matches!(cursor, Some(Cursor::SnapshotDiff { .. })),
        snapshot_delta: Some(delta),
    })
}

/// True when the last snapshot diff (its cursor) is younger than `interval`: the next
/// full read is not due yet.
#[must_use]
pub fn snapshot_not_due(cursor: Option<&Cursor>, interval: Duration, now: DateTime<Utc>) -> bool {
    match cursor {
        Some(Cursor::SnapshotDiff { at }) => {
            (now - *at).to_std().is_ok_and(|elapsed| elapsed < interval)
        }
        _ => false,
    }
}

/// Captures a table with the strategy its settings and the server allow. A snapshot
/// diff runs at most every `snapshot_interval_ms`; in between, the answer is an empty
/// batch with the stored cursor (nothing to store).
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
    capture_with_state(pool, spec, setting, &state, cursor, pg).await
}

/// [`capture`] with a Change Tracking state already read (the caller logs it).
///
/// # Errors
/// Change Tracking forced but unusable, or a read failure.
pub async fn capture_with_state(
    pool: &Pool,
    spec: &TableSpec,
    setting: CaptureStrategy,
    state: &CtState,
    cursor: Option<&Value>,
    pg: &mut PgConnection,
) -> Result<CaptureBatch, BatigestError> {
    let parsed = Cursor::from_json(cursor);
    match choose_strategy(setting, state) {
        Ok(Strategy::ChangeTracking) => capture_change_tracking(pool, spec, parsed.as_ref()).await,
        Ok(Strategy::SnapshotDiff) => {
            let interval = Duration::from_millis(pool.settings().snapshot_interval_ms);
            match cursor {
                Some(stored) if snapshot_not_due(parsed.as_ref(), interval, Utc::now()) => {
                    Ok(CaptureBatch {
                        changes: Vec::new(),
                        next_cursor: stored.clone(),
                        strategy: Strategy::SnapshotDiff,
                        full_snapshot: false,
                        snapshot_delta: None,
                    })
                }
                _ => capture_snapshot_diff(pool, spec, parsed.as_ref(), pg).await,
            }
        }
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
