//! Leader election over a coordination.k8s.io Lease (docs/operations.md, "Shutdown and
//! restarts"): of several replicas one reconciles, the others stand by.
//!
//! The choreography: stand by until the Lease is held, then reconcile. A stop (SIGTERM) ends
//! the passes first and releases the Lease only after they drained, so that a standby never
//! works on a resource a stopping leader still works on. A lost Lease begins the stop at once
//! and ends the process with an error: a fresh process stands by cleanly. So does a renew
//! deadline passed without a renewal the API server confirmed ([`renewals`]): the write fence
//! closes first, then the stop begins.

mod config;
mod renewals;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::controller::context::Context;
use crate::fence::WriteFence;
use crate::shutdown::{Shutdown, StopBounds, run_until_deadline, unless_stopped};
pub use config::LeaseConfig;
use renewals::Renewals;

/// How long the release of the Lease may take before the process exits anyway: the Lease
/// then expires on its own, a standby takes over one Lease duration later.
const RELEASE_WAIT: Duration = Duration::from_millis(500);

/// How this process's time with the Lease ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The stop came while standing by: nothing was reconciled.
    StoppedStandingBy,
    /// The work ran while the Lease was held and returned (after a stop, or on its own).
    Ended,
    /// The Lease was lost, or its renewal ended: the stop began at once.
    Lost,
    /// The stop's deadline passed before the work returned; the work was dropped.
    Abandoned,
}

/// A joined Lease: `leading` says whether this process holds it. Dropping `leading` makes
/// kube-lease-manager's task release the Lease and end.
pub struct Lease {
    leading: watch::Receiver<bool>,
    task: JoinHandle<Result<kube_lease_manager::LeaseManager, LeaseManagerError>>,
}

impl Lease {
    /// Creates the Lease if needed and starts competing for it.
    pub async fn join(
        config: &LeaseConfig,
        client: kube::Client,
    ) -> Result<Self, LeaseManagerError> {
        // kube-lease-manager renews `grace` seconds before the Lease would expire: once per
        // retry period.
        let grace = config.duration_secs - config.retry_period().as_secs();
        let manager = LeaseManagerBuilder::new(client, &config.name)
            .with_namespace(&config.namespace)
            .with_identity(&config.identity)
            .with_duration(config.duration_secs)
            .with_grace(grace.max(1))
            .with_field_manager(format!("guestreset-{}", config.identity))
            .build()
            .await?;
        let (leading, task) = manager.watch().await;
        Ok(Lease { leading, task })
    }

    /// Whether this process holds the Lease, as far as the renewal task last said.
    fn is_held(&self) -> bool {
        self.leading.has_changed().is_ok() && *self.leading.borrow()
    }

    /// Releases the Lease, waiting a moment for the release to be written.
    pub async fn release(self) {
        drop(self.leading);
        if tokio::time::timeout(RELEASE_WAIT, self.task).await.is_err() {
            warn!("the Lease was not released in time; it expires on its own");
        }
    }
}

/// Joins the Lease, stands by, then reconciles with `work` while holding it, until the stop
/// and its deadline; releases the Lease only then.
pub async fn lead<W>(
    config: &LeaseConfig,
    ctx: &Context,
    bounds: StopBounds,
    work: impl FnOnce() -> W,
) -> Result<Outcome, LeaseManagerError>
where
    W: Future<Output = ()>,
{
    let shutdown = &ctx.shutdown;
    let Some(lease) = unless_stopped(shutdown, Lease::join(config, ctx.client.clone())).await
    else {
        return Ok(Outcome::StoppedStandingBy);
    };
    let mut lease = lease?;
    info!(
        lease = %config.name,
        namespace = %config.namespace,
        identity = %config.identity,
        "standing by for the leader lease"
    );
    // A standby is ready: it is doing what it should.
    ctx.readiness.set_ready(true);
    let fence = ctx.graph.write_fence().clone();
    let renewals = Renewals::new(ctx.client.clone(), config, fence.clone());
    let expired = AtomicBool::new(false);
    let leading_work = || async {
        // Ready again once this process's own watch cache has synced.
        ctx.readiness.set_ready(false);
        ctx.metrics.leader.set(1);
        if unless_stopped(shutdown, renewals.first()).await.is_none() {
            return;
        }
        within_renew_deadline(&renewals, &fence, shutdown, &expired, work()).await;
    };
    let outcome = run_until_deadline(
        shutdown,
        bounds,
        follow(&mut lease.leading, shutdown, leading_work),
    )
    .await
    .unwrap_or(Outcome::Abandoned);
    ctx.metrics.leader.set(0);
    fence.close();
    let lost = !lease.is_held();
    let expired = expired.load(Ordering::SeqCst);
    lease.release().await;
    Ok(if (outcome == Outcome::Abandoned && lost) || expired {
        Outcome::Lost
    } else {
        outcome
    })
}

