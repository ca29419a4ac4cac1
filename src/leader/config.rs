//! Which Lease, who this process is, and how soon it must have renewed.

use std::time::Duration;

use tracing::warn;

use crate::cli::RunArgs;

/// Which Lease, and who this process is.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    pub duration_secs: u64,
    /// How long after its last confirmed renewal this process stops every Graph write and
    /// gives up leadership; shorter than the Lease duration (at most two thirds of it).
    pub renew_deadline: Duration,
}

impl LeaseConfig {
    /// From the flags; the Lease lives in `own_namespace` unless a flag names another.
    pub fn new(args: &RunArgs, own_namespace: &str) -> Self {
        let identity = std::env::var("POD_NAME")
            .ok()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| format!("guestreset-{}", uuid::Uuid::new_v4()));
        let duration_secs = args.leader_election_lease_duration.as_secs().max(2) as u64;
        let wanted = Duration::try_from(args.leader_election_renew_deadline).unwrap_or_default();
        LeaseConfig {
            name: args.leader_election_lease_name.clone(),
            namespace: args
                .lease_namespace()
                .unwrap_or_else(|| own_namespace.to_owned()),
            identity,
            duration_secs,
            renew_deadline: renew_deadline(wanted, duration_secs),
        }
    }

    /// How often the Lease is renewed (and the renewal confirmed): a fifth of the renew
    /// deadline in whole seconds, at least 1 s, so that several tries fit before it.
    pub fn retry_period(&self) -> Duration {
        let secs = (self.renew_deadline.as_secs() / 5).clamp(1, self.duration_secs - 1);
        Duration::from_secs(secs)
    }
}

/// The renew deadline asked for, if it is shorter than two thirds of the Lease duration: that
/// much is left for clock skew between replicas and for a write on its way out.
fn renew_deadline(wanted: Duration, duration_secs: u64) -> Duration {
    let most = Duration::from_millis(duration_secs * 2000 / 3);
    if wanted > most || wanted.is_zero() {
        warn!(
            wanted_ms = wanted.as_millis() as u64,
            renew_deadline_ms = most.as_millis() as u64,
            "the leader renew deadline must be shorter than the Lease duration; using two thirds of it"
        );
        return most;
    }
    wanted
}
