//! Simulated API routes: projects and time slots.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::data::SimReject;
use super::state::{ListShape, SimState};
use crate::batisimply::api::{self, WireProject, WireTimeSlot};

impl IntoResponse for SimReject {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(json!({ "message": self.message, "status": self.status.as_u16() })),
        )
            .into_response()
    }
}

fn bad_request(message: &str) -> SimReject {
    SimReject {
        status: StatusCode::BAD_REQUEST,
        message: message.to_owned(),
    }
}

/// Middleware: 401 unless a valid bearer token is sent.
pub(crate) async fn require_bearer(
    State(state): State<Arc<SimState>>,
    request: Request,
    next: Next,
) -> Response {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if token.is_some_and(|t| state.access_valid(t)) {
        return next.run(request).await;
    }
    state
        .served_401
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({ "error": "invalid_token" })),
    )
        .into_response()
}

fn query_number(
    query: &HashMap<String, String>,
    name: &str,
    default: usize,
) -> Result<usize, SimReject> {
    query.get(name).map_or(Ok(default), |v| {
        v.parse()
            .map_err(|_| bad_request(&format!("invalid {name}")))
    })
}

/// `GET /api/project` with JHipster pagination.
pub(crate) async fn list_projects(
    State(state): State<Arc<SimState>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let (page, size) = match (
        query_number(&query, api::PARAM_PAGE, 0),
        query_number(&query, api::PARAM_SIZE, 20),
    ) {
        (Ok(page), Ok(size)) => (page, size.clamp(1, api::MAX_PAGE_SIZE as usize)),
        (Err(reject), _) | (_, Err(reject)) => return reject.into_response(),
    };
    let projects = state.projects();
    let total = projects.len();
    let items: Vec<Value> = projects
        .iter()
        .skip(page.saturating_mul(size))
        .take(size)
        .filter_map(|p| serde_json::to_value(p).ok())
        .collect();
    let mut headers = HeaderMap::new();
    headers.insert(api::HEADER_TOTAL_COUNT, HeaderValue::from(total));
    if let Ok(link) = HeaderValue::from_str(&link_header(page, size, total)) {
        headers.insert(header::LINK, link);
    }
    let body = match state.config.list_shape {
        ListShape::Elements => json!({ "elements": items }),
        ListShape::BareArray => Value::Array(items),
    };
    (headers, axum::Json(body)).into_response()
}

/// JHipster-style `Link` header (next, prev, last, first).
fn link_header(page: usize, size: usize, total: usize) -> String {
    let last = total.div_ceil(size).saturating_sub(1);
    let link = |p: usize, rel: &str| {
        format!(
            "<{}?page={p}&size={size}>; rel=\"{rel}\"",
            api::PROJECTS_PATH
        )
    };
    let mut parts = Vec::new();
    if page < last {
        parts.push(link(page + 1, "next"));
    }
    if page > 0 {
        parts.push(link(page - 1, "prev"));
    }
    parts.push(link(last, "last"));
    parts.push(link(0, "first"));
    parts.join(",")
}

/// `GET /api/project/{id}`.
pub(crate) async fn get_project(
    State(state): State<Arc<SimState>>,
    Path(id): Path<i64>,
) -> Response {
    match state.project(id) {
        Some(project) => axum::Json(project).into_response(),
        None => SimReject {
            status: StatusCode::NOT_FOUND,
            message: format!("Project {id} not found"),
        }
        .into_response(),
    }
}

fn parse_project(body: &Bytes) -> Result<WireProject, SimReject> {
    serde_json::from_slice(body).map_err(|e| bad_request(&format!("Invalid JSON: {e}")))
}

/// `POST /api/project`.
pub(crate) async fn create_project(State(state): State<Arc<SimState>>, body: Bytes) -> Response {
    match parse_project(&body).map(|p| state.create_project(p)) {
        Ok(Ok(project)) => (StatusCode::CREATED, axum::Json(project)).into_response(),
        Ok(Err(reject)) => reject.into_response(),
        Err(reject) => reject.into_response(),
    }
}

/// `PUT /api/project` (id in the body).
pub(crate) async fn update_project(State(state): State<Arc<SimState>>, body: Bytes) -> Response {
    match parse_project(&body).map(|p| state.update_project(p)) {
        Ok(Ok(project)) => axum::Json(project).into_response(),
        Ok(Err(reject)) => reject.into_response(),
        Err(reject) => reject.into_response(),
    }
}

fn instant(query: &HashMap<String, String>, name: &str) -> Result<DateTime<Utc>, SimReject> {
    let raw = query
        .get(name)
        .ok_or_else(|| bad_request(&format!("Required parameter '{name}' is not present")))?;
    DateTime::parse_from_rfc3339(raw)
        .map(|d| d.with_timezone(&Utc))
        .map_err(|_| {
            bad_request(&format!(
                "Parameter '{name}' must be a full ISO-8601 timestamp"
            ))
        })
}

/// `GET /api/timeSlotManagement/allUsers` (bare array).
pub(crate) async fn list_slots(
    State(state): State<Arc<SimState>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let since_param = state.config.modified_since_param.clone();
    let slots = match since_param.filter(|p| query.contains_key(p)) {
        Some(param) => match instant(&query, &param) {
            Ok(since) => state.slots_where(|s| s.last_modified_date.is_some_and(|m| m >= since)),
            Err(reject) => return reject.into_response(),
        },
        None => match window_slots(&state, &query) {
            Ok(slots) => slots,
            Err(reject) => return reject.into_response(),
        },
    };
    let share = state.faults().share_malformed_records;
    let items: Vec<Value> = slots
        .iter()
        .filter_map(|s| serde_json::to_value(s).ok())
        .map(|mut v| {
            if let Value::Object(map) = &mut v
                && state.chance(share)
            {
                map.remove(api::slot_fields::START_DATE);
            }
            v
        })
        .collect();
    axum::Json(Value::Array(items)).into_response()
}

fn window_slots(
    state: &SimState,
    query: &HashMap<String, String>,
) -> Result<Vec<WireTimeSlot>, SimReject> {
    let start = instant(query, api::PARAM_START_DATE)?;
    let end = instant(query, api::PARAM_END_DATE)?;
    if end < start {
        return Err(bad_request("endDate must not be before startDate"));
    }
    let max_window = state
        .config
        .max_window_days
        .map(|d| chrono::Duration::days(i64::from(d)));
    if max_window.is_some_and(|max| end - start > max) {
        return Err(bad_request("Requested range too large"));
    }
    Ok(state.slots_where(|s| s.start_date.is_some_and(|d| d >= start && d < end)))
}
