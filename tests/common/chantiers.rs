//! Helpers of the chantiers flow tests: the simulator, a simulated Batigest, a poller
//! and a dispatcher on a fresh database.

use std::collections::HashMap;
use std::sync::Arc;

use batisync::batisimply::sim::{Faults, SimHandle, Simulator};
use batisync::batisimply::{BatisimplyClient, BatisimplySettings, Project};
use batisync::dispatch::{BatchOutcome, DispatchSettings, Dispatcher};
use batisync::flows::chantiers::{
    ChantiersHandler, ChantiersSettings, FLOW, Poller, SimulatedBatigest,
};
use batisync::outbox::notify::Wakers;

use super::TestDb;

/// Fast retries, short leases, a generous attempt budget.
pub fn dispatch_settings() -> DispatchSettings {
    DispatchSettings {
        workers: 2,
        batch_size: 32,
        run_length: 16,
        run_budget_ms: 1_000,
        lease_ms: 4_000,
        handler_timeout_ms: 2_000,
        max_attempts: 40,
        backoff_base_ms: 5,
        backoff_cap_ms: 50,
        backoff_jitter: 0.0,
        fallback_poll_ms: 50,
    }
}

/// Client settings for the simulator: no rate limit to speak of, fast retries.
pub fn client_settings(sim: &SimHandle) -> BatisimplySettings {
    BatisimplySettings {
        rate_limit_per_sec: 10_000,
        rate_limit_burst: 10_000,
        retry_base_ms: 5,
        retry_cap_ms: 50,
        max_retries: 1,
        request_timeout_ms: 10_000,
        ..batisync::demo::simulator_settings(&sim.base_url)
    }
}

/// One database, one simulator, one simulated Batigest, a poller and a dispatcher.
pub struct Harness {
    pub db: TestDb,
    pub sim: SimHandle,
    pub batigest: SimulatedBatigest,
    pub client: BatisimplyClient,
    pub handler: Arc<ChantiersHandler>,
    pub poller: Poller<SimulatedBatigest>,
    pub dispatcher: Dispatcher<ChantiersHandler>,
}

impl Harness {
    pub async fn new(settings: ChantiersSettings, faults: Faults) -> Self {
        let db = TestDb::new().await;
        let sim = Simulator::builder()
            .faults(faults)
            .spawn("127.0.0.1:0")
            .await
            .expect("simulator starts");
        let client = BatisimplyClient::new(client_settings(&sim)).expect("client");
        let settings = Arc::new(settings);
        let handler = Arc::new(ChantiersHandler::new(
            client.clone(),
            db.pool.clone(),
            settings.clone(),
        ));
        let batigest = SimulatedBatigest::new();
        let poller = Poller::new(batigest.clone(), db.pool.clone(), settings);
        let dispatcher = Dispatcher::new(
            db.outbox(),
            FLOW,
            "test-worker".into(),
            handler.clone(),
            dispatch_settings(),
            Wakers::default(),
        );
        Self {
            db,
            sim,
            batigest,
            client,
            handler,
            poller,
            dispatcher,
        }
    }

    pub async fn poll(&mut self) -> u64 {
        self.poller
            .try_poll_once()
            .await
            .expect("poll")
            .captured
            .inserted
    }

    /// Dispatches until nothing is open, making retries due at once.
    pub async fn drain(&self) -> BatchOutcome {
        crate::common::drain(&self.db, &self.dispatcher).await
    }

    pub fn projects_by_code(&self) -> HashMap<String, Vec<Project>> {
        let mut by_code: HashMap<String, Vec<Project>> = HashMap::new();
        for p in self.sim.projects() {
            by_code.entry(p.data.code.clone()).or_default().push(p);
        }
        by_code
    }

    pub fn project(&self, code: &str) -> Project {
        let mut found = self
            .projects_by_code()
            .remove(code)
            .expect("project exists");
        assert_eq!(found.len(), 1, "exactly one project for {code}");
        found.remove(0)
    }

    pub async fn outcomes(&self, code: &str) -> Vec<(String, Option<String>, Option<String>)> {
        crate::common::outcomes(&self.db, FLOW, code).await
    }

    pub async fn finish(self) {
        self.sim.shutdown().await;
        self.db.drop().await;
    }
}
