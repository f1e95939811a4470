//! Simulated Keycloak token endpoint.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Form;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::state::SimState;
use crate::batisimply::api::{WireToken, WireTokenError, oauth};

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let body = WireTokenError {
        error: error.to_owned(),
        error_description: Some(description.to_owned()),
    };
    (status, axum::Json(body)).into_response()
}

/// `POST /auth/realms/{realm}/protocol/openid-connect/token`.
pub(crate) async fn token(
    State(state): State<Arc<SimState>>,
    axum::extract::Path(realm): axum::extract::Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if realm != state.config.realm {
        return oauth_error(
            StatusCode::NOT_FOUND,
            "realm_not_found",
            "Realm does not exist",
        );
    }
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
    if field(oauth::CLIENT_ID) != state.config.client_id
        || field(oauth::CLIENT_SECRET) != state.config.client_secret
    {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Invalid client or Invalid client credentials",
        );
    }
    let granted = match field(oauth::GRANT_TYPE) {
        oauth::GRANT_CLIENT_CREDENTIALS => true,
        oauth::GRANT_PASSWORD => {
            let (user, password) = (field(oauth::USERNAME), field(oauth::PASSWORD));
            state
                .config
                .users
                .iter()
                .any(|(u, p)| u == user && p == password)
        }
        oauth::GRANT_REFRESH_TOKEN => state.take_refresh(field(oauth::REFRESH_TOKEN)),
        _ => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "Unsupported grant_type",
            );
        }
    };
    if !granted {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Invalid user credentials or token",
        );
    }
    let (access, lifetime, refresh, refresh_lifetime) = state.issue_tokens();
    axum::Json(WireToken {
        access_token: access,
        expires_in: Some(lifetime),
        refresh_token: Some(refresh),
        refresh_expires_in: Some(refresh_lifetime),
        token_type: Some("Bearer".to_owned()),
    })
    .into_response()
}
