//! `batisync bench outbox`: throughput and latency of the outbox engine, measured in a
//! scratch database that is dropped afterwards (`bench chantiers`, the whole flow, is
//! in [`crate::flows::chantiers::bench`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use sqlx::PgPool;
use tokio::sync::mpsc;

use crate::dispatch::{Applied, DispatchError, DispatchSettings, Handler, Runtime, spawn_workers};
use crate::outbox::{CursorAdvance, Event, NewEvent, Operation, Outbox, round_trips};
use crate::settings::Settings;

const FLOW: &str = "bench";

/// Options of `batisync bench outbox`.
#[derive(Debug, Clone, clap::Args)]
pub struct OutboxBenchArgs {
    /// Events captured per run.
    #[arg(long, default_value_t = 100_000)]
    pub events: u64,
    /// Distinct entity keys the events are spread over.
    #[arg(long, default_value_t = 1_000)]
    pub keys: u64,
    /// Worker counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "4,8")]
    pub workers: Vec<u32>,
    /// Entity keys claimed per round trip.
    #[arg(long, default_value_t = 250)]
    pub batch_size: i64,
    /// Consecutive events of one key claimed together (default: the dispatch default).
    #[arg(long, default_value_t = DispatchSettings::default().run_length)]
    pub run_length: i64,
    /// Events written per capture statement.
    #[arg(long, default_value_t = 2_000)]
    pub capture_batch: usize,
    /// Samples of idle-worker pickup latency.
    #[arg(long, default_value_t = 200)]
    pub pickup_samples: usize,
    /// Events of the one-event-per-claim baseline (default: a fifth of --events; 0 skips it).
    #[arg(long)]
    pub baseline_events: Option<u64>,
}

/// Counts applications and reports when each happened.
struct BenchHandler {
    applied: AtomicU64,
    /// Set during the pickup measurement only.
    picked: Option<mpsc::UnboundedSender<Instant>>,
}

impl Handler for BenchHandler {
    async fn apply(&self, _event: &Event) -> Result<Applied, DispatchError> {
        self.applied.fetch_add(1, Ordering::Relaxed);
        if let Some(tx) = &self.picked {
            let _ = tx.send(Instant::now());
        }
        Ok(Applied::new("ok"))
    }
}

/// Runs every measurement and prints the figures.
///
/// # Errors
/// When the scratch database cannot be created or a statement fails.
pub async fn run(settings: &Settings, args: &OutboxBenchArgs) -> anyhow::Result<()> {
    let admin = crate::db::connect(&settings.postgres).await?;
    let name = format!("batisync_bench_{}", std::process::id());
    let pool = create_scratch(&admin, settings, &name).await?;
    let result = run_all(&pool, args).await;
    pool.close().await;
    drop_scratch(&admin, &name).await;
    result
}

async fn run_all(pool: &PgPool, args: &OutboxBenchArgs) -> anyhow::Result<()> {
    let version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(pool)
        .await?;
    println!(
        "outbox bench: {} events over {} keys, claims of {} keys with runs of up to {} events, capture batch {}, PostgreSQL {version}",
        args.events, args.keys, args.batch_size, args.run_length, args.capture_batch
    );
    // Measured on an idle database: after the throughput runs, autovacuum and
    // checkpoints of their writes can add milliseconds to it.
    let pickup = measure_pickup(pool, args.pickup_samples).await?;
    let baseline_events = args.baseline_events.unwrap_or(args.events / 5);
    let baseline = if baseline_events > 0 {
        let claim = Claim { keys: 1, run: 1 };
        let run = measure(
            pool,
            args,
            4,
            claim,
            baseline_events,
            Mode::EnqueueThenDrain,
        )
        .await?;
        println!("\nbaseline, one event per claim (4 workers, {baseline_events} events):\n{run}");
        Some(run)
    } else {
        None
    };
    for &workers in &args.workers {
        for mode in [Mode::EnqueueThenDrain, Mode::Streaming] {
            let claim = Claim {
                keys: args.batch_size,
                run: args.run_length,
            };
            let run = measure(pool, args, workers, claim, args.events, mode).await?;
            println!("\n{workers} workers, {mode:?}:\n{run}");
            if let (Mode::EnqueueThenDrain, Some(baseline)) = (mode, &baseline) {
                println!(
                    "  drain speed-up over baseline: x{:.1}",
                    run.drain_rate() / baseline.drain_rate()
                );
            }
        }
    }
    println!(
        "\nidle-worker pickup (capture call → handler), {} samples, measured first: p50 {:.2} ms, p99 {:.2} ms",
        args.pickup_samples,
        ms(percentile(&pickup, 0.5)),
        ms(percentile(&pickup, 0.99))
    );
    Ok(())
}

/// What one claim takes: keys, and consecutive events per key.
#[derive(Debug, Clone, Copy)]
struct Claim {
    keys: i64,
    run: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Capture everything, then start the workers (how queue benchmarks are usually run).
    EnqueueThenDrain,
    /// Workers run while the poller captures (how batisync runs).
    Streaming,
}

