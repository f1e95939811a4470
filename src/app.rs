//! The long-running worker: admin listener, notification listener, maintenance and the
//! flows' dispatchers under one supervisor and one shutdown signal.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::{self, AdminState};
use crate::console::pages::employees::SqlServerEmployees;
use crate::console::{Console, EmployeeSource, HealthBoard};
use crate::control::FlowControls;
use crate::dispatch::{self, DispatchSettings, Handler, Runtime};
use crate::outbox::Outbox;
use crate::settings::Settings;

/// Starts one flow's workers (or another task) once the database is ready.
type FlowStarter = Box<dyn FnOnce(&Runtime) + Send>;

/// A built, not yet running, batisync worker. The admin listener is already bound, so
/// tests can ask for port 0 and read [`Application::local_addr`].
pub struct Application {
    settings: Settings,
    pool: PgPool,
    listener: TcpListener,
    registry: Option<prometheus::Registry>,
    flows: Vec<FlowStarter>,
    /// Pause/resume/"sync now" of every registered flow, shared with the console.
    controls: FlowControls,
    /// Connection lights of the console, refreshed by a background task.
    health: HealthBoard,
    /// Where the console reads the employee list; `None` without SQL Server.
    employees: Option<Arc<dyn EmployeeSource>>,
    /// The settings file the console's configuration page edits.
    settings_path: Option<PathBuf>,
    /// HTTPS for the admin listener, when `admin.tls_*` are set.
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Application {
    /// Binds the admin listener and prepares the (lazy) database pool.
    ///
    /// # Errors
    /// When the admin address cannot be bound.
    pub async fn build(
        settings: Settings,
        registry: Option<prometheus::Registry>,
    ) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(settings.admin.listen)
            .await
            .with_context(|| {
                format!(
                    "cannot listen on {} (setting admin.listen): port in use?",
                    settings.admin.listen
                )
            })?;
        let tls = match (&settings.admin.tls_cert_path, &settings.admin.tls_key_path) {
            (Some(cert), Some(key)) => Some(crate::tls::acceptor(cert, key)?),
            _ => None,
        };
        let pool = crate::db::lazy_pool(&settings.postgres);
        let health = HealthBoard::from_settings(pool.clone(), &settings);
        let employees: Option<Arc<dyn EmployeeSource>> = if settings.batigest.database.is_empty() {
            None
        } else {
            Some(Arc::new(SqlServerEmployees {
                settings: settings.batigest.clone(),
            }))
        };
        Ok(Self {
            health,
            employees,
            settings_path: None,
            tls,
            settings,
            pool,
            listener,
            registry,
            flows: Vec::new(),
            controls: FlowControls::default(),
        })
    }

    /// Registers a flow: its workers start once PostgreSQL is ready.
    pub fn with_flow<H: Handler>(
        mut self,
        flow: &str,
        handler: Arc<H>,
        settings: DispatchSettings,
    ) -> Self {
        let flow = flow.to_owned();
        self.controls.flow(&flow);
        self.flows.push(Box::new(move |rt: &Runtime| {
            dispatch::spawn_workers(rt, &flow, handler, &settings);
        }));
        self
    }

    /// Registers a long-running task (a flow's poller) started once PostgreSQL is
    /// ready, supervised and stopped like the rest.
    pub fn with_task<F, Fut>(mut self, name: &'static str, start: F) -> Self
    where
        F: FnOnce(&Runtime) -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.flows.push(Box::new(move |rt: &Runtime| {
            supervise(&rt.tracker, &rt.stop, name, start(rt));
        }));
        self
    }

    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// The settings the application was built with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The flow controls (pause, "sync now") pollers and dispatchers obey.
    pub fn controls(&self) -> &FlowControls {
        &self.controls
    }

    /// The console's connection lights (to replace a probe, as the demo does).
    pub fn health(&self) -> &HealthBoard {
        &self.health
    }

    /// The settings file the console may edit (`--config`).
    #[must_use]
    pub fn with_settings_path(mut self, path: Option<PathBuf>) -> Self {
        self.settings_path = path;
        self
    }

    /// Where the console reads the employee list from.
    #[must_use]
    pub fn with_employee_source(mut self, source: Arc<dyn EmployeeSource>) -> Self {
        self.employees = Some(source);
        self
    }

