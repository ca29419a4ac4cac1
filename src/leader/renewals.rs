//! The renew deadline (docs/design.md, "Leader election"): kube-lease-manager renews the
//! Lease and, on an error, logs it and tries again, for ever; it says nothing while the API
//! server is out of reach. This watch of the renewals moves the write fence forward only on a
//! renewal the API server confirmed, and ends when the renew deadline has passed since the
//! last one: the caller then gives up leadership.
//!
//! A replica standing by takes the Lease once `renewTime + leaseDuration` has passed; the
//! fence closes at `renewTime + renewDeadline`, earlier by the difference (5 s by default),
//! so no Graph write of the old leader leaves after another replica could lead.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use tracing::debug;

use crate::fence::WriteFence;

/// Follows one term of leadership: which Lease, who this process is, and the deadline.
pub struct Renewals {
    leases: Api<Lease>,
    name: String,
    identity: String,
    deadline: SignedDuration,
    period: Duration,
    fence: WriteFence,
}

impl Renewals {
    pub fn new(
        client: kube::Client,
        config: &super::config::LeaseConfig,
        fence: WriteFence,
    ) -> Self {
        Renewals {
            leases: Api::namespaced(client, &config.namespace),
            name: config.name.clone(),
            identity: config.identity.clone(),
            deadline: SignedDuration::try_from(config.renew_deadline)
                .unwrap_or(SignedDuration::ZERO),
            period: config.retry_period(),
            fence,
        }
    }

    /// Waits for the first renewal the API server confirms (the Lease was just taken): the
    /// fence is closed until then.
    pub async fn first(&self) {
        while !self.confirm().await {
            tokio::time::sleep(self.period).await;
        }
    }

    /// Keeps moving the fence with every confirmed renewal; returns as soon as the renew
    /// deadline passed without one (a read under way does not delay that).
    pub async fn until_expired(&self) {
        loop {
            let Some(until) = self.fence.until() else {
                return std::future::pending().await;
            };
            let Ok(left) = Duration::try_from(until - Timestamp::now()) else {
                return;
            };
            if left.is_zero() {
                return;
            }
            let next = async {
                tokio::time::sleep(self.period).await;
                self.confirm().await;
            };
            // On time, the loop looks at the fence again: moved by the read, or passed.
            let _ = tokio::time::timeout(left, next).await;
        }
    }

    /// Reads the Lease (for at most one retry period); true if it shows a renewal by this
    /// process, which then moves the fence.
    async fn confirm(&self) -> bool {
        let read = tokio::time::timeout(self.period, self.leases.get(&self.name)).await;
        let lease = match read {
            Ok(Ok(lease)) => lease,
            Ok(Err(err)) => {
                debug!(error = %err, "could not read the leader Lease");
                return false;
            }
            Err(_) => {
                debug!("no answer reading the leader Lease");
                return false;
            }
        };
        match renewal_by(&lease, &self.identity) {
            Some(renewed) => {
                self.fence.renewed(renewed, self.deadline);
                true
            }
            None => false,
        }
    }
}

/// When `identity` last renewed `lease` (by its own clock, as kube-lease-manager writes it),
/// if it holds it.
fn renewal_by(lease: &Lease, identity: &str) -> Option<Timestamp> {
    let spec = lease.spec.as_ref()?;
    (spec.holder_identity.as_deref() == Some(identity)).then_some(spec.renew_time.as_ref()?.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    fn lease(holder: &str, renewed: Timestamp) -> Lease {
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.to_owned()),
                renew_time: Some(MicroTime(renewed)),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        }
    }

    #[test]
    fn only_a_renewal_by_this_process_counts() {
        let renewed = Timestamp::from_second(1_700_000_000).unwrap();
        assert_eq!(renewal_by(&lease("me", renewed), "me"), Some(renewed));
        assert_eq!(renewal_by(&lease("other", renewed), "me"), None);
        assert_eq!(renewal_by(&Lease::default(), "me"), None);
    }
}
