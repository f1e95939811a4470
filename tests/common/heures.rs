//! Helpers of the heures flow tests: the simulator with projects, simulated employees, a
//! simulated ledger (or the real SQL Server one), a poller and a dispatcher.

use std::sync::Arc;

use batisync::batigest::ledger::{LedgerLimits, LedgerRow, LedgerWriter, MemoryLedger};
use batisync::batisimply::sim::{Faults, SimConfig, SimHandle, Simulator, SlotSpec};
use batisync::batisimply::{BatisimplyClient, BatisimplySettings, Project};
use batisync::dispatch::{BatchOutcome, Dispatcher};
use batisync::flows::heures::{
    self, EmployeeDirectory, FLOW, HeuresHandler, HeuresSettings, PollReport, Poller,
    SimulatedEmployees,
};
use batisync::outbox::notify::Wakers;
use chrono::{DateTime, Duration as Span, Utc};

use super::TestDb;
use super::chantiers::{client_settings, dispatch_settings};

/// The user id of employee `n` (`SAL{n}` in Batigest).
pub fn user(n: usize) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

pub fn employee(n: usize) -> String {
    format!("SAL{n:03}")
}

pub type Employees = Arc<SimulatedEmployees>;

/// One database, one simulator with `projects` projects, employees 0..`employees`
/// mapped, a ledger, a poller and a dispatcher.
pub struct Harness<L: LedgerWriter + 'static> {
    pub db: TestDb,
    pub sim: SimHandle,
    pub projects: Vec<Project>,
    pub employees: Employees,
    pub directory: Arc<EmployeeDirectory<Employees>>,
    pub ledger: Arc<L>,
    pub handler: Arc<HeuresHandler<L, Employees>>,
    pub poller: Poller<Employees>,
    pub dispatcher: Dispatcher<HeuresHandler<L, Employees>>,
}

pub fn settings() -> HeuresSettings {
    HeuresSettings {
        poll_interval_ms: 1_000,
        days_back: 40,
        days_ahead: 7,
        // The whole window on every poll, unless a test says otherwise.
        recent_days: 400,
        ..HeuresSettings::default()
    }
}

impl Harness<MemoryLedger> {
    pub async fn new(settings: HeuresSettings, faults: Faults) -> Self {
        Self::with_ledger(
            settings,
            faults,
            Arc::new(MemoryLedger::new(LedgerLimits::default())),
        )
        .await
    }

    pub fn rows(&self) -> Vec<LedgerRow> {
        self.ledger.rows()
    }
}

impl<L: LedgerWriter + 'static> Harness<L> {
    pub async fn with_ledger(settings: HeuresSettings, faults: Faults, ledger: Arc<L>) -> Self {
        Self::build(settings, faults, ledger, None).await
    }

    /// A real server's ledger: a write is several round trips, so a handler gets more
    /// time than the in-memory default (a shared 2-core machine can be slow).
    #[allow(dead_code)] // only the SQL Server tests use it
    pub async fn with_server_ledger(
        settings: HeuresSettings,
        faults: Faults,
        ledger: Arc<L>,
    ) -> Self {
        let dispatch = batisync::dispatch::DispatchSettings {
            handler_timeout_ms: 30_000,
            lease_ms: 60_000,
            ..dispatch_settings()
        };
        Self::build_with(settings, faults, ledger, None, dispatch).await
    }

    /// `modified_since`: the query parameter both the simulator and the client use.
    pub async fn build(
        settings: HeuresSettings,
        faults: Faults,
        ledger: Arc<L>,
        modified_since: Option<&str>,
    ) -> Self {
        Self::build_with(
            settings,
            faults,
            ledger,
            modified_since,
            dispatch_settings(),
        )
        .await
    }

    async fn build_with(
        settings: HeuresSettings,
        faults: Faults,
        ledger: Arc<L>,
        modified_since: Option<&str>,
        dispatch: batisync::dispatch::DispatchSettings,
    ) -> Self {
        let db = TestDb::new().await;
        let config = SimConfig {
            modified_since_param: modified_since.map(str::to_owned),
            ..SimConfig::default()
        };
        let sim = Simulator::builder()
            .config(config)
            .faults(faults)
            .spawn("127.0.0.1:0")
            .await
            .expect("simulator starts");
        let projects = sim.seed_projects(5);
        let client = BatisimplyClient::new(BatisimplySettings {
            timeslot_modified_since_param: modified_since.map(str::to_owned),
            ..client_settings(&sim)
        })
        .expect("client");
        let employees: Employees = Arc::new(SimulatedEmployees::new());
        for n in 0..10 {
            employees.set(&employee(n), Some(&user(n)));
        }
        let settings = Arc::new(settings);
        let directory = heures::directory(employees.clone(), &settings);
        let handler = Arc::new(
            HeuresHandler::new(
                ledger.clone(),
                directory.clone(),
                client.clone(),
                db.pool.clone(),
                settings.clone(),
            )
            .expect("handler"),
        );
        let poller = Poller::new(client.clone(), db.pool.clone(), settings, directory.clone());
        let dispatcher = Dispatcher::new(
            db.outbox(),
            FLOW,
            "test-worker".into(),
            handler.clone(),
            dispatch,
            Wakers::default(),
        );
        Self {
            db,
            sim,
            projects,
            employees,
            directory,
            ledger,
            handler,
            poller,
            dispatcher,
        }
    }

    /// A validated 4-hour slot of employee `n` on project `p`, starting at `start`.
    pub fn slot(&self, n: usize, p: usize, start: DateTime<Utc>) -> SlotSpec {
        let project = &self.projects[p];
        SlotSpec {
            user_id: user(n),
            project_id: project.id,
            project_code: Some(project.data.code.clone()),
            start,
            end: start + Span::hours(4),
            minutes: 240,
            status: "VALIDATED".into(),
            packed_lunch: n.is_multiple_of(2),
            journey: n.is_multiple_of(3),
        }
    }

    pub async fn poll(&mut self) -> PollReport {
        self.poller.try_poll_once().await.expect("poll")
    }

    /// Dispatches until nothing is open, making retries due at once.
    pub async fn drain(&self) -> BatchOutcome {
        crate::common::drain(&self.db, &self.dispatcher).await
    }

    /// `(status, outcome, last_error)` of a slot's events, oldest first.
    pub async fn outcomes(&self, slot: &str) -> Vec<(String, Option<String>, Option<String>)> {
        crate::common::outcomes(&self.db, FLOW, slot).await
    }

    /// The stored reasons of a slot's dead letters, oldest first.
    pub async fn dead_reasons(&self, slot: &str) -> Vec<batisync::outbox::Reason> {
        crate::common::dead_reasons(&self.db, FLOW, slot).await
    }

    /// Makes the next poll read the whole watched window (as if the last full read
    /// were long ago).
    pub async fn make_sweep_due(&self) {
        sqlx::query(
            "UPDATE batisync.cursors
             SET position = jsonb_set(position, '{swept_at}', '\"2000-01-01T00:00:00Z\"')
             WHERE source = $1",
        )
        .bind(heures::poller::SOURCE)
        .execute(&self.db.pool)
        .await
        .expect("make the sweep due");
    }

    pub async fn finish(self) {
        self.sim.shutdown().await;
        self.db.drop().await;
    }
}
