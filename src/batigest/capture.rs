//! Change capture, the pure half: batches, cursors, strategy choice, re-snapshot decision
//! and the snapshot diff. The I/O half is in [`super::read`].
//!
//! A capture never advances anything: it returns a [`CaptureBatch`] whose `next_cursor`
//! (and, for snapshot diff, `snapshot_delta`) the caller stores with the outbox events in
//! ONE PostgreSQL transaction (ARCHITECTURE guarantee 1).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::settings::CaptureStrategy;
use super::value::SourceRow;
use crate::outbox::{NewEvent, Operation};

/// One captured change of a keyed table.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The row key (trailing spaces removed).
    pub key: String,
    /// Upsert (the row exists now) or delete.
    pub operation: Operation,
    /// The row as it is now; `None` for a delete (which carries only the key).
    pub row: Option<SourceRow>,
    /// Source version, unique per (key, change): the outbox capture key.
    pub version: String,
    /// The change was made by batisync (our `CHANGE_TRACKING_CONTEXT`).
    pub own_write: bool,
    /// When the change was committed on the source (Change Tracking with
    /// `sys.dm_tran_commit_table` visible); `None` when the source cannot tell.
    pub committed_at: Option<DateTime<Utc>>,
}

impl Change {
    /// The outbox event of this change.
    #[must_use]
    pub fn to_new_event(&self, source_modified_at: Option<DateTime<Utc>>) -> NewEvent {
        NewEvent {
            entity_key: self.key.clone(),
            source_version: self.version.clone(),
            operation: self.operation,
            payload: self
                .row
                .as_ref()
                .map_or_else(|| json!({ "key": self.key }), SourceRow::to_json),
            source_modified_at,
        }
    }
}

/// How a table is being captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    ChangeTracking,
    SnapshotDiff,
}

/// What a capture read, and where the next one starts.
#[derive(Debug, Clone, PartialEq)]
pub struct CaptureBatch {
    /// Changes in source order.
    pub changes: Vec<Change>,
    /// The cursor to store with the events.
    pub next_cursor: Value,
    /// Strategy used.
    pub strategy: Strategy,
    /// True when the whole table was read (no cursor, or the cursor was too old).
    pub full_snapshot: bool,
    /// Snapshot diff only: hashes to record with the events.
    pub snapshot_delta: Option<SnapshotDelta>,
}

/// A stored capture position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cursor {
    /// Last Change Tracking version read.
    ChangeTracking { version: i64 },
    /// Time of the last completed snapshot diff (hashes are in PostgreSQL).
    SnapshotDiff { at: DateTime<Utc> },
}

impl Cursor {
    /// `{"ct_version": 123}` or `{"snapshot": "<RFC 3339>"}`.
    #[must_use]
    pub fn to_json(&self) -> Value {
        match self {
            Self::ChangeTracking { version } => json!({ "ct_version": version }),
            Self::SnapshotDiff { at } => json!({ "snapshot": at.to_rfc3339() }),
        }
    }

    /// Reads a stored cursor; anything unrecognised counts as no cursor (full read).
    #[must_use]
    pub fn from_json(value: Option<&Value>) -> Option<Self> {
        let value = value?;
        if let Some(version) = value.get("ct_version").and_then(Value::as_i64) {
            return Some(Self::ChangeTracking { version });
        }
        let at = value.get("snapshot")?.as_str()?;
        DateTime::parse_from_rfc3339(at)
            .ok()
            .map(|at| Self::SnapshotDiff {
                at: at.with_timezone(&Utc),
            })
    }
}

/// Why Change Tracking must start over with a full read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResnapshotReason {
    /// No cursor, or a cursor of the other strategy.
    NoCursor,
    /// Cleanup removed changes we have not read (`cursor < min valid version`).
    CursorTooOld { cursor: i64, min_valid: i64 },
    /// The cursor is ahead of the server (database restored from a backup).
    CursorAhead { cursor: i64, current: i64 },
}

/// What a Change Tracking capture reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtPlan {
    /// Changes since this version.
    Incremental { since: i64 },
    /// The whole table, then continue from the current version.
    FullSnapshot(ResnapshotReason),
}

/// Decides between an incremental read and a full snapshot.
#[must_use]
pub fn plan_change_tracking(cursor: Option<&Cursor>, min_valid: i64, current: i64) -> CtPlan {
    match cursor {
        Some(Cursor::ChangeTracking { version }) if *version < min_valid => {
            CtPlan::FullSnapshot(ResnapshotReason::CursorTooOld {
                cursor: *version,
                min_valid,
            })
        }
        Some(Cursor::ChangeTracking { version }) if *version > current => {
            CtPlan::FullSnapshot(ResnapshotReason::CursorAhead {
                cursor: *version,
                current,
            })
        }
        Some(Cursor::ChangeTracking { version }) => CtPlan::Incremental { since: *version },
        _ => CtPlan::FullSnapshot(ResnapshotReason::NoCursor),
    }
}

