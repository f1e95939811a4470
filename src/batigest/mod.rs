//! Batigest, the customer's ERP on Microsoft SQL Server: connection, change capture of
//! keyed tables, the employee map and writes to the `SuiviMO` hours ledger.
//!
//! - [`settings`]: connection and explicit column mapping (nothing guessed);
//! - [`pool`]: connections (TLS, SQL Server Browser), a small pool with health checks,
//!   retries when a connection is lost; [`error`]: one actionable error per failure kind;
//! - `tsql`: every T-SQL statement batisync runs, for the DBA to read;
//! - [`schema`], [`ident`], [`spec`]: the mapping verified against `INFORMATION_SCHEMA`;
//!   only validated names reach statement text;
//! - [`capture`] (pure) and [`read`] (I/O): Change Tracking or snapshot diff, returning a
//!   batch and the next cursor for the caller to store with the outbox in one transaction
//!   ([`snapshot_store`] records snapshot-diff hashes with the caller's connection);
//! - [`value`], [`model`], [`employees`]: rows, normalised chantiers, the user id →
//!   employee code map; [`employee_write`]: the console's optional write of an
//!   employee's BatiSimply id;
//! - [`ledger`] (the pure decision and the simulated [`MemoryLedger`]) and
//!   [`ledger_mssql`] (the SQL Server writer);
//! - [`check`]: the SQL Server step of `batisync check`; [`describe`]: `check --describe`,
//!   the mapped tables as the server has them.

pub mod bench;
pub mod capture;
pub mod check;
pub mod describe;
pub mod employee_write;
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
