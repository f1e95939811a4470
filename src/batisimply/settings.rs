//! BatiSimply connection settings.

use secrecy::SecretString;
use serde::Deserialize;

/// OAuth2 grant used to obtain tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grant {
    /// Resource-owner password grant (client + user credentials).
    #[default]
    Password,
    /// Client-credentials grant (client credentials only).
    ClientCredentials,
}

/// Settings of the BatiSimply client. Secrets are redacted in `Debug`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatisimplySettings {
    /// Base URL of the REST API, e.g. `https://api.staging.batisimply.fr`.
    pub api_base_url: String,
    /// Base URL of the Keycloak server (the token path is appended).
    pub sso_base_url: String,
    /// Keycloak realm.
    pub realm: String,
    /// OAuth2 client id.
    pub client_id: String,
    /// OAuth2 client secret.
    pub client_secret: SecretString,
    /// OAuth2 grant type.
    pub grant: Grant,
    /// User name (password grant only).
    pub username: String,
    /// User password (password grant only).
    pub password: SecretString,
    /// OAuth2 scope.
    pub scope: String,
    /// Sustained request rate, in requests per second (all requests, tokens included).
    pub rate_limit_per_sec: u32,
    /// Requests allowed in a burst above the sustained rate.
    pub rate_limit_burst: u32,
    /// Maximum number of requests in flight at once.
    pub max_concurrent_requests: u32,
    /// TCP/TLS connection timeout, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Whole-request timeout, in milliseconds.
    pub request_timeout_ms: u64,
    /// Retries of a retryable failure before giving up.
    pub max_retries: u32,
    /// First retry delay, in milliseconds (doubled at each retry, with jitter).
    pub retry_base_ms: u64,
    /// Largest retry delay, in milliseconds.
    pub retry_cap_ms: u64,
    /// Renew the access token this many seconds before it expires.
    pub token_renew_margin_secs: u64,
    /// Page size of paginated lists (capped at 2000).
    pub page_size: u32,
    /// A project code missing from the cache triggers a re-read of the whole project
    /// list at most this often, in seconds (new codes are then created directly).
    pub project_cache_max_age_secs: u64,
    /// Largest time-slot window requested at once, in days.
    pub timeslot_max_window_days: u32,
    /// Name of the query parameter filtering time slots by modification
    /// instant, if the API has one (absent: unsupported).
    pub timeslot_modified_since_param: Option<String>,
}

impl Default for BatisimplySettings {
    fn default() -> Self {
        Self {
            api_base_url: "https://api.staging.batisimply.fr".to_owned(),
            sso_base_url: "https://sso.staging.batisimply.fr".to_owned(),
            realm: "jhipster".to_owned(),
            client_id: String::new(),
            client_secret: SecretString::default(),
            grant: Grant::Password,
            username: String::new(),
            password: SecretString::default(),
            scope: "openid email profile".to_owned(),
            rate_limit_per_sec: 10,
            rate_limit_burst: 10,
            max_concurrent_requests: 4,
            connect_timeout_ms: 5_000,
            request_timeout_ms: 30_000,
            max_retries: 3,
            retry_base_ms: 500,
            retry_cap_ms: 30_000,
            token_renew_margin_secs: 30,
            page_size: 200,
            project_cache_max_age_secs: 60,
            timeslot_max_window_days: 31,
            timeslot_modified_since_param: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn settings_deserialize_with_defaults_and_reject_unknown_keys() {
        let parsed: BatisimplySettings = toml::from_str(
            "client_id = \"c\"\nclient_secret = \"s\"\ngrant = \"client_credentials\"",
        )
        .expect("valid settings");
        assert_eq!(parsed.grant, Grant::ClientCredentials);
        assert_eq!(parsed.client_secret.expose_secret(), "s");
        assert_eq!(parsed.rate_limit_per_sec, 10);
        assert!(!format!("{parsed:?}").contains("\"s\""));
        assert!(toml::from_str::<BatisimplySettings>("typo_key = 1").is_err());
    }
}
