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
#[derive(Debug, Default, Deserialize)]
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

/// The admin HTTP listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSettings {
    /// Address and port to listen on; loopback by default so nothing is exposed.
    pub listen: SocketAddr,
    /// How long in-flight work may take to finish after SIGINT/SIGTERM.
    pub shutdown_grace_ms: u64,
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            shutdown_grace_ms: 10_000,
        }
    }
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
