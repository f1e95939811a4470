//! Fault injection: configuration and the middleware applying it.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::state::SimState;

/// Faults injected by the simulator. Shares are probabilities in `0..=1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Latency added to every request, in milliseconds.
    pub latency_ms: u64,
    /// Share of requests answered 429.
    pub share_429: f64,
    /// `Retry-After` sent with 429 answers, in seconds.
    pub retry_after_secs: u64,
    /// Share of requests answered 500 or 503.
    pub share_5xx: f64,
    /// Share of successful answers whose JSON body is cut short.
    pub share_malformed_json: f64,
    /// Share of records in list answers missing a required field.
    pub share_malformed_records: f64,
    /// Lifetime of issued access tokens, in seconds.
    pub token_lifetime_secs: u64,
    /// Every request is answered 503 until this instant.
    pub outage_until: Option<DateTime<Utc>>,
    /// Requests per second allowed before answering 429 (None: unlimited).
    pub allowed_rate_per_sec: Option<u32>,
    /// Statuses forced on the next requests, in order (one per request).
    pub fail_next: Vec<u16>,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            latency_ms: 0,
            share_429: 0.0,
            retry_after_secs: 1,
            share_5xx: 0.0,
            share_malformed_json: 0.0,
            share_malformed_records: 0.0,
            token_lifetime_secs: 300,
            outage_until: None,
            allowed_rate_per_sec: None,
            fail_next: Vec::new(),
        }
    }
}

fn json_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "message": message })),
    )
        .into_response()
}

fn too_many(retry_after_secs: u64) -> Response {
    let mut response = json_error(StatusCode::TOO_MANY_REQUESTS, "Too many requests");
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
    response
}

/// Decides the fault, if any, for one request (before the handler runs).
fn pre_fault(state: &SimState) -> Option<Response> {
    let faults = state.faults();
    if faults.outage_until.is_some_and(|until| Utc::now() < until) {
        return Some(json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "Service unavailable (outage)",
        ));
    }
    if let Some(code) = state.pop_forced_status() {
        if code == 429 {
            return Some(too_many(faults.retry_after_secs));
        }
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return Some(json_error(status, "Injected failure"));
    }
    if !state.rate_allows() || state.chance(faults.share_429) {
        return Some(too_many(faults.retry_after_secs));
    }
    if state.chance(faults.share_5xx) {
        let status = if state.chance(0.5) {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        return Some(json_error(status, "Injected failure"));
    }
    None
}

/// Middleware: counts the route, applies latency and faults.
pub(crate) async fn fault_layer(
    State(state): State<Arc<SimState>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or_else(
        || request.uri().path().to_owned(),
        |p| p.as_str().to_owned(),
    );
    state.count_route(&format!("{} {route}", request.method()));
    let latency_ms = state.faults().latency_ms;
    if latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(latency_ms)).await;
    }
    let response = match pre_fault(&state) {
        Some(response) => response,
        None => next.run(request).await,
    };
    if response.status() == StatusCode::TOO_MANY_REQUESTS {
        state.count_429();
    }
    if response.status().is_success() && state.chance(state.faults().share_malformed_json) {
        let (parts, _) = response.into_parts();
        return Response::from_parts(parts, Body::from("{\"elements\": [{\"id\": 1, \"proj"));
    }
    response
}
