//! The web console of the admin listener: server-rendered HTML pages for office staff
//! (French by default, English on request) and the JSON API they and scripts use.
//!
//! - [`auth`]: password sign-in (Argon2id hash from the settings), sessions in memory
//!   (`HttpOnly`, `SameSite=Strict`, `Secure` over TLS), CSRF tokens on every form,
//!   rate-limited sign-in, and the API bearer token;
//! - [`health`]: the connection lights, refreshed by a background task (a page never
//!   opens a connection);
//! - [`data`]: the SQL behind the pages; [`reasons`]: dead letters explained in plain
//!   words, with the fix;
//! - [`pages`]: one module per page; [`api`]: the JSON API;
//! - [`config_file`]: validated, atomic edits of the settings file;
//! - [`logring`]: the last warnings and errors, for the Journal page.
//!
//! No secret is ever rendered: secrets are write-only fields shown as "set".

pub mod api;
pub mod auth;
pub mod config_file;
pub mod data;
pub mod health;
pub mod i18n;
pub mod layout;
pub mod logring;
pub mod pages;
pub mod reasons;

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::middleware;
use axum::routing::{get, post};
use sqlx::PgPool;

use crate::control::FlowControls;
use crate::settings::Settings;

pub use health::{HealthBoard, Probe};
pub use pages::employees::EmployeeSource;

/// Everything the console needs; cheap to clone.
#[derive(Clone)]
pub struct Console {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    controls: FlowControls,
    health: HealthBoard,
    sessions: auth::Sessions,
    login_limiter: auth::LoginLimiter,
    /// The settings the process runs with (secrets included, never rendered).
    settings: Settings,
    /// The settings file the configuration page edits; `None`: started without one.
    settings_path: Option<PathBuf>,
    employees: pages::employees::EmployeeCache,
}

impl Console {
    /// A console over the given pieces.
    #[must_use]
    pub fn new(
        pool: PgPool,
        controls: FlowControls,
        health: HealthBoard,
        settings: Settings,
        settings_path: Option<PathBuf>,
        employees: Option<Arc<dyn EmployeeSource>>,
    ) -> Self {
        let admin = &settings.admin;
        let sessions = auth::Sessions::new(std::time::Duration::from_secs(
            admin.session_idle_minutes.saturating_mul(60),
        ));
        let login_limiter = auth::LoginLimiter::new(admin.login_attempts_per_minute);
        Self {
            inner: Arc::new(Inner {
                pool,
                controls,
                health,
                sessions,
                login_limiter,
                employees: pages::employees::EmployeeCache::new(employees),
                settings,
                settings_path,
            }),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    pub fn controls(&self) -> &FlowControls {
        &self.inner.controls
    }

    pub fn health(&self) -> &HealthBoard {
        &self.inner.health
    }

    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    pub fn settings_path(&self) -> Option<&std::path::Path> {
        self.inner.settings_path.as_deref()
    }

    pub(crate) fn sessions(&self) -> &auth::Sessions {
        &self.inner.sessions
    }

    pub(crate) fn login_limiter(&self) -> &auth::LoginLimiter {
        &self.inner.login_limiter
    }

    pub(crate) fn employees(&self) -> &pages::employees::EmployeeCache {
        &self.inner.employees
    }

    /// Flow names to show: registered in this process, then any other the outbox knows.
    pub(crate) fn flow_names(&self, seen: impl IntoIterator<Item = String>) -> Vec<String> {
        let mut names = self.inner.controls.names();
        for name in seen {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names
    }
}

/// Routes of the console and its API, merged into the admin router.
pub fn router(console: Console) -> Router {
    let pages = Router::new()
        .route("/", get(pages::dashboard::page))
        .route("/fragments/dashboard", get(pages::dashboard::fragment))
        .route("/activity", get(pages::activity::list))
        .route("/activity/{id}", get(pages::activity::detail))
        .route("/todo", get(pages::todo::page))
        .route("/todo/redrive", post(pages::todo::redrive))
        .route("/employees", get(pages::employees::page))
        .route("/employees/refresh", post(pages::employees::refresh))
        .route("/employees/codebs", post(pages::employees::set_codebs))
        .route("/actions", get(pages::actions::page))
        .route("/actions/sync", post(pages::actions::sync_now))
        .route("/actions/pause", post(pages::actions::pause))
        .route("/actions/resume", post(pages::actions::resume))
        .route("/actions/resync", post(pages::actions::resync))
        .route("/actions/test", post(pages::actions::test_connections))
        .route(
            "/settings",
            get(pages::settings::page).post(pages::settings::save),
        )
        .route("/settings/test", post(pages::settings::test))
        .route("/journal", get(pages::journal::page))
        .route("/logout", post(auth::logout))
        .layer(middleware::from_fn_with_state(
            console.clone(),
            auth::require_session,
        ));
    let api = api::router().layer(middleware::from_fn_with_state(
        console.clone(),
        auth::require_api_caller,
    ));
    Router::new()
        .merge(pages)
        .nest("/api/v1", api)
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/lang", get(i18n::switch))
        .route("/assets/console.css", get(layout::stylesheet))
        .route("/assets/console.js", get(layout::script))
        .layer(middleware::from_fn(layout::security_headers))
        .with_state(console)
}
