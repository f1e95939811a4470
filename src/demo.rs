//! `batisync demo`: the real pipeline between two SIMULATED ends.
//!
//! The BatiSimply simulator runs in-process; a simulated Batigest (in memory, clearly
//! labelled) is seeded with job sites and keeps creating, editing and deleting some
//! through the same capture interface as the real source. PostgreSQL is the real one
//! the settings point at (`scripts/demo.sh` starts a local cluster).

use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::app::Application;
use crate::batigest::Cell;
use crate::batigest::spec::chantier_role as role;
use crate::batisimply::sim::Simulator;
use crate::batisimply::{BatisimplyClient, BatisimplySettings};
use crate::flows::chantiers::{self, SimulatedBatigest, simulated};
use crate::settings::Settings;

/// Job sites the simulated Batigest starts with.
const SEED_CHANTIERS: usize = 200;
/// Time between two simulated Batigest edits.
const EDIT_EVERY: Duration = Duration::from_secs(2);

/// Client settings matching the simulator's default credentials.
#[must_use]
pub fn simulator_settings(base_url: &str) -> BatisimplySettings {
    BatisimplySettings {
        api_base_url: base_url.to_owned(),
        sso_base_url: base_url.to_owned(),
        client_id: "batisync".to_owned(),
        client_secret: "sim-secret".into(),
        username: "sim-user".to_owned(),
        password: "sim-password".into(),
        ..BatisimplySettings::default()
    }
}

/// Runs the demo until `stop` fires.
///
/// # Errors
/// When the simulator, the client or the application cannot start.
pub async fn run(
    mut settings: Settings,
    registry: Option<prometheus::Registry>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let sim = Simulator::builder()
        .spawn("127.0.0.1:0")
        .await
        .context("starting the BatiSimply simulator")?;
    settings.batisimply = simulator_settings(&sim.base_url);
    settings.chantiers.enabled = true;
    let client = BatisimplyClient::new(settings.batisimply.clone())?;
    let batigest = SimulatedBatigest::new();
    batigest.seed(1, SEED_CHANTIERS);
    let (flow, dispatch) = (settings.chantiers.clone(), settings.dispatch.clone());
    let app = Application::build(settings, registry).await?;
    print_guide(&app, &sim.base_url)?;
    let driver = batigest.clone();
    let app = chantiers::register(app, &flow, &dispatch, client, batigest)
        .with_task("simulated Batigest edits", move |rt| {
            edit_until_stopped(driver, rt.stop.clone())
        });
    let result = app.run_until_stopped(stop).await;
    sim.shutdown().await;
    result
}

fn print_guide(app: &Application, sim_url: &str) -> anyhow::Result<()> {
    let admin = app.local_addr()?;
    println!("batisync demo — Batigest SIMULÉ / SIMULATED, BatiSimply SIMULÉ / SIMULATED");
    println!(
        "  {SEED_CHANTIERS} chantiers, then one edit every {} s",
        EDIT_EVERY.as_secs()
    );
    println!("  santé / health    http://{admin}/healthz  /readyz  /metrics");
    println!("  projets / projects {sim_url}/__admin/projects   stats: {sim_url}/__admin/stats");
    println!("  état / status     batisync status   (same BATISYNC__POSTGRES__* variables)");
    println!("  SQL  SELECT * FROM batisync.backlog;  SELECT * FROM batisync.dead_letters;");
    println!("       SELECT * FROM batisync.links WHERE flow = 'chantiers' LIMIT 20;");
    println!("       SELECT * FROM batisync.conflicts ORDER BY decided_at DESC LIMIT 20;");
    println!("  Ctrl-C arrête proprement / stops cleanly");
    Ok(())
}

/// The simulated Batigest users: edit a label, now and then add or delete a job site.
async fn edit_until_stopped(
    batigest: SimulatedBatigest,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let mut next_code = SEED_CHANTIERS + 1;
    for tick in 1_u64.. {
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            () = tokio::time::sleep(EDIT_EVERY) => {}
        }
        let codes = batigest.codes();
        let Some(code) = codes.get(fastrand::usize(..codes.len().max(1))).cloned() else {
            continue;
        };
        if tick % 15 == 0 {
            batigest.delete(&code);
            tracing::info!(%code, "SIMULATED Batigest: chantier deleted");
        } else if tick % 5 == 0 {
            batigest.upsert(simulated::sample_row(next_code));
            tracing::info!(
                code = format!("{next_code:08}"),
                "SIMULATED Batigest: chantier created"
            );
            next_code += 1;
        } else {
            let label = Cell::Text(format!("Rénovation, révision {tick}"));
            batigest.edit(&code, role::LABEL, label);
            tracing::info!(%code, "SIMULATED Batigest: chantier label edited");
        }
    }
    Ok(())
}
