//! Typed, layered settings: defaults in code, a TOML file, then environment overrides.
//!
//! Layers, lowest first:
//! 1. defaults written in the structs below;
//! 2. the TOML file given by `--config` (or `BATISYNC_CONFIG`);
//! 3. environment variables `BATISYNC__SECTION__KEY=value` (`__` separates levels).
//!
//! Any key ending in `_file` names a file whose content becomes the value of the key
//! without the suffix (`password_file = "/run/secrets/pg"` sets `password`). This is how
//! secrets are kept out of the settings file; that is why non-secret paths end in `_path`.
//! Unknown keys are rejected with their full name.

mod load;

use std::net::SocketAddr;
use std::path::PathBuf;

use secrecy::SecretString;
use serde::Deserialize;

use crate::batigest::BatigestSettings;
use crate::batisimply::BatisimplySettings;
use crate::dispatch::DispatchSettings;
use crate::flows::chantiers::ChantiersSettings;
use crate::flows::heures::HeuresSettings;

pub use load::{SettingsError, load};

/// The whole configuration of one batisync process.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Where batisync keeps its outbox, cursors and links.
    pub postgres: PostgresSettings,
    /// Engine-wide outbox behaviour (retention, maintenance, notifications).
    pub outbox: OutboxSettings,
    /// Default dispatch behaviour of every flow (workers, batches, retries).
    pub dispatch: DispatchSettings,
    /// The admin HTTP listener (health, metrics, console).
    pub admin: AdminSettings,
    /// Log output.
    pub log: LogSettings,
    /// The BatiSimply API (field app): URLs, credentials, politeness.
    pub batisimply: BatisimplySettings,
    /// The Batigest dossier on SQL Server: connection and column mapping.
    pub batigest: BatigestSettings,
    /// Flow `chantiers`: Batigest job sites → BatiSimply projects.
    pub chantiers: ChantiersSettings,
    /// Flow `heures`: validated BatiSimply time slots → Batigest `SuiviMO`.
    pub heures: HeuresSettings,
}

/// Connection to the batisync PostgreSQL database.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresSettings {
    /// Host name or IP address of the PostgreSQL server (or a Unix socket directory).
    pub host: String,
    /// TCP port of the PostgreSQL server.
    pub port: u16,
    /// Role batisync logs in as.
    pub user: String,
    /// Password of that role; prefer `password_file` or `BATISYNC__POSTGRES__PASSWORD`.
    pub password: Option<SecretString>,
    /// Database holding the `batisync` schema.
    pub database: String,
    /// TLS mode: `disable`, `prefer`, `require`, `verify-ca` or `verify-full`.
    pub ssl_mode: SslMode,
    /// CA certificate (PEM) used with `verify-ca` / `verify-full`.
    pub ssl_root_cert_path: Option<PathBuf>,
    /// Largest number of pooled connections.
    pub max_connections: u32,
    /// How long to wait for a connection before giving up on one attempt.
    pub connect_timeout_ms: u64,
    /// Apply pending migrations when `batisync run` starts.
    pub auto_migrate: bool,
    /// Wait for the WAL flush at each commit (`synchronous_commit`). Off by default: a
    /// PostgreSQL crash may then forget the last fraction of a second of commits, but
    /// always as a whole (a capture together with its cursor move, an ack), so sources
    /// are re-read and deliveries repeated, idempotently; nothing is lost.
    pub synchronous_commit: bool,
}

impl Default for PostgresSettings {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 5432,
            user: "batisync".into(),
            password: None,
            database: "batisync".into(),
            ssl_mode: SslMode::Prefer,
            ssl_root_cert_path: None,
            max_connections: 16,
            connect_timeout_ms: 5_000,
            auto_migrate: true,
            synchronous_commit: false,
        }
    }
}

/// PostgreSQL TLS modes, as libpq names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// Engine-wide outbox settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxSettings {
    /// How often the maintenance task rescues expired leases and refreshes gauges.
    pub maintenance_interval_ms: u64,
    /// Delivered and superseded events older than this many days are deleted.
    pub retention_days: u32,
    /// Events deleted per statement when pruning (keeps locks short).
    pub prune_batch_size: i64,
}

impl Default for OutboxSettings {
    fn default() -> Self {
        Self {
            maintenance_interval_ms: 5_000,
            retention_days: 30,
            prune_batch_size: 5_000,
        }
    }
}

