//! In-memory HTTP simulator of BatiSimply and its Keycloak token endpoint.
//!
//! Start it with [`Simulator::builder`] then [`SimulatorBuilder::spawn`]; drive
//! it with the [`SimHandle`] methods or the `/__admin/...` HTTP routes.

mod admin;
mod data;
mod faults;
mod handle;
mod routes;
mod state;
mod token;

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use data::SimReject;
pub use faults::Faults;
pub use handle::{SimHandle, SimStats, SlotSpec};
pub use state::{ListShape, SimConfig};

use crate::batisimply::api;
use state::{SimData, SimState};

/// Entry point of the simulator.
#[derive(Debug)]
pub struct Simulator;

impl Simulator {
    /// A builder with default credentials (`batisync` / `sim-secret`,
    /// user `sim-user` / `sim-password`) and no fault.
    #[must_use]
    pub fn builder() -> SimulatorBuilder {
        SimulatorBuilder {
            config: SimConfig::default(),
            faults: Faults::default(),
            seed: 42,
        }
    }
}

/// Configures and starts a simulator.
#[derive(Debug, Clone)]
pub struct SimulatorBuilder {
    config: SimConfig,
    faults: Faults,
    seed: u64,
}

/// Simulator start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Requested address.
        addr: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The state file could not be read or parsed.
    #[error("cannot load simulator state {path}: {message}")]
    State {
        /// State file.
        path: PathBuf,
        /// Cause.
        message: String,
    },
}

impl SimulatorBuilder {
    /// Replaces the whole fixed configuration.
    #[must_use]
    pub fn config(mut self, config: SimConfig) -> Self {
        self.config = config;
        self
    }

    /// Accepted client credentials.
    #[must_use]
    pub fn client(mut self, id: &str, secret: &str) -> Self {
        (self.config.client_id, self.config.client_secret) = (id.to_owned(), secret.to_owned());
        self
    }

    /// Accepted user (replaces the default one).
    #[must_use]
    pub fn user(mut self, name: &str, password: &str) -> Self {
        self.config.users = vec![(name.to_owned(), password.to_owned())];
        self
    }

    /// Initial faults (token lifetime included).
    #[must_use]
    pub fn faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// Seed of the fault randomness and generated tokens.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Starts the simulator on `addr` (`127.0.0.1:0` picks a free port).
    ///
    /// # Errors
    /// [`SimError`] when the address cannot be bound or the state file is invalid.
    pub async fn spawn(self, addr: &str) -> Result<SimHandle, SimError> {
        let data = load(self.config.state_file.as_ref())?;
        let bind_error = |source| SimError::Bind {
            addr: addr.to_owned(),
            source,
        };
        let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
        let local = listener.local_addr().map_err(bind_error)?;
        let state = Arc::new(SimState::new(self.config, self.faults, self.seed, data));
        let app = app(Arc::clone(&state));
        let shutdown = CancellationToken::new();
        let listener = handle::CountingListener::new(listener, Arc::clone(&state));
        let signal = shutdown.clone().cancelled_owned();
        let task = tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, app)
                .with_graceful_shutdown(signal)
                .await
            {
                tracing::warn!(error = %err, "simulator stopped");
            }
        });
        Ok(SimHandle::new(
            format!("http://{local}"),
            state,
            shutdown,
            task,
        ))
    }
}

fn load(path: Option<&PathBuf>) -> Result<SimData, SimError> {
    let Some(path) = path.filter(|p| p.exists()) else {
        return Ok(SimData::default());
    };
    let fail = |message: String| SimError::State {
        path: path.clone(),
        message,
    };
    let text = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    serde_json::from_slice(&text).map_err(|e| fail(e.to_string()))
}

/// The full router: faulty API and token endpoint, plus the admin surface.
fn app(state: Arc<SimState>) -> Router {
    let api_routes = Router::new()
        .route(
            api::PROJECTS_PATH,
            get(routes::list_projects)
                .post(routes::create_project)
                .put(routes::update_project),
        )
        .route(
            &format!("{}/{{id}}", api::PROJECTS_PATH),
            get(routes::get_project),
        )
        .route(api::TIMESLOTS_PATH, get(routes::list_slots))
        .route_layer(from_fn_with_state(
            Arc::clone(&state),
            routes::require_bearer,
        ));
    let faulty = api_routes
        .route(api::TOKEN_PATH_TEMPLATE, post(token::token))
        .route_layer(from_fn_with_state(Arc::clone(&state), faults::fault_layer));
    faulty.merge(admin::router()).with_state(state)
}
