//! The `batisync` binary: parse the command line, load settings, run the command.

use std::process::ExitCode;

use batisync::app::{Application, shutdown_on_signals};
use batisync::cli::{BenchCommand, Cli, Command};
use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("erreur / error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = batisync::settings::load(cli.config.as_deref(), std::env::vars())?;
    batisync::telemetry::init(&settings.log)?;
    match cli.command {
        Command::Migrate => batisync::cli::migrate(&settings).await,
        Command::Check { describe } => batisync::cli::check(&settings, describe).await,
        Command::Status => batisync::cli::status(&settings).await,
        Command::Outbox(command) => batisync::cli::outbox(&settings, command).await,
        Command::Bench(BenchCommand::Outbox(args)) => batisync::bench::run(&settings, &args).await,
        Command::Bench(BenchCommand::Batisimply) => {
            let options = batisync::batisimply::bench::BenchOptions::default();
            let report = batisync::batisimply::bench::bench_client(&options).await?;
            println!("{report}");
            Ok(())
        }
        Command::Bench(BenchCommand::Chantiers(args)) => {
            batisync::flows::chantiers::bench::run(&settings, &args).await
        }
        Command::Bench(BenchCommand::Batigest(args)) => {
            batisync::batigest::bench::run(&settings, &args).await
        }
        Command::Bench(BenchCommand::Heures(args)) => {
            batisync::flows::heures::bench::run(&settings, &args).await
        }
        Command::Admin(command) => batisync::cli::admin(cli.config.as_deref(), command),
        Command::Resync { flow } => batisync::cli::resync(&settings, flow).await,
        Command::Demo => {
            let registry = batisync::metrics::init_prometheus()?;
            batisync::demo::run(settings, Some(registry), shutdown_on_signals()).await
        }
        Command::Run => {
            let registry = batisync::metrics::init_prometheus()?;
            let stop = shutdown_on_signals();
            let app = Application::build(settings, Some(registry))
                .await?
                .with_settings_path(cli.config.clone());
            batisync::flows::register_enabled(app)?
                .run_until_stopped(stop)
                .await
        }
    }
}
