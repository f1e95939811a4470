//! Connection lights: PostgreSQL, SQL Server (Batigest) and BatiSimply, checked by a
//! background task every `admin.health_check_interval_secs` or on request ("test the
//! connections"). Pages only read the last results: rendering never opens a connection.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde::Serialize;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::batigest::BatigestSettings;
use crate::batisimply::BatisimplyClient;
use crate::settings::Settings;

/// Longest time one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(15);

/// What is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Component {
    Postgres,
    SqlServer,
    Batisimply,
}

impl Component {
    pub const ALL: [Self; 3] = [Self::Postgres, Self::SqlServer, Self::Batisimply];

    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::Postgres => "PostgreSQL",
            Self::SqlServer => "SQL Server (Batigest)",
            Self::Batisimply => "BatiSimply",
        }
    }
}

/// The colour of a light.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Light {
    /// Not checked yet.
    Unknown,
    Ok,
    Failed,
    /// Not configured in the settings (nothing to check).
    NotConfigured,
}

/// The result of one probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeResult {
    pub light: Light,
    /// A short sentence (what was reached, or what to fix), French / English.
    pub detail: String,
}

impl ProbeResult {
    #[must_use]
    pub fn ok(detail: impl Into<String>) -> Self {
        Self {
            light: Light::Ok,
            detail: detail.into(),
        }
    }

    #[must_use]
    pub fn failed(detail: impl Into<String>) -> Self {
        Self {
            light: Light::Failed,
            detail: detail.into(),
        }
    }

    #[must_use]
    pub fn not_configured(detail: impl Into<String>) -> Self {
        Self {
            light: Light::NotConfigured,
            detail: detail.into(),
        }
    }
}

/// The last known state of one component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ComponentHealth {
    pub component: Component,
    pub light: Light,
    pub detail: String,
    pub checked_at: Option<DateTime<Utc>>,
}

/// Checks one component.
pub trait Probe: Send + Sync {
    fn component(&self) -> Component;
    fn check(&self) -> BoxFuture<'_, ProbeResult>;
}

/// The lights and the probes that set them. Cheap to clone.
#[derive(Clone)]
pub struct HealthBoard {
    inner: Arc<BoardInner>,
}

struct BoardInner {
    /// Replaced only before the monitor starts; read once per round.
    probes: Mutex<BTreeMap<Component, Arc<dyn Probe>>>,
    /// Held for a copy or an insert, never across an await.
    lights: Mutex<BTreeMap<Component, ComponentHealth>>,
    /// "Test now": one stored permit, so repeated clicks run one extra round.
    test_now: Notify,
}

impl HealthBoard {
    /// A board with the probes the settings describe (PostgreSQL through `pool`).
    #[must_use]
    pub fn from_settings(pool: PgPool, settings: &Settings) -> Self {
        let board = Self::empty();
        board.set_probe(Arc::new(PostgresProbe { pool }));
        board.set_probe(Arc::new(SqlServerProbe {
            settings: settings.batigest.clone(),
        }));
        let batisimply: Arc<dyn Probe> = if settings.batisimply.client_id.is_empty() {
            Arc::new(FixedProbe::new(
                Component::Batisimply,
                ProbeResult::not_configured(
                    "non configuré (batisimply.client_id vide) / not configured",
                ),
            ))
        } else {
            match BatisimplyClient::new(settings.batisimply.clone()) {
                Ok(client) => Arc::new(BatisimplyProbe { client }),
                Err(error) => Arc::new(FixedProbe::new(
                    Component::Batisimply,
                    ProbeResult::failed(crate::batisimply::explain(&error)),
                )),
            }
        };
        board.set_probe(batisimply);
        board
    }

    /// A board without probes (every light unknown).
    #[must_use]
    pub fn empty() -> Self {
        Self {
            inner: Arc::new(BoardInner {
                probes: Mutex::new(BTreeMap::new()),
                lights: Mutex::new(BTreeMap::new()),
                test_now: Notify::new(),
            }),
        }
    }

    /// Uses `probe` for its component (the demo's simulated Batigest, tests).
    pub fn set_probe(&self, probe: Arc<dyn Probe>) {
        let mut probes = self
            .inner
            .probes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        probes.insert(probe.component(), probe);
    }

    /// The last results, one per component, in display order.
    #[must_use]
    pub fn lights(&self) -> Vec<ComponentHealth> {
        let lights = self
            .inner
            .lights
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Component::ALL
            .iter()
            .map(|c| {
                lights.get(c).cloned().unwrap_or(ComponentHealth {
                    component: *c,
                    light: Light::Unknown,
                    detail: String::new(),
                    checked_at: None,
                })
            })
            .collect()
    }

