//! The JSON API (`/api/v1`), for the pages' scripts and for scripts of the integrator:
//! `Authorization: Bearer <token>` or a console session (with `X-CSRF-Token` for
//! changes). No secret is ever part of an answer.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::Console;
use super::auth::Ctx;
use super::data::{self, ActivityFilter};
use super::i18n::Lang;
use super::pages::{actions, dashboard, todo};
use crate::control::SyncRequest;
use crate::outbox::inspect;

/// Routes under `/api/v1`.
pub fn router() -> Router<Console> {
    Router::new()
        .route("/dashboard", get(dashboard_json))
        .route("/status", get(status))
        .route("/events", get(events))
        .route("/events/{id}", get(event))
        .route("/dead-letters", get(dead_letters))
        .route("/redrive", post(redrive))
        .route("/flows/{flow}/sync", post(sync_now))
        .route("/flows/{flow}/pause", post(pause))
        .route("/flows/{flow}/resume", post(resume))
        .route("/flows/{flow}/resync", get(resync_progress).post(resync))
        .route("/connections/test", post(test_connections))
}

fn lang_of(ctx: Option<Extension<Ctx>>) -> Lang {
    ctx.map_or(Lang::En, |Extension(c)| c.lang)
}

fn db_error(error: &sqlx::Error) -> Response {
    tracing::warn!(%error, "API: database query failed");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({ "error": "PostgreSQL does not answer; try again shortly" })),
    )
        .into_response()
}

fn no_flow(flow: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({ "error": format!("flow {flow} does not run in this process") })),
    )
        .into_response()
}

async fn dashboard_json(State(console): State<Console>) -> Response {
    match dashboard::flow_cards(&console).await {
        Ok(flows) => Json(json!({
            "flows": flows,
            "connections": console.health().lights(),
        }))
        .into_response(),
        Err(error) => db_error(&error),
    }
}

/// The same lines as `batisync status`.
async fn status(State(console): State<Console>) -> Response {
    match inspect::backlog(console.pool()).await {
        Ok(lines) => Json(
            lines
                .into_iter()
                .map(|l| {
                    json!({ "flow": l.flow, "status": l.status, "events": l.events,
                                 "oldest_age_seconds": l.oldest_age_seconds })
                })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(crate::outbox::OutboxError::Database(e)) => db_error(&e),
        Err(other) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({ "error": other.to_string() })),
        )
            .into_response(),
    }
}

async fn events(State(console): State<Console>, Query(filter): Query<ActivityFilter>) -> Response {
    match data::activity(console.pool(), &filter).await {
        Ok(mut rows) => {
            let more = rows.len() as i64 > data::PAGE_SIZE;
            rows.truncate(data::PAGE_SIZE as usize);
            let next_before = rows.last().filter(|_| more).map(|r| r.id);
            Json(json!({ "events": rows, "next_before": next_before })).into_response()
        }
        Err(error) => db_error(&error),
    }
}

async fn event(State(console): State<Console>, Path(id): Path<i64>) -> Response {
    let detail = match inspect::show(console.pool(), id).await {
        Ok(Some(d)) => d,
        Ok(None) => {
            return (
                StatusCode::NOT_FOUND,
                Json(json!({ "error": "no such event" })),
            )
                .into_response();
        }
        Err(crate::outbox::OutboxError::Database(e)) => return db_error(&e),
        Err(other) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({ "error": other.to_string() })),
            )
                .into_response();
        }
    };
    let s = &detail.summary;
    let link = match data::target_link(console.pool(), &s.flow, &s.entity_key).await {
        Ok(link) => link,
        Err(error) => return db_error(&error),
    };
    Json(json!({
        "id": s.id, "flow": s.flow, "entity_key": s.entity_key, "operation": s.operation,
        "status": s.status, "attempts": s.attempts, "captured_at": s.captured_at,
        "first_attempt_at": detail.first_attempt_at, "finished_at": s.finished_at,
        "next_attempt_at": s.next_attempt_at, "source_version": detail.source_version,
        "source_modified_at": detail.source_modified_at, "superseded_by": detail.superseded_by,
        "outcome": s.outcome, "last_error": s.last_error, "payload": detail.payload,
        "failures": detail.failures.iter().map(|f| json!({
            "attempt": f.attempt, "failed_at": f.failed_at, "kind": f.kind, "message": f.message,
        })).collect::<Vec<_>>(),
        "target": link,
    }))
    .into_response()
}

