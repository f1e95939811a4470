//! `batisync bench chantiers`: the whole flow (simulated Batigest → poller → outbox →
//! dispatchers → BatiSimply simulator over HTTP), in a scratch database per phase.
//!
//! - `steady`: the simulated Batigest makes `--changes-per-sec` label edits; each edit
//!   is timed until the handler has written it to the simulator (propagation latency),
//!   with the process's CPU time and peak memory;
//! - `limited`: initial load of `--job-sites` under a `--rate-limit` requests/s client
//!   limit, the simulator enforcing the same limit; compared with the ideal
//!   (one request per job site at that rate);
//! - `unlimited`: the same load with the limit lifted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::{ChantiersHandler, ChantiersSettings, FLOW, Poller, SimulatedBatigest};
use crate::app::Application;
use crate::batigest::Cell;
use crate::batigest::spec::chantier_role as role;
use crate::batisimply::sim::{Faults, SimHandle, Simulator};
use crate::batisimply::{BatisimplyClient, BatisimplySettings};
use crate::dispatch::{Applied, DispatchError, DispatchSettings, Handler};
use crate::outbox::Event;
use crate::outbox::loads::{self, LoadProgress};
use crate::settings::Settings;

/// What `bench chantiers` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Phase {
    /// Edits at a steady rate: propagation latency, CPU, memory.
    Steady,
    /// Initial load under the rate limit.
    Limited,
    /// Initial load with the limit lifted.
    Unlimited,
}

/// Options of `batisync bench chantiers`.
#[derive(Debug, Clone, clap::Args)]
pub struct ChantiersBenchArgs {
    /// Phases to run, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "steady,limited,unlimited"
    )]
    pub phases: Vec<Phase>,
    /// Duration of the steady phase, in seconds.
    #[arg(long, default_value_t = 60)]
    pub duration_secs: u64,
    /// Changes per second made in the simulated Batigest during the steady phase.
    #[arg(long, default_value_t = 50)]
    pub changes_per_sec: u32,
    /// Poller interval, in milliseconds.
    #[arg(long, default_value_t = 1_000)]
    pub poll_interval_ms: u64,
    /// Job sites present (and loaded first) in the steady phase.
    #[arg(long, default_value_t = 1_000)]
    pub steady_job_sites: usize,
    /// Job sites of the initial-load phases.
    #[arg(long, default_value_t = 5_000)]
    pub job_sites: usize,
    /// BatiSimply rate limit of the `limited` phase, in requests per second (client
    /// setting and simulator allowance alike).
    #[arg(long, default_value_t = 20)]
    pub rate_limit: u32,
}

/// Runs the phases asked for and prints their figures.
///
/// # Errors
/// When a scratch database, the simulator or the flow cannot start, or a phase does
/// not finish within its deadline.
pub async fn run(settings: &Settings, args: &ChantiersBenchArgs) -> anyhow::Result<()> {
    let admin = crate::db::connect(&settings.postgres).await?;
    println!(
        "chantiers bench: phases {:?}, poll every {} ms, dispatch {} workers x batch {}",
        args.phases, args.poll_interval_ms, settings.dispatch.workers, settings.dispatch.batch_size
    );
    for (n, phase) in args.phases.iter().enumerate() {
        let name = format!("batisync_bench_{}_{n}", std::process::id());
        let pool = crate::bench::create_scratch(&admin, settings, &name).await?;
        pool.close().await;
        let scratch = scratch_settings(settings, &name);
        let result = match phase {
            Phase::Steady => steady(&scratch, args).await,
            Phase::Limited => load(&scratch, args, Some(args.rate_limit)).await,
            Phase::Unlimited => load(&scratch, args, None).await,
        };
        crate::bench::drop_scratch(&admin, &name).await;
        result?;
    }
    Ok(())
}

/// The settings of a worker on the scratch database `database` (the configured
/// PostgreSQL server, outbox and dispatch settings; no SQL Server).
fn scratch_settings(settings: &Settings, database: &str) -> Settings {
    let mut postgres = settings.postgres.clone();
    postgres.database = database.to_owned();
    Settings {
        postgres,
        outbox: settings.outbox.clone(),
        dispatch: settings.dispatch.clone(),
        admin: settings.admin.clone(),
        log: settings.log.clone(),
        batisimply: settings.batisimply.clone(),
        chantiers: settings.chantiers.clone(),
        ..Settings::default()
    }
}

