use std::net::SocketAddr;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand, ValueEnum};
use jiff::SignedDuration;
use kube_lease_manager::LeaseManagerBuilder;
use tokio_util::sync::CancellationToken;
use tracing::info;

use guestreset::controller::{self, Context, decide::Settings, tenant::TenantGuard};
use guestreset::graph::{self, GraphClient, GraphSettings, WriteLimiter};
use guestreset::metrics::Metrics;

/// Resets Microsoft Entra B2B guest redemptions declaratively, once per generation.
#[derive(Parser)]
#[command(name = "guestreset", version, args_override_self = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller.
    Run(Box<RunArgs>),
    /// Print the CustomResourceDefinition YAML (identical to the file under crds/).
    Crd,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Microsoft Graph, without /v1.0.
    #[arg(long, env = "GRAPH_ENDPOINT", default_value = graph::DEFAULT_GRAPH_ENDPOINT)]
    graph_endpoint: String,
    /// Token scope; default `<graph-endpoint>/.default`.
    #[arg(long, env = "GRAPH_SCOPE")]
    graph_scope: Option<String>,
    /// Per-request timeout of Graph calls.
    #[arg(long, env = "GRAPH_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    graph_timeout: SignedDuration,
    /// Watch only this namespace; default all namespaces.
    #[arg(long = "namespace", env = "WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Comma-separated domains the new e-mail must belong to; default any.
    #[arg(long, env = "ALLOWED_EMAIL_DOMAINS", value_delimiter = ',')]
    allowed_email_domains: Vec<String>,
    /// Controller-wide limit on Graph writes (mail PATCH and invitation POST).
    #[arg(long, env = "MAX_WRITES_PER_MINUTE", default_value_t = 6)]
    max_writes_per_minute: u32,
    /// Writes allowed back to back before the per-minute pace applies.
    #[arg(long, env = "WRITE_BURST", default_value_t = 3)]
    write_burst: u32,
    /// How long all issuance pauses after Graph's abuse-protection answer.
    #[arg(long, env = "TENANT_BLOCK_COOLDOWN", default_value = "1h", value_parser = parse_duration)]
    tenant_block_cooldown: SignedDuration,
    /// How long the directory may take to show a change: a new user, or the evidence of an
    /// interrupted reset.
    #[arg(long, env = "REPLICATION_WINDOW", default_value = "2m", value_parser = parse_duration)]
    replication_window: SignedDuration,
    /// Resources reconciled at once.
    #[arg(long, env = "CONCURRENCY", default_value_t = 16)]
    concurrency: u16,
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    log_format: LogFormat,
    /// Address of `/metrics`, `/healthz` and `/readyz`.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Reconcile only while holding a coordination.k8s.io Lease, so that of several replicas
    /// one works and the others stand by.
    #[arg(long, env = "LEADER_ELECT")]
    leader_elect: bool,
    /// Namespace of the Lease; default the pod's own namespace.
    #[arg(long, env = "POD_NAMESPACE")]
    leader_election_namespace: Option<String>,
    #[arg(long, env = "LEADER_ELECTION_LEASE_NAME", default_value = "guestreset")]
    leader_election_lease_name: String,
    /// How long a Lease holds without renewal; a standby takes over after it expires.
    #[arg(long, env = "LEADER_ELECTION_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    leader_election_lease_duration: SignedDuration,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

fn parse_duration(text: &str) -> Result<SignedDuration, String> {
    let duration: SignedDuration = text
        .parse()
        .map_err(|e| format!("{text:?} is not a duration like 30s, 2m or 1h: {e}"))?;
    if duration.is_negative() {
        return Err(format!("{text:?} is negative"));
    }
    Ok(duration)
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
        // Colour only on a terminal, so redirected logs stay plain text.
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}

