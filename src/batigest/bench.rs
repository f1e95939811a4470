//! `batisync bench batigest`: the SQL Server half against a real TDS server (the one in
//! `BATISYNC_TEST_MSSQL_URL`, or `--url`), in a scratch database created and dropped by
//! the bench (and a scratch PostgreSQL database for the snapshot hashes).
//!
//! 1. Snapshot diff of `ChantierDef` at each `--rows` size: the first capture (every row
//!    is new: rows/s, peak memory growth) and a no-change poll (the cost paid at every
//!    `snapshot_interval_ms`), each next to a baseline measured in the same run: a bare
//!    keyset `SELECT` of the same rows and columns, with the same page size.
//! 2. `SuiviMO` writes: `--writes` slots through the real writer (one transaction per
//!    slot: lock and read, insert, commit), next to a baseline of bare `INSERT`s of the
//!    same rows (one autocommitted statement each).
//!
//! Measurements alternate with their baseline (`--rounds` times); medians and the ratio
//! are printed. Memory comes from `/proc/self/status` (`n/a` where it is missing).

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{NaiveDate, TimeDelta};
use sqlx::PgPool;

use super::capture::Cursor;
use super::ledger::{Hours, LedgerKey, LedgerRow, LedgerValues, LedgerWriter, SlotWrite};
use super::pool::{Client, Pool, connect};
use super::read::capture_snapshot_diff;
use super::schema::load_mapping;
use super::settings::{BatigestSettings, Encryption};
use super::snapshot_store;
use super::spec::TableSpec;
use super::{SqlServerLedger, tsql};
use crate::bench::{create_scratch, drop_scratch, ms};
use crate::settings::Settings;

const SCHEMA_SQL: &str = include_str!("../../sql/mssql/batigest_test_schema.sql");

/// Options of `batisync bench batigest`.
#[derive(Debug, Clone, clap::Args)]
pub struct BatigestBenchArgs {
    /// ADO connection string of a server where the login may create databases
    /// (`server=tcp:host,port;user=...;password=...;TrustServerCertificate=true`).
    #[arg(long, env = "BATISYNC_TEST_MSSQL_URL", hide_env_values = true)]
    pub url: String,
    /// ChantierDef sizes measured, in rows.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000")]
    pub rows: Vec<usize>,
    /// Alternated rounds of each measurement and its baseline.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// SuiviMO slots written per round.
    #[arg(long, default_value_t = 500)]
    pub writes: usize,
}

/// Settings from an ADO connection string (server, user, password, encrypt,
/// TrustServerCertificate), for `database`.
///
/// # Errors
/// A part that is not `key=value`.
pub fn settings_from_ado(url: &str, database: &str) -> anyhow::Result<BatigestSettings> {
    let mut s = BatigestSettings {
        database: database.to_owned(),
        ..BatigestSettings::default()
    };
    for part in url.split(';').filter(|p| !p.trim().is_empty()) {
        let (key, value) = part
            .split_once('=')
            .context("connection string: key=value expected")?;
        let value = value.trim().to_owned();
        match key.trim().to_ascii_lowercase().as_str() {
            "server" | "data source" => {
                let server = value.trim_start_matches("tcp:");
                let (host, port) = server.split_once(',').unwrap_or((server, ""));
                match host.split_once('\\') {
                    Some((h, instance)) => {
                        s.host = h.to_owned();
                        s.instance = Some(instance.to_owned());
                    }
                    None => s.host = host.to_owned(),
                }
                s.port = port.parse().ok();
            }
            "user" | "user id" | "uid" => s.user = value,
            "password" | "pwd" => s.password = value.into(),
            "trustservercertificate" => {
                s.trust_server_certificate = value.eq_ignore_ascii_case("true");
            }
            "encrypt" => {
                s.encryption = match value.to_ascii_lowercase().as_str() {
                    "strict" => Encryption::Strict,
                    "false" | "no" | "danger_plaintext" => Encryption::Off,
                    _ => Encryption::Required,
                };
            }
            _ => {}
        }
    }
    Ok(s)
}

