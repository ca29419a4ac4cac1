//! The controller: watches `GuestRedemptionReset` resources and reconciles each one.
//!
//! The files are the flow of a pass: [`run`](mod@run) wires the watch and starts passes; [`pass`] is the
//! step executor; [`decide`] names the next step, in stages: the entry and the issue in
//! `decide`, the [`preflight`], the recovery of an interrupted attempt in [`recover`], with
//! [`step`] the vocabulary they share and [`report`] what a pass ends with; [`io`] is the trait
//! of the effects and [`effects`] performs them against the API server and Graph; [`status`]
//! holds the pure status transitions. [`approval`] is the four-eyes stage (with
//! `--require-approval`), [`approver`] the API server's second look at an approver.
//! [`follow`] is the follow-through after `Issued` (did the
//! guest redeem?) on the schedule of [`schedule`]; [`events`] the Events on the resource;
//! [`gauges`] the metrics counted over the watch cache (pending redemptions, a series per
//! resource).
//! [`tenant`] is the tenant pause and [`tenant_record`] its persisted record with the watch
//! that follows it; [`failures`] and [`error`] are the backoff counts and the errors of the
//! effects.

pub mod approval;
pub mod approver;
pub mod decide;
pub mod effects;
pub mod error;
pub mod events;
pub mod failures;
pub mod follow;
pub mod gauges;
pub mod io;
pub mod pass;
pub mod preflight;
pub mod reason;
pub mod recover;
pub mod report;
pub mod run;
pub mod schedule;
pub mod status;
pub mod step;
pub mod tenant;
pub mod tenant_record;
pub mod versions;

use std::sync::{Arc, Mutex, OnceLock};

use kube::ResourceExt;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::Store;

use crate::admin::Readiness;
use crate::graph::{ErrorClass, FailureKind, GraphClient, GraphError, ReadBudget};
use crate::metrics::Metrics;
use crate::resource::GuestRedemptionReset;
use crate::shutdown::Shutdown;
use decide::{Failure, Settings};
use failures::FailureCounts;
use tenant::TenantGuard;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod model_tests;

pub use error::Error;
pub use run::{reconcile, run};

/// Field manager and Event reporter name.
pub const MANAGER: &str = "guestreset";

/// Everything a pass needs, shared by all passes.
pub struct Context {
    pub client: kube::Client,
    pub graph: GraphClient,
    pub settings: Settings,
    pub tenant: TenantGuard,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// `/readyz`: set once the watch cache has synced.
    pub readiness: Readiness,
    pub shutdown: Shutdown,
    pub failpoint: Option<effects::Failpoint>,
    /// The follow-through's read budget (`--max-reads-per-minute`), apart from the writes'.
    pub read_budget: ReadBudget,
    /// The admission policy that enforces approvals (with `--require-approval`): checked
    /// again before any approval is acted on.
    pub approval_policy: Option<String>,
    /// Consecutive failed passes per resource, for the backoff.
    failures: Mutex<FailureCounts>,
    /// Versions of resources that this process's own writes have replaced.
    versions: Mutex<versions::Versions>,
    /// The watch cache, to prune failure counts of deleted resources.
    store: OnceLock<Store<run::Watched>>,
}

