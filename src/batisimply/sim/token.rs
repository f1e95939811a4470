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
    match check_grant(&state, &form) {
        Ok(()) => issue(&state),
        Err((status, error, description)) => oauth_error(status, error, description),
    }
}

/// Status, OAuth2 error code and description of a refused token request.
type Refusal = (StatusCode, &'static str, &'static str);

/// Checks the client, then the grant (user password, client credentials or refresh token).
fn check_grant(state: &SimState, form: &HashMap<String, String>) -> Result<(), Refusal> {
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
    let config = &state.config;
    if field(oauth::CLIENT_ID) != config.client_id
        || field(oauth::CLIENT_SECRET) != config.client_secret
    {
        let description = "Invalid client or Invalid client credentials";
        return Err((StatusCode::UNAUTHORIZED, "invalid_client", description));
    }
    let granted = match field(oauth::GRANT_TYPE) {
        oauth::GRANT_CLIENT_CREDENTIALS => true,
        oauth::GRANT_PASSWORD => {
            let (user, password) = (field(oauth::USERNAME), field(oauth::PASSWORD));
            config.users.iter().any(|(u, p)| u == user && p == password)
        }
        oauth::GRANT_REFRESH_TOKEN => state.take_refresh(field(oauth::REFRESH_TOKEN)),
        _ => {
            let description = "Unsupported grant_type";
            return Err((
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                description,
            ));
        }
    };
    if granted {
        Ok(())
    } else {
        let description = "Invalid user credentials or token";
        Err((StatusCode::BAD_REQUEST, "invalid_grant", description))
    }
}

/// Issues a fresh access and refresh token pair.
fn issue(state: &SimState) -> Response {
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
