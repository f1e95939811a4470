//! `batisync bench heures`: the heures flow between the in-process BatiSimply simulator
//! and a simulated ledger, in a scratch database dropped afterwards.
//!
//! 1. Catch-up: `--slots` validated slots over 30 days are polled and written (slots/s
//!    into the ledger).
//! 2. Steady state: polls while nothing changes (requests, rows read, wall and CPU time
//!    per poll), next to a baseline in the same run that only reads the window (the
//!    difference is what detecting changes costs).
//! 3. Latency: the real poller loop at `--interval-ms` (default: the flow's default) and
//!    the dispatchers; a manager validates a slot every `--validate-every-ms`; time from
//!    each validation to its ledger row (p50/p99).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DurationRound, TimeDelta, Utc};

use super::batigest::SimulatedEmployees;
use super::slot::local_minute;
use super::{FLOW, HeuresHandler, HeuresSettings, Poller, directory};
use crate::batigest::ledger::{LedgerLimits, MemoryLedger};
use crate::batisimply::sim::{SimHandle, Simulator, SlotSpec};
use crate::batisimply::{BatisimplyClient, Project};
use crate::bench::{create_scratch, drop_scratch, ms, percentile};
use crate::dispatch::{DispatchSettings, Runtime, spawn_workers};
use crate::outbox::Outbox;
use crate::settings::Settings;

/// Options of `batisync bench heures`.
#[derive(Debug, Clone, clap::Args)]
pub struct HeuresBenchArgs {
    /// Validated slots of the catch-up and steady-state measurements.
    #[arg(long, default_value_t = 20_000)]
    pub slots: usize,
    /// Polls measured while nothing changes.
    #[arg(long, default_value_t = 5)]
    pub idle_polls: usize,
    /// Poll interval of the latency measurement (default: the flow's default).
    #[arg(long)]
    pub interval_ms: Option<u64>,
    /// Duration of the latency measurement, in seconds.
    #[arg(long, default_value_t = 120)]
    pub latency_secs: u64,
    /// Time between two validations during the latency measurement.
    #[arg(long, default_value_t = 500)]
    pub validate_every_ms: u64,
    /// Dispatch workers.
    #[arg(long, default_value_t = 4)]
    pub workers: u32,
}

const EMPLOYEES: usize = 50;

/// Runs every measurement and prints the figures.
///
/// # Errors
/// When the scratch database or the simulator cannot be set up, or a step fails.
pub async fn run(settings: &Settings, args: &HeuresBenchArgs) -> anyhow::Result<()> {
    let admin = crate::db::connect(&settings.postgres).await?;
    let name = format!("batisync_bench_heures_{}", std::process::id());
    let pool = create_scratch(&admin, settings, &name).await?;
    let result = run_all(Outbox::new(pool.clone()), args).await;
    pool.close().await;
    drop_scratch(&admin, &name).await;
    result
}

struct Bench {
    sim: SimHandle,
    projects: Vec<Project>,
    client: BatisimplyClient,
    ledger: Arc<MemoryLedger>,
    employees: Arc<SimulatedEmployees>,
    outbox: Outbox,
}

fn user(n: usize) -> String {
    format!("00000000-0000-4000-a000-{n:012}")
}

async fn run_all(outbox: Outbox, args: &HeuresBenchArgs) -> anyhow::Result<()> {
    let sim = Simulator::builder().spawn("127.0.0.1:0").await?;
    let projects = sim.seed_projects(20);
    let client = BatisimplyClient::new(crate::batisimply::BatisimplySettings {
        rate_limit_per_sec: 10_000,
        rate_limit_burst: 10_000,
        ..crate::demo::simulator_settings(&sim.base_url)
    })?;
    let employees = Arc::new(SimulatedEmployees::new());
    for n in 0..EMPLOYEES {
        employees.set(&format!("SAL{n:03}"), Some(&user(n)));
    }
    let bench = Bench {
        sim,
        projects,
        client,
        ledger: Arc::new(MemoryLedger::new(LedgerLimits::default())),
        employees,
        outbox,
    };
    println!(
        "batisync bench heures — simulator in-process, SIMULATED ledger, {} validated slots over 30 days",
        args.slots
    );
    let flow_settings = Arc::new(HeuresSettings {
        days_back: 31,
        ..HeuresSettings::default()
    });
    bench.catch_up(args, &flow_settings).await?;
    bench.steady_state(args, &flow_settings).await?;
    bench.latency(args, &flow_settings).await?;
    bench.sim.shutdown().await;
    Ok(())
}

impl Bench {
    fn spec(&self, n: usize, start: chrono::DateTime<Utc>, status: &str) -> SlotSpec {
        let project = &self.projects[n % self.projects.len()];
        SlotSpec {
            user_id: user(n % EMPLOYEES),
            project_id: project.id,
            project_code: Some(project.data.code.clone()),
            start,
            end: start + TimeDelta::hours(4),
            minutes: 240,
            status: status.to_owned(),
            packed_lunch: n.is_multiple_of(2),
            journey: n.is_multiple_of(3),
        }
    }