#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error("{0}")]
    Http(#[from] graph::http::HttpClientError),
    #[error("{0}")]
    Credential(#[from] graph::CredentialError),
    #[error("cannot connect to Kubernetes: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0} is too long a duration")]
    Duration(SignedDuration),
    #[error("cannot serve the admin endpoints: {0}")]
    Admin(#[from] std::io::Error),
    #[error("leader election: {0}")]
    Lease(#[from] kube_lease_manager::LeaseManagerError),
    #[error("lost the leader lease; exiting so that a fresh process stands by")]
    LostLease,
}

async fn run(args: RunArgs) -> Result<(), StartError> {
    let timeout = std::time::Duration::try_from(args.graph_timeout)
        .map_err(|_| StartError::Duration(args.graph_timeout))?;
    let http = graph::http::build_client(timeout)?;
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let credential_kind = graph::CredentialKind::from_env(&env)?;
    let credential = graph::credential::build(&credential_kind, &env, &http)?;
    let cooldown = std::time::Duration::try_from(args.tenant_block_cooldown)
        .map_err(|_| StartError::Duration(args.tenant_block_cooldown))?;
    // A Retry-After longer than the tenant cool-down is not waited for.
    let mut graph_settings = GraphSettings::new(&args.graph_endpoint)
        .with_timeout(timeout)
        .with_max_retry_after(cooldown);
    if let Some(scope) = &args.graph_scope {
        graph_settings = graph_settings.with_scope(scope);
    }
    let limiter = WriteLimiter::new(args.max_writes_per_minute, args.write_burst);
    info!(
        graph_endpoint = %graph_settings.endpoint,
        scope = %graph_settings.scope,
        credential = credential_kind.name(),
        namespace = args.namespace.as_deref().filter(|ns| !ns.is_empty()).unwrap_or("(all)"),
        max_writes_per_minute = limiter.per_minute(),
        write_burst = limiter.burst(),
        "starting guestreset"
    );
    let graph = GraphClient::new(graph_settings, http, credential, limiter);
    let settings = Settings {
        allowed_email_domains: args
            .allowed_email_domains
            .iter()
            .map(|d| d.trim().to_ascii_lowercase())
            .filter(|d| !d.is_empty())
            .collect(),
        replication_window: args.replication_window,
        post_timeout: args.graph_timeout,
        ..Settings::default()
    };
    let client = kube::Client::try_default().await?;
    let metrics = Arc::new(Metrics::new());
    let graph = graph.with_observer(metrics.clone());
    let tenant_namespace = args
        .leader_election_namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let tenant = TenantGuard::persisted(
        args.tenant_block_cooldown,
        client.clone(),
        &tenant_namespace,
        &format!("{}-tenant", args.leader_election_lease_name),
    );
    let shutdown = guestreset::shutdown::Shutdown::new();
    let ctx = Arc::new(Context::new(
        client.clone(),
        graph,
        settings,
        tenant,
        metrics.clone(),
        shutdown.clone(),
    ));

    let stop = CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move {
            shutdown_signal().await;
            shutdown.begin();
            stop.cancel();
        }
    });
    let listener = tokio::net::TcpListener::bind(args.metrics_addr).await?;
    let admin = tokio::spawn(guestreset::admin::serve(
        listener,
        metrics.clone(),
        stop.clone().cancelled_owned(),
    ));
    let concurrency = args.concurrency.max(1);
    // An empty WATCH_NAMESPACE (as a chart renders "all namespaces") means all namespaces.
    let namespace = args.namespace.clone().filter(|ns| !ns.is_empty());

    let outcome = if args.leader_elect {
        run_as_leader(&args, namespace, client, ctx, concurrency, &stop).await
    } else {
        metrics.leader.set(1);
        controller::run(ctx, namespace, concurrency, stop.clone().cancelled_owned()).await;
        Ok(())
    };
    stop.cancel();
    let _ = admin.await;
    info!("stopped");
    outcome
}

/// Stands by until this process holds the Lease, then reconciles until shutdown or until the
/// Lease is lost. A lost Lease ends the process: a fresh one stands by cleanly.
async fn run_as_leader(
    args: &RunArgs,
    watch_namespace: Option<String>,
    client: kube::Client,
    ctx: Arc<Context>,
    concurrency: u16,
    stop: &CancellationToken,
) -> Result<(), StartError> {
    let namespace = args
        .leader_election_namespace
        .clone()
        .unwrap_or_else(own_namespace);
    let identity = std::env::var("POD_NAME")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| format!("guestreset-{}", uuid::Uuid::new_v4()));
    let duration = args.leader_election_lease_duration.as_secs().max(2) as u64;
    let manager = LeaseManagerBuilder::new(client, &args.leader_election_lease_name)
        .with_namespace(&namespace)
        .with_identity(&identity)
        .with_duration(duration)
        .with_grace((duration / 3).max(1))
        .with_field_manager(format!("guestreset-{identity}"))
        .build()
        .await?;
    let (mut leading, lease_task) = manager.watch().await;
    info!(lease = %args.leader_election_lease_name, namespace, identity, "standing by for the leader lease");
    // A standby is healthy and ready: it is doing what it should.
    ctx.metrics.set_ready(true);
    while !*leading.borrow_and_update() {
        tokio::select! {
            changed = leading.changed() => if changed.is_err() {
                return Err(StartError::LostLease);
            },
            _ = stop.cancelled() => {
                drop(leading);
                let _ = lease_task.await;
                return Ok(());
            }
        }
    }
    info!(identity, "holding the leader lease; reconciling");
    ctx.metrics.leader.set(1);
    ctx.metrics.set_ready(false);
    let lost = CancellationToken::new();
    let shutdown = {
        let (stop, lost) = (stop.clone(), lost.clone());
        async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = async {
                    while leading.changed().await.is_ok() && *leading.borrow_and_update() {}
                } => {
                    tracing::error!("lost the leader lease; stopping");
                    lost.cancel();
                }
            }
            // Dropping the receiver releases the Lease for the standby.
        }
    };
    controller::run(ctx.clone(), watch_namespace, concurrency, shutdown).await;
    ctx.metrics.leader.set(0);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), lease_task).await;
    if lost.is_cancelled() {
        Err(StartError::LostLease)
    } else {
        Ok(())
    }
}

