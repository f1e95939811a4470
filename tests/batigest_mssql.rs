//! The Batigest layer against a real TDS server (SQL Server, or a server speaking its
//! protocol).
//!
//! Runs only when `BATISYNC_TEST_MSSQL_URL` holds an ADO connection string to a server
//! where the login may create databases, e.g.
//! `server=tcp:localhost,1433;user=sa;password=...;TrustServerCertificate=true`.
//! Each test creates a fresh database from `sql/mssql/batigest_test_schema.sql` and drops
//! it at the end. Unset, every test prints one `skipped:` line and returns.
//!
//! Tests say what they need: only those about Change Tracking enable it
//! (`sql/mssql/enable_change_tracking.sql`); on a server that refuses it they print
//! `skipped: Change Tracking not supported by <server>: <why>` (detected by trying, never
//! guessed from the server's name), unless `BATISYNC_TEST_REQUIRE_CHANGE_TRACKING=1`
//! (set by `.github/workflows/mssql.yml` for SQL Server 2022) makes that a failure.
//! Everything else (snapshot diff, SuiviMO writer, employee map, check, describe, both
//! flows, the login script) runs on any TDS server. Network faults go through the TCP
//! proxy of `tests/common/tcp_proxy.rs`. The snapshot-diff tests also need the test
//! PostgreSQL of `tests/common`; the ones about recording hashes need only PostgreSQL
//! and always run.

#[path = "common/chantiers.rs"]
#[allow(dead_code)]
mod chantiers;
mod common;
#[path = "common/heures.rs"]
#[allow(dead_code)]
mod heures_harness;
#[path = "common/tcp_proxy.rs"]
mod tcp_proxy;

use std::sync::Arc;
use std::time::Duration;

use batisync::batigest::capture::SnapshotDelta;
use batisync::batigest::capture::{CtState, Strategy, choose_strategy};
use batisync::batigest::ledger::{Conflict, Hours, LedgerLimits};
use batisync::batigest::pool::{Client, Pool, connect};
use batisync::batigest::read::{
    capture, capture_change_tracking, load_employee_map, read_ct_state, read_table,
};
use batisync::batigest::schema::load_mapping;
use batisync::batigest::settings::Encryption;
use batisync::batigest::snapshot_store::{load_hashes, record_hashes, store_capture};
use batisync::batigest::{BatigestError, EmployeeLookupError};
use batisync::batigest::{
    BatigestSettings, CaptureStrategy, Chantier, Cursor, Decision, LedgerKey, LedgerRow,
    LedgerValues, LedgerWriter, SlotRemoval, SlotWrite, SqlServerLedger, check_sqlserver,
};
use batisync::outbox::Operation;
use chrono::NaiveDate;
use common::TestDb;
use tcp_proxy::{FaultProxy, Mode};

const SCHEMA_SQL: &str = include_str!("../sql/mssql/batigest_test_schema.sql");
const ENABLE_CT_SQL: &str = include_str!("../sql/mssql/enable_change_tracking.sql");

fn mssql_url() -> Option<String> {
    match std::env::var("BATISYNC_TEST_MSSQL_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            println!("skipped: BATISYNC_TEST_MSSQL_URL is not set");
            None
        }
    }
}

/// Settings from the ADO string (`batisync bench batigest` reads it the same way), with
/// a patient connect and a snapshot diff due at every capture.
fn settings_from_ado(url: &str, database: &str) -> BatigestSettings {
    BatigestSettings {
        connect_timeout_ms: 15_000,
        snapshot_interval_ms: 1,
        ..batisync::batigest::bench::settings_from_ado(url, database).expect("ADO string")
    }
}

/// A fresh database with the Batigest-shaped schema.
struct TestServer {
    settings: BatigestSettings,
    master: BatigestSettings,
}

async fn run_batch(client: &mut Client, sql: &str) {
    try_batch(client, sql)
        .await
        .unwrap_or_else(|e| panic!("{e}: {sql}"));
}

async fn try_batch(client: &mut Client, sql: &str) -> Result<(), tiberius::error::Error> {
    client.simple_query(sql).await?.into_results().await?;
    Ok(())
}

/// The first line of `@@VERSION`: how the server names itself, for skip messages only.
async fn server_name(client: &mut Client) -> String {
    let row = client
        .simple_query("SELECT CAST(@@VERSION AS nvarchar(4000))")
        .await
        .expect("query")
        .into_row()
        .await
        .expect("row");
    row.and_then(|r| {
        r.get::<&str, _>(0)
            .map(|v| v.lines().next().unwrap_or(v).trim().to_owned())
    })
    .unwrap_or_else(|| "this server".into())
}

