//! `batisync demo`: the real pipeline between two SIMULATED ends.
//!
//! The BatiSimply simulator runs in-process; a simulated Batigest (in memory, clearly
//! labelled) is seeded with job sites and keeps creating, editing and deleting some
//! through the same capture interface as the real source. Simulated field workers enter
//! time slots in the simulator, managers validate them, and the heures flow writes them
//! to a simulated `SuiviMO` ledger (in memory, behind the same writer interface as SQL
//! Server). PostgreSQL is the real one the settings point at (`scripts/demo.sh` starts a
//! local cluster).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::app::Application;
use crate::batigest::ledger::{LedgerLimits, MemoryLedger};
use crate::batigest::spec::chantier_role as role;
use crate::batigest::{Cell, SourceRow};
use crate::batisimply::sim::{SimHandle, Simulator, SlotSpec};
use crate::batisimply::{BatisimplyClient, BatisimplySettings};
use crate::console::health::{Component, FixedProbe, ProbeResult};
use crate::flows::chantiers::{self, SimulatedBatigest, simulated};
use crate::flows::heures::{self, SimulatedEmployees};
use crate::settings::Settings;

/// Job sites the simulated Batigest starts with.
const SEED_CHANTIERS: usize = 200;
/// Time between two simulated Batigest edits.
const EDIT_EVERY: Duration = Duration::from_secs(2);

/// Time between two simulated field-app actions (a slot entered, validated, corrected).
const FIELD_EVERY: Duration = Duration::from_secs(3);
/// Field workers; the last one has no `Salarie.codebs` until the office fills it.
const WORKERS: usize = 6;
/// When the office fills the missing `codebs` (its slots then arrive by themselves).
const CODEBS_FILLED_AFTER: Duration = Duration::from_secs(120);
/// The demo polls time slots more often than the default, to be lively.
const DEMO_HEURES_POLL_MS: u64 = 5_000;

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
        settings.heures.enabled = true;
        settings.heures.poll_interval_ms = DEMO_HEURES_POLL_MS;
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
        let employees = Arc::new(SimulatedEmployees::new());
        for n in 0..WORKERS - 1 {
            employees.set(&employee_code(n), Some(&worker_id(n)));
        }
        employees.set(&employee_code(WORKERS - 1), None);
        // Office staff who never enter hours: one without an id, two sharing one (the
        // Salariés page shows both problems).
        employees.set("SAL090", None);
        employees.set("SAL091", Some("6f1c2a8e-0004-4c1d-9a11-000000000004"));
        employees.set("SAL092", Some("6F1C2A8E-0004-4C1D-9A11-000000000004"));
        let ledger = Arc::new(MemoryLedger::new(LedgerLimits::default()));
        let dispatch = settings.dispatch.clone();
        let (chantiers_settings, heures_settings) =
            (settings.chantiers.clone(), settings.heures.clone());
        let app = Application::build(settings, registry)
            .await?
            .with_employee_source(Arc::new(ConsoleEmployees(employees.clone())));
        forget_previous_demo_state(app.pool()).await?;
        app.health().set_probe(Arc::new(FixedProbe::new(
            Component::SqlServer,
            ProbeResult::ok("Batigest SIMULÉ / SIMULATED (en mémoire / in memory)"),
        )));
        let (driver, faults) = (batigest.clone(), sim.clone());
        let app = chantiers::register(
            app,
            &chantiers_settings,
            &dispatch,
            client.clone(),
            batigest,
        )
        .with_task("simulated Batigest edits", move |rt| {
            edit_until_stopped(driver, faults, rt.stop.clone())
        });
        let field = FieldWorkers {
            sim: sim.clone(),
            employees: employees.clone(),
            ledger: ledger.clone(),
        };
        let app = heures::register(app, &heures_settings, &dispatch, client, ledger, employees)?
            .with_task("simulated field workers", move |rt| {
                field.work_until_stopped(rt.stop.clone())
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
    println!(
        "  {WORKERS} field workers enter a time slot every {} s; managers validate them;",
        FIELD_EVERY.as_secs()
    );
    println!(
        "  the last worker has no Salarie.codebs until {} s (dead letters, then re-driven)",
        CODEBS_FILLED_AFTER.as_secs()
    );
    println!("  créneaux / slots  {sim_url}/__admin/slots   SuiviMO SIMULÉ: see the log lines");
    println!("  état / status     batisync status   (same BATISYNC__POSTGRES__* variables)");
    println!("  SQL  SELECT * FROM batisync.backlog;  SELECT * FROM batisync.dead_letters;");
    println!("       SELECT source_key, target_id FROM batisync.links WHERE flow = 'heures';");
    println!("  Ctrl-C arrête proprement / stops cleanly");
    Ok(())
}

/// The demo's SIMULATED employees, as the console's Salariés page reads (and, with
/// `admin.allow_codebs_write`, writes) them. A write goes to the same
/// [`SimulatedEmployees`] the `heures` flow reads, so the flow then re-drives the dead
/// letters of that employee by itself, as it would after an edit in Batigest.
pub struct ConsoleEmployees(pub Arc<SimulatedEmployees>);

impl crate::console::EmployeeSource for ConsoleEmployees {
    fn load(&self) -> futures::future::BoxFuture<'_, Result<Vec<SourceRow>, String>> {
        use crate::batigest::spec::salarie_role as salarie;
        let rows = self
            .0
            .rows()
            .into_iter()
            .map(|(code, id)| {
                let mut cells = std::collections::BTreeMap::new();
                cells.insert(salarie::CODE, Cell::Text(code.clone()));
                cells.insert(
                    salarie::NAME,
                    Cell::Text(format!("Salarié {code} (SIMULÉ)")),
                );
                cells.insert(salarie::BATISIMPLY_ID, id.map_or(Cell::Null, Cell::Text));
                SourceRow { key: code, cells }
            })
            .collect();
        Box::pin(async move { Ok(rows) })
    }

    fn set_batisimply_id<'a>(
        &'a self,
        code: &'a str,
        id: Option<&'a str>,
    ) -> futures::future::BoxFuture<'a, Result<(), String>> {
        let known = self.0.rows().iter().any(|(c, _)| c == code);
        let result = if known {
            self.0.set(code, id);
            Ok(())
        } else {
            Err(crate::console::pages::employees::no_such_employee(code))
        };
        Box::pin(async move { result })
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