/// The pod's namespace from its service-account mount, else `default`.
fn own_namespace() -> String {
    std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        .map(|ns| ns.trim().to_owned())
        .ok()
        .filter(|ns| !ns.is_empty())
        .unwrap_or_else(|| "default".to_owned())
}

/// Resolves on SIGTERM or Ctrl-C: passes in flight finish, no new ones start.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received, shutting down"),
        _ = tokio::signal::ctrl_c() => info!("interrupt received, shutting down"),
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match Cli::parse().command {
        Command::Crd => {
            print!("{}", guestreset::resource::crd_yaml());
            std::process::ExitCode::SUCCESS
        }
        Command::Run(args) => {
            init_logging(args.log_format);
            match run(*args).await {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(err) => {
                    tracing::error!(error = %err, "guestreset cannot start");
                    std::process::ExitCode::FAILURE
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_the_flags_document() {
        assert_eq!(parse_duration("1h").unwrap(), SignedDuration::from_hours(1));
        assert_eq!(parse_duration("2m").unwrap(), SignedDuration::from_mins(2));
        assert_eq!(
            parse_duration("30s").unwrap(),
            SignedDuration::from_secs(30)
        );
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-5s").is_err());
    }

    #[test]
    fn flags_have_the_documented_defaults() {
        let cli = Cli::try_parse_from(["guestreset", "run"]).unwrap();
        let Command::Run(args) = cli.command else {
            panic!("run")
        };
        assert_eq!(args.max_writes_per_minute, 6);
        assert_eq!(args.write_burst, 3);
        assert_eq!(args.tenant_block_cooldown, SignedDuration::from_hours(1));
        assert!(args.allowed_email_domains.is_empty());
    }
}
