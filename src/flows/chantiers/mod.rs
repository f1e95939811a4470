//! Flow `chantiers`: Batigest job sites appear and stay current as BatiSimply projects.
//!
//! - [`source`]: the capture interface ([`ChangeSource`]) and the SQL Server reader;
//!   [`simulated`]: the in-memory, clearly simulated Batigest used by tests and the demo;
//! - [`poller`]: one poller per source across processes (advisory lock), writing
//!   events and cursor in one transaction;
//! - [`mapping`]: pure chantier → project mapping and payload validation;
//! - [`handler`]: the idempotent dispatcher handler (links, create-or-update,
//!   latest modification wins, delete → archive); [`store`]: its `links`/`conflicts` SQL;
//! - [`settings`]: the `[chantiers]` section; [`bench`](mod@bench): `batisync bench chantiers`.

pub mod bench;
pub mod handler;
pub mod mapping;
pub mod poller;
pub mod settings;
pub mod simulated;
pub mod source;
pub mod store;

use std::sync::Arc;

use sqlx::PgPool;

pub use handler::ChantiersHandler;
pub use poller::{PollReport, Poller};
pub use settings::{ChantiersSettings, OnDelete};
pub use simulated::SimulatedBatigest;
pub use source::{ChangeSource, SqlServerChantiers};

use crate::app::Application;
use crate::batisimply::BatisimplyClient;
use crate::dispatch::DispatchSettings;

/// Name of the flow in the outbox, `links` and `conflicts`.
pub const FLOW: &str = "chantiers";

/// Adds the flow to an application: its dispatchers, and its poller reading `source`.
pub fn register<S: ChangeSource>(
    app: Application,
    settings: &ChantiersSettings,
    dispatch: &DispatchSettings,
    client: BatisimplyClient,
    source: S,
) -> Application {
    let settings = Arc::new(settings.clone());
    let pool: PgPool = app.pool().clone();
    let handler = Arc::new(ChantiersHandler::new(
        client,
        pool.clone(),
        settings.clone(),
    ));
    let dispatch = settings.dispatch_or(dispatch).clone();
    let control = app.controls().flow(FLOW);
    let (resync_pool, sources) = (pool.clone(), vec![source.source_name()]);
    control.set_resync(Arc::new(move || {
        let (pool, sources) = (resync_pool.clone(), sources.clone());
        Box::pin(async move {
            request_resync(&pool, &sources)
                .await
                .map(|_| "relecture complète demandée / full re-read requested".to_owned())
                .map_err(|e| format!("PostgreSQL: {e}"))
        })
    }));
    app.with_flow(FLOW, handler, dispatch)
        .with_task("chantiers poller", move |rt| {
            Poller::new(source, pool, settings)
                .with_control(control)
                .run_until_stopped(rt.stop.clone())
        })
}

/// Makes the next poll read the whole table again (`batisync resync chantiers`): the
/// cursor and snapshot hashes of `sources` are forgotten, and so are the hashes of what
/// was last written, so every project is read back and compared: only the projects
/// that differ from Batigest are written.
///
/// # Errors
/// Database errors.
pub async fn request_resync(pool: &PgPool, sources: &[String]) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let cursors = sqlx::query("DELETE FROM batisync.cursors WHERE source = ANY($1)")
        .bind(sources)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM batisync.snapshot_rows WHERE source = ANY($1)")
        .bind(sources)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE batisync.links SET last_hash = NULL WHERE flow = $1")
        .bind(FLOW)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(cursors.rows_affected())
}
