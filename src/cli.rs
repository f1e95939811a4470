//! Command line: parsing and the commands that are not the long-running worker.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::outbox::{Outbox, inspect};
use crate::settings::Settings;

/// batisync: keeps Batigest and BatiSimply in step through a PostgreSQL outbox.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// Settings file (TOML); environment variables BATISYNC__SECTION__KEY override it.
    #[arg(long, global = true, env = "BATISYNC_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply the database migrations of the batisync schema.
    Migrate,
    /// Run the worker until SIGINT/SIGTERM.
    Run,
    /// Run the real pipeline between a SIMULATED Batigest and a SIMULATED BatiSimply
    /// (PostgreSQL is the configured one; `scripts/demo.sh` starts a local cluster).
    Demo,
    /// Read a flow's whole source again and send what changed (initial load again).
    Resync {
        /// The flow to resynchronise.
        flow: ResyncFlow,
    },
    /// Check that everything batisync needs is reachable and current.
    Check {
        /// Also list the mapped SQL Server tables as the server has them (columns, keys,
        /// triggers, Change Tracking) and the SuiviMO columns an insert would leave empty.
        #[arg(long)]
        describe: bool,
    },
    /// Backlog per flow and status, oldest pending age, dead letters.
    Status,
    /// Inspect the outbox and re-drive dead letters.
    #[command(subcommand)]
    Outbox(OutboxCommand),
    /// Measure performance (not a test: prints figures).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Web console administration: sign-in password, API token.
    #[command(subcommand)]
    Admin(AdminCommand),
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Set the console password: reads it from standard input (twice on a terminal)
    /// and writes its Argon2id hash to `admin.password_hash` in the settings file.
    SetPassword,
    /// Create a bearer token for the JSON API: prints it once and writes its SHA-256 to
    /// `admin.api_token_sha256` in the settings file.
    NewApiToken,
}

/// Flows `batisync resync` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ResyncFlow {
    /// Batigest job sites → BatiSimply projects.
    Chantiers,
    /// Validated BatiSimply time slots → Batigest SuiviMO.
    Heures,
}

