//! The `SuiviMO` hours ledger: one row per BatiSimply time slot, never two.
//!
//! [`decide_write`] and [`decide_removal`] are the whole policy, as pure functions; the
//! SQL Server writer ([`super::ledger_mssql`]) and the simulated [`MemoryLedger`] only
//! read the rows at the previous and new keys (locked, in one transaction for SQL Server),
//! ask the decision, and carry it out.

use std::sync::Mutex;

use chrono::{NaiveDateTime, Timelike};
use serde::{Deserialize, Serialize};

use super::error::BatigestError;
use super::value::Cell;

/// Decimal hours, in ten-thousandths of an hour (0.36 s): exact, comparable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct Hours(pub i64);

impl Hours {
    /// Decimal places sent to SQL Server.
    pub const SCALE: u8 = 4;

    /// `minutes / 60`, rounded half up to 4 decimals (DOMAIN §5.6: `NbH0` = minutes / 60).
    #[must_use]
    pub fn from_minutes(minutes: u32) -> Self {
        Self((i64::from(minutes) * 10_000 * 2 + 60) / 120)
    }

    /// Reads a stored value (decimal, float or integer column), rounded to 4 decimals.
    #[must_use]
    pub fn from_cell(cell: &Cell) -> Option<Self> {
        let value = match cell {
            Cell::Int(i) => return Some(Self(i * 10_000)),
            Cell::Decimal(d) => d.parse::<f64>().ok()?,
            Cell::Float(f) => *f,
            _ => return None,
        };
        // Hours of one slot are far below 2^53 ten-thousandths: the cast is exact enough.
        #[allow(clippy::cast_possible_truncation)]
        Some(Self((value * 10_000.0).round() as i64))
    }

    /// As `12.5000`.
    #[must_use]
    pub fn to_decimal_string(self) -> String {
        format!("{}.{:04}", self.0 / 10_000, (self.0 % 10_000).abs())
    }
}

/// The functional key of a ledger row (DOMAIN §1.4).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LedgerKey {
    /// `SuiviMO.CodeChantier`.
    pub chantier: String,
    /// `SuiviMO.CodeSalarie`.
    pub employee: String,
    /// Local start of the slot, at minute precision.
    pub start: NaiveDateTime,
}

/// The values batisync writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LedgerValues {
    /// Hours worked (`NbH0`).
    pub hours: Hours,
    /// Home-to-site journey (trajet) flag.
    pub journey: bool,
    /// Meal allowance (panier) flag.
    pub meal: bool,
}

/// One ledger row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerRow {
    pub key: LedgerKey,
    pub values: LedgerValues,
}

/// Longest codes the ledger columns hold (from `INFORMATION_SCHEMA`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerLimits {
    pub chantier_code_chars: usize,
    pub employee_code_chars: usize,
}

impl Default for LedgerLimits {
    fn default() -> Self {
        Self {
            chantier_code_chars: 8,
            employee_code_chars: 10,
        }
    }
}

impl LedgerKey {
    /// Checks the key before any write: no truncation, minute precision.
    ///
    /// # Errors
    /// A readable reason (French / English).
    pub fn validate(&self, limits: LedgerLimits) -> Result<(), String> {
        for (field, code, max) in [
            ("CodeChantier", &self.chantier, limits.chantier_code_chars),
            ("CodeSalarie", &self.employee, limits.employee_code_chars),
        ] {
            let chars = code.chars().count();
            if code.trim().is_empty() || code.trim() != code {
                return Err(format!(
                    "{field} {code:?} vide ou entouré d'espaces / empty or padded"
                ));
            }
            if chars > max {
                return Err(format!(
                    "{field} {code:?} : {chars} caractères pour {max} au plus, jamais tronqué / \
                     {chars} characters, at most {max}, never truncated"
                ));
            }
        }
        if self.start.second() != 0 || self.start.nanosecond() != 0 {
            return Err(format!(
                "date {} non arrondie à la minute / not at minute precision",
                self.start
            ));
        }
        Ok(())
    }
}

/// Write (or rewrite) the row of one slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotWrite {
    /// BatiSimply time-slot id (for messages).
    pub slot_id: String,
    /// What batisync last wrote for this slot (from the links table), if anything.
    pub previous: Option<LedgerRow>,
    /// What the row must be now.
    pub row: LedgerRow,
    /// Overwrite a row changed in Batigest since our last write (the flow decided that
    /// the BatiSimply side is the latest modification).
    pub overwrite_batigest_edits: bool,
}

