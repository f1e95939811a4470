//! End-to-end flows, each one source → outbox → target:
//!
//! - [`chantiers`]: Batigest job sites (`ChantierDef`) → BatiSimply projects;
//! - [`heures`]: validated BatiSimply time slots → Batigest's labour ledger (`SuiviMO`).
//!
//! [`conflicts`] records latest-modification-wins decisions for both.

pub mod chantiers;
pub mod conflicts;
pub mod heures;
pub mod polling;

use std::sync::Arc;

use crate::app::Application;
use crate::batigest::pool::Pool;
use crate::batisimply::{BatisimplyClient, BatisimplyError};
use crate::dispatch::DispatchError;
use crate::outbox::{Reason, ReasonCode};

/// Adds every flow enabled in the application's settings, reading the real sources.
///
/// # Errors
/// When the BatiSimply client cannot be built from the settings.
pub fn register_enabled(app: Application) -> anyhow::Result<Application> {
    let settings = app.settings();
    let (chantiers_on, heures_on) = (settings.chantiers.enabled, settings.heures.enabled);
    if !chantiers_on && !heures_on {
        return Ok(app);
    }
    // One client: both flows share its rate limit and token.
    let client = BatisimplyClient::new(settings.batisimply.clone())?;
    let dispatch = settings.dispatch.clone();
    let batigest = settings.batigest.clone();
    let (chantiers_settings, heures_settings) =
        (settings.chantiers.clone(), settings.heures.clone());
    let mut app = app;
    if chantiers_on {
        let source = chantiers::SqlServerChantiers::new(batigest.clone());
        app = chantiers::register(app, &chantiers_settings, &dispatch, client.clone(), source);
    }
    if heures_on {
        let pool = Arc::new(Pool::new(batigest));
        let ledger = Arc::new(heures::batigest::SqlServerSuiviMo::new(pool.clone()));
        let employees = heures::SqlServerEmployees::new(pool);
        app = heures::register(app, &heures_settings, &dispatch, client, ledger, employees)?;
    }
    Ok(app)
}

/// A BatiSimply failure about entity `key` as a dispatch outcome, its message prefixed
/// by `context`.
pub(crate) fn api_error(context: String, key: &str, error: BatisimplyError) -> DispatchError {
    let message = format!("{context}: {error}");
    match error {
        BatisimplyError::RateLimited { retry_after } => DispatchError::RateLimited {
            retry_after,
            message,
        },
        BatisimplyError::Permanent { status, .. } => DispatchError::permanent(
            Reason::new(ReasonCode::Refused)
                .with("key", key)
                .with("status", status),
            message,
        ),
        // Credentials and configuration are fixed by an operator: keep the events.
        BatisimplyError::Auth { .. } => DispatchError::Credentials(message),
        BatisimplyError::Transient { .. }
        | BatisimplyError::Decode { .. }
        | BatisimplyError::Config { .. }
        | BatisimplyError::Unsupported { .. } => DispatchError::Transient(message),
    }
}

/// A PostgreSQL failure as a dispatch outcome (retried).
pub(crate) fn db_error(error: sqlx::Error) -> DispatchError {
    DispatchError::Transient(format!("PostgreSQL: {error}"))
}