#[derive(Debug, Subcommand)]
pub enum OutboxCommand {
    /// Newest events first.
    List {
        #[arg(long)]
        flow: Option<String>,
        /// pending, in_flight, done, dead or superseded
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        key: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// One event in full: payload, attempts, every error.
    Show { id: i64 },
    /// Send dead letters again (after fixing their cause).
    Redrive {
        /// Event ids to re-drive.
        ids: Vec<i64>,
        /// Re-drive every dead letter (of --flow if given).
        #[arg(long, conflicts_with = "ids")]
        all_dead: bool,
        #[arg(long, requires = "all_dead")]
        flow: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Capture then drain events through a no-op handler, in a scratch database.
    Outbox(crate::bench::OutboxBenchArgs),
    /// BatiSimply client throughput and rate-limit accuracy against the simulator.
    Batisimply,
    /// The chantiers flow end to end: propagation latency at a steady rate of changes,
    /// initial load under the rate limit and without it (scratch databases).
    Chantiers(crate::flows::chantiers::bench::ChantiersBenchArgs),
    /// Flow heures: catch-up rate, idle poll cost, validation → ledger latency.
    Heures(crate::flows::heures::bench::HeuresBenchArgs),
    /// The SQL Server half against a real TDS server: snapshot-diff capture and SuiviMO
    /// writes, each against a baseline (bare SELECT, bare INSERT).
    Batigest(crate::batigest::bench::BatigestBenchArgs),
}

/// `batisync migrate`.
///
/// # Errors
/// When PostgreSQL is unreachable or a migration fails.
pub async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let pool = crate::db::connect(&settings.postgres).await?;
    crate::db::migrator()
        .run(&pool)
        .await
        .context("applying migrations")?;
    let status = crate::db::migration_status(&pool).await?;
    eprintln!(
        "migrations appliquées / migrations applied: {}",
        status.applied
    );
    Ok(())
}

/// `batisync check`: every step prints OK or what to fix, then the command fails if
/// any step failed.
///
/// # Errors
/// When any check fails (after printing all of them).
pub async fn check(settings: &Settings, describe: bool) -> anyhow::Result<()> {
    let postgres_ok = check_postgres(settings).await;
    let sqlserver_ok = check_sqlserver(settings).await;
    let batisimply_ok = check_batisimply(settings).await;
    let described_ok = !describe || describe_sqlserver(settings).await;
    anyhow::ensure!(
        postgres_ok && sqlserver_ok && batisimply_ok && described_ok,
        "check failed"
    );
    Ok(())
}

/// `check --describe`: the mapped tables on stdout; false when an insert into SuiviMO
/// would fail.
async fn describe_sqlserver(settings: &Settings) -> bool {
    if settings.batigest.database.is_empty() {
        return true;
    }
    match crate::batigest::describe::describe(&settings.batigest).await {
        Ok(description) => {
            println!("{description}");
            let blocking = description.blocking();
            if !blocking.is_empty() {
                eprintln!(
                    "[ÉCHEC]  SQL Server SuiviMO: colonnes bloquantes / blocking columns: {} \
                     → [batigest.suivimo_defaults]",
                    blocking.join(", ")
                );
            }
            blocking.is_empty()
        }
        Err(error) => {
            eprintln!("[ÉCHEC]  SQL Server describe: {error}");
            false
        }
    }
}

async fn check_sqlserver(settings: &Settings) -> bool {
    if settings.batigest.database.is_empty() {
        eprintln!(
            "[--]     SQL Server non configuré (batigest.database vide) / not configured \
             (batigest.database is empty)"
        );
        return true;
    }
    let report = crate::batigest::check_sqlserver(&settings.batigest).await;
    for step in &report.steps {
        match &step.failure {
            None => eprintln!("[OK]     SQL Server {} {}", step.name, step.detail),
            Some(message) => eprintln!("[ÉCHEC]  SQL Server {}: {message}", step.name),
        }
    }
    report.is_ok()
}

async fn check_postgres(settings: &Settings) -> bool {
    let pool = match crate::db::connect(&settings.postgres).await {
        Ok(pool) => {
            eprintln!("[OK]     PostgreSQL joignable / reachable");
            pool
        }
        Err(error) => {
            eprintln!("[ÉCHEC]  {error}");
            return false;
        }
    };
    match crate::db::migration_status(&pool).await {
        Ok(status) if status.is_current() => {
            eprintln!(
                "[OK]     schéma à jour / schema current ({} migrations)",
                status.applied
            );
            true
        }
        Ok(status) => {
            eprintln!(
                "[ÉCHEC]  schéma pas à jour / schema not current: pending {:?}, modified {:?} \
                 → lancez / run `batisync migrate`",
                status.pending, status.modified
            );
            false
        }
        Err(error) => {
            eprintln!("[ÉCHEC]  PostgreSQL: {error}");
            false
        }
    }
}

async fn check_batisimply(settings: &Settings) -> bool {
    if settings.batisimply.client_id.is_empty() {
        eprintln!(
            "[--]     BatiSimply non configuré (batisimply.client_id vide) / not configured \
             (batisimply.client_id is empty)"
        );
        return true;
    }
    let client = match crate::batisimply::BatisimplyClient::new(settings.batisimply.clone()) {
        Ok(client) => client,
        Err(error) => {
            eprintln!(
                "[ÉCHEC]  BatiSimply: {}",
                crate::batisimply::explain(&error)
            );
            return false;
        }
    };
    let report = client.check().await;
    for step in &report.steps {
        match &step.failure {
            None => eprintln!(
                "[OK]     BatiSimply {:?} ({} ms)",
                step.step,
                step.elapsed.as_millis()
            ),
            Some(message) => eprintln!("[ÉCHEC]  BatiSimply {:?}: {message}", step.step),
        }
    }
    report.is_ok()
}

/// `batisync resync chantiers|heures`: forgets the source cursor (and capture hashes),
/// so the poller that holds the lock reads everything again at its next poll; each
/// target is compared and only what differs is written.
///
/// # Errors
/// When PostgreSQL is unreachable.
pub async fn resync(settings: &Settings, flow: ResyncFlow) -> anyhow::Result<()> {
    let pool = crate::db::connect(&settings.postgres).await?;
    let (forgotten, what) = match flow {
        ResyncFlow::Chantiers => {
            let sources = [
                crate::flows::chantiers::source::sql_server_source_name(&settings.batigest),
                crate::flows::chantiers::simulated::SIMULATED_SOURCE.to_owned(),
            ];
            let forgotten = crate::flows::chantiers::request_resync(&pool, &sources)
                .await
                .context("forgetting the chantiers cursor")?;
            (forgotten, "every chantier")
        }
        ResyncFlow::Heures => {
            let forgotten = crate::flows::heures::request_resync(&pool)
                .await
                .context("forgetting the time-slot cursor")?;
            (forgotten, "every time slot of the watched window")
        }
    };
    println!(
        "relecture complète demandée / full re-read requested ({forgotten} curseur(s) / cursor(s) \
         forgotten): the running poller enqueues {what} at its next poll"
    );
    Ok(())
}

/// `batisync status`.
///
/// # Errors
/// When PostgreSQL is unreachable.
pub async fn status(settings: &Settings) -> anyhow::Result<()> {
    let pool = crate::db::connect(&settings.postgres).await?;
    print_loads(&crate::outbox::loads::latest(&pool).await?);
    let lines = inspect::backlog(&pool).await?;
    if lines.is_empty() {
        println!("Rien en attente, aucune lettre morte / nothing waiting, no dead letters.");
        return Ok(());
    }
    println!(
        "{:<12} {:<10} {:>9} {:>14}",
        "flow", "status", "events", "oldest age"
    );
    for line in &lines {
        let age = line
            .oldest_age_seconds
            .map_or_else(String::new, |s| format_age(s as u64));
        println!(
            "{:<12} {:<10} {:>9} {:>14}",
            line.flow, line.status, line.events, age
        );
    }
    let dead: i64 = lines
        .iter()
        .filter(|l| l.status == "dead")
        .map(|l| l.events)
        .sum();
    if dead > 0 {
        println!(
            "\n{dead} lettre(s) morte(s) / dead letter(s): `batisync outbox list --status dead`"
        );
    }
    Ok(())
}

/// Running loads first, with done/total, rate and ETA; then the last finished one of
/// each other flow.
fn print_loads(loads: &[crate::outbox::loads::LoadProgress]) {
    for load in loads.iter().filter(|l| l.is_running()) {
        println!(
            "chargement complet en cours / full load running  {:<12} {}",
            load.flow,
            load.summary()
        );
    }
    for load in loads.iter().filter(|l| !l.is_running()) {
        let finished = load
            .finished_at
            .map_or_else(String::new, |at| at.format("%Y-%m-%d %H:%M:%S").to_string());
        println!(
            "dernier chargement / last full load  {:<12} {} (fini / finished {finished})",
            load.flow,
            load.summary()
        );
    }
    if !loads.is_empty() {
        println!();
    }
}

fn format_age(seconds: u64) -> String {
    match seconds {
        s if s < 120 => format!("{s} s"),
        s if s < 7_200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3_600),
        s => format!("{} d", s / 86_400),
    }
}