/// Change Tracking facts of one table, as the server reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CtState {
    /// The server refused the Change Tracking probe (functions missing, permission
    /// denied): its message. Every other field is then unknown.
    pub probe_error: Option<String>,
    /// `CHANGE_TRACKING_MIN_VALID_VERSION`: `None` when tracking is off or invisible.
    pub min_valid_version: Option<i64>,
    /// `CHANGE_TRACKING_CURRENT_VERSION()`: `None` when off for the database.
    pub current_version: Option<i64>,
    /// We hold VIEW CHANGE TRACKING on the table.
    pub can_view: bool,
    /// `ALLOW_SNAPSHOT_ISOLATION` is ON.
    pub snapshot_isolation: bool,
}

impl CtState {
    /// A state for a server that refused the probe with `message`.
    #[must_use]
    pub fn refused(message: impl Into<String>) -> Self {
        Self {
            probe_error: Some(message.into()),
            ..Self::default()
        }
    }

    /// Why Change Tracking cannot be used, if it cannot (French / English).
    #[must_use]
    pub fn unusable_because(&self) -> Option<String> {
        let reason = if let Some(message) = &self.probe_error {
            return Some(format!(
                "le serveur refuse les fonctions Change Tracking (absentes ou droit refusé) / \
                 the server refuses the Change Tracking functions (missing or permission \
                 denied): {message}"
            ));
        } else if self.current_version.is_none() {
            "Change Tracking désactivé sur la base / Change Tracking is off for the database"
        } else if !self.can_view {
            "droit VIEW CHANGE TRACKING manquant / VIEW CHANGE TRACKING permission missing"
        } else if self.min_valid_version.is_none() {
            "Change Tracking désactivé sur la table / Change Tracking is off for the table"
        } else if !self.snapshot_isolation {
            "ALLOW_SNAPSHOT_ISOLATION désactivé / ALLOW_SNAPSHOT_ISOLATION is off"
        } else {
            return None;
        };
        Some(reason.to_owned())
    }
}

/// Picks the strategy of a table.
///
/// # Errors
/// Change Tracking forced by setting but unusable: the reason, to show as is.
pub fn choose_strategy(setting: CaptureStrategy, state: &CtState) -> Result<Strategy, String> {
    match (setting, state.unusable_because()) {
        (CaptureStrategy::SnapshotDiff, _) | (CaptureStrategy::Auto, Some(_)) => {
            Ok(Strategy::SnapshotDiff)
        }
        (_, None) => Ok(Strategy::ChangeTracking),
        (CaptureStrategy::ChangeTracking, Some(reason)) => Err(reason),
    }
}

/// The strategy of a table in words, with why (for `check`, the console and the log):
/// `Ok` when the capture can run, `Err` (what to do) when Change Tracking is forced but
/// unusable.
///
/// # Errors
/// Change Tracking forced by setting but unusable.
pub fn strategy_summary(setting: CaptureStrategy, state: &CtState) -> Result<String, String> {
    match choose_strategy(setting, state) {
        Ok(Strategy::ChangeTracking) => Ok("Change Tracking".into()),
        Ok(Strategy::SnapshotDiff) => Ok(format!(
            "comparaison d'instantanés / snapshot diff ({})",
            state
                .unusable_because()
                .unwrap_or_else(|| "capture = \"snapshot_diff\"".into())
        )),
        Err(reason) => Err(format!(
            "{reason} : exécuter sql/mssql/enable_change_tracking.sql ou capture = \"auto\" / \
             run sql/mssql/enable_change_tracking.sql or set capture = \"auto\""
        )),
    }
}

/// Hash changes to record in PostgreSQL with the events of a snapshot diff.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotDelta {
    /// New or changed rows: (key, hash).
    pub upserts: Vec<(String, String)>,
    /// Keys gone from the table.
    pub deletes: Vec<String>,
}

impl SnapshotDelta {
    /// True when nothing changed.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.deletes.is_empty()
    }
}

/// Compares a full read, page by page, with the hashes of the previous snapshot: only
/// the hashes of the page's keys are needed, and only changed rows are kept, so memory
/// is bounded by a page plus the changes (never the whole table).
#[derive(Debug)]
pub struct SnapshotComparer {
    stamp: String,
    changes: Vec<Change>,
    delta: SnapshotDelta,
    /// Rows read so far.
    rows: u64,
    /// Rows read whose key had a stored hash.
    matched: u64,
}

impl SnapshotComparer {
    /// A comparison whose versions carry the snapshot time `at`.
    #[must_use]
    pub fn new(at: DateTime<Utc>) -> Self {
        Self {
            stamp: at.to_rfc3339(),
            changes: Vec::new(),
            delta: SnapshotDelta::default(),
            rows: 0,
            matched: 0,
        }
    }

