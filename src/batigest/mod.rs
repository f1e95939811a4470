//! Batigest, the customer's ERP on Microsoft SQL Server: connection, change capture of
//! keyed tables, the employee map and writes to the `SuiviMO` hours ledger.
//!
//! - [`settings`]: connection and explicit column mapping (nothing guessed);
//! - [`tsql`]: every T-SQL statement batisync runs, for the DBA to read;
//! - [`ident`] / [`spec`]: names validated against `INFORMATION_SCHEMA` before they reach
//!   statement text;
//! - [`capture`] (pure) and `read` (I/O): Change Tracking or snapshot diff, returning a
//!   batch and the next cursor for the caller to store with the outbox;
//! - [`model`], [`employees`]: normalised chantiers and the user id → employee code map;
//! - [`ledger`] (decision, simulated ledger) and `ledger_mssql` (SQL Server writer).

pub mod capture;
pub mod check;
pub mod employees;
pub mod error;
pub mod ident;
pub mod ledger;
pub mod ledger_mssql;
pub mod model;
pub mod pool;
pub mod read;
pub mod schema;
pub mod settings;
pub mod snapshot_store;
pub mod spec;
pub(crate) mod tsql;
pub mod value;

pub use capture::{CaptureBatch, Change, Cursor, SnapshotDelta, Strategy};
pub use check::{SqlServerCheck, check_sqlserver};
pub use employees::{EmployeeLookupError, EmployeeMap};
pub use error::BatigestError;
pub use ledger::{
    Decision, LedgerError, LedgerKey, LedgerRow, LedgerValues, LedgerWriter, MemoryLedger,
    SlotRemoval, SlotWrite, WriteReport,
};
pub use ledger_mssql::SqlServerLedger;
pub use model::{Chantier, ChantierCode, FieldError};
pub use settings::{BatigestSettings, CaptureStrategy, Encryption};
pub use value::{Cell, SourceRow};
