//! Where chantier changes come from: the capture interface and its SQL Server
//! implementation. The simulated implementation is in [`super::simulated`].

use std::future::Future;

use serde_json::Value;
use sqlx::PgConnection;

use std::time::Duration;

use crate::batigest::capture::{CtState, strategy_summary};
use crate::batigest::pool::Pool;
use crate::batigest::read::{capture_with_state, read_ct_state};
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

    /// How the source is read now and why (Change Tracking, or snapshot diff and the
    /// reason), for the console; `None` when there is nothing to say.
    fn capture_mode(&self) -> Option<String> {
        None
    }
}

/// The real source: `ChantierDef` on the Batigest SQL Server, read by Change Tracking
/// or snapshot diff. The column mapping is verified on the first read.
pub struct SqlServerChantiers {
    pool: Pool,
    strategy: CaptureStrategy,
    spec: Option<TableSpec>,
    /// The strategy in words at the last read (logged when it changes).
    mode: Option<String>,
    /// The last Change Tracking state read while tracking was unusable, and when: the
    /// server is asked again only once a snapshot diff is due (its refusal is logged by
    /// the driver, and nothing would change before the next full read anyway).
    unusable: Option<(std::time::Instant, CtState)>,
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
            mode: None,
            unusable: None,
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
        let interval = Duration::from_millis(self.pool.settings().snapshot_interval_ms);
        let state = match &self.unusable {
            // Forced: no need to ask the server.
            _ if strategy == CaptureStrategy::SnapshotDiff => {
                CtState::refused("capture = \"snapshot_diff\"")
            }
            Some((at, state)) if at.elapsed() < interval => state.clone(),
            _ => {
                let state = read_ct_state(&self.pool, &spec.table.quoted()).await?;
                self.unusable = state
                    .unusable_because()
                    .map(|_| (std::time::Instant::now(), state.clone()));
                state
            }
        };
        let mode = if strategy == CaptureStrategy::SnapshotDiff {
            "comparaison d'instantanés / snapshot diff (capture = \"snapshot_diff\")".to_owned()
        } else {
            strategy_summary(strategy, &state).unwrap_or_else(|e| e)
        };
        if self.mode.as_deref() != Some(mode.as_str()) {
            let fallback = state.unusable_because().is_some();
            match (&self.mode, fallback && strategy == CaptureStrategy::Auto) {
                (None, false) => {
                    tracing::info!(table = %spec.table, capture = %mode, "Batigest capture strategy")
                }
                (None, true) => {
                    tracing::warn!(table = %spec.table, capture = %mode, "Batigest capture strategy: Change Tracking unusable, snapshot diff instead")
                }
                (Some(before), _) => {
                    tracing::warn!(table = %spec.table, capture = %mode, before = %before, "Batigest capture strategy changed")
                }
            }
            self.mode = Some(mode);
        }
        capture_with_state(&self.pool, spec, strategy, &state, cursor, pg).await
    }

    fn capture_mode(&self) -> Option<String> {
        self.mode.clone()
    }
}