async fn dead_letters(State(console): State<Console>, ctx: Option<Extension<Ctx>>) -> Response {
    let lang = lang_of(ctx);
    match todo::groups(console.pool()).await {
        Ok(groups) => Json(
            groups
                .iter()
                .map(|g| {
                    json!({
                        "flow": g.flow, "group": g.reason.key, "title": g.reason.title(lang),
                        "fix": g.reason.fix(lang), "events": g.events,
                    })
                })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(error) => db_error(&error),
    }
}

/// `{"ids": [..]}`, `{"flow": .., "group": ..}` or `{"all": true}`.
#[derive(Debug, Deserialize)]
struct RedriveRequest {
    #[serde(default)]
    ids: Vec<i64>,
    #[serde(default)]
    flow: Option<String>,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    all: bool,
}

async fn redrive(State(console): State<Console>, Json(request): Json<RedriveRequest>) -> Response {
    let outbox = crate::outbox::Outbox::new(console.pool().clone());
    let result = if !request.ids.is_empty() {
        outbox
            .redrive(&request.ids)
            .await
            .map_err(|e| e.to_string())
    } else if let (Some(flow), Some(group)) = (request.flow.clone(), request.group.clone()) {
        todo::redrive_target(console.pool(), &todo::RedriveTarget::Group { flow, group })
            .await
            .map_err(|e| e.to_string())
    } else if request.all {
        outbox
            .redrive_all_dead(request.flow.as_deref())
            .await
            .map_err(|e| e.to_string())
    } else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": "give ids, flow and group, or all: true" })),
        )
            .into_response();
    };
    match result {
        Ok(report) => {
            tracing::info!(
                requeued = report.requeued.len(),
                "dead letters re-driven through the API"
            );
            Json(json!({ "requeued": report.requeued, "superseded": report.superseded }))
                .into_response()
        }
        Err(error) => {
            tracing::warn!(%error, "API re-drive failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "error": "re-drive failed; try again" })),
            )
                .into_response()
        }
    }
}

async fn sync_now(State(console): State<Console>, Path(flow): Path<String>) -> Response {
    let Some(control) = console.controls().get(&flow) else {
        return no_flow(&flow);
    };
    if control.is_paused() {
        return (
            StatusCode::CONFLICT,
            Json(json!({ "error": "the flow is paused" })),
        )
            .into_response();
    }
    let outcome = match control.request_sync() {
        SyncRequest::Queued => "queued",
        SyncRequest::AlreadyQueued => "already_queued",
    };
    (
        StatusCode::ACCEPTED,
        Json(json!({ "flow": flow, "sync": outcome })),
    )
        .into_response()
}

async fn pause(State(console): State<Console>, Path(flow): Path<String>) -> Response {
    let Some(control) = console.controls().get(&flow) else {
        return no_flow(&flow);
    };
    control.pause();
    Json(json!({ "flow": flow, "paused": true })).into_response()
}

async fn resume(State(console): State<Console>, Path(flow): Path<String>) -> Response {
    let Some(control) = console.controls().get(&flow) else {
        return no_flow(&flow);
    };
    control.resume();
    Json(json!({ "flow": flow, "paused": false })).into_response()
}

async fn resync(State(console): State<Console>, Path(flow): Path<String>) -> Response {
    let Some(control) = console.controls().get(&flow) else {
        return no_flow(&flow);
    };
    match control.request_resync().await {
        Ok(message) => (
            StatusCode::ACCEPTED,
            Json(json!({ "flow": flow, "message": message })),
        )
            .into_response(),
        Err(message) => (
            StatusCode::CONFLICT,
            Json(json!({ "flow": flow, "error": message })),
        )
            .into_response(),
    }
}

async fn resync_progress(
    State(console): State<Console>,
    ctx: Option<Extension<Ctx>>,
    Path(flow): Path<String>,
) -> Response {
    match actions::resync_progress(&console, &flow, lang_of(ctx)).await {
        Ok(progress) => Json(progress).into_response(),
        Err(error) => db_error(&error),
    }
}

async fn test_connections(State(console): State<Console>) -> Response {
    console.health().request_test();
    (StatusCode::ACCEPTED, Json(json!({ "test": "requested" }))).into_response()
}