/// The admin HTTP listener and its web console.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSettings {
    /// Address and port to listen on; loopback by default so nothing is exposed. Any
    /// other address needs `tls_cert_path` + `tls_key_path`, or
    /// `allow_plain_http_on_network = true` (behind a TLS reverse proxy).
    pub listen: SocketAddr,
    /// How long in-flight work may take to finish after SIGINT/SIGTERM.
    pub shutdown_grace_ms: u64,
    /// Argon2id hash (PHC string) of the console password, written by
    /// `batisync admin set-password`. Unset: nobody can sign in to the console.
    pub password_hash: Option<SecretString>,
    /// SHA-256 (hex) of the bearer token of the JSON API, written by
    /// `batisync admin new-api-token`. Unset: the API only accepts console sessions.
    pub api_token_sha256: Option<String>,
    /// Certificate chain (PEM) served by the listener; with `tls_key_path`, enables HTTPS.
    pub tls_cert_path: Option<PathBuf>,
    /// Private key (PEM) of `tls_cert_path`.
    pub tls_key_path: Option<PathBuf>,
    /// Acknowledges serving plain HTTP on a non-loopback address (only behind a TLS
    /// reverse proxy on a trusted network).
    pub allow_plain_http_on_network: bool,
    /// A console session ends after this many minutes without a request.
    pub session_idle_minutes: u64,
    /// Sign-in attempts allowed per minute from one address (then refused for a while).
    pub login_attempts_per_minute: u32,
    /// Language of the console for a new visitor: `fr` or `en` (each page can switch).
    pub language: ConsoleLanguage,
    /// How often the connection lights (PostgreSQL, SQL Server, BatiSimply) are
    /// refreshed in the background, in seconds. Pages never open connections.
    pub health_check_interval_secs: u64,
    /// Lets the Salariés page write an employee's BatiSimply id (`Salarie.codebs`) in
    /// Batigest. Off by default: the page is read-only and the id is edited in Batigest.
    /// On, the SQL Server login needs `UPDATE` on that column.
    pub allow_codebs_write: bool,
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            shutdown_grace_ms: 10_000,
            password_hash: None,
            api_token_sha256: None,
            tls_cert_path: None,
            tls_key_path: None,
            allow_plain_http_on_network: false,
            session_idle_minutes: 60,
            login_attempts_per_minute: 5,
            language: ConsoleLanguage::Fr,
            health_check_interval_secs: 30,
            allow_codebs_write: false,
        }
    }
}

impl AdminSettings {
    /// True when the listener serves HTTPS itself.
    #[must_use]
    pub fn tls_enabled(&self) -> bool {
        self.tls_cert_path.is_some() && self.tls_key_path.is_some()
    }

    fn validate(&self) -> Result<(), SettingsError> {
        if self.tls_cert_path.is_some() != self.tls_key_path.is_some() {
            return Err(SettingsError::invalid(
                "admin.tls_key_path",
                "set both admin.tls_cert_path and admin.tls_key_path, or neither",
            ));
        }
        if !self.listen.ip().is_loopback()
            && !self.tls_enabled()
            && !self.allow_plain_http_on_network
        {
            return Err(SettingsError::invalid(
                "admin.listen",
                format!(
                    "{} n'est pas une adresse locale : configurez admin.tls_cert_path et \
                     admin.tls_key_path, ou acceptez le HTTP en clair avec \
                     admin.allow_plain_http_on_network = true / is not a loopback address: \
                     set admin.tls_cert_path and admin.tls_key_path, or acknowledge plain \
                     HTTP with admin.allow_plain_http_on_network = true",
                    self.listen
                ),
            ));
        }
        if let Some(hash) = &self.api_token_sha256
            && (hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(SettingsError::invalid(
                "admin.api_token_sha256",
                "expected 64 hexadecimal digits (use `batisync admin new-api-token`)",
            ));
        }
        if self.session_idle_minutes == 0 || self.login_attempts_per_minute == 0 {
            return Err(SettingsError::invalid(
                "admin.session_idle_minutes",
                "session_idle_minutes and login_attempts_per_minute must be at least 1",
            ));
        }
        if self.health_check_interval_secs == 0 {
            return Err(SettingsError::invalid(
                "admin.health_check_interval_secs",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// Languages of the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ConsoleLanguage {
    /// French (default).
    #[default]
    Fr,
    /// English.
    En,
}

/// Log output.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// `human` (readable lines) or `json` (one JSON object per line).
    pub format: LogFormat,
    /// Filter in `tracing` syntax, e.g. `info` or `info,batisync=debug`.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Human,
            level: "info,sqlx=warn,opentelemetry=warn".into(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

impl Settings {
    /// Cross-field checks that serde cannot express; each error names the keys.
    pub(crate) fn validate(&self) -> Result<(), SettingsError> {
        self.dispatch.validate("dispatch")?;
        self.batigest.validate("batigest")?;
        self.chantiers.validate("chantiers")?;
        self.heures.validate("heures")?;
        self.admin.validate()?;
        if self.postgres.max_connections == 0 {
            return Err(SettingsError::invalid(
                "postgres.max_connections",
                "must be at least 1",
            ));
        }
        if self.outbox.prune_batch_size <= 0 {
            return Err(SettingsError::invalid(
                "outbox.prune_batch_size",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}
