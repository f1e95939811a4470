//! `batisync demo`: the real pipeline between two SIMULATED ends.
//!
//! The BatiSimply simulator runs in-process; a simulated Batigest (in memory, clearly
//! labelled) is seeded with job sites and keeps creating, editing and deleting some
//! through the same capture interface as the real source. PostgreSQL is the real one
//! the settings point at (`scripts/demo.sh` starts a local cluster).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::app::Application;
use crate::batigest::spec::chantier_role as role;
use crate::batigest::{Cell, SourceRow};
use crate::batisimply::sim::SimHandle;
use crate::batisimply::sim::Simulator;
use crate::batisimply::{BatisimplyClient, BatisimplySettings};
use crate::console::health::{Component, FixedProbe, ProbeResult};
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

/// The demo, built and not yet running: the simulator is up and the admin listener
/// bound, so tests can read the addresses before running it.
pub struct Demo {
    app: Application,
    sim: Arc<SimHandle>,
    /// The console password when the demo made one up (no `admin.password_hash`).
    pub console_password: Option<String>,
}

impl Demo {
    /// Starts the simulator and builds the application around the simulated ends.
    ///
    /// # Errors
    /// When the simulator, the client or the application cannot start.
    pub async fn build(
        mut settings: Settings,
        registry: Option<prometheus::Registry>,
    ) -> anyhow::Result<Self> {
        let sim = Simulator::builder()
            .spawn("127.0.0.1:0")
            .await
            .context("starting the BatiSimply simulator")?;
        let sim = Arc::new(sim);
        settings.batisimply = simulator_settings(&sim.base_url);
        settings.chantiers.enabled = true;
        let console_password = if settings.admin.password_hash.is_none() {
            let password = crate::console::auth::random_token()
                .map_err(|e| anyhow::anyhow!("no randomness: {e}"))?[..16]
                .to_owned();
            settings.admin.password_hash =
                Some(crate::console::auth::hash_password(&password)?.into());
            Some(password)
        } else {
            None
        };
        let client = BatisimplyClient::new(settings.batisimply.clone())?;
        let batigest = SimulatedBatigest::new();
        batigest.seed(1, SEED_CHANTIERS);
        let (flow, dispatch) = (settings.chantiers.clone(), settings.dispatch.clone());
        let app = Application::build(settings, registry)
            .await?
            .with_employee_source(Arc::new(SimulatedEmployees));
        app.health().set_probe(Arc::new(FixedProbe::new(
            Component::SqlServer,
            ProbeResult::ok("Batigest SIMULÉ / SIMULATED (en mémoire / in memory)"),
        )));
        let (driver, faults) = (batigest.clone(), sim.clone());
        let app = chantiers::register(app, &flow, &dispatch, client, batigest)
            .with_task("simulated Batigest edits", move |rt| {
                edit_until_stopped(driver, faults, rt.stop.clone())
            });
        Ok(Self {
            app,
            sim,
            console_password,
        })
    }

    /// Address of the admin listener (console, health, metrics).
    ///
    /// # Errors
    /// When the listener has no local address.
    pub fn admin_addr(&self) -> anyhow::Result<std::net::SocketAddr> {
        self.app.local_addr()
    }

    /// The BatiSimply simulator (to inject faults). While a clone is held, the demo
    /// leaves the simulator running when it stops.
    #[must_use]
    pub fn simulator(&self) -> Arc<SimHandle> {
        self.sim.clone()
    }

    /// Runs until `stop` fires, then stops the simulator.
    ///
    /// # Errors
    /// When the application fails to start its engine.
    pub async fn run_until_stopped(self, stop: CancellationToken) -> anyhow::Result<()> {
        let result = self.app.run_until_stopped(stop).await;
        if let Ok(sim) = Arc::try_unwrap(self.sim) {
            sim.shutdown().await;
        }
        result
    }
}

/// Runs the demo until `stop` fires.
///
/// # Errors
/// When the simulator, the client or the application cannot start.
pub async fn run(
    settings: Settings,
    registry: Option<prometheus::Registry>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let demo = Demo::build(settings, registry).await?;
    print_guide(&demo)?;
    demo.run_until_stopped(stop).await
}

fn print_guide(demo: &Demo) -> anyhow::Result<()> {
    let admin = demo.admin_addr()?;
    let sim_url = &demo.sim.base_url;
    println!("batisync demo — Batigest SIMULÉ / SIMULATED, BatiSimply SIMULÉ / SIMULATED");
    println!(
        "  {SEED_CHANTIERS} chantiers, then one edit every {} s; now and then BatiSimply \
         refuses one (a dead letter to re-drive from the console)",
        EDIT_EVERY.as_secs()
    );
    println!("  console           http://{admin}/");
    match &demo.console_password {
        Some(password) => println!("  mot de passe / password  {password}   (demo only)"),
        None => {
            println!("  mot de passe / password  the one set with `batisync admin set-password`")
        }
    }
    println!("  santé / health    http://{admin}/healthz  /readyz  /metrics");
    println!("  projets / projects {sim_url}/__admin/projects   stats: {sim_url}/__admin/stats");
    println!("  état / status     batisync status   (same BATISYNC__POSTGRES__* variables)");
    println!("  SQL  SELECT * FROM batisync.backlog;  SELECT * FROM batisync.dead_letters;");
    println!("  Ctrl-C arrête proprement / stops cleanly");
    Ok(())
}

/// A few SIMULATED employees for the Salariés page: one without a BatiSimply id, two
/// sharing one.
pub struct SimulatedEmployees;

impl crate::console::EmployeeSource for SimulatedEmployees {
    fn load(&self) -> futures::future::BoxFuture<'_, Result<Vec<SourceRow>, String>> {
        use crate::batigest::spec::salarie_role as salarie;
        let row = |code: &str, name: &str, id: &str| {
            let mut cells = std::collections::BTreeMap::new();
            cells.insert(salarie::CODE, Cell::Text(code.to_owned()));
            cells.insert(salarie::NAME, Cell::Text(name.to_owned()));
            let id = if id.is_empty() {
                Cell::Null
            } else {
                Cell::Text(id.to_owned())
            };
            cells.insert(salarie::BATISIMPLY_ID, id);
            SourceRow {
                key: code.to_owned(),
                cells,
            }
        };
        let rows = vec![
            row(
                "SAL001",
                "Martin Jeanne (SIMULÉ)",
                "6f1c2a8e-0001-4c1d-9a11-000000000001",
            ),
            row(
                "SAL002",
                "Bernard Luc (SIMULÉ)",
                "6f1c2a8e-0002-4c1d-9a11-000000000002",
            ),
            row("SAL003", "Petit Amandine (SIMULÉ)", ""),
            row(
                "SAL004",
                "Durand Éric (SIMULÉ)",
                "6f1c2a8e-0004-4c1d-9a11-000000000004",
            ),
            row(
                "SAL005",
                "Durand Eric bis (SIMULÉ)",
                "6F1C2A8E-0004-4C1D-9A11-000000000004",
            ),
        ];
        Box::pin(async move { Ok(rows) })
    }
}

/// The simulated Batigest users: edit a label, now and then add or delete a job site.
async fn edit_until_stopped(
    batigest: SimulatedBatigest,
    sim: Arc<SimHandle>,
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
        if tick % 20 == 0 {
            // The next BatiSimply call is refused: one event becomes a dead letter.
            sim.update_faults(|f| f.fail_next.push(422));
            tracing::info!("SIMULATED BatiSimply: the next request will be refused (422)");
        }
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
