//! The flow's rows in `batisync.links` and `batisync.conflicts`, SQL next to the Rust.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::FLOW;

/// What `links` remembers of one chantier's project.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Link {
    /// BatiSimply project id (text in the table).
    pub target_id: Option<String>,
    /// Hash of the project last written ([`super::mapping::project_hash`]).
    pub last_hash: Option<String>,
    /// `lastModifiedDate` of the project right after our last write.
    pub target_modified_at: Option<DateTime<Utc>>,
}

impl Link {
    /// The BatiSimply id, when it is a number.
    #[must_use]
    pub fn project_id(&self) -> Option<i64> {
        self.target_id.as_deref().and_then(|id| id.parse().ok())
    }
}

/// A write to remember.
#[derive(Debug, Clone)]
pub struct LinkWrite<'a> {
    pub code: &'a str,
    pub project_id: i64,
    pub event_id: i64,
    pub source_version: &'a str,
    pub hash: &'a str,
    pub target_modified_at: Option<DateTime<Utc>>,
}

/// Reads the link of a chantier.
///
/// # Errors
/// Database errors.
#[tracing::instrument(skip_all, fields(code), err)]
pub async fn load_link(pool: &PgPool, code: &str) -> Result<Option<Link>, sqlx::Error> {
    sqlx::query_as(
        "SELECT target_id, last_hash, target_modified_at FROM batisync.links
         WHERE flow = $1 AND source_key = $2",
    )
    .bind(FLOW)
    .bind(code)
    .fetch_optional(pool)
    .await
}

/// Records a write (or an adoption) in `links`.
///
/// # Errors
/// Database errors.
#[tracing::instrument(skip_all, fields(code = w.code), err)]
pub async fn save_link(pool: &PgPool, w: &LinkWrite<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO batisync.links
             (flow, source_key, target_id, last_event_id, last_source_version, last_hash,
              target_modified_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, now())
         ON CONFLICT (flow, source_key) DO UPDATE SET
             target_id = EXCLUDED.target_id, last_event_id = EXCLUDED.last_event_id,
             last_source_version = EXCLUDED.last_source_version, last_hash = EXCLUDED.last_hash,
             target_modified_at = EXCLUDED.target_modified_at, updated_at = now()",
    )
    .bind(FLOW)
    .bind(w.code)
    .bind(w.project_id.to_string())
    .bind(w.event_id)
    .bind(w.source_version)
    .bind(w.hash)
    .bind(w.target_modified_at)
    .execute(pool)
    .await?;
    Ok(())
}
