//! The `SuiviMO` writer on SQL Server: one transaction per time slot.
//!
//! In the transaction: read (and lock, `UPDLOCK, HOLDLOCK`) the rows at the previous and
//! new keys, decide with [`decide_write`](super::ledger::decide_write), then `UPDATE`
//! in place (same key or moved key) or `INSERT` when there is no row to update, each
//! write tagged with our `CHANGE_TRACKING_CONTEXT`. A lost connection rolls the
//! transaction back on the server; the whole slot is then retried, deciding again from
//! fresh reads, so a retry never adds a second row.

use std::sync::Arc;

use tiberius::numeric::Numeric;

use super::error::BatigestError;
use super::ledger::{
    Decision, Hours, LedgerError, LedgerKey, LedgerLimits, LedgerRow, LedgerValues, LedgerWriter,
    SlotRemoval, SlotWrite, WriteReport, invalid, plan_removal, plan_write,
};
use super::pool::{Client, Pool};
use super::read::read_ct_state;
use super::settings::DefaultValue;
use super::spec::LedgerSpec;
use super::tsql::{self, LedgerStatements};
use super::value::Cell;

/// Writes slots to `SuiviMO` through the pool.
pub struct SqlServerLedger {
    pool: Arc<Pool>,
    statements: LedgerStatements,
    limits: LedgerLimits,
    context: Vec<u8>,
    /// Values of the `[batigest.suivimo_defaults]` columns, in insert order.
    extra: Vec<DefaultValue>,
}

/// A `[batigest.suivimo_defaults]` value as a statement parameter.
fn default_param(value: &DefaultValue) -> &dyn tiberius::ToSql {
    match value {
        DefaultValue::Bool(b) => b,
        DefaultValue::Int(i) => i,
        DefaultValue::Float(f) => f,
        DefaultValue::Text(t) => t,
    }
}

fn flag(cell: &Cell) -> bool {
    match cell {
        Cell::Int(i) => *i != 0,
        Cell::Bool(b) => *b,
        Cell::Float(f) => *f != 0.0,
        Cell::Decimal(d) => d.parse::<f64>().is_ok_and(|v| v != 0.0),
        _ => false,
    }
}

fn hours_param(hours: Hours) -> Numeric {
    Numeric::new_with_scale(i128::from(hours.0), Hours::SCALE)
}

impl SqlServerLedger {
    /// A writer for the resolved ledger mapping, tagging its writes with our Change
    /// Tracking context when Change Tracking is on for the ledger table.
    ///
    /// # Errors
    /// The Change Tracking state could not be read.
    pub async fn open(pool: Arc<Pool>, spec: &LedgerSpec) -> Result<Self, BatigestError> {
        let state = read_ct_state(&pool, &spec.table.quoted()).await?;
        let tagged = state.min_valid_version.is_some();
        Ok(Self::new(pool, spec, tagged))
    }

    /// A writer for the resolved ledger mapping; `tagged`: send `CHANGE_TRACKING_CONTEXT`
    /// (only valid when Change Tracking is on for the ledger table).
    #[must_use]
    pub fn new(pool: Arc<Pool>, spec: &LedgerSpec, tagged: bool) -> Self {
        let context = pool.settings().change_context.as_bytes().to_vec();
        Self {
            statements: LedgerStatements::new(spec, tagged),
            limits: LedgerLimits {
                chantier_code_chars: spec.chantier_code_chars,
                employee_code_chars: spec.employee_code_chars,
            },
            extra: spec.extra.iter().map(|(_, v)| v.clone()).collect(),
            pool,
            context,
        }
    }

    async fn read_at(
        &self,
        client: &mut Client,
        key: &LedgerKey,
    ) -> Result<Vec<LedgerValues>, BatigestError> {
        let params: [&dyn tiberius::ToSql; 3] =
            [&key.chantier.as_str(), &key.employee.as_str(), &key.start];
        let rows = self
            .pool
            .fetch(client, &self.statements.read, &params)
            .await?;
        let mut found = Vec::with_capacity(rows.len());
        for row in rows {
            let cells: Vec<Cell> = row
                .into_iter()
                .map(|d| Cell::from_column(&d))
                .collect::<Result<_, _>>()
                .map_err(|e| BatigestError::Protocol(e.to_string()))?;
            let [hours, journey, meal] = cells.as_slice() else {
                return Err(BatigestError::Protocol(
                    "ledger read: 3 columns expected".into(),
                ));
            };
            found.push(LedgerValues {
                hours: Hours::from_cell(hours).unwrap_or_default(),
                journey: flag(journey),
                meal: flag(meal),
            });
        }
        Ok(found)
    }

    async fn insert(&self, client: &mut Client, row: &LedgerRow) -> Result<u64, BatigestError> {
        let (k, v) = (&row.key, &row.values);
        let (context, hours) = (self.context.as_slice(), hours_param(v.hours));
        let (journey, meal) = (i32::from(v.journey), i32::from(v.meal));
        let mut params: Vec<&dyn tiberius::ToSql> = vec![
            &context,
            &k.chantier,
            &k.employee,
            &k.start,
            &hours,
            &journey,
            &meal,
        ];
        params.extend(self.extra.iter().map(default_param));
        self.pool
            .execute(client, &self.statements.insert, &params)
            .await
    }

