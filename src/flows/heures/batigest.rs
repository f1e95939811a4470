//! The flow's view of Batigest: the employee map (`Salarie.codebs`), kept fresh by
//! re-reading it at most every `employee_refresh_secs`, where it comes from, and the
//! `SuiviMO` writer opened on first use (so `run` starts while SQL Server is down).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

use crate::batigest::ledger::{LedgerError, LedgerWriter, SlotRemoval, SlotWrite, WriteReport};
use crate::batigest::pool::Pool;
use crate::batigest::spec::TableSpec;
use crate::batigest::{BatigestError, EmployeeMap, SqlServerLedger};

/// Where the employee map is read from.
pub trait EmployeeSource: Send + Sync + 'static {
    /// A full read of the employees and their BatiSimply ids.
    fn load(&self) -> impl Future<Output = Result<EmployeeMap, BatigestError>> + Send;
}

/// The real source: `Salarie` on the Batigest SQL Server, columns verified on first use.
pub struct SqlServerEmployees {
    pool: Arc<Pool>,
    spec: OnceCell<TableSpec>,
}

impl SqlServerEmployees {
    #[must_use]
    pub fn new(pool: Arc<Pool>) -> Self {
        Self {
            pool,
            spec: OnceCell::new(),
        }
    }
}

impl EmployeeSource for SqlServerEmployees {
    async fn load(&self) -> Result<EmployeeMap, BatigestError> {
        let spec = self
            .spec
            .get_or_try_init(|| async {
                let mapping = crate::batigest::schema::load_mapping(&self.pool).await?;
                Ok::<_, BatigestError>(mapping.salarie)
            })
            .await?;
        crate::batigest::read::load_employee_map(&self.pool, spec).await
    }
}

/// The real `SuiviMO` writer, opened (mapping verified, Change Tracking state read) on
/// its first use and kept.
pub struct SqlServerSuiviMo {
    pool: Arc<Pool>,
    ledger: OnceCell<SqlServerLedger>,
}

impl SqlServerSuiviMo {
    #[must_use]
    pub fn new(pool: Arc<Pool>) -> Self {
        Self {
            pool,
            ledger: OnceCell::new(),
        }
    }

    async fn ledger(&self) -> Result<&SqlServerLedger, LedgerError> {
        let ledger = self
            .ledger
            .get_or_try_init(|| async {
                let mapping = crate::batigest::schema::load_mapping(&self.pool).await?;
                SqlServerLedger::open(self.pool.clone(), &mapping.ledger).await
            })
            .await?;
        Ok(ledger)
    }
}

impl LedgerWriter for SqlServerSuiviMo {
    async fn apply(&self, write: &SlotWrite) -> Result<WriteReport, LedgerError> {
        self.ledger().await?.apply(write).await
    }

    async fn remove(&self, removal: &SlotRemoval) -> Result<WriteReport, LedgerError> {
        self.ledger().await?.remove(removal).await
    }
}

/// SIMULATED employees for tests and the demo (no SQL Server): codes and BatiSimply ids
/// set by the caller, as an office user would fill `Salarie.codebs`.
#[derive(Debug, Default)]
pub struct SimulatedEmployees {
    rows: Mutex<Vec<(String, Option<String>)>>,
}

impl SimulatedEmployees {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or changes an employee (`codebs = None`: left empty); a changed employee
    /// keeps its place.
    pub fn set(&self, code: &str, codebs: Option<&str>) {
        let mut rows = self.lock();
        let codebs = codebs.map(str::to_owned);
        match rows.iter_mut().find(|(c, _)| c == code) {
            Some(row) => row.1 = codebs,
            None => rows.push((code.to_owned(), codebs)),
        }
    }

    /// Every employee code and its `codebs`, in the order first added.
    #[must_use]
    pub fn rows(&self) -> Vec<(String, Option<String>)> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(String, Option<String>)>> {
        self.rows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl EmployeeSource for SimulatedEmployees {
    async fn load(&self) -> Result<EmployeeMap, BatigestError> {
        let rows = self.lock();
        Ok(EmployeeMap::from_pairs(
            rows.iter().map(|(c, id)| (c.as_str(), id.as_deref())),
        ))
    }
}

impl<T: EmployeeSource> EmployeeSource for Arc<T> {
    fn load(&self) -> impl Future<Output = Result<EmployeeMap, BatigestError>> + Send {
        self.as_ref().load()
    }
}

/// The employee map shared by the poller and the dispatch workers: read on first use,
/// read again once older than `max_age` (one reader at a time), or on [`Self::refresh`].
pub struct EmployeeDirectory<E> {
    source: E,
    max_age: Duration,
    current: tokio::sync::Mutex<Option<(Instant, Arc<EmployeeMap>)>>,
}

impl<E: EmployeeSource> EmployeeDirectory<E> {
    pub fn new(source: E, max_age: Duration) -> Self {
        Self {
            source,
            max_age,
            current: tokio::sync::Mutex::new(None),
        }
    }

    /// The map, read again when older than `max_age`. A failed re-read keeps serving
    /// the previous map (and logs); only a first read that fails is an error.
    ///
    /// # Errors
    /// The first read failed.
    pub async fn get(&self) -> Result<Arc<EmployeeMap>, BatigestError> {
        let mut current = self.current.lock().await;
        match current.as_ref() {
            Some((read_at, map)) if read_at.elapsed() < self.max_age => Ok(map.clone()),
            previous => match self.source.load().await {
                Ok(map) => {
                    let map = Arc::new(map);
                    report_problems(&map);
                    *current = Some((Instant::now(), map.clone()));
                    Ok(map)
                }
                Err(error) => match previous {
                    Some((_, map)) => {
                        tracing::warn!(%error, "cannot re-read Salarie; keeping the previous employee map");
                        Ok(map.clone())
                    }
                    None => Err(error),
                },
            },
        }
    }

    /// Reads the map now, whatever its age; returns it.
    ///
    /// # Errors
    /// The read failed (the previous map stays in use).
    pub async fn refresh(&self) -> Result<Arc<EmployeeMap>, BatigestError> {
        let map = Arc::new(self.source.load().await?);
        report_problems(&map);
        *self.current.lock().await = Some((Instant::now(), map.clone()));
        Ok(map)
    }
}

fn report_problems(map: &EmployeeMap) {
    for (id, codes) in map.duplicate_ids() {
        tracing::warn!(
            user_id = id,
            ?codes,
            "Salarie.codebs: one BatiSimply user on several employees; their hours are dead-lettered until one is kept"
        );
    }
}