/// Both simulated ends start empty on every run (project and slot ids start again at
/// 1), so what the flows remember of a previous demo run (links to projects and rows
/// that no longer exist, slot captures) is forgotten first.
async fn forget_previous_demo_state(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query("DELETE FROM batisync.links WHERE flow = ANY($1)")
        .bind([heures::FLOW, chantiers::FLOW])
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM batisync.slot_captures")
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM batisync.cursors WHERE source = $1")
        .bind(heures::poller::SOURCE)
        .execute(&mut *tx)
        .await?;
    tx.commit()
        .await
        .context("forgetting the previous demo's links")
}

fn worker_id(n: usize) -> String {
    format!("00000000-0000-4000-9000-{n:012}")
}

fn employee_code(n: usize) -> String {
    format!("SAL{n:03}")
}

/// SIMULATED field app users: workers enter slots, managers validate, correct,
/// un-validate or delete some; the office fills a missing `codebs` after a while.
struct FieldWorkers {
    sim: Arc<SimHandle>,
    employees: Arc<SimulatedEmployees>,
    ledger: Arc<MemoryLedger>,
}

impl FieldWorkers {
    async fn work_until_stopped(self, stop: CancellationToken) -> anyhow::Result<()> {
        let started = tokio::time::Instant::now();
        let mut codebs_filled = false;
        for tick in 1_u64.. {
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                () = tokio::time::sleep(FIELD_EVERY) => {}
            }
            if !codebs_filled && started.elapsed() >= CODEBS_FILLED_AFTER {
                let n = WORKERS - 1;
                self.employees.set(&employee_code(n), Some(&worker_id(n)));
                tracing::info!(
                    employee = employee_code(n),
                    "SIMULATED Batigest: Salarie.codebs filled by the office"
                );
                codebs_filled = true;
            }
            self.act(tick);
            if tick % 10 == 0 {
                tracing::info!(rows = self.ledger.len(), "SIMULATED SuiviMO ledger");
            }
        }
        Ok(())
    }

    fn act(&self, tick: u64) {
        let slots = self.sim.slots();
        let pending: Vec<_> = slots
            .iter()
            .filter(|s| {
                s.status
                    .as_ref()
                    .is_none_or(|st| st.as_str() != "VALIDATED")
            })
            .collect();
        let validated: Vec<_> = slots
            .iter()
            .filter(|s| {
                s.status
                    .as_ref()
                    .is_some_and(|st| st.as_str() == "VALIDATED")
            })
            .collect();
        match tick % 12 {
            0 if !validated.is_empty() => {
                let slot = validated[fastrand::usize(..validated.len())];
                if self.sim.delete_slot(&slot.id).is_ok() {
                    tracing::info!(slot = %slot.id, "SIMULATED field app: validated slot deleted");
                }
            }
            6 if !validated.is_empty() => {
                let slot = validated[fastrand::usize(..validated.len())];
                let corrected = self.sim.update_slot(&slot.id, |s| {
                    s.minutes = s.minutes.saturating_sub(30).max(30)
                });
                if corrected.is_ok() {
                    tracing::info!(slot = %slot.id, "SIMULATED field app: validated slot corrected (-30 min)");
                }
            }
            n if n % 2 == 1 && !pending.is_empty() => {
                let slot = pending[fastrand::usize(..pending.len())];
                if self.sim.validate_slot(&slot.id).is_ok() {
                    tracing::info!(slot = %slot.id, "SIMULATED field app: slot validated by a manager");
                }
            }
            _ => self.enter_slot(tick),
        }
    }

    fn enter_slot(&self, tick: u64) {
        let projects = self.sim.projects();
        if projects.is_empty() {
            return;
        }
        let project = &projects[fastrand::usize(..projects.len())];
        let worker = fastrand::usize(..WORKERS);
        // A morning in the last two weeks, at a minute that differs per tick.
        let day = chrono::Utc::now().date_naive() - chrono::Days::new(fastrand::u64(0..14));
        let Some(start) = day.and_hms_opt(6, 0, 0).map(|t| {
            t.and_utc() + chrono::TimeDelta::minutes(i64::try_from(tick % 600).unwrap_or(0))
        }) else {
            return;
        };
        let minutes = 60 * fastrand::u32(2..=8);
        let spec = SlotSpec {
            user_id: worker_id(worker),
            project_id: project.id,
            project_code: Some(project.data.code.clone()),
            start,
            end: start + chrono::TimeDelta::minutes(i64::from(minutes)),
            minutes,
            status: "PENDING".to_owned(),
            packed_lunch: fastrand::bool(),
            journey: fastrand::bool(),
        };
        let id = self.sim.insert_slot(&spec);
        tracing::info!(slot = %id, worker = employee_code(worker), code = %project.data.code, "SIMULATED field app: slot entered");
    }
}