/// `batisync outbox …`.
///
/// # Errors
/// When PostgreSQL is unreachable, or `show` names an unknown event.
pub async fn outbox(settings: &Settings, command: OutboxCommand) -> anyhow::Result<()> {
    let pool = crate::db::connect(&settings.postgres).await?;
    match command {
        OutboxCommand::List {
            flow,
            status,
            key,
            limit,
        } => {
            let filter = inspect::ListFilter {
                flow,
                status,
                key,
                before_id: None,
                limit,
            };
            for e in inspect::list(&pool, &filter).await? {
                println!(
                    "{:>8} {:<10} {:<16} {:<7} {:<10} att={} {} {}",
                    e.id,
                    e.flow,
                    e.entity_key,
                    e.operation,
                    e.status,
                    e.attempts,
                    e.captured_at.format("%Y-%m-%d %H:%M:%S"),
                    e.last_error.or(e.outcome).unwrap_or_default()
                );
            }
        }
        OutboxCommand::Show { id } => {
            let detail = inspect::show(&pool, id)
                .await?
                .with_context(|| format!("aucun événement / no event with id {id}"))?;
            print_detail(&detail)?;
        }
        OutboxCommand::Redrive {
            ids,
            all_dead,
            flow,
        } => {
            anyhow::ensure!(all_dead || !ids.is_empty(), "give event ids or --all-dead");
            let outbox = Outbox::new(pool);
            let report = if all_dead {
                outbox.redrive_all_dead(flow.as_deref()).await?
            } else {
                outbox.redrive(&ids).await?
            };
            println!("relancés / re-driven: {:?}", report.requeued);
            if !report.superseded.is_empty() {
                println!(
                    "remplacés par un événement plus récent / superseded by a newer event: {:?}",
                    report.superseded
                );
            }
        }
    }
    Ok(())
}

