//! `guestreset`: start-up and stop in the order they happen (docs/operations.md, "Shutdown
//! and restarts"); each step lives in its own module.

use std::{process::ExitCode, sync::Arc, time::Duration};

use clap::Parser;
use tokio::net::TcpListener;

use guestreset::admin::{self, AdminState, Readiness};
use guestreset::admission_policy;
use guestreset::cli::{Cli, Command, RunArgs, StartError};
use guestreset::controller::{self, Context};
use guestreset::leader::{self, LeaseConfig, Outcome};
use guestreset::metrics::Metrics;
use guestreset::shutdown::{self, Shutdown, StopBounds, stop_on_signals, unless_stopped};

fn main() -> ExitCode {
    let runtime = tokio::runtime::Runtime::new().expect("starting the Tokio runtime");
    // Before anything else, even the flags: from here on a SIGTERM begins a clean stop.
    let shutdown = Shutdown::new();
    let signals = runtime.block_on(async { stop_on_signals(&shutdown) });
    let args = match Cli::parse().command {
        Command::Run(args) => args,
        Command::Crd(crd) => {
            print!(
                "{}",
                match crd.kind {
                    guestreset::cli::CrdKind::Reset => guestreset::resource::crd_yaml(),
                    guestreset::cli::CrdKind::Migration =>
                        guestreset::resource::migration::crd_yaml(),
                }
            );
            return ExitCode::SUCCESS;
        }
        Command::Check(args) => return check(&runtime, &args),
        Command::Probe(args) => return runtime.block_on(guestreset::probe::run(&args)),
    };
    guestreset::telemetry::init(args.log_format);
    let result = signals.map_err(StartError::Signals);
    let result = result.and_then(|()| runtime.block_on(run(*args, shutdown)));
    // A pass abandoned at the stop deadline may sit in a blocking call: it must not hold the exit.
    runtime.shutdown_timeout(Duration::from_millis(200));
    if let Err(err) = &result {
        tracing::error!(error = %err, "guestreset stopped with an error");
    }
    result.map_or(ExitCode::FAILURE, |()| ExitCode::SUCCESS)
}

/// `guestreset check`: the report on stdout, failure when any check failed.
fn check(runtime: &tokio::runtime::Runtime, args: &RunArgs) -> ExitCode {
    let report = runtime.block_on(guestreset::check::run(args));
    print!("{report}");
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn run(args: RunArgs, shutdown: Shutdown) -> Result<(), StartError> {
    // Every start-up step gives way to the stop.
    let Some(started) = unless_stopped(&shutdown, start(&args, &shutdown)).await else {
        return Ok(());
    };
    let (ctx, listener) = started?;
    let admin_state = AdminState::new(&ctx.metrics, &ctx.readiness, &shutdown);
    // Served until the process exits: /metrics stays readable while passes drain.
    let admin = tokio::spawn(admin::serve(listener, admin_state, std::future::pending()));
    if let Some(policy) = args.approval_policy() {
        let installed = admission_policy::wait_until_installed(&ctx.client, policy);
        if unless_stopped(&shutdown, installed).await.is_none() {
            admin.abort();
            return Ok(());
        }
    }
    let outcome = reconcile_until_stopped(&args, ctx).await;
    admin.abort();
    tracing::info!(?outcome, "stopped");
    match outcome? {
        Outcome::Lost => Err(StartError::LostLease),
        _ => Ok(()),
    }
}

/// What every pass shares (clients, tenant pause, metrics, readiness, stop); the admin socket.
async fn start(args: &RunArgs, stop: &Shutdown) -> Result<(Arc<Context>, TcpListener), StartError> {
    let metrics = Arc::new(Metrics::new());
    let graph = args.graph_client()?.with_observer(metrics.clone());
    let kube = kube::Client::try_default().await?;
    let (mut settings, tenant) = (args.decide_settings(), args.tenant_guard(&kube, &metrics));
    settings.own_identity = guestreset::migration::own_identity(&kube).await;
    let ready = Readiness::default();
    let ctx = Context::new(kube, graph, settings, tenant, metrics, ready, stop.clone())
        .with_read_budget(args.read_budget())
        .with_approval_policy(args.approval_policy());
    Ok((Arc::new(ctx), TcpListener::bind(args.metrics_addr).await?))
}

/// Reconciles (while holding the Lease, with `--leader-elect`) until the stop and its deadline.
async fn reconcile_until_stopped(args: &RunArgs, ctx: Arc<Context>) -> Result<Outcome, StartError> {
    let bounds = StopBounds::new(args.graph_timeout);
    let (namespace, concurrency) = (args.watch_namespace(), args.concurrency());
    let stopping = shutdown::stopping_owned(ctx.shutdown.clone());
    let work = || controller::run(ctx.clone(), namespace, concurrency, stopping);
    if args.leader_elect {
        let config = LeaseConfig::new(args, ctx.client.default_namespace());
        return Ok(leader::lead(&config, &ctx, bounds, work).await?);
    }
    ctx.metrics.leader.set(1);
    let ended = shutdown::run_until_deadline(&ctx.shutdown, bounds, work()).await;
    Ok(ended.map_or(Outcome::Abandoned, |()| Outcome::Ended))
}