    fn poller(&self, settings: &Arc<HeuresSettings>) -> Poller<Arc<SimulatedEmployees>> {
        Poller::new(
            self.client.clone(),
            self.outbox.pool().clone(),
            settings.clone(),
            directory(self.employees.clone(), settings),
        )
    }

    fn engine(&self, settings: &Arc<HeuresSettings>, workers: u32) -> anyhow::Result<Runtime> {
        let rt = Runtime::new(self.outbox.clone(), Duration::from_secs(5));
        let listen = crate::outbox::notify::listen_until_stopped(
            self.outbox.pool().clone(),
            rt.wakers.clone(),
            rt.stop.clone(),
        );
        rt.tracker.spawn(listen);
        let handler = Arc::new(HeuresHandler::new(
            self.ledger.clone(),
            directory(self.employees.clone(), settings),
            self.client.clone(),
            self.outbox.pool().clone(),
            settings.clone(),
        )?);
        let dispatch = DispatchSettings {
            workers,
            batch_size: 64,
            ..DispatchSettings::default()
        };
        spawn_workers(&rt, FLOW, handler, &dispatch);
        Ok(rt)
    }

    async fn catch_up(
        &self,
        args: &HeuresBenchArgs,
        settings: &Arc<HeuresSettings>,
    ) -> anyhow::Result<()> {
        let first = (Utc::now() - TimeDelta::days(30)).duration_trunc(TimeDelta::minutes(1))?;
        let step = TimeDelta::seconds(30 * 24 * 3600 / i64::try_from(args.slots.max(1))?);
        for n in 0..args.slots {
            let start = first + step * i32::try_from(n)?;
            self.sim.insert_slot(&self.spec(n, start, "VALIDATED"));
        }
        let mut poller = self.poller(settings);
        let started = Instant::now();
        let report = poller.try_poll_once().await?;
        let polled = started.elapsed();
        let rt = self.engine(settings, args.workers)?;
        let deadline = Instant::now() + Duration::from_secs(900);
        while self.ledger.len() < args.slots {
            anyhow::ensure!(
                Instant::now() < deadline,
                "catch-up did not finish in 15 minutes"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let total = started.elapsed();
        stop(rt).await;
        let rate = args.slots as f64 / total.as_secs_f64();
        println!(
            "catch-up: {} slots captured in {:.0} ms, all in the ledger after {:.1} s → {:.0} slots/s ({} workers)",
            report.captured.inserted,
            ms(polled),
            total.as_secs_f64(),
            rate,
            args.workers
        );
        Ok(())
    }

    async fn steady_state(
        &self,
        args: &HeuresBenchArgs,
        settings: &Arc<HeuresSettings>,
    ) -> anyhow::Result<()> {
        // The default poll (the last `recent_days` between full reads), a poll that
        // reads the whole window, and the baseline: the whole window read without
        // comparing anything.
        let full_settings = Arc::new(HeuresSettings {
            recent_days: settings.days_back,
            ..(**settings).clone()
        });
        let mut recent = self.poller(settings);
        let mut full = self.poller(&full_settings);
        let (mut recents, mut fulls, mut reads) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..args.idle_polls.max(1) {
            for (poller, samples) in [(&mut full, &mut fulls), (&mut recent, &mut recents)] {
                let cost = Cost::start(&self.sim);
                let report = poller.try_poll_once().await?;
                anyhow::ensure!(
                    report.captured.inserted == 0,
                    "an idle poll captured events"
                );
                samples.push((cost.stop(&self.sim), report.read));
            }
            let cost = Cost::start(&self.sim);
            let now = Utc::now();
            let listing = self
                .client
                .list_time_slots(
                    now - TimeDelta::days(i64::from(settings.days_back)),
                    now + TimeDelta::days(i64::from(settings.days_ahead)),
                )
                .await?;
            reads.push((cost.stop(&self.sim), listing.records.len()));
        }
        let (r, f, b) = (Cost::mean(&recents), Cost::mean(&fulls), Cost::mean(&reads));
        println!(
            "idle polls (nothing changed, {} slots in the {}-day window), 0 events each:",
            fulls[0].1, settings.days_back
        );
        let line = |what: &str, m: &Measured, rows: usize| {
            println!(
                "  {what:<44} {:>6.0} ms wall, {:>7} CPU, {:>5.1} requests, {rows:>6} rows read",
                m.wall_ms,
                cpu_text(m.cpu_ms),
                m.requests
            );
        };
        line(
            &format!(
                "every poll (last {} days + {} ahead)",
                settings.recent_days, settings.days_ahead
            ),
            &r,
            recents[0].1,
        );
        line(
            &format!("every {} s: whole window", settings.deletion_sweep_secs),
            &f,
            fulls[0].1,
        );
        line("baseline: whole window read, no comparison", &b, reads[0].1);
        println!(
            "  → a whole-window poll costs x{:.2} the bare read; the usual poll costs x{:.2} the whole-window poll ({:.1} vs {:.1} requests)",
            f.wall_ms / b.wall_ms.max(0.001),
            r.wall_ms / f.wall_ms.max(0.001),
            r.requests,
            f.requests
        );
        println!("  (CPU is the whole process, the in-process simulator's JSON included)");
        Ok(())
    }

    async fn latency(
        &self,
        args: &HeuresBenchArgs,
        settings: &Arc<HeuresSettings>,
    ) -> anyhow::Result<()> {
        let interval = args
            .interval_ms
            .unwrap_or(HeuresSettings::default().poll_interval_ms);
        let settings = Arc::new(HeuresSettings {
            poll_interval_ms: interval,
            ..(**settings).clone()
        });
        let validations =
            usize::try_from(args.latency_secs * 1000 / args.validate_every_ms.max(1))?;
        // Pending slots on the minute, each on its own key (tomorrow onwards: apart from
        // the catch-up's past slots), waiting for a manager.
        let first = (Utc::now() + TimeDelta::days(1)).duration_trunc(TimeDelta::minutes(1))?;
        let mut pending = Vec::with_capacity(validations);
        for n in 0..validations {
            let start = first + TimeDelta::minutes(7) * i32::try_from(n)?;
            let spec = self.spec(n, start, "PENDING");
            let local = local_minute(start, chrono_tz::Europe::Paris, settings.minute_rounding);
            pending.push((
                self.sim.insert_slot(&spec),
                (format!("SAL{:03}", n % EMPLOYEES), local),
            ));
        }
        let rt = self.engine(&settings, args.workers)?;
        let poller = self.poller(&settings);
        rt.tracker.spawn(poller.run_until_stopped(rt.stop.clone()));
        // Let the loop capture the pending slots first.
        tokio::time::sleep(Duration::from_millis(interval + 500)).await;
        let mut validated_at: HashMap<(String, chrono::NaiveDateTime), Instant> = HashMap::new();
        let mut arrived: HashMap<(String, chrono::NaiveDateTime), Duration> = HashMap::new();
        let every = Duration::from_millis(args.validate_every_ms.max(1));
        let mut next = Instant::now();
        let mut queue = pending.into_iter();
        let deadline = Instant::now()
            + Duration::from_secs(args.latency_secs)
            + Duration::from_millis(3 * interval + 5_000);
        while Instant::now() < deadline && (arrived.len() < validations) {
            if Instant::now() >= next {
                if let Some((id, key)) = queue.next() {
                    self.sim
                        .update_slot(&id, |s| s.status = "VALIDATED".to_owned())?;
                    validated_at.insert(key, Instant::now());
                }
                next += every;
            }
            for row in self.ledger.rows() {
                let key = (row.key.employee.clone(), row.key.start);
                if let Some(at) = validated_at.get(&key) {
                    arrived.entry(key).or_insert_with(|| at.elapsed());
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop(rt).await;
        let mut latencies: Vec<Duration> = arrived.into_values().collect();
        latencies.sort();
        println!(
            "validated → ledger row, poll every {} ms, {} workers: {} of {} slots arrived; p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            interval,
            args.workers,
            latencies.len(),
            validated_at.len(),
            ms(percentile(&latencies, 0.50)),
            ms(percentile(&latencies, 0.99)),
            ms(latencies.last().copied().unwrap_or_default()),
        );
        Ok(())
    }
}

async fn stop(rt: Runtime) {
    rt.stop.cancel();
    rt.tracker.close();
    rt.tracker.wait().await;
}

/// Cost of one step: wall time, process CPU time, simulator requests.
struct Cost {
    started: Instant,
    cpu: Option<Duration>,
    requests: u64,
}

struct Measured {
    wall_ms: f64,
    cpu_ms: Option<f64>,
    requests: f64,
}

impl Cost {
    fn start(sim: &SimHandle) -> Self {
        Self {
            started: Instant::now(),
            cpu: process_cpu(),
            requests: requests(sim),
        }
    }

    fn stop(self, sim: &SimHandle) -> Measured {
        Measured {
            wall_ms: ms(self.started.elapsed()),
            cpu_ms: self
                .cpu
                .zip(process_cpu())
                .map(|(before, after)| ms(after.saturating_sub(before))),
            requests: (requests(sim) - self.requests) as f64,
        }
    }

    fn mean(samples: &[(Measured, usize)]) -> Measured {
        let n = samples.len().max(1) as f64;
        let cpu: Option<f64> = samples.iter().map(|(m, _)| m.cpu_ms).sum::<Option<f64>>();
        Measured {
            wall_ms: samples.iter().map(|(m, _)| m.wall_ms).sum::<f64>() / n,
            cpu_ms: cpu.map(|c| c / n),
            requests: samples.iter().map(|(m, _)| m.requests).sum::<f64>() / n,
        }
    }
}

fn requests(sim: &SimHandle) -> u64 {
    sim.stats().routes.values().sum()
}

fn cpu_text(cpu_ms: Option<f64>) -> String {
    cpu_ms.map_or_else(|| "n/a".to_owned(), |c| format!("{c:.0} ms"))
}

/// User + system CPU time of this process (Linux `/proc/self/stat`, in USER_HZ = 100
/// ticks per second); `None` elsewhere.
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}
