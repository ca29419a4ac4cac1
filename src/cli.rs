//! The command line of `guestreset`: every flag with its environment variable and default
//! (docs/operations.md, "Flags"), and what the flags turn into.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use jiff::SignedDuration;

use crate::controller::core::input::Settings;
use crate::controller::core::schedule::Schedule;
use crate::controller::tenant::TenantGuard;
use crate::fence::WriteFence;
use crate::graph::{self, GraphClient, GraphSettings, ReadBudget, WriteLimiter};
use crate::metrics::Metrics;

/// Resets Microsoft Entra B2B guest redemptions declaratively, once per generation.
#[derive(Parser)]
#[command(name = "guestreset", version, args_override_self = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the controller.
    Run(Box<RunArgs>),
    /// Print a CustomResourceDefinition's YAML (identical to its file under crds/).
    Crd(CrdArgs),
    /// Check the installation before the first reset, with the flags of `run`: the token, its
    /// Graph permission, Graph, the API-server rights, the namespace, the pause record.
    Check(Box<RunArgs>),
    /// GET a URL once (the chart's `helm test` hook checks /readyz with it): exit 0 on a 2xx
    /// answer, 1 with the reason otherwise.
    Probe(crate::probe::ProbeArgs),
}

/// Which CRD `guestreset crd` prints.
#[derive(Args, Debug)]
pub struct CrdArgs {
    /// `reset` (GuestRedemptionReset, the default) or `migration` (GuestDomainMigration).
    #[arg(long, value_enum, default_value = "reset")]
    pub kind: CrdKind,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrdKind {
    Reset,
    Migration,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Microsoft Graph, without /v1.0.
    #[arg(long, env = "GRAPH_ENDPOINT", default_value = graph::DEFAULT_GRAPH_ENDPOINT)]
    pub graph_endpoint: String,
    /// Token scope; default `<graph-endpoint>/.default`.
    #[arg(long, env = "GRAPH_SCOPE")]
    pub graph_scope: Option<String>,
    /// Per-request timeout of Graph calls.
    #[arg(long, env = "GRAPH_TIMEOUT", default_value = "30s", value_parser = parse_timeout)]
    pub graph_timeout: Duration,
    /// Watch only this namespace; default all namespaces.
    #[arg(long = "namespace", env = "WATCH_NAMESPACE")]
    pub namespace: Option<String>,
    /// Comma-separated domains the new e-mail must belong to; default any.
    #[arg(long, env = "ALLOWED_EMAIL_DOMAINS", value_delimiter = ',')]
    pub allowed_email_domains: Vec<String>,
    /// Controller-wide limit on Graph writes (mail PATCH and invitation POST).
    #[arg(long, env = "MAX_WRITES_PER_MINUTE", default_value_t = 6)]
    pub max_writes_per_minute: u32,
    /// Writes allowed back to back before the per-minute pace applies.
    #[arg(long, env = "WRITE_BURST", default_value_t = 3)]
    pub write_burst: u32,
    /// How long all issuance pauses after Graph's abuse-protection answer.
    #[arg(long, env = "TENANT_BLOCK_COOLDOWN", default_value = "1h", value_parser = parse_duration)]
    pub tenant_block_cooldown: SignedDuration,
    /// How long the directory may take to show a change: a new user, or the evidence of an
    /// interrupted reset.
    #[arg(long, env = "REPLICATION_WINDOW", default_value = "2m", value_parser = parse_duration)]
    pub replication_window: SignedDuration,
    /// The follow-through after an issuance reads the guest until it redeemed or this long
    /// has passed (then `Redeemed=False`, `NotRedeemed`). Days as `30d`.
    #[arg(long, env = "REDEMPTION_WATCH", default_value = "30d", value_parser = parse_duration)]
    pub redemption_watch: SignedDuration,
    /// The first interval of the follow-through's schedule; the later ones scale with it
    /// (×3 from a quarter hour of age, ×12 from an hour, ×72 from 6 hours, ×288 from a day:
    /// 5m, 15m, 1h, 6h, daily by default). Shorter only for tests and demos.
    #[arg(long, env = "REDEMPTION_FIRST_CHECK", default_value = "5m", value_parser = parse_duration)]
    pub redemption_first_check: SignedDuration,
    /// The budget of the follow-through's Graph reads, apart from the write limit: a read
    /// never waits for it, a deferred check simply moves.
    #[arg(long, env = "MAX_READS_PER_MINUTE", default_value_t = 60)]
    pub max_reads_per_minute: u32,
    /// Resources reconciled at once.
    #[arg(long, env = "CONCURRENCY", default_value_t = 16)]
    pub concurrency: u16,
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
    /// Address of `/metrics`, `/healthz` and `/readyz`.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Reconcile only while holding a coordination.k8s.io Lease, so that of several replicas
    /// one works and the others stand by.
    #[arg(long, env = "LEADER_ELECT")]
    pub leader_elect: bool,
    /// Namespace of the Lease; default the pod's own namespace.
    #[arg(long, env = "POD_NAMESPACE")]
    pub leader_election_namespace: Option<String>,
    #[arg(long, env = "LEADER_ELECTION_LEASE_NAME", default_value = "guestreset")]
    pub leader_election_lease_name: String,
    /// How long a Lease holds without renewal; a standby takes over after it expires.
    #[arg(long, env = "LEADER_ELECTION_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub leader_election_lease_duration: SignedDuration,
    /// A leader that has not renewed its Lease for this long stops every Graph write and
    /// exits, before a standby can take the Lease over; at most two thirds of the Lease
    /// duration.
    #[arg(long, env = "LEADER_ELECTION_RENEW_DEADLINE", default_value = "10s", value_parser = parse_duration)]
    pub leader_election_renew_deadline: SignedDuration,
    /// No Graph write for a generation before a person other than its requester approved it
    /// (docs/resource.md, "Approval"). The controller is not ready until the admission policy
    /// named by --admission-policy is installed and bound.
    #[arg(long, env = "REQUIRE_APPROVAL")]
    pub require_approval: bool,
    /// The ValidatingAdmissionPolicy (and binding, of the same name) that enforces approvals.
    #[arg(long, env = "ADMISSION_POLICY", default_value = "guestreset")]
    pub admission_policy: String,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

/// Why `guestreset run` ended with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot install the signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("{0}")]
    Http(#[from] graph::http::HttpClientError),
    #[error("{0}")]
    Credential(#[from] graph::CredentialError),
    #[error("cannot connect to Kubernetes: {0}")]
    Kube(#[from] kube::Error),
    #[error("cannot serve the admin endpoints: {0}")]
    Admin(#[from] std::io::Error),
    #[error("leader election: {0}")]
    Lease(#[from] kube_lease_manager::LeaseManagerError),
    #[error("lost the leader lease; exiting so that a fresh process stands by")]
    LostLease,
}

impl RunArgs {
    /// The Graph client: endpoint, scope and timeout from the flags, the credential from the
    /// standard Azure variables (docs/install.md).
    pub fn graph_client(&self) -> Result<GraphClient, StartError> {
        let http = graph::http::build_client(self.graph_timeout)?;
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let credential_kind = graph::CredentialKind::from_env(&env)?;
        let credential = graph::credential::build(&credential_kind, &env, &http)?;
        let (settings, limiter) = (self.graph_settings(), self.write_limiter());
        tracing::info!(
            graph_endpoint = %settings.endpoint,
            scope = %settings.scope,
            credential = credential_kind.name(),
            namespace = self.watch_namespace().as_deref().unwrap_or("(all)"),
            max_writes_per_minute = limiter.per_minute(),
            write_burst = limiter.burst(),
            max_reads_per_minute = self.max_reads_per_minute,
            "starting guestreset"
        );
        // A replica that elects a leader writes only while its Lease is confirmed.
        let fence = if self.leader_elect {
            WriteFence::closed()
        } else {
            WriteFence::open()
        };
        Ok(GraphClient::new(settings, http, credential, limiter).with_write_fence(fence))
    }

    /// The namespace to watch; an empty WATCH_NAMESPACE (as a chart renders "all namespaces")
    /// means all namespaces.
    pub fn watch_namespace(&self) -> Option<String> {
        self.namespace.clone().filter(|ns| !ns.is_empty())
    }

    /// The Lease's namespace when the flag names one (an empty value does not).
    pub fn lease_namespace(&self) -> Option<String> {
        self.leader_election_namespace
            .clone()
            .filter(|ns| !ns.is_empty())
    }

    pub fn concurrency(&self) -> u16 {
        self.concurrency.max(1)
    }

    pub fn graph_settings(&self) -> GraphSettings {
        // A Retry-After longer than the tenant cool-down is not waited for.
        let cooldown = Duration::try_from(self.tenant_block_cooldown).unwrap_or(Duration::MAX);
        let settings = GraphSettings::new(&self.graph_endpoint)
            .with_timeout(self.graph_timeout)
            .with_max_retry_after(cooldown);
        match &self.graph_scope {
            Some(scope) => settings.with_scope(scope),
            None => settings,
        }
    }

    pub fn write_limiter(&self) -> WriteLimiter {
        WriteLimiter::new(self.max_writes_per_minute, self.write_burst)
    }

    pub fn read_budget(&self) -> ReadBudget {
        ReadBudget::new(self.max_reads_per_minute)
    }

    /// The tenant pause, persisted in ConfigMap `<lease name>-tenant` of the controller's
    /// namespace (the Lease's), so that every replica and every restart honours it.
    pub fn tenant_guard(&self, client: &kube::Client, metrics: &Metrics) -> TenantGuard {
        let namespace = self
            .lease_namespace()
            .unwrap_or_else(|| client.default_namespace().to_owned());
        TenantGuard::persisted(
            self.tenant_block_cooldown,
            client.clone(),
            &namespace,
            &format!("{}-tenant", self.leader_election_lease_name),
            metrics.tenant_record.clone(),
        )
    }

    /// What the decision needs from the flags.
    pub fn decide_settings(&self) -> Settings {
        Settings {
            allowed_email_domains: self
                .allowed_email_domains
                .iter()
                .map(|d| d.trim().to_ascii_lowercase())
                .filter(|d| !d.is_empty())
                .collect(),
            replication_window: self.replication_window,
            post_timeout: SignedDuration::try_from(self.graph_timeout)
                .unwrap_or(SignedDuration::MAX),
            schedule: Schedule {
                first: self
                    .redemption_first_check
                    .max(SignedDuration::from_secs(1)),
                watch: self.redemption_watch,
            },
            require_approval: self.require_approval,
            ..Settings::default()
        }
    }

    /// The admission policy the controller relies on, when approval is required.
    pub fn approval_policy(&self) -> Option<&str> {
        self.require_approval
            .then_some(self.admission_policy.as_str())
    }
}

pub fn parse_duration(text: &str) -> Result<SignedDuration, String> {
    // Whole days, as `30d`: a day here is 24 hours (the watch is not calendar arithmetic).
    if let Some(days) = text.strip_suffix('d')
        && let Ok(days) = days.parse::<i64>()
        && (0..=3650).contains(&days)
    {
        return Ok(SignedDuration::from_hours(days * 24));
    }
    let duration: SignedDuration = text
        .parse()
        .map_err(|e| format!("{text:?} is not a duration like 30s, 2m or 1h: {e}"))?;
    if duration.is_negative() {
        return Err(format!("{text:?} is negative"));
    }
    Ok(duration)
}

/// A duration that also fits a timer (the Graph timeout bounds the stop, too).
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    Duration::try_from(duration).map_err(|_| format!("{text:?} is too long a duration"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(args: &[&str]) -> RunArgs {
        let argv = ["guestreset", "run"]
            .into_iter()
            .chain(args.iter().copied());
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Run(args) => *args,
            Command::Crd(_) | Command::Check(_) | Command::Probe(_) => panic!("run"),
        }
    }

    #[test]
    fn durations_parse_like_the_flags_document() {
        assert_eq!(parse_duration("1h").unwrap(), SignedDuration::from_hours(1));
        assert_eq!(parse_duration("2m").unwrap(), SignedDuration::from_mins(2));
        assert_eq!(
            parse_duration("30s").unwrap(),
            SignedDuration::from_secs(30)
        );
        assert_eq!(
            parse_duration("30d").unwrap(),
            SignedDuration::from_hours(720)
        );
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-5s").is_err());
    }

    #[test]
    fn flags_have_the_documented_defaults() {
        let args = run_args(&[]);
        assert_eq!(args.max_writes_per_minute, 6);
        assert_eq!(args.write_burst, 3);
        assert_eq!(args.tenant_block_cooldown, SignedDuration::from_hours(1));
        assert_eq!(args.graph_timeout, Duration::from_secs(30));
        assert!(args.allowed_email_domains.is_empty());
        assert!(!args.leader_elect);
        assert_eq!(args.max_reads_per_minute, 60);
        assert_eq!(args.redemption_watch, SignedDuration::from_hours(30 * 24));
        let schedule = args.decide_settings().schedule;
        assert_eq!(schedule.first, SignedDuration::from_mins(5));
        assert_eq!(schedule.watch, SignedDuration::from_hours(720));
    }

    #[test]
    fn empty_namespaces_mean_the_defaults() {
        let args = run_args(&["--namespace", "", "--leader-election-namespace", ""]);
        assert_eq!(args.watch_namespace(), None);
        assert_eq!(args.lease_namespace(), None);
        let args = run_args(&["--namespace", "a", "--leader-election-namespace", "b"]);
        assert_eq!(args.watch_namespace().as_deref(), Some("a"));
        assert_eq!(args.lease_namespace().as_deref(), Some("b"));
    }

    #[test]
    fn allowed_domains_are_trimmed_and_lowercased() {
        let args = run_args(&["--allowed-email-domains", " NewCo.Example,,b.example"]);
        assert_eq!(
            args.decide_settings().allowed_email_domains,
            ["newco.example", "b.example"]
        );
    }
}
