//! Shared test helpers: a fresh PostgreSQL database per test, settings pointing at it,
//! and small builders.
#![allow(dead_code)]

pub mod handler;

use batisync::outbox::{NewEvent, Operation, Outbox};
use batisync::settings::{PostgresSettings, Settings};
use secrecy::SecretString;
use serde_json::json;
use sqlx::PgPool;

/// PostgreSQL the tests use: the cluster `scripts/postgres.sh` starts, unless
/// BATISYNC_TEST_PG_HOST/PORT/USER/PASSWORD say otherwise.
pub fn server_settings() -> PostgresSettings {
    let env =
        |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
    PostgresSettings {
        host: env("BATISYNC_TEST_PG_HOST", "127.0.0.1"),
        port: env("BATISYNC_TEST_PG_PORT", "55432")
            .parse()
            .expect("BATISYNC_TEST_PG_PORT"),
        user: env("BATISYNC_TEST_PG_USER", "batisync"),
        password: Some(SecretString::from(env(
            "BATISYNC_TEST_PG_PASSWORD",
            "batisync",
        ))),
        database: "postgres".into(),
        max_connections: 20,
        ..PostgresSettings::default()
    }
}

/// A database of its own, migrated; dropped when the test ends well (leftovers are
/// dropped by `.ci/run`).
pub struct TestDb {
    pub pool: PgPool,
    pub settings: PostgresSettings,
    name: String,
}

impl TestDb {
    pub async fn new() -> Self {
        Self::migrated_to(None).await
    }

    /// A database with the migrations up to `version` applied (all when `None`).
    pub async fn migrated_to(version: Option<i64>) -> Self {
        let admin = batisync::db::connect(&server_settings())
            .await
            .expect("test PostgreSQL reachable (run scripts/postgres.sh)");
        let name = format!("batisync_test_{:016x}", fastrand::u64(..));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .expect("create test database");
        admin.close().await;
        let settings = PostgresSettings {
            database: name.clone(),
            ..server_settings()
        };
        let pool = batisync::db::connect(&settings)
            .await
            .expect("connect test db");
        let migrator = batisync::db::migrator();
        match version {
            Some(version) => migrator.run_to(version, &pool).await,
            None => migrator.run(&pool).await,
        }
        .expect("migrate");
        Self {
            pool,
            settings,
            name,
        }
    }

    pub fn outbox(&self) -> Outbox {
        Outbox::new(self.pool.clone())
    }

    /// Settings of a whole application pointed at this database, admin on port 0.
    pub fn app_settings(&self) -> Settings {
        let mut settings = Settings::default();
        settings.postgres = self.settings.clone();
        settings.admin.listen = "127.0.0.1:0".parse().unwrap();
        settings
    }

    pub async fn status_counts(&self) -> Vec<(String, i64)> {
        sqlx::query_as(
            "SELECT status, count(*) FROM batisync.events GROUP BY status ORDER BY status",
        )
        .fetch_all(&self.pool)
        .await
        .unwrap()
    }

    /// The single value a query returns (tests only: the SQL is a literal).
    pub async fn scalar<T>(&self, sql: &'static str) -> T
    where
        T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + Unpin,
    {
        sqlx::query_scalar(sql)
            .fetch_one(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    pub async fn status_of(&self, id: i64) -> String {
        sqlx::query_scalar("SELECT status FROM batisync.events WHERE id = $1")
            .bind(id)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// `version status attempts` of every event of `key`, oldest first (live status).
    pub async fn states(&self, key: &str) -> Vec<String> {
        let rows: Vec<(String, String, i32)> = sqlx::query_as(
            "SELECT source_version, status, attempts FROM batisync.events
             WHERE entity_key = $1 ORDER BY id",
        )
        .bind(key)
        .fetch_all(&self.pool)
        .await
        .unwrap();
        rows.into_iter()
            .map(|(version, status, attempts)| format!("{version} {status} {attempts}"))
            .collect()
    }

    /// Pretends time passed: every pending retry becomes due now.
    pub async fn make_retries_due(&self) {
        for statement in [
            "UPDATE batisync.outbox SET next_attempt_at = now() WHERE status = 'pending'",
            "UPDATE batisync.queue SET next_attempt_at = now() WHERE locked_by IS NULL",
        ] {
            sqlx::query(statement).execute(&self.pool).await.unwrap();
        }
    }

    pub async fn drop(self) {
        self.pool.close().await;
        if let Ok(admin) = batisync::db::connect(&server_settings()).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            )))
            .execute(&admin)
            .await;
        }
    }
}

pub fn event(key: &str, version: u64) -> NewEvent {
    NewEvent {
        entity_key: key.to_owned(),
        source_version: version.to_string(),
        operation: Operation::Upsert,
        payload: json!({ "key": key, "version": version }),
        source_modified_at: None,
    }
}

/// Dispatches until no event is open, making retries due at once.
pub async fn drain<H: batisync::dispatch::Handler>(
    db: &TestDb,
    dispatcher: &batisync::dispatch::Dispatcher<H>,
) -> batisync::dispatch::BatchOutcome {
    let mut total = batisync::dispatch::BatchOutcome::default();
    for _ in 0..100_000 {
        let outcome = dispatcher.try_dispatch_batch().await.expect("dispatch");
        total.claimed += outcome.claimed;
        total.applied += outcome.applied;
        total.retried += outcome.retried;
        total.dead += outcome.dead;
        if outcome.is_empty() {
            let open: i64 = db
                .scalar(
                    "SELECT count(*) FROM batisync.outbox WHERE status IN ('waiting', 'pending')",
                )
                .await;
            if open == 0 {
                return total;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            db.make_retries_due().await;
        }
    }
    panic!("events still open after 100000 dispatch steps");
}

/// `(status, outcome, last_error)` of one entity's events, oldest first.
pub async fn outcomes(
    db: &TestDb,
    flow: &str,
    key: &str,
) -> Vec<(String, Option<String>, Option<String>)> {
    sqlx::query_as(
        "SELECT status, outcome, last_error FROM batisync.outbox
         WHERE flow = $1 AND entity_key = $2 ORDER BY id",
    )
    .bind(flow)
    .bind(key)
    .fetch_all(&db.pool)
    .await
    .expect("outcomes")
}

/// The stored reasons of one entity's dead letters, oldest first.
pub async fn dead_reasons(db: &TestDb, flow: &str, key: &str) -> Vec<batisync::outbox::Reason> {
    let rows: Vec<(String, serde_json::Value)> = sqlx::query_as(
        "SELECT reason, reason_params FROM batisync.dead_letters
         WHERE flow = $1 AND entity_key = $2 ORDER BY id",
    )
    .bind(flow)
    .bind(key)
    .fetch_all(&db.pool)
    .await
    .expect("dead letter reasons");
    rows.iter()
        .map(|(code, params)| batisync::outbox::Reason::from_stored(code, Some(params)))
        .collect()
}
