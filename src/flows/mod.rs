//! End-to-end flows, each one source → outbox → target:
//!
//! - [`chantiers`]: Batigest job sites (`ChantierDef`) → BatiSimply projects.

pub mod chantiers;

use crate::app::Application;
use crate::batisimply::BatisimplyClient;

/// Adds every flow enabled in the application's settings, reading the real sources.
///
/// # Errors
/// When the BatiSimply client cannot be built from the settings.
pub fn register_enabled(app: Application) -> anyhow::Result<Application> {
    let settings = app.settings();
    if !settings.chantiers.enabled {
        return Ok(app);
    }
    let client = BatisimplyClient::new(settings.batisimply.clone())?;
    let source = chantiers::SqlServerChantiers::new(settings.batigest.clone());
    let (flow, dispatch) = (settings.chantiers.clone(), settings.dispatch.clone());
    Ok(chantiers::register(app, &flow, &dispatch, client, source))
}