fn print_detail(d: &inspect::EventDetail) -> anyhow::Result<()> {
    let s = &d.summary;
    println!("event      {}", s.id);
    println!("flow/key   {} / {}", s.flow, s.entity_key);
    println!(
        "operation  {} (source version {})",
        s.operation, d.source_version
    );
    println!("status     {} after {} attempt(s)", s.status, s.attempts);
    println!("captured   {}", s.captured_at);
    if let Some(at) = d.source_modified_at {
        println!("modified   {at} (at the source)");
    }
    if let Some(by) = &d.locked_by {
        println!("claimed by {by} until {:?}", d.locked_until);
    }
    if let Some(outcome) = &s.outcome {
        println!("outcome    {outcome}");
    }
    println!("payload    {}", serde_json::to_string_pretty(&d.payload)?);
    for f in &d.failures {
        println!(
            "attempt {} at {} [{}]: {}",
            f.attempt, f.failed_at, f.kind, f.message
        );
    }
    Ok(())
}

/// Shortest console password accepted.
const MIN_PASSWORD_CHARS: usize = 10;

/// `batisync admin …`.
///
/// # Errors
/// No settings file, a password too short or not confirmed, or the file cannot be
/// written.
pub fn admin(config: Option<&std::path::Path>, command: AdminCommand) -> anyhow::Result<()> {
    let path = config.context(
        "donnez le fichier de configuration avec --config (ou BATISYNC_CONFIG) / give the \
         settings file with --config (or BATISYNC_CONFIG)",
    )?;
    match command {
        AdminCommand::SetPassword => {
            let password = read_password()?;
            let hash = crate::console::auth::hash_password(&password)?;
            crate::console::config_file::set_key(path, "admin", "password_hash", &hash)?;
            eprintln!(
                "mot de passe de la console enregistré dans / console password saved in {} \
                 (redémarrez batisync / restart batisync)",
                path.display()
            );
        }
        AdminCommand::NewApiToken => {
            let token = crate::console::auth::random_token()
                .map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
            let digest = crate::console::auth::digest(&token);
            crate::console::config_file::set_key(path, "admin", "api_token_sha256", &digest)?;
            eprintln!(
                "jeton enregistré (empreinte) dans / token saved (as a digest) in {}; it is shown \
                 once, keep it safe, and restart batisync:",
                path.display()
            );
            println!("{token}");
        }
    }
    Ok(())
}

fn read_password() -> anyhow::Result<String> {
    use std::io::IsTerminal;
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    let read_line = |prompt: &str| -> anyhow::Result<String> {
        if interactive {
            eprint!("{prompt}");
        }
        let _echo = interactive.then(EchoOff::new);
        let mut line = String::new();
        stdin.read_line(&mut line).context("reading the password")?;
        if interactive {
            eprintln!();
        }
        Ok(line.trim_end_matches(['\r', '\n']).to_owned())
    };
    let password = read_line("nouveau mot de passe / new password: ")?;
    anyhow::ensure!(
        password.chars().count() >= MIN_PASSWORD_CHARS,
        "mot de passe trop court / password too short: at least {MIN_PASSWORD_CHARS} characters"
    );
    if interactive {
        let again = read_line("encore une fois / once more: ")?;
        anyhow::ensure!(
            again == password,
            "les deux saisies diffèrent / the two entries differ"
        );
    }
    Ok(password)
}

/// Hides typed characters on a Unix terminal while alive (best effort; on Windows the
/// password is visible while typed, so type it where nobody watches, or pipe it).
struct EchoOff;

impl EchoOff {
    fn new() -> Self {
        #[cfg(unix)]
        let _ = std::process::Command::new("stty")
            .arg("-echo")
            .stdin(std::process::Stdio::inherit())
            .status();
        Self
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        #[cfg(unix)]
        let _ = std::process::Command::new("stty")
            .arg("echo")
            .stdin(std::process::Stdio::inherit())
            .status();
    }
}
