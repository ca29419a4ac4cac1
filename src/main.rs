use std::sync::Arc;

use clap::{Args, Parser, Subcommand, ValueEnum};
use jiff::SignedDuration;
use tracing::info;

use guestreset::controller::{self, Context, decide::Settings, tenant::TenantGuard};
use guestreset::graph::{self, GraphClient, GraphSettings, WriteLimiter};

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
    Run(RunArgs),
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
        LogFormat::Text => builder.init(),
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
}

async fn run(args: RunArgs) -> Result<(), StartError> {
    let timeout = std::time::Duration::try_from(args.graph_timeout)
        .map_err(|_| StartError::Duration(args.graph_timeout))?;
    let http = graph::http::build_client(timeout)?;
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let credential_kind = graph::CredentialKind::from_env(&env)?;
    let credential = graph::credential::build(&credential_kind, &env, &http)?;
    let mut graph_settings = GraphSettings::new(&args.graph_endpoint).with_timeout(timeout);
    if let Some(scope) = &args.graph_scope {
        graph_settings = graph_settings.with_scope(scope);
    }
    let limiter = WriteLimiter::new(args.max_writes_per_minute, args.write_burst);
    info!(
        graph_endpoint = %graph_settings.endpoint,
        scope = %graph_settings.scope,
        credential = credential_kind.name(),
        namespace = args.namespace.as_deref().unwrap_or("(all)"),
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
        ..Settings::default()
    };
    let client = kube::Client::try_default().await?;
    let ctx = Arc::new(Context::new(
        client,
        graph,
        settings,
        TenantGuard::new(args.tenant_block_cooldown),
    ));
    controller::run(
        ctx,
        args.namespace,
        args.concurrency.max(1),
        shutdown_signal(),
    )
    .await;
    info!("stopped");
    Ok(())
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
            match run(args).await {
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
