//! Admin HTTP surface under `/__admin`, mirroring the [`super::SimHandle`] methods.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::faults::Faults;
use super::state::SimState;
use crate::batisimply::api::{WireProject, WireTimeSlot};

type Shared = State<Arc<SimState>>;

/// Body of a slot move.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Move {
    start_date: DateTime<Utc>,
    end_date: DateTime<Utc>,
}

/// Routes of the admin surface.
pub(crate) fn router() -> Router<Arc<SimState>> {
    Router::new()
        .route("/__admin/projects", get(projects).post(create_project))
        .route("/__admin/projects/seed/{count}", post(seed_projects))
        .route("/__admin/projects/{id}", axum::routing::patch(edit_project))
        .route("/__admin/slots", get(slots).post(add_slot))
        .route("/__admin/slots/seed/{count}", post(seed_slots))
        .route("/__admin/slots/{id}", axum::routing::delete(delete_slot))
        .route("/__admin/slots/{id}/validate", post(validate_slot))
        .route("/__admin/slots/{id}/move", post(move_slot))
        .route("/__admin/faults", get(faults).put(set_faults))
        .route("/__admin/tokens/revoke", post(revoke))
        .route("/__admin/stats", get(stats))
}

async fn projects(State(s): Shared) -> Json<Vec<WireProject>> {
    Json(s.projects())
}

async fn create_project(State(s): Shared, Json(p): Json<WireProject>) -> Response {
    s.create_project(p).map(Json).into_response()
}

async fn seed_projects(State(s): Shared, Path(count): Path<usize>) -> Json<Vec<WireProject>> {
    Json(s.seed_projects(count))
}

async fn edit_project(State(s): Shared, Path(id): Path<i64>, Json(patch): Json<Value>) -> Response {
    s.edit_project(id, &patch).map(Json).into_response()
}

async fn slots(State(s): Shared) -> Json<Vec<WireTimeSlot>> {
    Json(s.slots_where(|_| true))
}

async fn add_slot(State(s): Shared, Json(slot): Json<WireTimeSlot>) -> Json<WireTimeSlot> {
    Json(s.add_slot(slot))
}

async fn seed_slots(State(s): Shared, Path(count): Path<usize>) -> StatusCode {
    s.seed_slots(count);
    StatusCode::NO_CONTENT
}

async fn delete_slot(State(s): Shared, Path(id): Path<i64>) -> Response {
    s.delete_slot(id)
        .map(|()| StatusCode::NO_CONTENT)
        .into_response()
}

async fn validate_slot(State(s): Shared, Path(id): Path<i64>) -> Response {
    s.change_slot(id, |slot| {
        slot.management_status = Some("VALIDATED".to_owned())
    })
    .map(Json)
    .into_response()
}

async fn move_slot(State(s): Shared, Path(id): Path<i64>, Json(m): Json<Move>) -> Response {
    s.change_slot(id, |slot| {
        slot.start_date = Some(m.start_date);
        slot.end_date = Some(m.end_date);
    })
    .map(Json)
    .into_response()
}

async fn faults(State(s): Shared) -> Json<Faults> {
    Json(s.faults())
}

async fn set_faults(State(s): Shared, Json(f): Json<Faults>) -> StatusCode {
    s.set_faults(f);
    StatusCode::NO_CONTENT
}

async fn revoke(State(s): Shared) -> StatusCode {
    s.revoke_tokens();
    StatusCode::NO_CONTENT
}

async fn stats(State(s): Shared) -> Json<Value> {
    Json(json!({
        "routes": s.route_counts(),
        "served429": s.served_429.load(Ordering::Relaxed),
        "served401": s.served_401.load(Ordering::Relaxed),
        "tokensIssued": s.tokens_issued.load(Ordering::Relaxed),
        "connections": s.connections.load(Ordering::Relaxed),
    }))
}