/// Edits waiting to be seen in BatiSimply, and the latencies of those that were.
#[derive(Default)]
struct Probe {
    /// Code → (edit number, when it was made), oldest first.
    pending: Mutex<HashMap<String, Vec<(u64, Instant)>>>,
    latencies: Mutex<Vec<Duration>>,
}

impl Probe {
    fn edited(&self, code: &str, seq: u64) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        pending
            .entry(code.to_owned())
            .or_default()
            .push((seq, Instant::now()));
    }

    /// A project was written with the label of edit `seq`: that edit and the older
    /// ones of the same code (merged into it) have propagated.
    fn delivered(&self, code: &str, seq: u64) {
        let now = Instant::now();
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(edits) = pending.get_mut(code) else {
            return;
        };
        let mut latencies = self
            .latencies
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        edits.retain(|(s, at)| {
            let seen = *s <= seq;
            if seen {
                latencies.push(now.saturating_duration_since(*at));
            }
            !seen
        });
    }

    fn outstanding(&self) -> usize {
        let pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        pending.values().map(Vec::len).sum()
    }

    fn sorted_latencies(&self) -> Vec<Duration> {
        let mut all = self
            .latencies
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        all.sort();
        all
    }
}

/// The real handler, timing the edits it delivers.
struct TimedHandler {
    inner: ChantiersHandler,
    probe: Arc<Probe>,
}

impl Handler for TimedHandler {
    async fn apply(&self, event: &Event) -> Result<Applied, DispatchError> {
        let applied = self.inner.apply_event(event).await?;
        let seq = event
            .payload
            .get("label")
            .and_then(serde_json::Value::as_str)
            .and_then(|label| label.strip_prefix(EDIT_PREFIX))
            .and_then(|n| n.parse().ok());
        if let Some(seq) = seq {
            self.probe.delivered(&event.entity_key, seq);
        }
        Ok(applied)
    }
}

const EDIT_PREFIX: &str = "bench edit ";