struct RunFigures {
    events: u64,
    /// Share of CPU time the host took from this machine during the run, when known.
    steal: Option<f64>,
    capture: Duration,
    drain: Duration,
    total: Duration,
    round_trips: u64,
    p50_ms: f64,
    p99_ms: f64,
}

impl RunFigures {
    fn drain_rate(&self) -> f64 {
        self.events as f64 / self.drain.as_secs_f64()
    }
}

impl std::fmt::Display for RunFigures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rate = |d: Duration| self.events as f64 / d.as_secs_f64();
        writeln!(
            f,
            "  capture  {:>8.0} events/s ({:.2} s)",
            rate(self.capture),
            self.capture.as_secs_f64()
        )?;
        writeln!(
            f,
            "  drain    {:>8.0} events/s ({:.2} s)",
            rate(self.drain),
            self.drain.as_secs_f64()
        )?;
        writeln!(
            f,
            "  overall  {:>8.0} events/s ({:.2} s)",
            rate(self.total),
            self.total.as_secs_f64()
        )?;
        writeln!(
            f,
            "  capture→ack latency p50 {:.1} ms, p99 {:.1} ms",
            self.p50_ms, self.p99_ms
        )?;
        write!(
            f,
            "  round trips per event {:.3}",
            self.round_trips as f64 / self.events as f64
        )?;
        if let Some(steal) = self.steal {
            // On a shared virtual machine, figures are only comparable between runs
            // with little steal.
            write!(
                f,
                "\n  CPU stolen by the host during the run {:.0} %",
                steal * 100.0
            )?;
        }
        Ok(())
    }
}

async fn measure(
    pool: &PgPool,
    args: &OutboxBenchArgs,
    workers: u32,
    claim: Claim,
    events: u64,
    mode: Mode,
) -> anyhow::Result<RunFigures> {
    sqlx::query("TRUNCATE batisync.outbox, batisync.cursors CASCADE")
        .execute(pool)
        .await?;
    let outbox = Outbox::new(pool.clone());
    let handler = Arc::new(BenchHandler {
        applied: AtomicU64::new(0),
        picked: None,
    });
    let engine = Engine::new(&outbox);
    let trips_before = round_trips();
    let cpu_before = CpuTimes::read();
    let started = Instant::now();
    if mode == Mode::Streaming {
        engine.start(&handler, workers, claim);
    }
    capture_all(&outbox, events, args.keys, args.capture_batch).await?;
    let capture = started.elapsed();
    let drain_started = Instant::now();
    if mode == Mode::EnqueueThenDrain {
        engine.start(&handler, workers, claim);
    }
    wait_until_done(pool, &handler, events).await?;
    let drain = drain_started.elapsed();
    let total = started.elapsed();
    engine.stop().await;
    let trips = round_trips() - trips_before;
    let (p50_ms, p99_ms): (f64, f64) = sqlx::query_as(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - captured_at)) * 1000, \
                percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - captured_at)) * 1000 \
         FROM batisync.outbox WHERE status = 'done'",
    )
    .fetch_one(pool)
    .await?;
    let steal = cpu_before
        .zip(CpuTimes::read())
        .and_then(|(before, after)| after.steal_share_since(&before));
    Ok(RunFigures {
        events,
        steal,
        capture,
        drain,
        total,
        round_trips: trips,
        p50_ms,
        p99_ms,
    })
}

/// The dispatch runtime of one measurement.
struct Engine {
    rt: Runtime,
}

impl Engine {
    fn new(outbox: &Outbox) -> Self {
        let rt = Runtime::new(outbox.clone(), Duration::from_secs(5));
        let listen = crate::outbox::notify::listen_until_stopped(
            outbox.pool().clone(),
            rt.wakers.clone(),
            rt.stop.clone(),
        );
        rt.tracker.spawn(listen);
        Self { rt }
    }

    fn start(&self, handler: &Arc<BenchHandler>, workers: u32, claim: Claim) {
        let settings = DispatchSettings {
            workers,
            batch_size: claim.keys,
            run_length: claim.run,
            ..DispatchSettings::default()
        };
        spawn_workers(&self.rt, FLOW, handler.clone(), &settings);
    }

    async fn stop(self) {
        self.rt.stop.cancel();
        self.rt.tracker.close();
        self.rt.tracker.wait().await;
    }
}

/// Captures like a poller does: each batch moves the source cursor in the same
/// transaction, compared with the position the batch was read from.
async fn capture_all(outbox: &Outbox, events: u64, keys: u64, batch: usize) -> anyhow::Result<()> {
    let mut buffer = Vec::with_capacity(batch);
    let mut position: Option<serde_json::Value> = None;
    for i in 0..events {
        buffer.push(NewEvent {
            entity_key: format!("k{:05}", i % keys),
            source_version: i.to_string(),
            operation: Operation::Upsert,
            payload: json!({ "n": i }),
            source_modified_at: None,
        });
        if buffer.len() == batch || i + 1 == events {
            let next = json!(i);
            let advance = CursorAdvance {
                source: "bench",
                expected: position.as_ref(),
                next: &next,
            };
            outbox.capture(FLOW, &buffer, Some(advance), false).await?;
            position = Some(next);
            buffer.clear();
        }
    }
    Ok(())
}