impl Context {
    pub fn new(
        client: kube::Client,
        graph: GraphClient,
        settings: Settings,
        tenant: TenantGuard,
        metrics: Arc<Metrics>,
        readiness: Readiness,
        shutdown: Shutdown,
    ) -> Self {
        let reporter = Reporter {
            controller: MANAGER.to_owned(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            graph,
            settings,
            tenant,
            metrics,
            readiness,
            shutdown,
            failpoint: effects::Failpoint::from_env(),
            read_budget: ReadBudget::new(60),
            approval_policy: None,
            failures: Mutex::default(),
            versions: Mutex::default(),
            store: OnceLock::new(),
        }
    }

    /// The admission policy that must enforce approvals (`--require-approval`).
    pub fn with_approval_policy(mut self, name: Option<&str>) -> Self {
        self.approval_policy = name.map(str::to_owned);
        self
    }

    /// The read budget of the follow-through (default 60 reads a minute).
    pub fn with_read_budget(mut self, budget: ReadBudget) -> Self {
        self.read_budget = budget;
        self
    }

    fn set_store(&self, store: Store<run::Watched>) {
        let _ = self.store.set(store);
    }

    /// `pick` of each reset of the watch cache for which it gives something (a domain
    /// migration counts its resets here rather than listing them from the API server); `None`
    /// before the reset controller has its cache.
    pub fn cached_resets<T>(
        &self,
        pick: impl Fn(&GuestRedemptionReset) -> Option<T>,
    ) -> Option<Vec<T>> {
        let store = self.store.get()?;
        Some(
            store
                .state()
                .iter()
                .filter_map(|watched| watched.0.as_ref().ok().and_then(&pick))
                .collect(),
        )
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, FailureCounts> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Consecutive failed passes of the resource's current generation.
    fn failures_of(&self, obj: &GuestRedemptionReset) -> u32 {
        self.failures()
            .of(&uid_of(obj), obj.metadata.generation.unwrap_or(0))
    }

    /// Counts a failed pass, or forgets the count after a pass that did not fail.
    fn record_failure(&self, obj: &GuestRedemptionReset, failed: bool) {
        let live = || {
            self.store
                .get()
                .map(|store| store.state().iter().filter_map(|o| o.uid()).collect())
                .unwrap_or_default()
        };
        self.failures().record(
            &uid_of(obj),
            obj.metadata.generation.unwrap_or(0),
            failed,
            live,
        );
    }

    fn versions(&self) -> std::sync::MutexGuard<'_, versions::Versions> {
        self.versions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `obj`'s version is no longer current: a write of this process replaced it, or found
    /// it replaced.
    fn outdated(&self, obj: &GuestRedemptionReset) {
        let Some(version) = obj.resource_version() else {
            return;
        };
        let mut versions = self.versions();
        versions.outdated(&uid_of(obj), &version);
        // Resources deleted before the cache caught up leave a record behind: pruned now and
        // then against the cache.
        if versions.len() >= 1024 && versions.len().is_power_of_two() {
            let live: std::collections::HashSet<String> = self
                .store
                .get()
                .map(|store| store.state().iter().filter_map(|o| o.uid()).collect())
                .unwrap_or_default();
            versions.retain(|uid| live.contains(uid));
        }
    }

    /// Whether the cached `obj` is behind a write of this process.
    fn is_behind(&self, obj: &GuestRedemptionReset) -> bool {
        self.versions()
            .is_behind(&uid_of(obj), obj.metadata.resource_version.as_deref())
    }
}

fn uid_of(obj: &GuestRedemptionReset) -> String {
    obj.uid()
        .unwrap_or_else(|| format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any()))
}

/// Graph's refusal of the reset of this user rather than of the application: 403 with
/// `Authorization_RequestDenied` to the POST, as for a user who holds a directory role. A
/// missing permission answers 401, or 403 `Forbidden` (docs/graph.md).
fn refuses_target(err: &GraphError) -> bool {
    err.call == crate::graph::GraphCall::PostInvitation
        && err.status == Some(403)
        && err.code.as_deref() == Some("Authorization_RequestDenied")
}

/// Maps a Graph failure to what the decision needs.
pub fn failure_of(err: &GraphError) -> Failure {
    let text = err.to_string();
    match err.class() {
        ErrorClass::Throttled { retry_after } => Failure::Throttled { retry_after },
        ErrorClass::TransientBeforeSend => Failure::Transient(text),
        ErrorClass::Ambiguous => Failure::Ambiguous(text),
        ErrorClass::AbuseBlocked => Failure::AbuseBlocked(text),
        ErrorClass::Definite if matches!(err.kind, FailureKind::Credential { .. }) => {
            Failure::Forbidden(text)
        }
        ErrorClass::Definite if refuses_target(err) => Failure::TargetRefused(text),
        ErrorClass::Definite if err.is_forbidden() => Failure::Forbidden(text),
        ErrorClass::Definite if err.is_email_not_on_user() => Failure::EmailNotOnUser(text),
        ErrorClass::Definite if err.is_not_found() => Failure::NotFound(text),
        ErrorClass::Definite => Failure::Rejected(text),
    }
}

#[cfg(test)]
mod failure_tests {
    use super::*;
    use crate::graph::GraphCall;

    fn answer(call: GraphCall, status: u16, code: &str) -> GraphError {
        let body = format!(r#"{{"error": {{"code": "{code}", "message": "m"}}}}"#);
        GraphError::from_response(call, status, body.as_bytes(), None, None)
    }

    #[test]
    fn a_refused_target_is_told_from_a_missing_permission() {
        let role_holder = answer(
            GraphCall::PostInvitation,
            403,
            "Authorization_RequestDenied",
        );
        assert!(matches!(
            failure_of(&role_holder),
            Failure::TargetRefused(_)
        ));
        // The application's missing permission, as Graph answers it: retried.
        for (status, code) in [(401, "Unauthorized"), (403, "Forbidden")] {
            let missing = answer(GraphCall::PostInvitation, status, code);
            assert!(
                matches!(failure_of(&missing), Failure::Forbidden(_)),
                "{status} {code}"
            );
        }
        // Only the reset refuses a target; a refused PATCH is the permission's.
        let patch = answer(GraphCall::PatchUser, 403, "Authorization_RequestDenied");
        assert!(matches!(failure_of(&patch), Failure::Forbidden(_)));
    }
}