/// Remove the row of a slot that is no longer eligible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotRemoval {
    pub slot_id: String,
    /// What batisync last wrote for this slot.
    pub previous: LedgerRow,
    /// Delete even if the row was changed in Batigest since.
    pub overwrite_batigest_edits: bool,
}

/// A situation batisync must not resolve alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    /// The row we wrote was changed in Batigest since; holds what was found.
    EditedInBatigest(LedgerValues),
    /// The row we wrote was deleted in Batigest since.
    DeletedInBatigest,
    /// A row we never wrote sits at the key (a Batigest entry, or a lost link).
    ForeignRow(LedgerValues),
    /// The new key is taken by another row: moving there would make two rows one.
    KeyOccupied(LedgerValues),
    /// Several rows share the key: the ledger is already inconsistent.
    DuplicateRows(usize),
}

/// What to do for one slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Insert,
    /// Rewrite the row in place (same key).
    Update,
    /// Rewrite the row at the previous key with the new key and values.
    Move,
    Delete,
    /// The row already holds exactly the new state (e.g. written before a lost ack).
    Unchanged,
    /// Removal of a row that is not there any more.
    AlreadyGone,
    Conflict(Conflict),
}

/// Decides a write from the rows found at the previous key and at the new key (pass the
/// same rows twice when the key did not move).
#[must_use]
pub fn decide_write(
    previous: Option<&LedgerRow>,
    new: &LedgerRow,
    at_previous: &[LedgerValues],
    at_new: &[LedgerValues],
    overwrite: bool,
) -> Decision {
    use Conflict::*;
    if let Some(n) = [at_previous.len(), at_new.len()]
        .into_iter()
        .find(|n| *n > 1)
    {
        return Decision::Conflict(DuplicateRows(n));
    }
    let found_new = at_new.first().copied();
    match previous {
        None => match found_new {
            None => Decision::Insert,
            Some(v) if v == new.values => Decision::Unchanged,
            Some(_) if overwrite => Decision::Update,
            Some(v) => Decision::Conflict(ForeignRow(v)),
        },
        Some(p) if p.key == new.key => match found_new {
            Some(v) if v == new.values => Decision::Unchanged,
            Some(v) if v == p.values || overwrite => Decision::Update,
            Some(v) => Decision::Conflict(EditedInBatigest(v)),
            None if overwrite => Decision::Insert,
            None => Decision::Conflict(DeletedInBatigest),
        },
        Some(p) => match (at_previous.first().copied(), found_new) {
            (None, Some(w)) if w == new.values => Decision::Unchanged,
            (_, Some(w)) => Decision::Conflict(KeyOccupied(w)),
            (Some(v), None) if v == p.values || overwrite => Decision::Move,
            (Some(v), None) => Decision::Conflict(EditedInBatigest(v)),
            (None, None) if overwrite => Decision::Insert,
            (None, None) => Decision::Conflict(DeletedInBatigest),
        },
    }
}

/// Decides a removal from the rows found at the previous key.
#[must_use]
pub fn decide_removal(previous: &LedgerRow, found: &[LedgerValues], overwrite: bool) -> Decision {
    match found {
        [] => Decision::AlreadyGone,
        [v] if *v == previous.values || overwrite => Decision::Delete,
        [v] => Decision::Conflict(Conflict::EditedInBatigest(*v)),
        many => Decision::Conflict(Conflict::DuplicateRows(many.len())),
    }
}

/// What a write or removal did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteReport {
    /// The decision carried out (a conflict writes nothing).
    pub decision: Decision,
    /// The row at the previous key differs from what batisync last wrote there (or is
    /// gone): it was edited in Batigest. Feeds latest-modification-wins.
    pub edited_in_batigest: bool,
}

impl WriteReport {
    fn new(decision: Decision, previous: Option<&LedgerRow>, at_previous: &[LedgerValues]) -> Self {
        let edited_in_batigest = previous.is_some_and(|p| at_previous.first() != Some(&p.values));
        Self {
            decision,
            edited_in_batigest,
        }
    }

    /// True when the ledger was changed.
    #[must_use]
    pub fn wrote(&self) -> bool {
        matches!(
            self.decision,
            Decision::Insert | Decision::Update | Decision::Move | Decision::Delete
        )
    }
}

/// Failure of a ledger operation.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The slot cannot be written as is (permanent: dead-letter it).
    #[error("créneau / slot {slot_id}: {message}")]
    InvalidRow { slot_id: String, message: String },
    /// The server failed (see [`BatigestError::is_transient`]).
    #[error(transparent)]
    Server(#[from] BatigestError),
}

