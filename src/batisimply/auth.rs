//! Keycloak token acquisition, caching and renewal.

use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Mutex;

use super::api::{self, WireToken, oauth};
use super::error::{BatisimplyError, CREDENTIALS_REJECTED};
use super::settings::{BatisimplySettings, Grant};
use super::transport::{Counters, Transport};

/// A bearer token and the generation it belongs to.
pub(crate) struct Bearer {
    pub token: SecretString,
    pub generation: u64,
}

struct TokenState {
    access: SecretString,
    renew_at: Instant,
    refresh: Option<(SecretString, Instant)>,
    generation: u64,
}

/// Token cache shared by all callers; one renewal at a time.
pub(crate) struct Auth {
    token_url: String,
    grant: Grant,
    client_id: String,
    client_secret: SecretString,
    username: String,
    password: SecretString,
    scope: String,
    renew_margin: Duration,
    state: Mutex<Option<TokenState>>,
}

impl Auth {
    pub(crate) fn new(settings: &BatisimplySettings) -> Self {
        let base = settings.sso_base_url.trim_end_matches('/');
        Self {
            token_url: format!("{base}{}", api::token_path(&settings.realm)),
            grant: settings.grant,
            client_id: settings.client_id.clone(),
            client_secret: settings.client_secret.clone(),
            username: settings.username.clone(),
            password: settings.password.clone(),
            scope: settings.scope.clone(),
            renew_margin: Duration::from_secs(settings.token_renew_margin_secs),
            state: Mutex::new(None),
        }
    }

    /// Returns a valid token, renewing it first if it is about to expire.
    pub(crate) async fn bearer(&self, transport: &Transport) -> Result<Bearer, BatisimplyError> {
        let mut state = self.state.lock().await;
        match state.as_ref() {
            Some(current) if Instant::now() < current.renew_at => Ok(bearer_of(current)),
            _ => self.renew(transport, &mut state).await,
        }
    }

    /// Renews the token after the API rejected generation `rejected`,
    /// unless another caller already did.
    pub(crate) async fn renew_after_rejection(
        &self,
        transport: &Transport,
        rejected: u64,
    ) -> Result<Bearer, BatisimplyError> {
        let mut state = self.state.lock().await;
        match state.as_ref() {
            Some(current) if current.generation != rejected => Ok(bearer_of(current)),
            _ => {
                // The refresh token may be revoked with the access token: log in again.
                if let Some(current) = state.as_mut() {
                    current.refresh = None;
                }
                self.renew(transport, &mut state).await
            }
        }
    }

    /// Refreshes when a refresh token is valid, logs in otherwise.
    async fn renew(
        &self,
        transport: &Transport,
        state: &mut Option<TokenState>,
    ) -> Result<Bearer, BatisimplyError> {
        let generation = state.as_ref().map_or(1, |s| s.generation + 1);
        let refresh = state.as_ref().and_then(|s| s.refresh.clone());
        let token = match refresh {
            Some((refresh, expires)) if Instant::now() < expires => {
                match self.request(transport, self.refresh_form(&refresh)).await {
                    Ok(token) => token,
                    Err(err) => {
                        tracing::debug!(error = %err, "token refresh failed, logging in again");
                        self.request(transport, self.login_form()).await?
                    }
                }
            }
            _ => self.request(transport, self.login_form()).await?,
        };
        let fresh = self.state_from(token, generation);
        tracing::debug!(generation, "access token obtained");
        let bearer = bearer_of(&fresh);
        *state = Some(fresh);
        Ok(bearer)
    }

    fn state_from(&self, token: WireToken, generation: u64) -> TokenState {
        let now = Instant::now();
        let lifetime = Duration::from_secs(token.expires_in.unwrap_or(60));
        // Renew `margin` early, but not before half of the lifetime has passed.
        let valid_for = lifetime.saturating_sub(self.renew_margin).max(lifetime / 2);
        let refresh = token.refresh_token.map(|t| {
            let secs = token.refresh_expires_in.unwrap_or(0);
            (
                SecretString::from(t),
                now + Duration::from_secs(secs).saturating_sub(self.renew_margin),
            )
        });
        TokenState {
            access: token.access_token.into(),
            renew_at: now + valid_for,
            refresh,
            generation,
        }
    }

    fn login_form(&self) -> Vec<(&'static str, String)> {
        let mut form = vec![
            (oauth::CLIENT_ID, self.client_id.clone()),
            (
                oauth::CLIENT_SECRET,
                self.client_secret.expose_secret().to_owned(),
            ),
            (oauth::SCOPE, self.scope.clone()),
        ];
        match self.grant {
            Grant::Password => {
                form.push((oauth::GRANT_TYPE, oauth::GRANT_PASSWORD.to_owned()));
                form.push((oauth::USERNAME, self.username.clone()));
                form.push((oauth::PASSWORD, self.password.expose_secret().to_owned()));
            }
            Grant::ClientCredentials => {
                form.push((
                    oauth::GRANT_TYPE,
                    oauth::GRANT_CLIENT_CREDENTIALS.to_owned(),
                ));
            }
        }
        form
    }

    fn refresh_form(&self, refresh: &SecretString) -> Vec<(&'static str, String)> {
        vec![
            (oauth::GRANT_TYPE, oauth::GRANT_REFRESH_TOKEN.to_owned()),
            (oauth::CLIENT_ID, self.client_id.clone()),
            (
                oauth::CLIENT_SECRET,
                self.client_secret.expose_secret().to_owned(),
            ),
            (oauth::REFRESH_TOKEN, refresh.expose_secret().to_owned()),
        ]
    }

    /// Posts a token request; the form is never logged.
    #[tracing::instrument(skip_all, fields(url = %self.token_url), err)]
    async fn request(
        &self,
        transport: &Transport,
        form: Vec<(&'static str, String)>,
    ) -> Result<WireToken, BatisimplyError> {
        let result = transport
            .send(|| transport.http().post(&self.token_url).form(&form), true)
            .await;
        let raw = result.map_err(token_error)?;
        Counters::bump(&transport.counters.tokens_fetched);
        serde_json::from_slice(&raw.body).map_err(BatisimplyError::decode)
    }
}

fn bearer_of(state: &TokenState) -> Bearer {
    Bearer {
        token: state.access.clone(),
        generation: state.generation,
    }
}

/// Token endpoint refusals (400/401) mean wrong credentials.
fn token_error(err: BatisimplyError) -> BatisimplyError {
    match err {
        BatisimplyError::Permanent {
            status: status @ (400 | 401),
            message,
        } => BatisimplyError::Auth {
            status: Some(status),
            message: format!("{CREDENTIALS_REJECTED} [{message}]"),
        },
        BatisimplyError::Permanent { status: 404, .. } => BatisimplyError::config(
            "token endpoint not found (404): vérifiez sso_base_url et realm / check sso_base_url and realm",
        ),
        other => other,
    }
}
