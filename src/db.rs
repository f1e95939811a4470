//! PostgreSQL connection pool and migrations of the `batisync` schema.

use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::{PgPool, Postgres, pool::PoolOptions};
use tokio_util::sync::CancellationToken;

use crate::settings::{PostgresSettings, SslMode};

/// The migrations embedded in the binary; their bookkeeping table lives in our schema.
pub fn migrator() -> Migrator {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.create_schema("batisync");
    migrator.dangerous_set_table_name("batisync._sqlx_migrations");
    migrator
}

/// Connection options from settings; the password never leaves `secrecy` except here.
pub fn connect_options(settings: &PostgresSettings) -> PgConnectOptions {
    let mut options = PgConnectOptions::new_without_pgpass()
        .host(&settings.host)
        .port(settings.port)
        .username(&settings.user)
        .database(&settings.database)
        .application_name("batisync")
        .ssl_mode(match settings.ssl_mode {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require => PgSslMode::Require,
            SslMode::VerifyCa => PgSslMode::VerifyCa,
            SslMode::VerifyFull => PgSslMode::VerifyFull,
        });
    if !settings.synchronous_commit {
        options = options.options([("synchronous_commit", "off")]);
    }
    if let Some(password) = &settings.password {
        options = options.password(password.expose_secret());
    }
    if let Some(path) = &settings.ssl_root_cert_path {
        options = options.ssl_root_cert(path);
    }
    options
}

fn pool_options(settings: &PostgresSettings) -> PoolOptions<Postgres> {
    PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(Duration::from_millis(settings.connect_timeout_ms))
        .test_before_acquire(true)
}

/// A pool that connects on first use: `run` starts even while PostgreSQL is down.
pub fn lazy_pool(settings: &PostgresSettings) -> PgPool {
    pool_options(settings).connect_lazy_with(connect_options(settings))
}

/// Connects now, failing fast with an actionable message (for `migrate`, `check`, ...).
///
/// # Errors
/// When PostgreSQL cannot be reached or refuses the login.
pub async fn connect(settings: &PostgresSettings) -> anyhow::Result<PgPool> {
    pool_options(settings)
        .connect_with(connect_options(settings))
        .await
        .map_err(|e| anyhow::anyhow!(describe_connect_error(settings, &e)))
}

/// Waits until PostgreSQL answers, retrying with a logged, capped backoff. Returns
/// false if `stop` fired first.
pub async fn wait_until_reachable(
    pool: &PgPool,
    settings: &PostgresSettings,
    stop: &CancellationToken,
) -> bool {
    let mut attempt: u32 = 0;
    loop {
        match sqlx::query("SELECT 1").execute(pool).await {
            Ok(_) => return true,
            Err(e) => {
                attempt = attempt.saturating_add(1);
                let delay = Duration::from_millis(500u64.saturating_mul(1 << attempt.min(6)));
                tracing::warn!(attempt, retry_in_ms = delay.as_millis() as u64,
                    error = %describe_connect_error(settings, &e), "waiting for PostgreSQL");
                tokio::select! {
                    () = stop.cancelled() => return false,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// A French/English message saying what failed and what to check.
pub fn describe_connect_error(settings: &PostgresSettings, error: &sqlx::Error) -> String {
    let target = format!(
        "{}@{}:{}/{}",
        settings.user, settings.host, settings.port, settings.database
    );
    let hint = match error {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut => {
            "serveur injoignable : vérifiez postgres.host/port et que PostgreSQL tourne / server unreachable: check postgres.host/port and that PostgreSQL is running"
        }
        sqlx::Error::Tls(_) => {
            "échec TLS : vérifiez postgres.ssl_mode et ssl_root_cert_path / TLS failed: check postgres.ssl_mode and ssl_root_cert_path"
        }
        sqlx::Error::Database(db) if db.code().as_deref() == Some("28P01") => {
            "mot de passe refusé : vérifiez postgres.user et postgres.password / password rejected: check postgres.user and postgres.password"
        }
        sqlx::Error::Database(db) if db.code().as_deref() == Some("3D000") => {
            "base inconnue : créez-la ou corrigez postgres.database / unknown database: create it or fix postgres.database"
        }
        _ => "connexion refusée / connection failed",
    };
    format!("PostgreSQL {target}: {hint} ({error})")
}

/// Whether retrying the operation later may succeed.
pub fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // connection exceptions, serialization/deadlock, insufficient resources,
            // operator intervention (admin shutdown, crash recovery)
            ["08", "40", "53", "57"]
                .iter()
                .any(|class| code.starts_with(class))
        }),
        _ => false,
    }
}

/// Which embedded migrations are applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationStatus {
    pub applied: usize,
    /// Embedded but not applied, by description.
    pub pending: Vec<String>,
    /// Applied with a checksum that differs from the embedded file (edited migration).
    pub modified: Vec<String>,
}

impl MigrationStatus {
    pub fn is_current(&self) -> bool {
        self.pending.is_empty() && self.modified.is_empty()
    }
}

/// Compares the embedded migrations with those recorded in the database.
///
/// # Errors
/// Database errors other than "not migrated yet".
pub async fn migration_status(pool: &PgPool) -> Result<MigrationStatus, sqlx::Error> {
    let exists: bool =
        sqlx::query_scalar("SELECT to_regclass('batisync._sqlx_migrations') IS NOT NULL")
            .fetch_one(pool)
            .await?;
    let applied: Vec<(i64, Vec<u8>)> = if exists {
        sqlx::query_as("SELECT version, checksum FROM batisync._sqlx_migrations WHERE success")
            .fetch_all(pool)
            .await?
    } else {
        Vec::new()
    };
    let mut status = MigrationStatus {
        applied: applied.len(),
        pending: Vec::new(),
        modified: Vec::new(),
    };
    for migration in migrator()
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
    {
        let name = format!("{} {}", migration.version, migration.description);
        match applied.iter().find(|(v, _)| *v == migration.version) {
            None => status.pending.push(name),
            Some((_, sum)) if sum.as_slice() != &*migration.checksum => status.modified.push(name),
            Some(_) => {}
        }
    }
    Ok(status)
}