    async fn update(
        &self,
        client: &mut Client,
        old: &LedgerKey,
        row: &LedgerRow,
    ) -> Result<u64, BatigestError> {
        let (k, v) = (&row.key, &row.values);
        let params: [&dyn tiberius::ToSql; 10] = [
            &self.context.as_slice(),
            &old.chantier.as_str(),
            &old.employee.as_str(),
            &old.start,
            &k.chantier.as_str(),
            &k.employee.as_str(),
            &k.start,
            &hours_param(v.hours),
            &i32::from(v.journey),
            &i32::from(v.meal),
        ];
        self.pool
            .execute(client, &self.statements.update, &params)
            .await
    }

    async fn delete(&self, client: &mut Client, key: &LedgerKey) -> Result<u64, BatigestError> {
        let params: [&dyn tiberius::ToSql; 4] = [
            &self.context.as_slice(),
            &key.chantier.as_str(),
            &key.employee.as_str(),
            &key.start,
        ];
        self.pool
            .execute(client, &self.statements.delete, &params)
            .await
    }

    /// One transaction: lock and read, decide, write, commit.
    async fn write_once(
        &self,
        client: &mut Client,
        w: &SlotWrite,
    ) -> Result<WriteReport, BatigestError> {
        self.pool.batch(client, tsql::BEGIN_WRITE).await?;
        let new_key = &w.row.key;
        let old_key = w.previous.as_ref().map_or(new_key, |p| &p.key);
        let at_previous = self.read_at(client, old_key).await?;
        let at_new = if old_key == new_key {
            at_previous.clone()
        } else {
            self.read_at(client, new_key).await?
        };
        let report = plan_write(w, &at_previous, &at_new);
        let touched = match report.decision {
            Decision::Insert => Some(self.insert(client, &w.row).await?),
            Decision::Update | Decision::Move => Some(self.update(client, old_key, &w.row).await?),
            _ => None,
        };
        if touched.is_some_and(|n| n != 1) {
            // Dropping the connection rolls back; the retry decides again.
            return Err(BatigestError::ConnectionLost {
                detail: format!("ledger write touched {touched:?} rows instead of 1"),
            });
        }
        self.pool.batch(client, tsql::COMMIT).await?;
        Ok(report)
    }

    async fn remove_once(
        &self,
        client: &mut Client,
        r: &SlotRemoval,
    ) -> Result<WriteReport, BatigestError> {
        self.pool.batch(client, tsql::BEGIN_WRITE).await?;
        let found = self.read_at(client, &r.previous.key).await?;
        let report = plan_removal(r, &found);
        if report.decision == Decision::Delete {
            self.delete(client, &r.previous.key).await?;
        }
        self.pool.batch(client, tsql::COMMIT).await?;
        Ok(report)
    }
}

/// One ledger operation, so both share the retry loop.
#[derive(Clone, Copy)]
enum LedgerOp<'a> {
    Write(&'a SlotWrite),
    Remove(&'a SlotRemoval),
}

impl SqlServerLedger {
    /// Runs `op` in its own transaction on a lent connection; a lost connection (or
    /// another transient failure) retries it on a new one, up to `max_attempts`.
    async fn run_with_retry(&self, op: LedgerOp<'_>) -> Result<WriteReport, LedgerError> {
        let what = match op {
            LedgerOp::Write(_) => "ledger write",
            LedgerOp::Remove(_) => "ledger removal",
        };
        let mut attempt = 1;
        loop {
            let result = async {
                let mut conn = self.pool.get().await?;
                let report = match op {
                    LedgerOp::Write(write) => self.write_once(conn.client(), write).await?,
                    LedgerOp::Remove(removal) => self.remove_once(conn.client(), removal).await?,
                };
                conn.release();
                Ok(report)
            }
            .await;
            match result {
                Err(e) if self.pool.should_retry(what, &mut attempt, &e).await => {}
                other => return other.map_err(LedgerError::Server),
            }
        }
    }
}

impl LedgerWriter for SqlServerLedger {
    #[tracing::instrument(skip_all, fields(slot = %write.slot_id), err)]
    async fn apply(&self, write: &SlotWrite) -> Result<WriteReport, LedgerError> {
        write
            .row
            .key
            .validate(self.limits)
            .map_err(|m| invalid(&write.slot_id, m))?;
        self.run_with_retry(LedgerOp::Write(write)).await
    }

    #[tracing::instrument(skip_all, fields(slot = %removal.slot_id), err)]
    async fn remove(&self, removal: &SlotRemoval) -> Result<WriteReport, LedgerError> {
        self.run_with_retry(LedgerOp::Remove(removal)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_values_are_read_back_as_flags_and_hours() {
        assert!(
            flag(&Cell::Decimal("1.00".into())) && flag(&Cell::Int(1)) && flag(&Cell::Bool(true))
        );
        assert!(
            !flag(&Cell::Decimal("0".into())) && !flag(&Cell::Null) && !flag(&Cell::Float(0.0))
        );
        let n = hours_param(Hours::from_minutes(50));
        assert_eq!((n.value(), n.scale()), (8_333, 4));
        assert_eq!(n.to_string(), "0.8333");
    }
}
