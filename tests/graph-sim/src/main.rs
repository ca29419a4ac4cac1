//! `graph-sim --bind 127.0.0.1:0 --state-dir DIR [--seed users.yaml] [--latency-ms N] [--latency-spread-ms N] [--rng-seed N]`

use clap::Parser;
use graph_sim::{SimConfig, load_seed};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "graph-sim",
    about = "HTTPS simulator of Microsoft Graph and the Entra token endpoint for guestreset tests"
)]
struct Args {
    /// Address to listen on (loopback).
    #[arg(long, default_value = "127.0.0.1:0")]
    bind: SocketAddr,
    /// Where ca.pem and base_url are written.
    #[arg(long)]
    state_dir: PathBuf,
    /// YAML list of users to start with.
    #[arg(long)]
    seed: Option<PathBuf>,
    /// Added to every Graph response.
    #[arg(long, default_value_t = graph_sim::DEFAULT_LATENCY.as_millis() as u64)]
    latency_ms: u64,
    /// Up to this much more per Graph response, drawn uniformly (seeded by --rng-seed).
    #[arg(long, default_value_t = graph_sim::DEFAULT_LATENCY_SPREAD.as_millis() as u64)]
    latency_spread_ms: u64,
    /// Seeds the latency draws.
    #[arg(long, default_value_t = 0)]
    rng_seed: u64,
    #[arg(long)]
    tenant_id: Option<String>,
    #[arg(long)]
    client_id: Option<String>,
    #[arg(long)]
    client_secret: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut config = SimConfig::new(&args.state_dir);
    config.bind = args.bind;
    config.latency = Duration::from_millis(args.latency_ms);
    config.latency_spread = Duration::from_millis(args.latency_spread_ms);
    config.seed = args.rng_seed;
    if let Some(seed) = &args.seed {
        config.users = load_seed(seed)?;
    }
    if let Some(v) = args.tenant_id {
        config.tenant_id = v;
    }
    if let Some(v) = args.client_id {
        config.client_id = v;
    }
    if let Some(v) = args.client_secret {
        config.client_secret = v;
    }
    let sim = graph_sim::start(config).await?;
    println!("LISTENING {}", sim.base_url());

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    drop(sim);
    Ok(())
}
