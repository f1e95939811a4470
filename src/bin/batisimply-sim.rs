//! Stand-alone BatiSimply simulator for demos and manual tests.

use std::path::PathBuf;

use batisync::batisimply::sim::{Faults, SimConfig, Simulator};
use clap::Parser;

/// Serves a simulated BatiSimply API and Keycloak token endpoint.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8088")]
    listen: String,
    /// JSON file the data is loaded from and saved to.
    #[arg(long)]
    state: Option<PathBuf>,
    /// Accepted OAuth2 client id.
    #[arg(long, default_value = "batisync")]
    client_id: String,
    /// Accepted OAuth2 client secret.
    #[arg(long, default_value = "sim-secret")]
    client_secret: String,
    /// Accepted user name.
    #[arg(long, default_value = "sim-user")]
    username: String,
    /// Accepted user password.
    #[arg(long, default_value = "sim-password")]
    password: String,
    /// Lifetime of access tokens, in seconds.
    #[arg(long, default_value_t = 300)]
    token_lifetime_secs: u64,
    /// Projects to generate at start.
    #[arg(long, default_value_t = 0)]
    seed_projects: usize,
    /// Time slots to generate at start (over the last 30 days).
    #[arg(long, default_value_t = 0)]
    seed_slots: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let config = SimConfig {
        state_file: args.state.clone(),
        ..SimConfig::default()
    };
    let faults = Faults {
        token_lifetime_secs: args.token_lifetime_secs,
        ..Faults::default()
    };
    let handle = Simulator::builder()
        .config(config)
        .client(&args.client_id, &args.client_secret)
        .user(&args.username, &args.password)
        .faults(faults)
        .spawn(&args.listen)
        .await?;
    handle.seed_projects(args.seed_projects);
    handle.seed_slots(args.seed_slots);
    println!("BatiSimply simulator");
    println!("  api_base_url = {}", handle.base_url);
    println!("  sso_base_url = {}  (realm jhipster)", handle.sso_url);
    println!("  admin        = {}/__admin/stats", handle.base_url);
    tokio::signal::ctrl_c().await?;
    handle.shutdown().await;
    Ok(())
}
