//! The admin HTTP surface: health, readiness and metrics, plus the web console
//! ([`crate::console`]) when one is given.

use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use sqlx::PgPool;

/// What the handlers need.
#[derive(Clone)]
pub struct AdminState {
    pub pool: PgPool,
    /// Where OpenTelemetry exports for Prometheus; `None` disables `/metrics`.
    pub registry: Option<prometheus::Registry>,
    /// The web console and its API; `None` serves only health and metrics.
    pub console: Option<crate::console::Console>,
}

/// Routes of the admin listener.
pub fn router(state: AdminState) -> Router {
    let console = state.console.clone();
    let admin = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state);
    match console {
        Some(console) => admin.merge(crate::console::router(console)),
        None => admin,
    }
}

/// The process is up and serving.
async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// PostgreSQL answers and the schema is current: the worker can do its job.
async fn readyz(State(state): State<AdminState>) -> Response {
    let check = tokio::time::timeout(
        Duration::from_secs(2),
        crate::db::migration_status(&state.pool),
    )
    .await;
    match check {
        Ok(Ok(status)) if status.is_current() => {
            Json(json!({ "status": "ready", "migrations_applied": status.applied })).into_response()
        }
        Ok(Ok(status)) => unavailable(format!(
            "migrations en attente / pending migrations: {:?}{:?}; run `batisync migrate`",
            status.pending, status.modified
        )),
        Ok(Err(error)) => unavailable(format!("PostgreSQL: {error}")),
        Err(_) => unavailable("PostgreSQL did not answer within 2 s".to_owned()),
    }
}

fn unavailable(reason: String) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({ "status": "not_ready", "reason": reason })),
    )
        .into_response()
}

async fn metrics(State(state): State<AdminState>) -> Response {
    match &state.registry {
        Some(registry) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            crate::metrics::render(registry),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "metrics are not enabled\n").into_response(),
    }
}