    /// Asks the monitor to check everything now.
    pub fn request_test(&self) {
        self.inner.test_now.notify_one();
    }

    /// Runs every probe once (concurrently, each within a timeout) and stores results.
    pub async fn check_all(&self) {
        let probes: Vec<Arc<dyn Probe>> = {
            let probes = self
                .inner
                .probes
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            probes.values().cloned().collect()
        };
        let results = futures::future::join_all(probes.iter().map(|probe| async move {
            let result = tokio::time::timeout(PROBE_TIMEOUT, probe.check())
                .await
                .unwrap_or_else(|_| {
                    ProbeResult::failed(format!(
                        "pas de réponse en {} s / no answer within {} s",
                        PROBE_TIMEOUT.as_secs(),
                        PROBE_TIMEOUT.as_secs()
                    ))
                });
            (probe.component(), result)
        }))
        .await;
        let now = Utc::now();
        let mut lights = self
            .inner
            .lights
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for (component, result) in results {
            lights.insert(
                component,
                ComponentHealth {
                    component,
                    light: result.light,
                    detail: result.detail,
                    checked_at: Some(now),
                },
            );
        }
    }

    /// Checks every `interval`, or sooner on [`request_test`](Self::request_test).
    pub async fn run_until_stopped(
        self,
        interval: Duration,
        stop: CancellationToken,
    ) -> anyhow::Result<()> {
        while !stop.is_cancelled() {
            self.check_all().await;
            tokio::select! {
                () = stop.cancelled() => {}
                () = self.inner.test_now.notified() => {}
                () = tokio::time::sleep(interval) => {}
            }
        }
        Ok(())
    }
}

/// Always the same answer (not configured, simulated).
pub struct FixedProbe {
    component: Component,
    result: ProbeResult,
}

impl FixedProbe {
    #[must_use]
    pub fn new(component: Component, result: ProbeResult) -> Self {
        Self { component, result }
    }
}

impl Probe for FixedProbe {
    fn component(&self) -> Component {
        self.component
    }

    fn check(&self) -> BoxFuture<'_, ProbeResult> {
        Box::pin(async move { self.result.clone() })
    }
}

struct PostgresProbe {
    pool: PgPool,
}

impl Probe for PostgresProbe {
    fn component(&self) -> Component {
        Component::Postgres
    }

    fn check(&self) -> BoxFuture<'_, ProbeResult> {
        Box::pin(async move {
            match crate::db::migration_status(&self.pool).await {
                Ok(status) if status.is_current() => ProbeResult::ok(format!(
                    "joignable, schéma à jour / reachable, schema current ({} migrations)",
                    status.applied
                )),
                Ok(_) => ProbeResult::failed(
                    "schéma pas à jour : lancez `batisync migrate` / schema not current: run \
                     `batisync migrate`",
                ),
                Err(error) => ProbeResult::failed(format!("PostgreSQL: {error}")),
            }
        })
    }
}

struct SqlServerProbe {
    settings: BatigestSettings,
}

impl Probe for SqlServerProbe {
    fn component(&self) -> Component {
        Component::SqlServer
    }

    fn check(&self) -> BoxFuture<'_, ProbeResult> {
        Box::pin(async move { probe_sqlserver(&self.settings).await })
    }
}

/// Opens one connection to SQL Server and closes it.
pub async fn probe_sqlserver(settings: &BatigestSettings) -> ProbeResult {
    if settings.database.is_empty() {
        return ProbeResult::not_configured(
            "non configuré (batigest.database vide) / not configured (batigest.database is empty)",
        );
    }
    match crate::batigest::pool::connect(settings).await {
        Ok(client) => {
            drop(client);
            ProbeResult::ok(format!(
                "connecté à / connected to {}",
                crate::batigest::pool::server_label(settings)
            ))
        }
        Err(error) => ProbeResult::failed(error.to_string()),
    }
}

struct BatisimplyProbe {
    client: BatisimplyClient,
}

impl Probe for BatisimplyProbe {
    fn component(&self) -> Component {
        Component::Batisimply
    }

    fn check(&self) -> BoxFuture<'_, ProbeResult> {
        Box::pin(async move { probe_batisimply(&self.client).await })
    }
}

/// A token and a one-project read: the same calls a delivery makes.
pub async fn probe_batisimply(client: &BatisimplyClient) -> ProbeResult {
    match client.project_page(0, 1).await {
        Ok(_) => ProbeResult::ok("jeton et lecture des projets OK / token and project read OK"),
        Err(error) => ProbeResult::failed(crate::batisimply::explain(&error)),
    }
}