/// Runs every measurement and prints the figures.
///
/// # Errors
/// The server or PostgreSQL cannot be reached, or a step fails.
pub async fn run(settings: &Settings, args: &BatigestBenchArgs) -> anyhow::Result<()> {
    let name = format!("batisync_bench_{}", std::process::id());
    let master = settings_from_ado(&args.url, "master")?;
    let mut admin = connect(&master).await?;
    batch(&mut admin, &format!("CREATE DATABASE [{name}]")).await?;
    drop(admin);
    let pg_admin = crate::db::connect(&settings.postgres).await?;
    let pg = create_scratch(&pg_admin, settings, &name).await?;
    let bench = BatigestSettings {
        snapshot_interval_ms: 1,
        ..settings_from_ado(&args.url, &name)?
    };
    let result = run_all(&bench, &pg, args).await;
    pg.close().await;
    drop_scratch(&pg_admin, &name).await;
    drop_database(&master, &name).await;
    result
}

async fn batch(client: &mut Client, sql: &str) -> anyhow::Result<()> {
    client.simple_query(sql).await?.into_results().await?;
    Ok(())
}

async fn drop_database(master: &BatigestSettings, name: &str) {
    if let Ok(mut admin) = connect(master).await {
        let single = format!("ALTER DATABASE [{name}] SET SINGLE_USER WITH ROLLBACK IMMEDIATE");
        let _ = batch(&mut admin, &single).await;
    }
    for _ in 0..50 {
        if let Ok(mut admin) = connect(master).await
            && batch(&mut admin, &format!("DROP DATABASE [{name}]"))
                .await
                .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("could not drop the bench database {name}: drop it by hand");
}

async fn run_all(
    s: &BatigestSettings,
    pg: &PgPool,
    args: &BatigestBenchArgs,
) -> anyhow::Result<()> {
    let pool = Pool::new(s.clone());
    {
        let mut conn = pool.get().await?;
        batch(conn.client(), SCHEMA_SQL).await?;
        conn.release();
    }
    let mapping = load_mapping(&pool).await?;
    println!(
        "bench batigest: {} round(s), page {} rows, server {}",
        args.rounds,
        s.snapshot_page_rows,
        super::pool::server_label(s)
    );
    let mut present = 0;
    for &rows in &args.rows {
        fill_chantiers(&pool, present, rows).await?;
        present = present.max(rows);
        snapshot_figures(&pool, &mapping.chantier, pg, rows, args.rounds).await?;
    }
    ledger_figures(&pool, &mapping.ledger, args).await
}

/// Adds job sites `from..to` (parameterised multi-row inserts).
async fn fill_chantiers(pool: &Pool, from: usize, to: usize) -> anyhow::Result<()> {
    const PER_STATEMENT: usize = 300;
    let mut conn = pool.get().await?;
    let start = NaiveDate::from_ymd_opt(2026, 1, 5).context("date")?;
    let mut n = from;
    while n < to {
        let count = PER_STATEMENT.min(to - n);
        let values: Vec<String> = (0..count)
            .map(|i| {
                let p = i * 5;
                format!(
                    "(@P{}, @P{}, @P{}, 'E', @P{}, @P{})",
                    p + 1,
                    p + 2,
                    p + 3,
                    p + 4,
                    p + 5
                )
            })
            .collect();
        let sql = format!(
            "INSERT INTO dbo.ChantierDef (Code, NomClient, Libelle, Etat, DateDebut, DateFin) VALUES {}",
            values.join(", ")
        );
        let mut cells: Vec<(String, String, String, NaiveDate, NaiveDate)> = Vec::new();
        for i in n..n + count {
            let day = start + TimeDelta::days(i64::try_from(i % 300).unwrap_or(0));
            cells.push((
                format!("{:08}", i + 1),
                format!("Client {}", i + 1),
                format!("Chantier numéro {}", i + 1),
                day,
                day + TimeDelta::days(90),
            ));
        }
        let mut params: Vec<&dyn tiberius::ToSql> = Vec::with_capacity(count * 5);
        for (code, name, label, begin, end) in &cells {
            params.extend([code as &dyn tiberius::ToSql, name, label, begin, end]);
        }
        pool.execute(conn.client(), &sql, &params).await?;
        n += count;
    }
    conn.release();
    Ok(())
}

/// Peak resident memory (`VmHWM`), in KiB, reset first when `reset` (Linux
/// `/proc/self/clear_refs`); `None` where `/proc` is missing.
fn peak_memory_kib(reset: bool) -> Option<u64> {
    if reset {
        std::fs::write("/proc/self/clear_refs", "5").ok()?;
    }
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn mib(before: Option<u64>, after: Option<u64>) -> String {
    match (before, after) {
        (Some(b), Some(a)) => format!("+{:.1} MiB", a.saturating_sub(b) as f64 / 1024.0),
        _ => "n/a".into(),
    }
}

/// The baseline: the same keyset pages and columns, rows only counted.
async fn bare_select(pool: &Pool, spec: &TableSpec) -> anyhow::Result<(usize, Duration)> {
    let started = Instant::now();
    let page = i32::try_from(pool.settings().snapshot_page_rows).unwrap_or(i32::MAX);
    let (first, next) = (tsql::first_page(spec), tsql::next_page(spec));
    let mut conn = pool.get().await?;
    let (mut total, mut after): (usize, Option<String>) = (0, None);
    loop {
        let rows = match &after {
            None => pool.fetch(conn.client(), &first, &[&page]).await?,
            Some(key) => pool.fetch(conn.client(), &next, &[&page, key]).await?,
        };
        total += rows.len();
        let count = rows.len();
        after = rows
            .last()
            .and_then(|r| r.get::<&str, _>(0).map(str::to_owned))
            .or(after);
        if count < usize::try_from(page).unwrap_or(usize::MAX) {
            break;
        }
    }
    conn.release();
    Ok((total, started.elapsed()))
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

fn per_sec(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}

async fn snapshot_figures(
    pool: &Pool,
    spec: &TableSpec,
    pg: &PgPool,
    rows: usize,
    rounds: usize,
) -> anyhow::Result<()> {
    let mut conn = pg.acquire().await?;
    sqlx::query("DELETE FROM batisync.snapshot_rows")
        .execute(&mut *conn)
        .await?;
    bare_select(pool, spec).await?; // warm-up: the first read of a size pays the cold cache
    let (read, bare_full) = bare_select(pool, spec).await?;
    anyhow::ensure!(read == rows, "expected {rows} rows, read {read}");
    let before = peak_memory_kib(true);
    let started = Instant::now();
    let first = capture_snapshot_diff(pool, spec, None, &mut conn).await?;
    let full = started.elapsed();
    let full_memory = mib(before, peak_memory_kib(false));
    anyhow::ensure!(
        first.changes.len() == rows,
        "first capture: every row is new"
    );
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    if let Some(delta) = &first.snapshot_delta {
        snapshot_store::record_hashes(&mut tx, &spec.source, delta).await?;
    }
    tx.commit().await?;
    let cursor = Cursor::from_json(Some(&first.next_cursor));
    drop(first);

    let (mut bare, mut idle, mut idle_memory) = (Vec::new(), Vec::new(), String::new());
    for _ in 0..rounds {
        bare.push(bare_select(pool, spec).await?.1);
        let before = peak_memory_kib(true);
        let started = Instant::now();
        let poll = capture_snapshot_diff(pool, spec, cursor.as_ref(), &mut conn).await?;
        idle.push(started.elapsed());
        idle_memory = mib(before, peak_memory_kib(false));
        anyhow::ensure!(poll.changes.is_empty(), "no-change poll found changes");
    }
    let (bare, idle) = (median(bare), median(idle));
    println!(
        "snapshot diff {rows:>7} rows: first capture {:>8.1} ms ({:>8.0} rows/s, memory {full_memory}) \
         vs bare SELECT {:>8.1} ms ({:>8.0} rows/s): x{:.2}",
        ms(full),
        per_sec(rows, full),
        ms(bare_full),
        per_sec(rows, bare_full),
        full.as_secs_f64() / bare_full.as_secs_f64().max(1e-9)
    );
    println!(
        "snapshot diff {rows:>7} rows: no-change poll {:>8.1} ms (median of {rounds}, memory \
         {idle_memory}) vs bare SELECT {:>8.1} ms: x{:.2}",
        ms(idle),
        ms(bare),
        idle.as_secs_f64() / bare.as_secs_f64().max(1e-9)
    );
    Ok(())
}

fn ledger_row(round: usize, i: usize) -> anyhow::Result<LedgerRow> {
    let day = NaiveDate::from_ymd_opt(2026, 1, 1).context("date")?
        + TimeDelta::days(i64::try_from(round * 1_000 + i / 10).unwrap_or(0));
    let start = day
        .and_hms_opt(7 + u32::try_from(i % 10).unwrap_or(0), 0, 0)
        .context("time")?;
    Ok(LedgerRow {
        key: LedgerKey {
            chantier: format!("{:08}", i % 97 + 1),
            employee: format!("E{:03}", i % 50),
            start,
        },
        values: LedgerValues {
            hours: Hours::from_minutes(60 + u32::try_from(i % 240).unwrap_or(0)),
            journey: i.is_multiple_of(2),
            meal: i.is_multiple_of(3),
        },
    })
}

async fn bare_inserts(pool: &Pool, rows: &[LedgerRow]) -> anyhow::Result<Duration> {
    let sql = "INSERT INTO dbo.SuiviMO (CodeChantier, CodeSalarie, [Date], NbH0, NbH3, NbH4) \
               VALUES (@P1, @P2, @P3, @P4, @P5, @P6)";
    let mut conn = pool.get().await?;
    let started = Instant::now();
    for row in rows {
        let hours = tiberius::numeric::Numeric::new_with_scale(
            i128::from(row.values.hours.0),
            Hours::SCALE,
        );
        let (journey, meal) = (i32::from(row.values.journey), i32::from(row.values.meal));
        let params: [&dyn tiberius::ToSql; 6] = [
            &row.key.chantier,
            &row.key.employee,
            &row.key.start,
            &hours,
            &journey,
            &meal,
        ];
        pool.execute(conn.client(), sql, &params).await?;
    }
    let elapsed = started.elapsed();
    conn.release();
    Ok(elapsed)
}

async fn ledger_figures(
    pool: &Pool,
    spec: &super::spec::LedgerSpec,
    args: &BatigestBenchArgs,
) -> anyhow::Result<()> {
    let shared = std::sync::Arc::new(Pool::new(pool.settings().clone()));
    let ledger = SqlServerLedger::open(shared, spec).await?;
    let (mut bare, mut writer) = (Vec::new(), Vec::new());
    for round in 0..args.rounds {
        let rows: Vec<LedgerRow> = (0..args.writes)
            .map(|i| ledger_row(round * 2, i))
            .collect::<anyhow::Result<_>>()?;
        bare.push(bare_inserts(pool, &rows).await?);
        let rows: Vec<LedgerRow> = (0..args.writes)
            .map(|i| ledger_row(round * 2 + 1, i))
            .collect::<anyhow::Result<_>>()?;
        let started = Instant::now();
        for (i, row) in rows.iter().enumerate() {
            let write = SlotWrite {
                slot_id: format!("bench-{round}-{i}"),
                previous: None,
                row: row.clone(),
                overwrite_batigest_edits: false,
            };
            ledger.apply(&write).await?;
        }
        writer.push(started.elapsed());
    }
    let (bare, writer) = (median(bare), median(writer));
    println!(
        "SuiviMO {} slots: writer {:>7.0} writes/s (one transaction per slot, median of {}) \
         vs bare INSERT {:>7.0} rows/s: x{:.2}",
        args.writes,
        per_sec(args.writes, writer),
        args.rounds,
        per_sec(args.writes, bare),
        per_sec(args.writes, writer) / per_sec(args.writes, bare).max(1e-9)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn ado_strings_give_host_port_instance_and_credentials() {
        let s = settings_from_ado(
            "server=tcp:db.local,18333;user=bench;password=p;TrustServerCertificate=true;encrypt=false",
            "BTG",
        )
        .expect("valid");
        assert_eq!((s.host.as_str(), s.port), ("db.local", Some(18333)));
        assert_eq!(s.password.expose_secret(), "p");
        assert!(s.trust_server_certificate);
        assert_eq!(s.encryption, Encryption::Off);
        let named = settings_from_ado("server=srv\\SAGEBAT;user=u", "BTG").expect("valid");
        assert_eq!(named.instance.as_deref(), Some("SAGEBAT"));
        assert!(settings_from_ado("server", "BTG").is_err());
    }
}
