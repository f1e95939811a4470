//! Flow `heures`: validated BatiSimply time slots land in Batigest's labour ledger
//! (`SuiviMO`), exactly once, and follow every later correction.
//!
//! - [`poller`]: reads the time slots (modified-since or a sliding window), captures only
//!   new, changed or vanished slots ([`store`]: `slot_captures`), one poller across
//!   processes; keeps the employee map fresh and runs the automatic [`redrive`];
//! - [`slot`]: the captured slot, its content hash, UTC → local minute, minutes → hours;
//! - [`handler`]: the idempotent dispatcher handler writing through a
//!   [`LedgerWriter`](crate::batigest::LedgerWriter) (SQL Server, or the simulated
//!   ledger), with latest modification wins against Batigest edits;
//! - [`batigest`]: the employee map (`Salarie.codebs`) and where it is read;
//! - [`settings`]: the `[heures]` section.

pub mod batigest;
pub mod bench;
pub mod handler;
pub mod poller;
pub mod redrive;
pub mod settings;
pub mod slot;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;

pub use batigest::{EmployeeDirectory, EmployeeSource, SimulatedEmployees, SqlServerEmployees};
pub use handler::HeuresHandler;
pub use poller::{PollReport, Poller};
pub use settings::{HeuresSettings, MinuteRounding, OnUnvalidated};

use crate::app::Application;
use crate::batigest::LedgerWriter;
use crate::batisimply::BatisimplyClient;
use crate::dispatch::DispatchSettings;

/// Name of the flow in the outbox, `links` and `conflicts`.
pub const FLOW: &str = "heures";

/// An employee directory refreshed every `employee_refresh_secs`.
pub fn directory<E: EmployeeSource>(
    source: E,
    settings: &HeuresSettings,
) -> Arc<EmployeeDirectory<E>> {
    Arc::new(EmployeeDirectory::new(
        source,
        Duration::from_secs(settings.employee_refresh_secs),
    ))
}

/// Adds the flow to an application: its dispatchers writing to `ledger`, and its poller.
///
/// # Errors
/// The configured time zone is unknown.
pub fn register<L: LedgerWriter + 'static, E: EmployeeSource>(
    app: Application,
    settings: &HeuresSettings,
    dispatch: &DispatchSettings,
    client: BatisimplyClient,
    ledger: Arc<L>,
    employees: E,
) -> anyhow::Result<Application> {
    let settings = Arc::new(settings.clone());
    let pool: PgPool = app.pool().clone();
    let employees = directory(employees, &settings);
    let handler = Arc::new(HeuresHandler::new(
        ledger,
        employees.clone(),
        client.clone(),
        pool.clone(),
        settings.clone(),
    )?);
    let dispatch = settings.dispatch_or(dispatch).clone();
    let control = app.controls().flow(FLOW);
    let resync_pool = pool.clone();
    control.set_resync(Arc::new(move || {
        let pool = resync_pool.clone();
        Box::pin(async move {
            request_resync(&pool)
                .await
                .map(|_| "relecture complète demandée / full re-read requested".to_owned())
                .map_err(|e| format!("PostgreSQL: {e}"))
        })
    }));
    Ok(app
        .with_flow(FLOW, handler, dispatch)
        .with_task("heures poller", move |rt| {
            Poller::new(client, pool, settings, employees)
                .with_control(control)
                .run_until_stopped(rt.stop.clone())
        }))
}

/// Makes the next poll read the whole watched window again and compare every slot with
/// what was last written (`batisync resync heures`): only slots whose row differs are
/// written.
///
/// # Errors
/// Database errors.
pub async fn request_resync(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let cursors = sqlx::query("DELETE FROM batisync.cursors WHERE source = $1")
        .bind(poller::SOURCE)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM batisync.slot_captures")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(cursors.rows_affected())
}