    /// Runs until `stop` fires, then drains: in-flight work gets the grace period, the
    /// rest is released.
    ///
    /// # Errors
    /// When migrations fail for a reason other than an unreachable database.
    pub async fn run_until_stopped(self, stop: CancellationToken) -> anyhow::Result<()> {
        let tracker = TaskTracker::new();
        let grace = Duration::from_millis(self.settings.admin.shutdown_grace_ms);
        let console = Console::new(
            self.pool.clone(),
            self.controls.clone(),
            self.health.clone(),
            self.settings.clone(),
            self.settings_path.clone(),
            self.employees.clone(),
        );
        let state = AdminState {
            pool: self.pool.clone(),
            registry: self.registry.clone(),
            console: Some(console),
        };
        let interval = Duration::from_secs(self.settings.admin.health_check_interval_secs);
        supervise(
            &tracker,
            &stop,
            "connection health checks",
            self.health
                .clone()
                .run_until_stopped(interval, stop.clone()),
        );
        supervise(
            &tracker,
            &stop,
            "admin listener",
            serve(self.listener, self.tls, state, stop.clone()),
        );
        tracing::info!(addr = %self.settings.admin.listen, "admin listener ready");

        if crate::db::wait_until_reachable(&self.pool, &self.settings.postgres, &stop).await {
            prepare_schema(&self.pool, self.settings.postgres.auto_migrate).await?;
            let runtime = Runtime {
                tracker: tracker.clone(),
                stop: stop.clone(),
                controls: self.controls.clone(),
                ..Runtime::new(Outbox::new(self.pool.clone()), grace)
            };
            start_engine(&runtime, &self.settings);
            for start in self.flows {
                start(&runtime);
            }
            tracing::info!("batisync is running");
        }
        stop.cancelled().await;
        tracing::info!(
            grace_ms = grace.as_millis() as u64,
            "stopping: finishing in-flight work"
        );
        tracker.close();
        if tokio::time::timeout(grace + Duration::from_secs(5), tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("some tasks did not stop in time; their leases will expire");
        }
        self.pool.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

fn start_engine(rt: &Runtime, settings: &Settings) {
    let listen = crate::outbox::notify::listen_until_stopped(
        rt.outbox.pool().clone(),
        rt.wakers.clone(),
        rt.stop.clone(),
    );
    supervise(&rt.tracker, &rt.stop, "notification listener", async move {
        listen.await;
        Ok(())
    });
    let maintain = crate::maintenance::run_until_stopped(
        rt.outbox.clone(),
        settings.outbox.clone(),
        rt.stop.clone(),
    );
    supervise(&rt.tracker, &rt.stop, "maintenance", async move {
        maintain.await;
        Ok(())
    });
}

async fn prepare_schema(pool: &PgPool, auto_migrate: bool) -> anyhow::Result<()> {
    if auto_migrate {
        crate::db::migrator()
            .run(pool)
            .await
            .context("applying migrations (setting postgres.auto_migrate)")?;
        return Ok(());
    }
    let status = crate::db::migration_status(pool).await?;
    anyhow::ensure!(
        status.is_current(),
        "the database schema is not current (pending: {:?}, modified: {:?}): run `batisync migrate`",
        status.pending,
        status.modified
    );
    Ok(())
}

async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: AdminState,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let app = admin::router(state).into_make_service_with_connect_info::<crate::tls::ClientAddr>();
    match tls {
        Some(acceptor) => {
            let listener = crate::tls::TlsListener {
                tcp: listener,
                acceptor,
            };
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        }
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        }
    }
    .context("admin listener failed")
}

/// Spawns a top-level task and reports how it ended; an unexpected end is logged with
/// its error chain and does not take the process down.
fn supervise<F>(tracker: &TaskTracker, stop: &CancellationToken, name: &'static str, task: F)
where
    F: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let stop = stop.clone();
    tracker.spawn(async move {
        match task.await {
            Ok(()) if stop.is_cancelled() => tracing::debug!(task = name, "task stopped"),
            Ok(()) => tracing::error!(task = name, "task ended unexpectedly"),
            Err(error) => tracing::error!(task = name, error = format!("{error:#}"), "task failed"),
        }
    });
}

/// A token cancelled on Ctrl-C, and on SIGTERM where there is one.
pub fn shutdown_on_signals() -> CancellationToken {
    let stop = CancellationToken::new();
    let trigger = stop.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested");
        trigger.cancel();
    });
    stop
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(error) => {
            tracing::warn!(%error, "cannot watch SIGTERM; only Ctrl-C stops batisync");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