/// One worker process between a simulated Batigest and the simulator.
struct Rig {
    sim: SimHandle,
    client: BatisimplyClient,
    batigest: SimulatedBatigest,
    probe: Arc<Probe>,
    pool: sqlx::PgPool,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Rig {
    /// Starts the worker on `settings`' database; `batigest` is read from the first poll.
    async fn start(
        settings: &Settings,
        args: &ChantiersBenchArgs,
        rate: Option<u32>,
        batigest: SimulatedBatigest,
    ) -> anyhow::Result<Self> {
        let faults = Faults {
            allowed_rate_per_sec: rate,
            ..Faults::default()
        };
        let sim = Simulator::builder()
            .faults(faults)
            .spawn("127.0.0.1:0")
            .await
            .context("starting the BatiSimply simulator")?;
        let client = BatisimplyClient::new(client_settings(settings, &sim, rate))?;
        let mut app_settings = scratch_settings(settings, &settings.postgres.database);
        app_settings.admin.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        app_settings.outbox.maintenance_interval_ms = 1_000;
        let flow = Arc::new(ChantiersSettings {
            enabled: true,
            poll_interval_ms: args.poll_interval_ms,
            ..settings.chantiers.clone()
        });
        let dispatch: DispatchSettings = flow.dispatch_or(&settings.dispatch).clone();
        let app = Application::build(app_settings, None).await?;
        let pool = app.pool().clone();
        let probe = Arc::new(Probe::default());
        let handler = Arc::new(TimedHandler {
            inner: ChantiersHandler::new(client.clone(), pool.clone(), flow.clone()),
            probe: probe.clone(),
        });
        let (source, poller_pool) = (batigest.clone(), pool.clone());
        let app = app
            .with_flow(FLOW, handler, dispatch)
            .with_task("chantiers poller", move |rt| {
                Poller::new(source, poller_pool, flow).run_until_stopped(rt.stop.clone())
            });
        let stop = CancellationToken::new();
        let task = tokio::spawn(app.run_until_stopped(stop.clone()));
        Ok(Self {
            sim,
            client,
            batigest,
            probe,
            pool,
            stop,
            task,
        })
    }

    /// Waits until the latest load of the flow is finished, and returns it.
    async fn wait_for_load(&self, deadline: Duration) -> anyhow::Result<LoadProgress> {
        let started = Instant::now();
        loop {
            // The maintenance task may mark it finished first: read it back either way.
            loads::finish_completed(&self.pool).await?;
            let latest = loads::latest(&self.pool).await?;
            if let Some(done) = latest
                .into_iter()
                .find(|l| l.flow == FLOW && !l.is_running())
            {
                return Ok(done);
            }
            anyhow::ensure!(
                started.elapsed() < deadline,
                "the load did not finish within {} s",
                deadline.as_secs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        let result = self.task.await.context("worker task")?;
        self.sim.shutdown().await;
        result
    }
}

fn client_settings(settings: &Settings, sim: &SimHandle, rate: Option<u32>) -> BatisimplySettings {
    let limit = rate.unwrap_or(1_000_000);
    BatisimplySettings {
        rate_limit_per_sec: limit,
        rate_limit_burst: limit,
        max_concurrent_requests: settings.batisimply.max_concurrent_requests,
        ..crate::demo::simulator_settings(&sim.base_url)
    }
}

async fn steady(settings: &Settings, args: &ChantiersBenchArgs) -> anyhow::Result<()> {
    let batigest = SimulatedBatigest::new();
    batigest.seed(1, args.steady_job_sites);
    let rig = Rig::start(settings, args, None, batigest).await?;
    let load = rig.wait_for_load(Duration::from_secs(600)).await?;
    println!(
        "\nsteady state: {} job sites loaded first ({}), then {} changes/s for {} s, poll every {} ms, limit lifted",
        args.steady_job_sites,
        load.summary(),
        args.changes_per_sec,
        args.duration_secs,
        args.poll_interval_ms
    );
    let (cpu_before, requests_before) = (cpu_seconds(), rig.client.stats().requests_sent);
    let started = Instant::now();
    let changes = edit_for(&rig, args).await;
    let edit_time = started.elapsed();
    let drain_deadline = Instant::now() + Duration::from_secs(60);
    while rig.probe.outstanding() > 0 && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let wall = started.elapsed();
    let (cpu_after, requests) = (cpu_seconds(), rig.client.stats().requests_sent);
    let latencies = rig.probe.sorted_latencies();
    let outstanding = rig.probe.outstanding();
    rig.stop().await?;
    println!(
        "  changes made     {changes} in {:.1} s ({:.1}/s), propagated {}, not propagated {outstanding}",
        edit_time.as_secs_f64(),
        changes as f64 / edit_time.as_secs_f64(),
        latencies.len()
    );
    println!(
        "  propagation      p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms (change in Batigest → project written; target p99 < 1500 ms)",
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
        ms(latencies.last().copied().unwrap_or_default())
    );
    println!(
        "  API requests     {:.2} per change",
        (requests - requests_before) as f64 / changes.max(1) as f64
    );
    let cpu = match (cpu_before, cpu_after) {
        (Some(before), Some(after)) => format!(
            "{:.2} s over {:.1} s ({:.1} % of one core; this process: worker and simulator, not PostgreSQL)",
            after - before,
            wall.as_secs_f64(),
            (after - before) / wall.as_secs_f64() * 100.0
        ),
        _ => "n/a (no /proc/self/stat on this system)".to_owned(),
    };
    println!("  CPU time         {cpu}");
    let memory = peak_memory_kib().map_or_else(
        || "n/a (no /proc/self/status on this system)".to_owned(),
        |kib| format!("{:.1} MiB (VmHWM, whole run)", kib as f64 / 1024.0),
    );
    println!("  peak memory      {memory}");
    Ok(())
}

/// Edits random job sites at `changes_per_sec` for `duration_secs`; returns the count.
async fn edit_for(rig: &Rig, args: &ChantiersBenchArgs) -> u64 {
    let period = Duration::from_secs_f64(1.0 / f64::from(args.changes_per_sec.max(1)));
    let mut tick = tokio::time::interval(period);
    let end = Instant::now() + Duration::from_secs(args.duration_secs);
    let mut seq = 0;
    while Instant::now() < end {
        tick.tick().await;
        seq += 1;
        let code = format!("{:08}", 1 + fastrand::usize(..args.steady_job_sites.max(1)));
        // Timed before the edit, so the poller can never see it first.
        rig.probe.edited(&code, seq);
        let label = Cell::Text(format!("{EDIT_PREFIX}{seq}"));
        rig.batigest.edit(&code, role::LABEL, label);
    }
    seq
}

async fn load(
    settings: &Settings,
    args: &ChantiersBenchArgs,
    rate: Option<u32>,
) -> anyhow::Result<()> {
    let batigest = SimulatedBatigest::new();
    batigest.seed(1, args.job_sites);
    let started = Instant::now();
    let rig = Rig::start(settings, args, rate, batigest).await?;
    let load = rig.wait_for_load(Duration::from_secs(3_600)).await?;
    let elapsed = started.elapsed();
    let (client, sim) = (rig.client.stats(), rig.sim.stats());
    let projects = rig.sim.projects().len();
    rig.stop().await?;
    let limit = rate.map_or_else(|| "limit lifted".to_owned(), |r| format!("{r} requests/s"));
    println!(
        "\ninitial load of {} job sites, {limit}: {}",
        args.job_sites,
        load.summary()
    );
    println!(
        "  total            {:.1} s, {projects} projects in the simulator, {} dead",
        elapsed.as_secs_f64(),
        load.dead
    );
    println!(
        "  requests         {} sent ({:.1}/s), {} retries, {} answered 429",
        client.requests_sent,
        client.requests_sent as f64 / elapsed.as_secs_f64(),
        client.retries,
        sim.served_429
    );
    let routes: Vec<String> = sim
        .routes
        .iter()
        .map(|(r, n)| format!("{r}: {n}"))
        .collect();
    println!("  by route         {}", routes.join(", "));
    if let Some(rate) = rate {
        let ideal = args.job_sites as f64 / f64::from(rate);
        let sent = client.requests_sent as f64 / f64::from(rate);
        println!(
            "  vs ideal         {ideal:.1} s (one request per job site at {rate}/s): x{:.3} ({:+.1} %); \
             {sent:.1} s for the requests actually sent: x{:.3}",
            elapsed.as_secs_f64() / ideal,
            (elapsed.as_secs_f64() / ideal - 1.0) * 100.0,
            elapsed.as_secs_f64() / sent
        );
    } else {
        println!(
            "  throughput       {:.0} job sites/s",
            args.job_sites as f64 / elapsed.as_secs_f64()
        );
    }
    Ok(())
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Clock ticks per second of `/proc/self/stat` (`USER_HZ`, 100 on every Linux ABI
/// batisync targets; reading `sysconf` would need the `libc` crate).
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// User + system CPU time of this process, in seconds; `None` where `/proc` is missing
/// (Windows, macOS).
fn cpu_seconds() -> Option<f64> {
    parse_cpu_ticks(&std::fs::read_to_string("/proc/self/stat").ok()?)
        .map(|ticks| ticks as f64 / CLOCK_TICKS_PER_SEC)
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line; the command name
/// (field 2) may hold spaces, so fields are counted after its closing parenthesis.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let (_, after_name) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Peak resident memory (`VmHWM`) of this process in KiB; `None` without `/proc`.
fn peak_memory_kib() -> Option<u64> {
    parse_vm_hwm(&std::fs::read_to_string("/proc/self/status").ok()?)
}

fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_read_after_the_command_name_even_with_spaces_in_it() {
        let stat = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 2000 0 0 0 731 120 0 0 20 0 9 0";
        assert_eq!(parse_cpu_ticks(stat), Some(851));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn peak_memory_is_the_vm_hwm_line() {
        let status =
            "Name:\tbatisync\nVmPeak:\t  900000 kB\nVmHWM:\t   51234 kB\nVmRSS:\t 40000 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(51_234));
        assert_eq!(parse_vm_hwm("Name:\tx\n"), None);
    }

    #[test]
    fn a_delivered_edit_also_settles_the_older_edits_it_merged() {
        let probe = Probe::default();
        probe.edited("00000001", 1);
        probe.edited("00000001", 3);
        probe.edited("00000001", 7);
        probe.edited("00000002", 2);
        probe.delivered("00000001", 3);
        assert_eq!(
            (probe.outstanding(), probe.sorted_latencies().len()),
            (2, 2)
        );
        probe.delivered("00000002", 2);
        probe.delivered("00000001", 7);
        assert_eq!(
            (probe.outstanding(), probe.sorted_latencies().len()),
            (0, 4)
        );
    }
}