async fn wait_until_done(pool: &PgPool, handler: &BenchHandler, events: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    while handler.applied.load(Ordering::Relaxed) < events {
        anyhow::ensure!(
            Instant::now() < deadline,
            "drain did not finish within 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Applied is counted before the ack; wait for the last acks to land.
    loop {
        let done: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM batisync.outbox WHERE flow = $1 AND status = 'done'",
        )
        .bind(FLOW)
        .fetch_one(pool)
        .await?;
        if done as u64 >= events {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "acks did not land within 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn measure_pickup(pool: &PgPool, samples: usize) -> anyhow::Result<Vec<Duration>> {
    sqlx::query("TRUNCATE batisync.outbox CASCADE")
        .execute(pool)
        .await?;
    let outbox = Outbox::new(pool.clone());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handler = Arc::new(BenchHandler {
        applied: AtomicU64::new(0),
        picked: Some(tx),
    });
    let engine = Engine::new(&outbox);
    let run = DispatchSettings::default().run_length;
    engine.start(&handler, 4, Claim { keys: 16, run });
    tokio::time::sleep(Duration::from_millis(300)).await; // let the workers go idle
    let mut latencies = Vec::with_capacity(samples);
    for i in 0..samples {
        let event = NewEvent {
            entity_key: format!("pickup{i}"),
            source_version: "1".into(),
            operation: Operation::Upsert,
            payload: json!({}),
            source_modified_at: None,
        };
        let sent = Instant::now();
        outbox.capture(FLOW, &[event], None, false).await?;
        let picked = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .context("no pickup within 30 s")?
            .context("handler channel closed")?;
        latencies.push(picked.saturating_duration_since(sent));
        tokio::time::sleep(Duration::from_millis(10)).await; // back to idle
    }
    engine.stop().await;
    latencies.sort();
    Ok(latencies)
}

/// Cumulated CPU times of the machine (Linux `/proc/stat`, in clock ticks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CpuTimes {
    total: u64,
    steal: u64,
}

impl CpuTimes {
    /// `None` where `/proc/stat` does not exist (Windows) or cannot be read.
    fn read() -> Option<Self> {
        Self::parse(&std::fs::read_to_string("/proc/stat").ok()?)
    }

    /// Parses the first line: `cpu user nice system idle iowait irq softirq steal …`.
    fn parse(stat: &str) -> Option<Self> {
        let fields: Vec<u64> = stat
            .lines()
            .next()?
            .strip_prefix("cpu ")?
            .split_whitespace()
            .map(|n| n.parse().ok())
            .collect::<Option<_>>()?;
        let steal = *fields.get(7)?;
        // guest and guest_nice (fields 8 and 9) are already counted in user and nice.
        let total = fields.iter().take(8).sum();
        Some(Self { total, steal })
    }

    fn steal_share_since(&self, before: &Self) -> Option<f64> {
        let total = self.total.checked_sub(before.total)?;
        let steal = self.steal.checked_sub(before.steal)?;
        (total > 0).then(|| steal as f64 / total as f64)
    }
}

pub(crate) fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub(crate) async fn create_scratch(
    admin: &PgPool,
    settings: &Settings,
    name: &str,
) -> anyhow::Result<PgPool> {
    drop_scratch(admin, name).await;
    // Identifiers cannot be bound as parameters; `name` is built from our own pid.
    let create = format!("CREATE DATABASE \"{name}\"");
    sqlx::query(sqlx::AssertSqlSafe(create))
        .execute(admin)
        .await
        .context("creating the scratch database (the batisync role needs CREATEDB)")?;
    let mut options = crate::db::connect_options(&settings.postgres);
    options = options.database(name);
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(16)
        .connect_with(options)
        .await?;
    crate::db::migrator().run(&pool).await?;
    Ok(pool)
}

pub(crate) async fn drop_scratch(admin: &PgPool, name: &str) {
    let drop = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
    if let Err(error) = sqlx::query(sqlx::AssertSqlSafe(drop)).execute(admin).await {
        eprintln!("could not drop scratch database {name}: {error}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steal_is_the_share_of_stolen_ticks_between_two_readings() {
        let before = CpuTimes::parse("cpu  100 0 50 800 10 0 0 40 0 0\ncpu0 1 2 3\n").unwrap();
        let after = CpuTimes::parse("cpu  200 0 100 900 10 0 0 140 7 0\n").unwrap();
        assert_eq!(
            before,
            CpuTimes {
                total: 1000,
                steal: 40
            }
        );
        // 350 ticks passed, 100 of them stolen (guest time is not counted twice).
        let share = after.steal_share_since(&before).unwrap();
        assert!((share - 100.0 / 350.0).abs() < 1e-9, "{share}");
        assert_eq!(CpuTimes::parse("intr 1 2 3"), None);
        assert_eq!(CpuTimes::parse("cpu  1 2 3"), None, "no steal column");
    }
}
