//! SIMULATED Batigest: an in-memory `ChantierDef` for tests and `batisync demo`.
//!
//! Nothing here talks to SQL Server. It behaves like Change Tracking: every write bumps
//! a version; a read returns the latest state of each key changed after the cursor, or
//! the whole table without a cursor. It goes through the same [`ChangeSource`]
//! interface, poller and outbox as the real source.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::NaiveDate;
use serde_json::{Value, json};
use sqlx::PgConnection;

use super::source::ChangeSource;
use crate::batigest::spec::chantier_role as role;
use crate::batigest::{BatigestError, CaptureBatch, Cell, Change, SourceRow, Strategy};
use crate::outbox::Operation;

/// Cursor name of the simulated table.
pub const SIMULATED_SOURCE: &str = "simulated:ChantierDef";

/// A simulated Batigest `ChantierDef` table. Clones share the table.
#[derive(Debug, Clone, Default)]
pub struct SimulatedBatigest {
    /// Shared by the poller and whoever edits the table (a test, the demo driver).
    table: Arc<Mutex<Table>>,
}

#[derive(Debug, Default)]
struct Table {
    version: u64,
    /// Key → (version of its last change, row; `None` once deleted).
    rows: BTreeMap<String, (u64, Option<SourceRow>)>,
}

impl SimulatedBatigest {
    /// An empty table.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn with_table<T>(&self, f: impl FnOnce(&mut Table) -> T) -> T {
        f(&mut self.table.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Inserts or replaces a row (as Batigest would on a save).
    pub fn upsert(&self, row: SourceRow) {
        self.with_table(|t| {
            t.version += 1;
            t.rows.insert(row.key.clone(), (t.version, Some(row)));
        });
    }

    /// Changes one cell of an existing row; false when the row does not exist.
    pub fn edit(&self, code: &str, role: &'static str, value: Cell) -> bool {
        let Some(mut row) = self.row(code) else {
            return false;
        };
        row.cells.insert(role, value);
        self.upsert(row);
        true
    }

    /// Deletes a row.
    pub fn delete(&self, code: &str) {
        self.with_table(|t| {
            t.version += 1;
            t.rows.insert(code.to_owned(), (t.version, None));
        });
    }

    /// The current row of `code`.
    #[must_use]
    pub fn row(&self, code: &str) -> Option<SourceRow> {
        self.with_table(|t| t.rows.get(code).and_then(|(_, row)| row.clone()))
    }

    /// Codes of the rows present.
    #[must_use]
    pub fn codes(&self) -> Vec<String> {
        self.with_table(|t| {
            t.rows
                .iter()
                .filter(|(_, (_, row))| row.is_some())
                .map(|(code, _)| code.clone())
                .collect()
        })
    }

    /// Adds `count` generated job sites numbered from `first` (codes `00000001`…).
    pub fn seed(&self, first: usize, count: usize) {
        for n in first..first + count {
            self.upsert(sample_row(n));
        }
    }

    fn changes_since(&self, since: Option<u64>) -> (Vec<Change>, u64, bool) {
        self.with_table(|t| {
            let full = since.is_none_or(|v| v > t.version);
            let changes = t
                .rows
                .iter()
                .filter(|(_, (v, row))| {
                    if full {
                        row.is_some()
                    } else {
                        Some(*v) > since
                    }
                })
                .map(|(key, (v, row))| change(key, *v, row.clone(), full, t.version))
                .collect();
            (changes, t.version, full)
        })
    }
}

fn change(key: &str, version: u64, row: Option<SourceRow>, full: bool, now: u64) -> Change {
    Change {
        key: key.to_owned(),
        operation: if row.is_some() {
            Operation::Upsert
        } else {
            Operation::Delete
        },
        row,
        // Each snapshot is a new capture (a resync must enqueue every row again).
        version: if full {
            format!(
                "sim-snapshot:{now}:{}",
                chrono::Utc::now().timestamp_micros()
            )
        } else {
            format!("sim:{version}")
        },
        own_write: false,
        // The simulation has no commit table: like a server that hides it.
        committed_at: None,
    }
}

/// A generated, valid job site: code `n` on 8 digits, a customer, an address, dates.
#[must_use]
pub fn sample_row(n: usize) -> SourceRow {
    const CITIES: [(&str, &str); 4] = [
        ("34000", "Montpellier"),
        ("30000", "Nîmes"),
        ("11000", "Carcassonne"),
        ("66000", "Perpignan"),
    ];
    let (postcode, city) = CITIES[n % CITIES.len()];
    let start = NaiveDate::from_ymd_opt(2026, 1 + (n % 12) as u32, 1 + (n % 28) as u32);
    let text = |s: String| Cell::Text(s);
    let cells = [
        (role::CODE, text(format!("{n:08}"))),
        (role::CUSTOMER_NAME, text(format!("Client {n} Hérault"))),
        (role::LABEL, text(format!("Rénovation lot {n}"))),
        (role::STATE, text("E".into())),
        (role::START_DATE, start.map_or(Cell::Null, Cell::Date)),
        (role::END_DATE, Cell::Null),
        (
            role::STREET,
            text(format!("{} avenue de la Gare", 1 + n % 90)),
        ),
        (role::POSTCODE, text(postcode.into())),
        (role::CITY, text(city.into())),
        (
            role::SOLD_HOURS,
            Cell::Decimal(format!("{}.5", 10 + n % 200)),
        ),
    ];
    SourceRow {
        key: format!("{n:08}"),
        cells: cells.into_iter().collect(),
    }
}

impl ChangeSource for SimulatedBatigest {
    fn source_name(&self) -> String {
        SIMULATED_SOURCE.to_owned()
    }

    async fn read(
        &mut self,
        cursor: Option<&Value>,
        _pg: &mut PgConnection,
    ) -> Result<CaptureBatch, BatigestError> {
        let since = cursor
            .and_then(|c| c.get("sim_version"))
            .and_then(Value::as_u64);
        let (changes, version, full_snapshot) = self.changes_since(since);
        Ok(CaptureBatch {
            changes,
            next_cursor: json!({ "sim_version": version }),
            strategy: Strategy::ChangeTracking,
            full_snapshot,
            snapshot_delta: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_return_the_latest_state_of_each_changed_key() {
        let sim = SimulatedBatigest::new();
        sim.seed(1, 3);
        let (all, v1, full) = sim.changes_since(None);
        assert_eq!((all.len(), v1, full), (3, 3, true));
        assert!(sim.edit("00000002", role::LABEL, Cell::Text("x".into())));
        assert!(sim.edit("00000002", role::LABEL, Cell::Text("y".into())));
        sim.delete("00000003");
        let (changes, v2, full) = sim.changes_since(Some(v1));
        assert!(!full);
        assert_eq!(v2, 6);
        let ops: Vec<_> = changes
            .iter()
            .map(|c| (c.key.as_str(), c.operation))
            .collect();
        assert_eq!(
            ops,
            [
                ("00000002", Operation::Upsert),
                ("00000003", Operation::Delete)
            ]
        );
        assert_eq!(
            changes[0].row.as_ref().map(|r| r.cell(role::LABEL).clone()),
            Some(Cell::Text("y".into()))
        );
        assert_eq!(sim.codes(), ["00000001", "00000002"]);
    }
}
