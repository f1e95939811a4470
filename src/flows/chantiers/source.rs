//! Where chantier changes come from: the capture interface and its SQL Server
//! implementation. The simulated implementation is in [`super::simulated`].

use std::future::Future;

use serde_json::Value;
use sqlx::PgConnection;

use crate::batigest::pool::Pool;
use crate::batigest::spec::TableSpec;
use crate::batigest::{BatigestError, BatigestSettings, CaptureBatch, CaptureStrategy};

/// A source of `ChantierDef` changes. The poller stores what [`ChangeSource::read`]
/// returns (events, `next_cursor`, snapshot hashes) in one PostgreSQL transaction.
pub trait ChangeSource: Send + 'static {
    /// Cursor name in `batisync.cursors` (and of the snapshot-diff hashes).
    fn source_name(&self) -> String;

    /// Reads the changes after `cursor`; `None` (or a cursor too old) reads everything.
    /// `pg` is for reading snapshot-diff hashes; the source must not write with it.
    fn read(
        &mut self,
        cursor: Option<&Value>,
        pg: &mut PgConnection,
    ) -> impl Future<Output = Result<CaptureBatch, BatigestError>> + Send;
}

/// The real source: `ChantierDef` on the Batigest SQL Server, read by Change Tracking
/// or snapshot diff. The column mapping is verified on the first read.
pub struct SqlServerChantiers {
    pool: Pool,
    strategy: CaptureStrategy,
    spec: Option<TableSpec>,
}

impl SqlServerChantiers {
    /// A source that connects on its first read.
    #[must_use]
    pub fn new(settings: BatigestSettings) -> Self {
        let strategy = settings.chantier.capture;
        Self {
            pool: Pool::new(settings),
            strategy,
            spec: None,
        }
    }

    async fn spec(&mut self) -> Result<&TableSpec, BatigestError> {
        if self.spec.is_none() {
            let mapping = crate::batigest::schema::load_mapping(&self.pool).await?;
            for warning in &mapping.warnings {
                tracing::warn!(%warning, "Batigest mapping");
            }
            self.spec = Some(mapping.chantier);
        }
        self.spec
            .as_ref()
            .ok_or_else(|| BatigestError::Mapping("chantier mapping missing".into()))
    }
}

/// The cursor name of the SQL Server source: the `TableSpec::source` that the mapping
/// verification gives `ChantierDef` (`batigest:dbo.ChantierDef`).
#[must_use]
pub fn sql_server_source_name(settings: &BatigestSettings) -> String {
    format!("batigest:{}.{}", settings.schema, settings.chantier.table)
}

impl ChangeSource for SqlServerChantiers {
    fn source_name(&self) -> String {
        sql_server_source_name(self.pool.settings())
    }

    async fn read(
        &mut self,
        cursor: Option<&Value>,
        pg: &mut PgConnection,
    ) -> Result<CaptureBatch, BatigestError> {
        let strategy = self.strategy;
        self.spec().await?;
        let Some(spec) = self.spec.as_ref() else {
            return Err(BatigestError::Mapping("chantier mapping missing".into()));
        };
        crate::batigest::read::capture(&self.pool, spec, strategy, cursor, pg).await
    }
}