/// Runs `work` until it returns; if the renew deadline passes first, closes the fence (no
/// Graph write leaves from here on, not even one already past its checks), notes `expired`,
/// begins the stop and lets the work drain: this process gives up leadership and exits with
/// an error, so that a fresh process stands by.
async fn within_renew_deadline(
    renewals: &Renewals,
    fence: &WriteFence,
    shutdown: &Shutdown,
    expired: &AtomicBool,
    work: impl Future<Output = ()>,
) {
    let mut work = std::pin::pin!(work);
    tokio::select! {
        biased;
        () = &mut work => return,
        () = renewals.until_expired() => {}
    }
    fence.close();
    expired.store(true, Ordering::SeqCst);
    error!(
        "the leader Lease was not renewed within the renew deadline; no more Graph writes, stepping down"
    );
    shutdown.begin();
    work.await;
}

/// The choreography over kube-lease-manager's leading flag: stand by until `leading` is true
/// (or the stop), run `work` while it stays true, and begin the stop when it turns false or
/// its sender goes away. `leading` is only borrowed: the caller releases the Lease after this
/// returned, that is after the work returned.
pub async fn follow<W>(
    leading: &mut watch::Receiver<bool>,
    shutdown: &Shutdown,
    work: impl FnOnce() -> W,
) -> Outcome
where
    W: Future<Output = ()>,
{
    let acquired = tokio::select! {
        biased;
        () = shutdown.stopping() => return Outcome::StoppedStandingBy,
        held = leading.wait_for(|held| *held) => held.is_ok(),
    };
    if !acquired {
        error!("the leader lease's renewal ended while standing by; exiting");
        shutdown.begin();
        return Outcome::Lost;
    }
    info!("holding the leader lease; reconciling");
    let mut work = std::pin::pin!(work());
    tokio::select! {
        biased;
        () = &mut work => return Outcome::Ended,
        _ = leading.wait_for(|held| !*held) => {}
    }
    error!("lost the leader lease; stopping");
    shutdown.begin();
    work.await;
    Outcome::Lost
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Work that runs until the stop, noting whether it started and whether the Lease was
    /// still held (the receiver alive) when it returned.
    fn reconciler(
        shutdown: &Shutdown,
        lease: &watch::Sender<bool>,
        started: &Arc<AtomicBool>,
    ) -> impl FnOnce() -> futures::future::BoxFuture<'static, ()> + use<> {
        let (shutdown, lease, started) = (shutdown.clone(), lease.clone(), started.clone());
        move || {
            Box::pin(async move {
                started.store(true, Ordering::SeqCst);
                shutdown.stopping().await;
                tokio::task::yield_now().await; // a pass drains
                assert!(
                    !lease.is_closed(),
                    "the Lease is still held while passes drain"
                );
            })
        }
    }

    #[tokio::test]
    async fn a_stop_while_standing_by_runs_nothing() {
        let (lease, mut leading) = watch::channel(false);
        let shutdown = Shutdown::new();
        let started = Arc::new(AtomicBool::new(false));
        shutdown.begin();
        let outcome = follow(
            &mut leading,
            &shutdown,
            reconciler(&shutdown, &lease, &started),
        )
        .await;
        assert_eq!(outcome, Outcome::StoppedStandingBy);
        assert!(!started.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn standby_then_leading_then_stop_keeps_the_lease_until_the_work_returned() {
        let (lease, mut leading) = watch::channel(false);
        let shutdown = Shutdown::new();
        let started = Arc::new(AtomicBool::new(false));
        let run = tokio::spawn({
            let (shutdown, work) = (shutdown.clone(), reconciler(&shutdown, &lease, &started));
            async move {
                let outcome = follow(&mut leading, &shutdown, work).await;
                (outcome, leading)
            }
        });
        tokio::task::yield_now().await;
        assert!(!started.load(Ordering::SeqCst), "standing by");
        lease.send(true).unwrap();
        while !started.load(Ordering::SeqCst) {
            tokio::task::yield_now().await;
        }
        assert!(!shutdown.is_stopping());
        shutdown.begin();
        let (outcome, leading) = run.await.unwrap();
        assert_eq!(outcome, Outcome::Ended);
        assert!(!lease.is_closed(), "the caller releases, not follow");
        drop(leading);
        assert!(lease.is_closed());
    }

    #[tokio::test]
    async fn a_lost_lease_begins_the_stop_and_waits_for_the_work() {
        let (lease, mut leading) = watch::channel(true);
        let shutdown = Shutdown::new();
        let started = Arc::new(AtomicBool::new(false));
        let run = tokio::spawn({
            let (shutdown, work) = (shutdown.clone(), reconciler(&shutdown, &lease, &started));
            async move { follow(&mut leading, &shutdown, work).await }
        });
        while !started.load(Ordering::SeqCst) {
            tokio::task::yield_now().await;
        }
        lease.send(false).unwrap();
        assert_eq!(run.await.unwrap(), Outcome::Lost);
        assert!(shutdown.is_stopping(), "passes were told to stop");
    }

    #[tokio::test]
    async fn the_lease_task_ending_counts_as_lost_while_standing_by_or_leading() {
        for initially_leading in [false, true] {
            let (lease, mut leading) = watch::channel(initially_leading);
            let shutdown = Shutdown::new();
            let work = {
                let shutdown = shutdown.clone();
                move || async move { shutdown.stopping().await }
            };
            let run = tokio::spawn(async move { follow(&mut leading, &shutdown, work).await });
            tokio::task::yield_now().await;
            drop(lease);
            assert_eq!(
                run.await.unwrap(),
                Outcome::Lost,
                "leading: {initially_leading}"
            );
        }
    }
}