    /// Compares one page; `stored` holds the previous hashes of (at least) its keys.
    pub fn compare_page(&mut self, stored: &HashMap<String, String>, rows: Vec<SourceRow>) {
        for row in rows {
            self.rows += 1;
            let hash = row.hash();
            let previous = stored.get(&row.key);
            if previous.is_some() {
                self.matched += 1;
            }
            if previous == Some(&hash) {
                continue;
            }
            self.delta.upserts.push((row.key.clone(), hash.clone()));
            self.changes.push(Change {
                key: row.key.clone(),
                operation: Operation::Upsert,
                version: format!("snapshot:{}:{hash}", self.stamp),
                row: Some(row),
                own_write: false,
                committed_at: None,
            });
        }
    }

    /// Rows read so far.
    #[must_use]
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// How many of `stored_total` stored keys the read did not meet: rows deleted since.
    /// Zero means there is no delete to look for.
    #[must_use]
    pub fn missing(&self, stored_total: u64) -> u64 {
        stored_total.saturating_sub(self.matched)
    }

    /// Records deletes of keys gone from the table.
    pub fn add_deletes(&mut self, mut keys: Vec<String>) {
        keys.sort();
        for key in keys {
            self.delta.deletes.push(key.clone());
            self.changes.push(Change {
                key,
                operation: Operation::Delete,
                row: None,
                version: format!("snapshot:{}:deleted", self.stamp),
                own_write: false,
                committed_at: None,
            });
        }
    }

    /// The changes in read order (deletes last) and the hashes to record.
    #[must_use]
    pub fn finish(self) -> (Vec<Change>, SnapshotDelta) {
        (self.changes, self.delta)
    }
}