impl TestServer {
    /// A database without Change Tracking: what every server can give.
    async fn new(url: &str) -> Self {
        let name = format!("batisync_t_{:012x}", fastrand::u64(..1 << 48));
        let master = settings_from_ado(url, "master");
        // Some servers refuse concurrent CREATE DATABASE ("tuple concurrently updated"):
        // tests run in parallel, so try again a few times.
        let mut created = Err(String::new());
        for _ in 0..20 {
            let mut admin = connect(&master).await.expect("TDS server reachable");
            created = try_batch(&mut admin, &format!("CREATE DATABASE [{name}]"))
                .await
                .map_err(|e| e.to_string());
            if created.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100 + fastrand::u64(..400))).await;
        }
        created.unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        let server = Self {
            settings: BatigestSettings {
                application_name: name.clone(),
                ..settings_from_ado(url, &name)
            },
            master,
        };
        server.exec(SCHEMA_SQL).await;
        server
    }

    /// A database with Change Tracking enabled, or `None` (after printing why) when the
    /// server refuses it.
    async fn with_change_tracking(url: &str) -> Option<Self> {
        let server = Self::new(url).await;
        let mut client = server.client().await;
        let refused = match try_batch(&mut client, ENABLE_CT_SQL).await {
            Err(e) => Some(e.to_string()),
            Ok(()) => {
                match try_batch(&mut client, "SELECT CHANGE_TRACKING_CURRENT_VERSION()").await {
                    Err(e) => Some(e.to_string()),
                    Ok(()) => None,
                }
            }
        };
        let Some(reason) = refused else {
            return Some(server);
        };
        let name = server_name(&mut server.client().await).await;
        drop(client);
        server.drop().await;
        let required =
            std::env::var("BATISYNC_TEST_REQUIRE_CHANGE_TRACKING").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "Change Tracking required but refused by {name}: {reason}"
        );
        println!("skipped: Change Tracking not supported by {name}: {reason}");
        None
    }

    async fn client(&self) -> Client {
        connect(&self.settings)
            .await
            .expect("connect to the test database")
    }

    async fn exec(&self, sql: &str) {
        run_batch(&mut self.client().await, sql).await;
    }

    async fn scalar(&self, sql: &str) -> i64 {
        let mut client = self.client().await;
        let row = client
            .simple_query(sql)
            .await
            .expect("query")
            .into_row()
            .await
            .expect("row")
            .expect("one row");
        // `get` panics on a type mismatch: try int, then bigint.
        row.try_get::<i32, _>(0)
            .ok()
            .flatten()
            .map(i64::from)
            .or_else(|| row.try_get::<i64, _>(0).ok().flatten())
            .expect("integer")
    }

    /// Drops the database. SQL Server closes other sessions at once (`SINGLE_USER WITH
    /// ROLLBACK IMMEDIATE`); a server that refuses `ALTER DATABASE … SET` gets a few
    /// seconds for the sessions the test closed to end.
    async fn drop(self) {
        let db = &self.settings.database;
        let mut admin = connect(&self.master).await.expect("connect to master");
        let single = format!("ALTER DATABASE [{db}] SET SINGLE_USER WITH ROLLBACK IMMEDIATE");
        let _ = try_batch(&mut admin, &single).await;
        let mut last = String::new();
        for _ in 0..50 {
            let mut admin = connect(&self.master).await.expect("connect to master");
            match try_batch(&mut admin, &format!("DROP DATABASE [{db}]")).await {
                Ok(()) => return,
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("cannot drop {db}: {last}");
    }

    /// Settings that reach the database through `proxy`.
    fn through(&self, proxy: &FaultProxy) -> BatigestSettings {
        BatigestSettings {
            host: "127.0.0.1".into(),
            port: Some(proxy.port()),
            instance: None,
            ..self.settings.clone()
        }
    }

    /// `host:port` of the server, for a proxy (named instances: give the port in the URL).
    fn address(&self) -> String {
        format!(
            "{}:{}",
            self.settings.host,
            self.settings.port.unwrap_or(1433)
        )
    }
}

const SEED: &str = "INSERT INTO dbo.ChantierDef (Code, NomClient, Libelle, Etat, DateDebut, DateFin, VilleChantier) VALUES \
    ('00000001', N'Société Élan', N'Toiture', 'E', '2026-01-05', '2026-06-30', N'Béziers'), \
    ('00000002', N'Bâti Sud', NULL, 'E', '2026-02-01', '2026-03-01', NULL), \
    ('00000003', N'Crèche municipale', N'Extension', 'E', '2026-03-01', '2026-09-30', N'Sète'), \
    ('00000004', N'Hôtel-Dieu', N'Façade', 'T', '2025-01-01', '2025-12-31', N'Montpellier'), \
    ('00000005', N'Garage Noël', NULL, 'E', '2026-04-01', '2026-05-01', N'Lunel')";

fn summary(changes: &[batisync::batigest::Change]) -> Vec<(String, Operation)> {
    let mut out: Vec<(String, Operation)> = changes
        .iter()
        .map(|c| (c.key.clone(), c.operation))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[tokio::test]
async fn change_tracking_captures_inserts_updates_and_deletes() {
    let Some(url) = mssql_url() else { return };
    let Some(server) = TestServer::with_change_tracking(&url).await else {
        return;
    };
    server.exec(SEED).await;
    let check = check_sqlserver(&server.settings).await;
    assert!(check.is_ok(), "{check}");
    let pool = Pool::new(server.settings.clone());
    let mapping = load_mapping(&pool).await.expect("mapping verified");
    let spec = &mapping.chantier;
    let state = read_ct_state(&pool, &spec.table.quoted())
        .await
        .expect("state");
    assert_eq!(
        choose_strategy(CaptureStrategy::Auto, &state),
        Ok(Strategy::ChangeTracking)
    );

    let first = capture_change_tracking(&pool, spec, None)
        .await
        .expect("first capture");
    assert!(first.full_snapshot);
    assert_eq!(first.changes.len(), 5);
    let chantier = Chantier::from_row(first.changes[0].row.as_ref().expect("row")).expect("valid");
    assert_eq!(chantier.customer_name.as_deref(), Some("Société Élan"));
    assert_eq!(chantier.address.city.as_deref(), Some("Béziers"));

    server
        .exec("INSERT INTO dbo.ChantierDef (Code, NomClient, Etat, DateDebut, DateFin) VALUES ('00000006', N'Neuf', 'E', '2026-05-01', '2026-06-01'); \
               UPDATE dbo.ChantierDef SET NomClient = N'Bâti Nord' WHERE Code = '00000002'; \
               DELETE FROM dbo.ChantierDef WHERE Code = '00000001';")
        .await;
    let cursor = Cursor::from_json(Some(&first.next_cursor));
    let next = capture_change_tracking(&pool, spec, cursor.as_ref())
        .await
        .expect("changes");
    assert!(!next.full_snapshot);
    assert_eq!(
        summary(&next.changes),
        vec![
            ("00000001".to_owned(), Operation::Delete),
            ("00000002".to_owned(), Operation::Upsert),
            ("00000006".to_owned(), Operation::Upsert),
        ]
    );
    let deleted = next
        .changes
        .iter()
        .find(|c| c.key == "00000001")
        .expect("delete");
    assert!(deleted.row.is_none() && !deleted.own_write);

    let cursor = Cursor::from_json(Some(&next.next_cursor));
    let idle = capture_change_tracking(&pool, spec, cursor.as_ref())
        .await
        .expect("nothing new");
    assert!(idle.changes.is_empty());
    assert_eq!(idle.next_cursor, next.next_cursor);
    drop(pool);
    server.drop().await;
}

#[tokio::test]
async fn a_cursor_older_than_the_minimum_valid_version_forces_a_full_snapshot() {
    let Some(url) = mssql_url() else { return };
    let Some(server) = TestServer::with_change_tracking(&url).await else {
        return;
    };
    server.exec(SEED).await;
    let pool = Pool::new(server.settings.clone());
    let mapping = load_mapping(&pool).await.expect("mapping");
    let first = capture_change_tracking(&pool, &mapping.chantier, None)
        .await
        .expect("first");
    let stale = Cursor::from_json(Some(&first.next_cursor));

    // New changes, then tracking restarted: the minimum valid version passes the cursor.
    server
        .exec("UPDATE dbo.ChantierDef SET Etat = 'T' WHERE Code = '00000003'")
        .await;
    server
        .exec("ALTER TABLE dbo.ChantierDef DISABLE CHANGE_TRACKING; ALTER TABLE dbo.ChantierDef ENABLE CHANGE_TRACKING;")
        .await;
    let state: CtState = read_ct_state(&pool, &mapping.chantier.table.quoted())
        .await
        .expect("state");
    let Some(Cursor::ChangeTracking { version }) = stale else {
        panic!("ct cursor")
    };
    assert!(state.min_valid_version.expect("tracked") > version);

    let batch = capture_change_tracking(&pool, &mapping.chantier, stale.as_ref())
        .await
        .expect("resnapshot");
    assert!(batch.full_snapshot);
    assert_eq!(batch.changes.len(), 5);
    let after = Cursor::from_json(Some(&batch.next_cursor));
    let again = capture_change_tracking(&pool, &mapping.chantier, after.as_ref())
        .await
        .expect("incremental");
    assert!(!again.full_snapshot && again.changes.is_empty());
    drop(pool);
    server.drop().await;
}

#[tokio::test]
async fn snapshot_diff_captures_changes_when_change_tracking_is_off() {
    let Some(url) = mssql_url() else { return };
    let server = TestServer::new(&url).await;
    server.exec(SEED).await;
    let pg = common::TestDb::new().await;
    // `check` says which strategy and why, and passes.
    let report = check_sqlserver(&server.settings).await;
    assert!(report.is_ok(), "{report}");
    let step = report
        .steps
        .iter()
        .find(|s| {
            s.name == "change_tracking [dbo].[ChantierDef]" || s.name.starts_with("change_tracking")
        })
        .expect("change tracking step");
    assert!(step.detail.contains("snapshot diff ("), "{report}");

    // Two rows per page: five rows take three keyset pages.
    let pool = Pool::new(BatigestSettings {
        snapshot_page_rows: 2,
        ..server.settings.clone()
    });
    let mapping = load_mapping(&pool).await.expect("mapping");
    let spec = &mapping.chantier;

    let mut conn = pg.pool.acquire().await.expect("pg");
    let first = capture(&pool, spec, CaptureStrategy::Auto, None, &mut conn)
        .await
        .expect("Auto falls back to the snapshot diff");
    assert_eq!(first.strategy, Strategy::SnapshotDiff);
    assert!(first.full_snapshot, "no snapshot before: a full load");
    assert_eq!(first.changes.len(), 5);
    let record = |batch: batisync::batigest::CaptureBatch| {
        let pg = pg.pool.clone();
        let source = spec.source.clone();
        async move {
            let mut tx = pg.begin().await.expect("begin");
            record_hashes(&mut tx, &source, &batch.snapshot_delta.expect("delta"))
                .await
                .expect("record");
            tx.commit().await.expect("commit");
        }
    };
    let cursor = first.next_cursor.clone();
    record(first).await;

    // The next full read is not due before `snapshot_interval_ms`: nothing read.
    let patient = Pool::new(BatigestSettings {
        snapshot_interval_ms: 60_000,
        ..server.settings.clone()
    });
    let early = capture(
        &patient,
        spec,
        CaptureStrategy::Auto,
        Some(&cursor),
        &mut conn,
    )
    .await
    .expect("not due");
    assert!(early.changes.is_empty() && early.snapshot_delta.is_none());
    assert_eq!(early.next_cursor, cursor);
    drop(patient);

    server
        .exec("UPDATE dbo.ChantierDef SET Libelle = N'Réfection' WHERE Code = '00000002'; \
               DELETE FROM dbo.ChantierDef WHERE Code = '00000004'; \
               INSERT INTO dbo.ChantierDef (Code, NomClient, Etat, DateDebut, DateFin) VALUES ('00000007', N'Neuf', 'E', '2026-05-01', '2026-06-01');")
        .await;
    let second = capture(&pool, spec, CaptureStrategy::Auto, Some(&cursor), &mut conn)
        .await
        .expect("second");
    assert!(
        !second.full_snapshot,
        "a diff against the previous snapshot"
    );
    assert_eq!(
        summary(&second.changes),
        vec![
            ("00000002".to_owned(), Operation::Upsert),
            ("00000004".to_owned(), Operation::Delete),
            ("00000007".to_owned(), Operation::Upsert),
        ]
    );
    assert!(second.changes.iter().all(|c| c.committed_at.is_none()));
    record(second).await;
    let third = capture(&pool, spec, CaptureStrategy::Auto, Some(&cursor), &mut conn)
        .await
        .expect("third");
    assert!(third.changes.is_empty());

    // Forcing Change Tracking where it is unusable is an error naming the reason.
    let forced = capture(
        &pool,
        spec,
        CaptureStrategy::ChangeTracking,
        None,
        &mut conn,
    )
    .await;
    assert!(
        matches!(forced, Err(BatigestError::ChangeTrackingUnavailable { .. })),
        "{forced:?}"
    );

    // Without Change Tracking the ledger writes are not tagged, and still work.
    let pool = Arc::new(pool);
    let ledger = SqlServerLedger::open(pool.clone(), &mapping.ledger)
        .await
        .expect("ledger");
    let row = slot_row("00000002", 8, 30, true);
    let report = ledger.apply(&write(None, &row)).await.expect("insert");
    assert_eq!(report.decision, Decision::Insert);
    assert_eq!(server.scalar("SELECT COUNT(*) FROM dbo.SuiviMO").await, 1);
    drop((conn, ledger, pool));
    pg.drop().await;
    server.drop().await;
}

fn slot_row(chantier: &str, hour: u32, minutes: u32, meal: bool) -> LedgerRow {
    LedgerRow {
        key: LedgerKey {
            chantier: chantier.into(),
            employee: "DUPONT".into(),
            start: NaiveDate::from_ymd_opt(2026, 11, 27)
                .and_then(|d| d.and_hms_opt(hour, 0, 0))
                .expect("time"),
        },
        values: LedgerValues {
            hours: Hours::from_minutes(minutes),
            journey: true,
            meal,
        },
    }
}

fn write(previous: Option<&LedgerRow>, row: &LedgerRow) -> SlotWrite {
    SlotWrite {
        slot_id: "slot-42".into(),
        previous: previous.cloned(),
        row: row.clone(),
        overwrite_batigest_edits: false,
    }
}

#[tokio::test]
async fn suivi_mo_writes_update_move_remove_and_report_batigest_edits() {
    let Some(url) = mssql_url() else { return };
    let server = TestServer::new(&url).await;
    let pool = Arc::new(Pool::new(server.settings.clone()));
    let mapping = load_mapping(&pool).await.expect("mapping");
    let ledger = SqlServerLedger::open(pool.clone(), &mapping.ledger)
        .await
        .expect("ledger");
    let count = "SELECT COUNT(*) FROM dbo.SuiviMO";

    let first = slot_row("00000001", 8, 90, false);
    let report = ledger.apply(&write(None, &first)).await.expect("insert");
    assert_eq!(report.decision, Decision::Insert);
    assert_eq!(server.scalar(count).await, 1);
    assert_eq!(
        server
            .scalar("SELECT CAST(NbH0 * 10000 AS int) FROM dbo.SuiviMO")
            .await,
        15_000
    );
    assert_eq!(
        server
            .scalar("SELECT CAST(NbH3 AS int) * 10 + CAST(NbH4 AS int) FROM dbo.SuiviMO")
            .await,
        10
    );

    let longer = slot_row("00000001", 8, 50, true);
    assert_eq!(
        ledger
            .apply(&write(Some(&first), &longer))
            .await
            .expect("update")
            .decision,
        Decision::Update
    );
    assert_eq!(
        server
            .scalar("SELECT CAST(NbH0 * 10000 AS int) FROM dbo.SuiviMO")
            .await,
        8_333
    );
    // Redelivery of the same write: nothing to do, still one row.
    assert_eq!(
        ledger
            .apply(&write(Some(&first), &longer))
            .await
            .expect("again")
            .decision,
        Decision::Unchanged
    );

    let moved = slot_row("00000002", 9, 50, true);
    assert_eq!(
        ledger
            .apply(&write(Some(&longer), &moved))
            .await
            .expect("move")
            .decision,
        Decision::Move
    );
    assert_eq!(server.scalar(count).await, 1);
    assert_eq!(server.scalar("SELECT COUNT(*) FROM dbo.SuiviMO WHERE CodeChantier = '00000002' AND [Date] = '2026-11-27T09:00:00'").await, 1);

    // A Batigest user edits the row: reported, not overwritten.
    server.exec("UPDATE dbo.SuiviMO SET NbH0 = 7").await;
    let next = slot_row("00000002", 9, 120, true);
    let report = ledger
        .apply(&write(Some(&moved), &next))
        .await
        .expect("conflict report");
    assert!(report.edited_in_batigest);
    assert!(
        matches!(report.decision, Decision::Conflict(Conflict::EditedInBatigest(v)) if v.hours == Hours(70_000))
    );
    assert_eq!(
        server
            .scalar("SELECT CAST(NbH0 AS int) FROM dbo.SuiviMO")
            .await,
        7
    );
    let mut overwrite = write(Some(&moved), &next);
    overwrite.overwrite_batigest_edits = true;
    assert_eq!(
        ledger.apply(&overwrite).await.expect("overwrite").decision,
        Decision::Update
    );
    assert_eq!(
        server
            .scalar("SELECT CAST(NbH0 AS int) FROM dbo.SuiviMO")
            .await,
        2
    );

    let removal = SlotRemoval {
        slot_id: "slot-42".into(),
        previous: next.clone(),
        overwrite_batigest_edits: false,
    };
    assert_eq!(
        ledger.remove(&removal).await.expect("remove").decision,
        Decision::Delete
    );
    assert_eq!(
        ledger.remove(&removal).await.expect("again").decision,
        Decision::AlreadyGone
    );
    assert_eq!(server.scalar(count).await, 0);

    let too_long = slot_row("123456789", 8, 60, false);
    assert!(ledger.apply(&write(None, &too_long)).await.is_err());
    assert_eq!(server.scalar(count).await, 0);
    assert_eq!(
        LedgerLimits::default().chantier_code_chars,
        mapping.ledger.chantier_code_chars
    );
    drop((ledger, pool));
    server.drop().await;
}

#[tokio::test]
async fn our_suivi_mo_writes_carry_our_change_tracking_context() {
    let Some(url) = mssql_url() else { return };
    let Some(server) = TestServer::with_change_tracking(&url).await else {
        return;
    };
    let pool = Arc::new(Pool::new(server.settings.clone()));
    let mapping = load_mapping(&pool).await.expect("mapping");
    let ledger = SqlServerLedger::open(pool.clone(), &mapping.ledger)
        .await
        .expect("ledger");
    let first = slot_row("00000001", 8, 90, false);
    ledger.apply(&write(None, &first)).await.expect("insert");
    server
        .exec("INSERT INTO dbo.SuiviMO (CodeChantier, CodeSalarie, [Date], NbH0) VALUES ('00000001', 'MARTIN', '2026-11-27T10:00:00', 2)")
        .await;
    let ours = "DECLARE @v bigint = CHANGE_TRACKING_MIN_VALID_VERSION(OBJECT_ID('dbo.SuiviMO')); \
                SELECT COUNT(*) FROM CHANGETABLE(CHANGES dbo.SuiviMO, @v) AS ct \
                WHERE ct.SYS_CHANGE_CONTEXT = CAST('batisync' AS varbinary(128))";
    assert_eq!(server.scalar(ours).await, 1, "ours tagged, the other not");
    drop((ledger, pool));
    server.drop().await;
}

#[tokio::test]
async fn a_connection_cut_mid_read_is_retried_on_a_new_connection() {
    let Some(url) = mssql_url() else { return };
    let server = TestServer::new(&url).await;
    server.exec(SEED).await;
    let proxy = FaultProxy::start(server.address()).await;
    // One row per page, every chunk delayed: the read takes a while, and is cut in it.
    let pool = Arc::new(Pool::new(BatigestSettings {
        snapshot_page_rows: 1,
        ..server.through(&proxy)
    }));
    let mapping = load_mapping(&pool).await.expect("mapping");
    proxy.set_mode(Mode::Slow(Duration::from_millis(60)));
    let reader = {
        let (pool, spec) = (pool.clone(), mapping.chantier.clone());
        tokio::spawn(async move { read_table(&pool, &spec).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = proxy.connections();
    proxy.cut();
    proxy.set_mode(Mode::Pass);
    let rows = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .expect("read finished")
        .expect("task")
        .expect("retried on a new connection");
    assert_eq!(rows.len(), 5);
    assert!(proxy.connections() > before, "a new connection was opened");
    drop((pool, proxy));
    server.drop().await;
}

#[tokio::test]
async fn a_ledger_write_cut_in_its_transaction_leaves_exactly_one_row() {
    let Some(url) = mssql_url() else { return };
    let server = TestServer::new(&url).await;
    let proxy = FaultProxy::start(server.address()).await;
    let pool = Arc::new(Pool::new(server.through(&proxy)));
    let mapping = load_mapping(&pool).await.expect("mapping");
    let ledger = Arc::new(
        SqlServerLedger::open(pool.clone(), &mapping.ledger)
            .await
            .expect("ledger"),
    );
    for (i, cut_after_ms) in [40u64, 120, 200].into_iter().enumerate() {
        let row = slot_row("00000001", 8 + u32::try_from(i).expect("small"), 60, false);
        proxy.set_mode(Mode::Slow(Duration::from_millis(30)));
        let writer = {
            let (ledger, row) = (ledger.clone(), row.clone());
            tokio::spawn(async move { ledger.apply(&write(None, &row)).await })
        };
        tokio::time::sleep(Duration::from_millis(cut_after_ms)).await;
        proxy.cut();
        proxy.set_mode(Mode::Pass);
        let report = tokio::time::timeout(Duration::from_secs(30), writer)
            .await
            .expect("write finished")
            .expect("task")
            .expect("retried after the cut");
        assert!(
            matches!(report.decision, Decision::Insert | Decision::Unchanged),
            "{report:?}"
        );
        let at = format!(
            "SELECT COUNT(*) FROM dbo.SuiviMO WHERE [Date] = '2026-11-27T{:02}:00:00'",
            8 + i
        );
        assert_eq!(server.scalar(&at).await, 1, "cut after {cut_after_ms} ms");
    }
    drop((ledger, pool, proxy));
    server.drop().await;
}

#[tokio::test]
async fn a_stalled_server_times_out_and_a_later_attempt_succeeds() {
    let Some(url) = mssql_url() else { return };
    let server = TestServer::new(&url).await;
    server.exec(SEED).await;
    let proxy = FaultProxy::start(server.address()).await;
    let mapping = load_mapping(&Pool::new(server.settings.clone()))
        .await
        .expect("mapping");
    let pool = Arc::new(Pool::new(BatigestSettings {
        query_timeout_ms: 1_000,
        connect_timeout_ms: 2_000,
        max_attempts: 8,
        ..server.through(&proxy)
    }));
    proxy.set_mode(Mode::Stall);
    let started = std::time::Instant::now();
    let reader = {
        let (pool, spec) = (pool.clone(), mapping.chantier.clone());
        tokio::spawn(async move { read_table(&pool, &spec).await })
    };
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    proxy.set_mode(Mode::Pass);
    let rows = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .expect("read finished")
        .expect("task")
        .expect("a later attempt succeeded");
    assert_eq!(rows.len(), 5);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "the stall was waited out"
    );
    drop((pool, proxy));
    server.drop().await;
}

#[tokio::test]
async fn snapshot_hashes_commit_or_roll_back_with_the_callers_transaction() {
    let pg = common::TestDb::new().await;
    let source = "batigest:dbo.ChantierDef";
    let hash = |c: char| c.to_string().repeat(64);
    let delta = SnapshotDelta {
        upserts: vec![("1".into(), hash('a')), ("2".into(), hash('b'))],
        deletes: vec![],
    };
    let mut tx = pg.pool.begin().await.expect("begin");
    record_hashes(&mut tx, source, &delta)
        .await
        .expect("record");
    tx.rollback().await.expect("rollback");
    let mut conn = pg.pool.acquire().await.expect("conn");
    assert!(
        load_hashes(&mut conn, source)
            .await
            .expect("load")
            .is_empty()
    );

    let mut tx = pg.pool.begin().await.expect("begin");
    record_hashes(&mut tx, source, &delta)
        .await
        .expect("record");
    tx.commit().await.expect("commit");
    let next = SnapshotDelta {
        upserts: vec![("2".into(), hash('c')), ("3".into(), hash('d'))],
        deletes: vec!["1".into()],
    };
    let mut tx = pg.pool.begin().await.expect("begin");
    record_hashes(&mut tx, source, &next).await.expect("record");
    tx.commit().await.expect("commit");

    let stored = load_hashes(&mut conn, source).await.expect("load");
    assert_eq!(stored.len(), 2);
    assert_eq!(stored.get("2"), Some(&hash('c')));
    assert_eq!(stored.get("3"), Some(&hash('d')));
    assert!(
        load_hashes(&mut conn, "batigest:dbo.Salarie")
            .await
            .expect("load")
            .is_empty()
    );
    drop(conn);
    pg.drop().await;
}

fn chantier_row(code: &str, name: &str) -> batisync::batigest::SourceRow {
    let mut cells = std::collections::BTreeMap::new();
    cells.insert("code", batisync::batigest::Cell::Text(code.into()));
    cells.insert("customer_name", batisync::batigest::Cell::Text(name.into()));
    batisync::batigest::SourceRow {
        key: code.into(),
        cells,
    }
}

fn snapshot_batch(
    previous: &std::collections::HashMap<String, String>,
    rows: Vec<batisync::batigest::SourceRow>,
) -> batisync::batigest::CaptureBatch {
    let at = chrono::Utc::now();
    let (changes, delta) = batisync::batigest::capture::diff_snapshot(previous, rows, at);
    batisync::batigest::CaptureBatch {
        changes,
        next_cursor: Cursor::SnapshotDiff { at }.to_json(),
        strategy: Strategy::SnapshotDiff,
        full_snapshot: true,
        snapshot_delta: Some(delta),
    }
}

#[tokio::test]
async fn a_capture_stores_events_cursor_and_hashes_together_or_not_at_all() {
    let pg = common::TestDb::new().await;
    let source = "batigest:dbo.ChantierDef";
    let first = snapshot_batch(
        &Default::default(),
        vec![chantier_row("1", "Élan"), chantier_row("2", "Sud")],
    );
    let mut tx = pg.pool.begin().await.expect("begin");
    let captured = store_capture(&mut tx, "chantiers", source, None, &first)
        .await
        .expect("store");
    tx.commit().await.expect("commit");
    assert_eq!(captured.inserted, 2);
    let mut conn = pg.pool.acquire().await.expect("conn");
    let hashes = load_hashes(&mut conn, source).await.expect("hashes");
    assert_eq!(hashes.len(), 2);

    // A second poller that read from the same (absent) cursor is refused, and its hashes
    // are not kept.
    let rival = snapshot_batch(&Default::default(), vec![chantier_row("3", "Nord")]);
    let mut tx = pg.pool.begin().await.expect("begin");
    let err = store_capture(&mut tx, "chantiers", source, None, &rival)
        .await
        .expect_err("conflict");
    assert!(
        matches!(err, batisync::outbox::OutboxError::CursorConflict { .. }),
        "{err}"
    );
    tx.rollback().await.expect("rollback");
    assert_eq!(
        load_hashes(&mut conn, source).await.expect("hashes"),
        hashes
    );

    // The next capture continues from the stored cursor: only the change is stored.
    let next = snapshot_batch(
        &hashes,
        vec![chantier_row("1", "Élan"), chantier_row("2", "Nord")],
    );
    assert_eq!(next.changes.len(), 1);
    let mut tx = pg.pool.begin().await.expect("begin");
    let captured = store_capture(
        &mut tx,
        "chantiers",
        source,
        Some(&first.next_cursor),
        &next,
    )
    .await
    .expect("store");
    tx.commit().await.expect("commit");
    assert_eq!(captured.inserted, 1);
    assert_eq!(
        pg.status_counts().await.iter().map(|(_, n)| n).sum::<i64>(),
        3
    );
    drop(conn);
    pg.drop().await;
}

#[tokio::test]
async fn the_employee_map_is_loaded_from_salarie_and_kept_fresh() {
    let Some(url) = mssql_url() else { return };
    let server = TestServer::new(&url).await;
    server
        .exec(
            "INSERT INTO dbo.Salarie (Code, Nom, codebs) VALUES \
               ('DUPONT', N'Dupont Émile', '0F8FAD5B-D9CB-469F-A165-70867728950E'), \
               ('MARTIN', N'Martin Zoé', NULL), \
               ('DURAND', N'Durand', '7c9e6679-7425-40de-944b-e07fc1f90ae7'), \
               ('DURAND2', N'Durand bis', '7c9e6679-7425-40de-944b-e07fc1f90ae7')",
        )
        .await;
    let pool = Pool::new(server.settings.clone());
    let mapping = load_mapping(&pool).await.expect("mapping");
    let mut map = load_employee_map(&pool, &mapping.salarie)
        .await
        .expect("map");
    assert_eq!(
        map.lookup("0f8fad5b-d9cb-469f-a165-70867728950e"),
        Ok("DUPONT")
    );
    assert_eq!(map.employees_without_id(), vec!["MARTIN"]);
    assert!(matches!(
        map.lookup("7c9e6679-7425-40de-944b-e07fc1f90ae7"),
        Err(EmployeeLookupError::Ambiguous { codes, .. }) if codes == ["DURAND", "DURAND2"]
    ));

    // Kept fresh by a capture (Change Tracking where usable, else the snapshot diff).
    let pg = TestDb::new().await;
    let mut conn = pg.pool.acquire().await.expect("pg");
    let source = mapping.salarie.source.clone();
    let start = capture(
        &pool,
        &mapping.salarie,
        CaptureStrategy::Auto,
        None,
        &mut conn,
    )
    .await
    .expect("snapshot");
    let mut tx = pg.pool.begin().await.expect("begin");
    store_capture(&mut tx, "employees", &source, None, &start)
        .await
        .expect("store");
    tx.commit().await.expect("commit");
    server
        .exec("UPDATE dbo.Salarie SET codebs = NULL WHERE Code = 'DURAND2'")
        .await;
    let changes = capture(
        &pool,
        &mapping.salarie,
        CaptureStrategy::Auto,
        Some(&start.next_cursor),
        &mut conn,
    )
    .await
    .expect("changes");
    assert_eq!(changes.changes.len(), 1, "{:?}", changes.changes);
    map.apply(&changes.changes);
    assert_eq!(
        map.lookup("7C9E6679-7425-40DE-944B-E07FC1F90AE7"),
        Ok("DURAND")
    );
    drop((conn, pool));
    pg.drop().await;
    server.drop().await;
}

#[tokio::test]
async fn check_names_the_failing_step() {
    let Some(url) = mssql_url() else { return };
    let mut settings = settings_from_ado(&url, "batisync_no_such_dossier");
    let report = check_sqlserver(&settings).await;
    let failed = report.steps.last().expect("steps");
    assert_eq!(failed.name, "database", "{report}");
    assert!(
        failed
            .failure
            .as_deref()
            .is_some_and(|f| f.contains("(error 4060)") || f.contains("(error 911)")),
        "{report}"
    );

    // A wrong password on a database that exists (servers differ in which they check
    // first when both are wrong).
    settings.database = "master".into();
    settings.password = "wrong-password".to_owned().into();
    let report = check_sqlserver(&settings).await;
    let failed = report.steps.last().expect("steps");
    assert_eq!(failed.name, "login", "{report}");
    assert!(
        failed
            .failure
            .as_deref()
            .is_some_and(|f| f.contains("18456")),
        "{report}"
    );
    assert!(!report.to_string().contains("wrong-password"));
}

#[tokio::test]
async fn the_least_privilege_login_can_capture_and_write_the_ledger_only() {
    let Some(url) = mssql_url() else { return };
    let server = TestServer::new(&url).await;
    let login = format!("bs_{:010x}", fastrand::u64(..1 << 40));
    let password = format!("Bs-{:016x}-Aa1!", fastrand::u64(..));
    let script = include_str!("../sql/mssql/create_batisync_login.sql")
        .replacen("N'batisync';", &format!("N'{login}';"), 1)
        .replacen("N'CHANGE-ME';", &format!("N'{password}';"), 1);
    server.exec(&script).await;

    let restricted = BatigestSettings {
        user: login.clone(),
        password: password.clone().into(),
        ..server.settings.clone()
    };
    let report = check_sqlserver(&restricted).await;
    assert!(report.is_ok(), "{report}");
    let pool = Arc::new(Pool::new(restricted.clone()));
    let mapping = load_mapping(&pool)
        .await
        .expect("mapping visible to the login");
    let pg = TestDb::new().await;
    let mut conn = pg.pool.acquire().await.expect("pg");
    capture(
        &pool,
        &mapping.chantier,
        CaptureStrategy::Auto,
        None,
        &mut conn,
    )
    .await
    .expect("capture");
    drop(conn);
    pg.drop().await;
    let ledger = SqlServerLedger::open(pool.clone(), &mapping.ledger)
        .await
        .expect("ledger");
    let row = slot_row("00000001", 8, 60, false);
    assert_eq!(
        ledger
            .apply(&write(None, &row))
            .await
            .expect("write")
            .decision,
        Decision::Insert
    );

    let mut client = connect(&restricted).await.expect("connect as the login");
    let denied = client
        .execute("UPDATE dbo.ChantierDef SET Etat = 'X'", &[])
        .await
        .map(|_| ())
        .map_err(|e| {
            BatigestError::from_tiberius(
                e,
                batisync::batigest::error::Phase::Work,
                &batisync::batigest::pool::error_context(&restricted),
            )
        });
    // SQL Server says 229 (classified PermissionDenied); other servers may use their own
    // code: the write is refused either way, permanently, and nothing changed.
    assert!(
        matches!(
            denied,
            Err(BatigestError::PermissionDenied { .. }
                | BatigestError::Server {
                    transient: false,
                    ..
                })
        ),
        "{denied:?}"
    );
    drop(client);
    let seeded = server
        .scalar("SELECT COUNT(*) FROM dbo.ChantierDef WHERE Etat = 'X'")
        .await;
    assert_eq!(seeded, 0, "the read-only table was not written");
    drop(ledger);
    drop(pool);

    server.drop().await;
    let mut admin = connect(&server_master(&url)).await.expect("master");
    run_batch(&mut admin, &format!("DROP LOGIN [{login}]")).await;
}

fn server_master(url: &str) -> BatigestSettings {
    settings_from_ado(url, "master")
}

/// The heures flow end to end with the real `SuiviMO` writer: simulator → poller →
/// outbox → dispatcher → SQL Server, including a move, an un-validation, a crash before
/// the ack and a Batigest edit kept by latest modification wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_heures_flow_writes_moves_and_removes_suivi_mo_rows_exactly_once() {
    use batisync::batisimply::sim::Faults;
    use batisync::dispatch::Handler;
    use batisync::flows::heures::FLOW;
    use batisync::flows::heures::batigest::SqlServerSuiviMo;
    use chrono::{DurationRound, Utc};

    let Some(url) = mssql_url() else { return };
    let server = TestServer::new(&url).await;
    let pool = Arc::new(Pool::new(server.settings.clone()));
    let ledger = Arc::new(SqlServerSuiviMo::new(pool));
    let mut h = heures_harness::Harness::with_server_ledger(
        heures_harness::settings(),
        Faults::default(),
        ledger,
    )
    .await;
    let start = (Utc::now() - chrono::Duration::days(3))
        .duration_trunc(chrono::Duration::minutes(1))
        .expect("minute");
    let ids: Vec<String> = (0..40)
        .map(|i| {
            h.sim
                .insert_slot(&h.slot(i % 10, i % 5, start + chrono::Duration::hours(i as i64)))
        })
        .collect();
    let count = "SELECT COUNT(*) FROM dbo.SuiviMO";

    // 40 validated slots → 40 rows, even with a crash between the write and the ack.
    h.poll().await;
    let claimed =
        h.db.outbox()
            .claim(FLOW, "crashed-worker", 10, Duration::from_millis(50))
            .await
            .expect("claim");
    for event in &claimed {
        h.handler
            .apply(event)
            .await
            .expect("applied before the crash");
    }
    sqlx::query("DELETE FROM batisync.links WHERE flow = $1")
        .bind(FLOW)
        .execute(&h.db.pool)
        .await
        .expect("forget links");
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.db.outbox().rescue_expired().await.expect("rescue");
    let outcome = h.drain().await;
    let dead: Vec<String> = sqlx::query_scalar(
        "SELECT coalesce(last_error, '') FROM batisync.outbox WHERE status = 'dead' LIMIT 3",
    )
    .fetch_all(&h.db.pool)
    .await
    .expect("dead letters");
    assert_eq!((outcome.applied, outcome.dead), (40, 0), "{dead:?}");
    assert_eq!(server.scalar(count).await, 40);

    // A move (2 hours later) and an un-validation.
    h.sim
        .update_slot(&ids[0], |s| s.start += chrono::Duration::hours(100))
        .expect("move");
    h.sim
        .update_slot(&ids[1], |s| s.status = "PENDING".into())
        .expect("unvalidate");
    h.poll().await;
    h.drain().await;
    assert_eq!(server.scalar(count).await, 39);

    // A Batigest edit of slot 2's row survives a re-read of an unchanged slot.
    let link: serde_json::Value =
        sqlx::query_scalar("SELECT state FROM batisync.links WHERE flow = $1 AND source_key = $2")
            .bind(FLOW)
            .bind(&ids[2])
            .fetch_one(&h.db.pool)
            .await
            .expect("link");
    let code = link["key"]["employee"]
        .as_str()
        .expect("employee")
        .to_owned();
    server
        .exec(&format!(
            "UPDATE dbo.SuiviMO SET NbH0 = 1.5 WHERE CodeSalarie = '{code}' AND [Date] = (SELECT MIN([Date]) FROM dbo.SuiviMO WHERE CodeSalarie = '{code}')"
        ))
        .await;
    batisync::flows::heures::request_resync(&h.db.pool)
        .await
        .expect("resync");
    h.poll().await;
    h.drain().await;
    assert_eq!(
        server
            .scalar("SELECT COUNT(*) FROM dbo.SuiviMO WHERE NbH0 = 1.5")
            .await,
        1
    );
    assert_eq!(server.scalar(count).await, 39);
    let conflicts: i64 =
        h.db.scalar("SELECT count(*) FROM batisync.conflicts WHERE winner = 'target'")
            .await;
    assert!(conflicts >= 1);
    h.finish().await;
    server.drop().await;
}

/// The chantiers flow end to end with the real source: SQL Server `ChantierDef` (Change
/// Tracking where the server has it, else the snapshot diff) → poller → outbox →
/// dispatcher → BatiSimply simulator; an edit and a delete made in SQL Server follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chantiers_flow_reads_chantier_def_and_keeps_projects_current() {
    use batisync::batisimply::sim::Faults;
    use batisync::flows::chantiers::{ChantiersSettings, Poller, SqlServerChantiers};

    let Some(url) = mssql_url() else { return };
    let server = TestServer::new(&url).await;
    server.exec(SEED).await;
    let settings = ChantiersSettings {
        finished_states: vec!["T".into()],
        ..ChantiersSettings::default()
    };
    let h = chantiers::Harness::new(settings.clone(), Faults::default()).await;
    let mut poller = Poller::new(
        SqlServerChantiers::new(server.settings.clone()),
        h.db.pool.clone(),
        Arc::new(settings),
    );

    // Initial load: five job sites, five projects with their fields.
    let first = poller.try_poll_once().await.expect("first poll");
    let outcome = h.drain().await;
    assert!(first.full_snapshot);
    assert_eq!(
        (first.captured.inserted, outcome.applied, outcome.dead),
        (5, 5, 0)
    );
    let project = h.project("00000001");
    assert_eq!(project.data.customer_name.as_deref(), Some("Société Élan"));
    assert_eq!(h.project("00000004").data.is_finished, Some(true));

    // An edit in Batigest propagates; a delete archives.
    server
        .exec(
            "UPDATE dbo.ChantierDef SET Libelle = N'Toiture et zinguerie' WHERE Code = '00000001'",
        )
        .await;
    server
        .exec("DELETE FROM dbo.ChantierDef WHERE Code = '00000005'")
        .await;
    let second = poller.try_poll_once().await.expect("second poll");
    let outcome = h.drain().await;
    assert!(!second.full_snapshot);
    assert_eq!((second.captured.inserted, outcome.dead), (2, 0));
    assert_eq!(
        h.project("00000001").data.comment.as_deref(),
        Some("Toiture et zinguerie")
    );
    assert_eq!(h.project("00000005").data.is_archived, Some(true));
    assert_eq!(h.projects_by_code().len(), 5, "no duplicate project");
    drop(poller);
    h.finish().await;
    server.drop().await;
}

/// `Auto` takes the snapshot diff while Change Tracking is off, and switches to Change
/// Tracking as soon as a DBA enables it; each change then carries its commit time
/// where the login may read `sys.dm_tran_commit_table`.
#[tokio::test]
async fn auto_switches_to_change_tracking_once_enabled_and_events_carry_commit_times() {
    let Some(url) = mssql_url() else { return };
    let Some(server) = TestServer::with_change_tracking(&url).await else {
        return;
    };
    server
        .exec("ALTER TABLE dbo.ChantierDef DISABLE CHANGE_TRACKING")
        .await;
    server.exec(SEED).await;
    let pg = TestDb::new().await;
    let pool = Pool::new(server.settings.clone());
    let mapping = load_mapping(&pool).await.expect("mapping");
    let spec = &mapping.chantier;
    let mut conn = pg.pool.acquire().await.expect("pg");
    let off = capture(&pool, spec, CaptureStrategy::Auto, None, &mut conn)
        .await
        .expect("snapshot diff");
    assert_eq!(off.strategy, Strategy::SnapshotDiff);

    server
        .exec("ALTER TABLE dbo.ChantierDef ENABLE CHANGE_TRACKING")
        .await;
    let on = capture(
        &pool,
        spec,
        CaptureStrategy::Auto,
        Some(&off.next_cursor),
        &mut conn,
    )
    .await
    .expect("change tracking");
    assert_eq!(on.strategy, Strategy::ChangeTracking);
    assert!(
        on.full_snapshot,
        "a strategy change starts from a full read"
    );

    let before = chrono::Utc::now() - chrono::Duration::minutes(1);
    server
        .exec("UPDATE dbo.ChantierDef SET Etat = 'T' WHERE Code = '00000003'")
        .await;
    let next = capture(
        &pool,
        spec,
        CaptureStrategy::Auto,
        Some(&on.next_cursor),
        &mut conn,
    )
    .await
    .expect("incremental");
    assert_eq!(
        summary(&next.changes),
        vec![("00000003".to_owned(), Operation::Upsert)]
    );
    let visible = batisync::batigest::read::commit_time_visible(&pool)
        .await
        .expect("probe");
    let committed = next.changes[0].committed_at;
    if visible {
        let at = committed.expect("commit time read");
        let after = chrono::Utc::now() + chrono::Duration::minutes(1);
        assert!(at > before && at < after, "{at} is the commit time in UTC");
    } else {
        assert_eq!(committed, None);
        println!("note: sys.dm_tran_commit_table not visible to this login: no commit time");
    }
    drop((conn, pool));
    pg.drop().await;
    server.drop().await;
}

/// A `SuiviMO` richer than the one batisync writes: an extra NOT NULL column without a
/// default and a trigger. `check --describe` names every column and the blocking one;
/// the mapping refuses to write until `[batigest.suivimo_defaults]` fills it; then rows
/// are written with that value, and the trigger's own writes do not confuse the writer.
#[tokio::test]
async fn describe_names_the_schema_and_an_unfilled_not_null_column_blocks_until_a_default_is_set() {
    use batisync::batigest::describe::{Unfilled, describe};
    use batisync::batigest::settings::DefaultValue;

    let Some(url) = mssql_url() else { return };
    let server = TestServer::new(&url).await;
    server
        .exec(
            "ALTER TABLE dbo.SuiviMO ADD Periode varchar(6) NOT NULL; \
             ALTER TABLE dbo.SuiviMO ADD Commentaire varchar(60) NULL; \
             CREATE TABLE dbo.SuiviMOJournal (Id int IDENTITY(1, 1) NOT NULL PRIMARY KEY, \
               CodeChantier varchar(8) NOT NULL, Quand datetime NOT NULL DEFAULT GETDATE());",
        )
        .await;
    server
        .exec(
            "CREATE TRIGGER dbo.trg_SuiviMO_Journal ON dbo.SuiviMO AFTER INSERT, UPDATE AS \
             BEGIN INSERT INTO dbo.SuiviMOJournal (CodeChantier) SELECT CodeChantier FROM inserted; END",
        )
        .await;

    let described = describe(&server.settings).await.expect("describe");
    let text = described.to_string();
    let ledger = described
        .tables
        .iter()
        .find(|t| t.name == "dbo.SuiviMO")
        .expect("SuiviMO described");
    let names: Vec<&str> = ledger.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "Id",
            "CodeChantier",
            "CodeSalarie",
            "Date",
            "NbH0",
            "NbH1",
            "NbH2",
            "NbH3",
            "NbH4",
            "Periode",
            "Commentaire"
        ],
        "{text}"
    );
    let column = |name: &str| {
        ledger
            .columns
            .iter()
            .find(|c| c.name == name)
            .expect("column")
    };
    assert!(column("Id").identity && !column("Id").nullable, "{text}");
    assert_eq!(column("CodeChantier").sql_type, "varchar(8)", "{text}");
    assert_eq!(column("NbH0").sql_type, "decimal(9,4)", "{text}");
    assert!(column("NbH1").default.is_some(), "{text}");
    assert_eq!(column("Periode").sql_type, "varchar(6)", "{text}");
    assert!(!column("Periode").nullable && column("Periode").default.is_none());
    assert_eq!(column("NbH0").mapped_as.as_deref(), Some("suivi_mo.hours"));
    assert!(
        ledger.keys.as_ref().is_ok_and(|k| k
            .iter()
            .any(|k| k.starts_with("PRIMARY KEY") && k.to_lowercase().ends_with("(id)"))),
        "{text}"
    );
    match &ledger.triggers {
        Ok(triggers) => assert!(
            triggers.iter().any(|t| t
                .to_lowercase()
                .starts_with("trg_suivimo_journal (after insert")),
            "{text}"
        ),
        Err(why) => println!("note: this server does not list triggers: {why}"),
    }
    let chantier = described
        .tables
        .iter()
        .find(|t| t.name == "dbo.ChantierDef")
        .expect("ChantierDef described");
    assert_eq!(chantier.columns.len(), 10, "{text}");
    assert!(!chantier.change_tracking.is_empty());
    assert_eq!(described.blocking(), ["Periode"], "{text}");
    assert!(
        described
            .ledger_unfilled
            .contains(&("Commentaire".into(), Unfilled::Null))
    );
    assert!(text.contains("BLOCKING"), "{text}");

    // The mapping refuses to write while Periode is unfilled...
    let pool = Pool::new(server.settings.clone());
    let refused = load_mapping(&pool).await.expect_err("blocking column");
    assert!(refused.to_string().contains("SuiviMO.Periode"), "{refused}");
    drop(pool);

    // ...and writes with the configured value once it is set.
    let mut settings = server.settings.clone();
    settings
        .suivimo_defaults
        .insert("Periode".into(), DefaultValue::Text("202611".into()));
    let described = describe(&settings).await.expect("describe");
    assert!(described.blocking().is_empty(), "{described}");
    let pool = Arc::new(Pool::new(settings));
    let mapping = load_mapping(&pool).await.expect("mapping with the default");
    let ledger = SqlServerLedger::open(pool.clone(), &mapping.ledger)
        .await
        .expect("ledger");
    let first = slot_row("00000001", 8, 90, false);
    let report = ledger.apply(&write(None, &first)).await.expect("insert");
    assert_eq!(report.decision, Decision::Insert);
    let moved = slot_row("00000002", 9, 30, true);
    assert_eq!(
        ledger
            .apply(&write(Some(&first), &moved))
            .await
            .expect("move")
            .decision,
        Decision::Move
    );
    assert_eq!(
        server
            .scalar("SELECT COUNT(*) FROM dbo.SuiviMO WHERE Periode = '202611' AND CodeChantier = '00000002'")
            .await,
        1
    );
    assert_eq!(
        server
            .scalar("SELECT COUNT(*) FROM dbo.SuiviMOJournal")
            .await,
        2,
        "the trigger ran"
    );
    drop((ledger, pool));
    server.drop().await;
}

/// TDS 8 strict encryption either works, or `check` fails at the TLS step with a message
/// that says what to set instead: never a confusing protocol error.
#[tokio::test]
async fn strict_encryption_works_or_check_explains_how_to_connect_instead() {
    let Some(url) = mssql_url() else { return };
    let settings = BatigestSettings {
        encryption: Encryption::Strict,
        trust_server_certificate: true,
        connect_timeout_ms: 5_000,
        ..settings_from_ado(&url, "master")
    };
    let report = check_sqlserver(&settings).await;
    if report.is_ok() {
        return;
    }
    let failed = report.steps.last().expect("steps");
    assert!(
        matches!(failed.name.as_str(), "tls" | "connection"),
        "{report}"
    );
    let failure = failed.failure.as_deref().unwrap_or_default();
    assert!(failure.contains("encryption = \"required\""), "{report}");
    println!("note: TDS 8 strict refused by this server: {failure}");
}