impl LedgerError {
    /// Worth retrying later. A mapping the server refuses (a column missing, or a
    /// NOT NULL column nobody fills) is fixed by an operator, not by the slot: its events
    /// wait and are retried rather than dead-lettered.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Server(e) if e.is_transient()
            || matches!(e, BatigestError::Mapping(_) | BatigestError::Config(_)))
    }
}

/// Where slot rows are written.
pub trait LedgerWriter: Send + Sync {
    /// Writes one slot (insert, update in place, or move), in one transaction.
    fn apply(
        &self,
        write: &SlotWrite,
    ) -> impl Future<Output = Result<WriteReport, LedgerError>> + Send;
    /// Removes the row of one slot.
    fn remove(
        &self,
        removal: &SlotRemoval,
    ) -> impl Future<Output = Result<WriteReport, LedgerError>> + Send;
}

/// Plans a write: validates the key and decides from the rows found.
pub(crate) fn plan_write(
    write: &SlotWrite,
    at_previous: &[LedgerValues],
    at_new: &[LedgerValues],
) -> WriteReport {
    let decision = decide_write(
        write.previous.as_ref(),
        &write.row,
        at_previous,
        at_new,
        write.overwrite_batigest_edits,
    );
    WriteReport::new(decision, write.previous.as_ref(), at_previous)
}

/// Plans a removal.
pub(crate) fn plan_removal(removal: &SlotRemoval, found: &[LedgerValues]) -> WriteReport {
    let decision = decide_removal(&removal.previous, found, removal.overwrite_batigest_edits);
    WriteReport::new(decision, Some(&removal.previous), found)
}

pub(crate) fn invalid(slot_id: &str, message: String) -> LedgerError {
    LedgerError::InvalidRow {
        slot_id: slot_id.to_owned(),
        message,
    }
}

/// SIMULATED ledger for tests and the demo: the same decisions as the SQL Server writer,
/// on rows kept in memory. Nothing here touches Batigest.
#[derive(Debug, Default)]
pub struct MemoryLedger {
    /// Every row; one lock per operation plays the part of the SQL transaction.
    rows: Mutex<Vec<LedgerRow>>,
    limits: LedgerLimits,
}

impl MemoryLedger {
    /// An empty simulated ledger.
    #[must_use]
    pub fn new(limits: LedgerLimits) -> Self {
        Self {
            rows: Mutex::new(Vec::new()),
            limits,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<LedgerRow>> {
        self.rows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// All rows, in insertion order.
    #[must_use]
    pub fn rows(&self) -> Vec<LedgerRow> {
        self.lock().clone()
    }

    /// Number of rows.
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// No row at all.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Simulates a Batigest user adding, editing (same key) or deleting (`None`) a row.
    pub fn edit_as_batigest_user(&self, key: &LedgerKey, values: Option<LedgerValues>) {
        let mut rows = self.lock();
        rows.retain(|r| &r.key != key);
        if let Some(values) = values {
            rows.push(LedgerRow {
                key: key.clone(),
                values,
            });
        }
    }

    fn values_at(rows: &[LedgerRow], key: &LedgerKey) -> Vec<LedgerValues> {
        rows.iter()
            .filter(|r| &r.key == key)
            .map(|r| r.values)
            .collect()
    }

    fn apply_now(&self, write: &SlotWrite) -> Result<WriteReport, LedgerError> {
        write
            .row
            .key
            .validate(self.limits)
            .map_err(|m| invalid(&write.slot_id, m))?;
        let mut rows = self.lock();
        let new_key = &write.row.key;
        let old_key = write.previous.as_ref().map_or(new_key, |p| &p.key);
        let report = plan_write(
            write,
            &Self::values_at(&rows, old_key),
            &Self::values_at(&rows, new_key),
        );
        match report.decision {
            Decision::Insert => rows.push(write.row.clone()),
            Decision::Update | Decision::Move => {
                for r in rows.iter_mut().filter(|r| &r.key == old_key) {
                    *r = write.row.clone();
                }
            }
            _ => {}
        }
        Ok(report)
    }

    fn remove_now(&self, removal: &SlotRemoval) -> WriteReport {
        let mut rows = self.lock();
        let key = &removal.previous.key;
        let report = plan_removal(removal, &Self::values_at(&rows, key));
        if report.decision == Decision::Delete {
            rows.retain(|r| &r.key != key);
        }
        report
    }
}

impl LedgerWriter for MemoryLedger {
    async fn apply(&self, write: &SlotWrite) -> Result<WriteReport, LedgerError> {
        self.apply_now(write)
    }

    async fn remove(&self, removal: &SlotRemoval) -> Result<WriteReport, LedgerError> {
        Ok(self.remove_now(removal))
    }
}

#[cfg(test)]
mod tests;