/// Compares a full read held in memory with the hashes of the previous one (tests and
/// small tables; the capture streams pages through [`SnapshotComparer`]).
#[must_use]
pub fn diff_snapshot(
    previous: &HashMap<String, String>,
    rows: Vec<SourceRow>,
    at: DateTime<Utc>,
) -> (Vec<Change>, SnapshotDelta) {
    let seen: HashSet<String> = rows.iter().map(|r| r.key.clone()).collect();
    let mut comparer = SnapshotComparer::new(at);
    comparer.compare_page(previous, rows);
    let gone = previous
        .keys()
        .filter(|k| !seen.contains(*k))
        .cloned()
        .collect();
    comparer.add_deletes(gone);
    comparer.finish()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::batigest::value::Cell;

    fn row(key: &str, name: &str) -> SourceRow {
        let mut cells = BTreeMap::new();
        cells.insert("code", Cell::Text(key.into()));
        cells.insert("customer_name", Cell::Text(name.into()));
        SourceRow {
            key: key.into(),
            cells,
        }
    }

    fn ct(version: i64) -> Cursor {
        Cursor::ChangeTracking { version }
    }

    #[test]
    fn change_tracking_resnapshots_without_or_with_a_stale_cursor() {
        use CtPlan::*;
        use ResnapshotReason::*;
        assert_eq!(plan_change_tracking(None, 0, 10), FullSnapshot(NoCursor));
        let other = Cursor::SnapshotDiff { at: Utc::now() };
        assert_eq!(
            plan_change_tracking(Some(&other), 0, 10),
            FullSnapshot(NoCursor)
        );
        assert_eq!(
            plan_change_tracking(Some(&ct(4)), 5, 10),
            FullSnapshot(CursorTooOld {
                cursor: 4,
                min_valid: 5
            })
        );
        assert_eq!(
            plan_change_tracking(Some(&ct(5)), 5, 10),
            Incremental { since: 5 }
        );
        assert_eq!(
            plan_change_tracking(Some(&ct(10)), 5, 10),
            Incremental { since: 10 }
        );
        assert_eq!(
            plan_change_tracking(Some(&ct(11)), 5, 10),
            FullSnapshot(CursorAhead {
                cursor: 11,
                current: 10
            })
        );
    }

    #[test]
    fn cursors_round_trip_and_unknown_ones_mean_no_cursor() {
        let at = DateTime::parse_from_rfc3339("2026-11-27T10:00:00Z")
            .expect("time")
            .with_timezone(&Utc);
        for cursor in [ct(123), Cursor::SnapshotDiff { at }] {
            assert_eq!(Cursor::from_json(Some(&cursor.to_json())), Some(cursor));
        }
        assert_eq!(ct(123).to_json(), json!({ "ct_version": 123 }));
        assert_eq!(
            Cursor::from_json(Some(&json!({ "snapshot": "yesterday" }))),
            None
        );
        assert_eq!(Cursor::from_json(Some(&json!(42))), None);
        assert_eq!(Cursor::from_json(None), None);
    }

    #[test]
    fn strategy_is_change_tracking_only_when_fully_usable() {
        let usable = CtState {
            probe_error: None,
            min_valid_version: Some(1),
            current_version: Some(9),
            can_view: true,
            snapshot_isolation: true,
        };
        assert_eq!(
            choose_strategy(CaptureStrategy::Auto, &usable),
            Ok(Strategy::ChangeTracking)
        );
        assert_eq!(
            choose_strategy(CaptureStrategy::SnapshotDiff, &usable),
            Ok(Strategy::SnapshotDiff)
        );
        for broken in [
            CtState {
                current_version: None,
                ..usable.clone()
            },
            CtState {
                can_view: false,
                ..usable.clone()
            },
            CtState {
                min_valid_version: None,
                ..usable.clone()
            },
            CtState {
                snapshot_isolation: false,
                ..usable.clone()
            },
            CtState::refused("function change_tracking_min_valid_version(integer) does not exist"),
        ] {
            assert_eq!(
                choose_strategy(CaptureStrategy::Auto, &broken),
                Ok(Strategy::SnapshotDiff)
            );
            let reason =
                choose_strategy(CaptureStrategy::ChangeTracking, &broken).expect_err("forced");
            assert!(reason.contains(" / "), "{reason}");
        }
    }

    #[test]
    fn snapshot_diff_emits_inserts_updates_and_deletes() {
        let at = Utc::now();
        let previous: HashMap<String, String> = [
            ("1".to_owned(), row("1", "Same").hash()),
            ("2".to_owned(), row("2", "Old").hash()),
            ("3".to_owned(), row("3", "Gone").hash()),
        ]
        .into();
        let (changes, delta) = diff_snapshot(
            &previous,
            vec![row("1", "Same"), row("2", "New"), row("4", "Added")],
            at,
        );
        let summary: Vec<(&str, Operation)> = changes
            .iter()
            .map(|c| (c.key.as_str(), c.operation))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("2", Operation::Upsert),
                ("4", Operation::Upsert),
                ("3", Operation::Delete)
            ]
        );
        assert_eq!(
            delta.upserts,
            vec![
                ("2".into(), row("2", "New").hash()),
                ("4".into(), row("4", "Added").hash())
            ]
        );
        assert_eq!(delta.deletes, vec!["3".to_owned()]);
        assert!(changes[2].row.is_none());
        assert_eq!(changes[2].to_new_event(None).payload, json!({ "key": "3" }));
        assert_eq!(
            changes[0].to_new_event(None).payload["customer_name"],
            json!("New")
        );
    }

    #[test]
    fn a_row_returning_to_an_earlier_state_gets_a_new_version() {
        let first = diff_snapshot(&HashMap::new(), vec![row("1", "A")], Utc::now()).0;
        let later = Utc::now() + chrono::Duration::seconds(1);
        let again = diff_snapshot(&HashMap::new(), vec![row("1", "A")], later).0;
        assert_ne!(first[0].version, again[0].version);
    }

    #[test]
    fn paged_comparison_counts_the_keys_it_met_so_deletes_are_looked_for_only_when_needed() {
        let stored: HashMap<String, String> = [
            ("1".to_owned(), row("1", "A").hash()),
            ("2".to_owned(), row("2", "B").hash()),
            ("3".to_owned(), row("3", "C").hash()),
        ]
        .into();
        let mut comparer = SnapshotComparer::new(Utc::now());
        comparer.compare_page(&stored, vec![row("1", "A"), row("2", "B2")]);
        comparer.compare_page(&stored, vec![row("4", "D")]);
        assert_eq!(comparer.rows(), 3);
        assert_eq!(comparer.missing(3), 1, "key 3 was not met");
        comparer.add_deletes(vec!["3".into()]);
        let (changes, delta) = comparer.finish();
        let summary: Vec<(&str, Operation)> = changes
            .iter()
            .map(|c| (c.key.as_str(), c.operation))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("2", Operation::Upsert),
                ("4", Operation::Upsert),
                ("3", Operation::Delete)
            ]
        );
        assert_eq!(delta.deletes, vec!["3".to_owned()]);

        let mut unchanged = SnapshotComparer::new(Utc::now());
        unchanged.compare_page(&stored, vec![row("1", "A"), row("2", "B"), row("3", "C")]);
        assert_eq!(unchanged.missing(3), 0);
        assert!(unchanged.finish().0.is_empty());
    }

    #[test]
    fn an_unchanged_table_yields_nothing() {
        let previous: HashMap<String, String> = [("1".to_owned(), row("1", "A").hash())].into();
        let (changes, delta) = diff_snapshot(&previous, vec![row("1", "A")], Utc::now());
        assert!(changes.is_empty() && delta.is_empty());
    }
}
