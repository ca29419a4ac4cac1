//! The controller: watches `GuestRedemptionReset` resources and reconciles each one.
//!
//! The files are the flow of a pass: [`run`] wires the watch and starts passes, [`pass`] is the
//! step executor, [`decide`] names the next step (with [`recover`] for interrupted attempts and
//! [`report`] for what a pass ends with), [`effects`] performs steps against the API server and
//! Graph, and [`status`] holds the pure status transitions.

pub mod decide;
pub mod effects;
pub mod error;
pub mod pass;
pub mod reason;
pub mod recover;
pub mod report;
pub mod run;
pub mod status;
pub mod tenant;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use kube::ResourceExt;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::Store;

use crate::admin::Readiness;
use crate::graph::{ErrorClass, FailureKind, GraphClient, GraphError};
use crate::metrics::Metrics;
use crate::resource::GuestRedemptionReset;
use crate::shutdown::Shutdown;
use decide::{Failure, Settings};
use tenant::TenantGuard;

#[cfg(test)]
mod model_tests;

pub use error::Error;
pub use run::{reconcile, run};

/// Field manager and Event reporter name.
pub const MANAGER: &str = "guestreset";

/// The failure counts kept before entries of resources gone from the cache are pruned.
const FAILURES_PRUNE_AT: usize = 256;

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
    /// Consecutive failed passes per resource uid, for the current generation only. Lost on
    /// restart, which only shortens one backoff.
    failures: Mutex<HashMap<String, (i64, u32)>>,
    /// The watch cache, to prune failure counts of deleted resources.
    store: OnceLock<Store<GuestRedemptionReset>>,
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
            failures: Mutex::default(),
            store: OnceLock::new(),
        }
    }

    fn set_store(&self, store: Store<GuestRedemptionReset>) {
        let _ = self.store.set(store);
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, (i64, u32)>> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Consecutive failed passes of the resource's current generation.
    fn failures_of(&self, obj: &GuestRedemptionReset) -> u32 {
        let generation = obj.metadata.generation.unwrap_or(0);
        match self.failures().get(&uid_of(obj)) {
            Some((g, count)) if *g == generation => *count,
            _ => 0,
        }
    }

    /// Counts a failed pass, or forgets the count after a pass that did not fail. A new
    /// generation starts from zero; the map holds one entry per failing resource at most.
    fn record_failure(&self, obj: &GuestRedemptionReset, failed: bool) {
        let generation = obj.metadata.generation.unwrap_or(0);
        let mut failures = self.failures();
        if !failed {
            failures.remove(&uid_of(obj));
            return;
        }
        let entry = failures.entry(uid_of(obj)).or_insert((generation, 0));
        if entry.0 != generation {
            *entry = (generation, 0);
        }
        entry.1 += 1;
        if failures.len() > FAILURES_PRUNE_AT
            && let Some(store) = self.store.get()
        {
            let live: std::collections::HashSet<String> =
                store.state().iter().map(|o| uid_of(o)).collect();
            failures.retain(|uid, _| live.contains(uid));
        }
    }

    /// The resource is gone: its failure count goes with it.
    fn forget(&self, obj: &GuestRedemptionReset) {
        self.failures().remove(&uid_of(obj));
    }

    /// How many resources have a failure count (for tests of the bound).
    pub fn failure_entries(&self) -> usize {
        self.failures().len()
    }
}

fn uid_of(obj: &GuestRedemptionReset) -> String {
    obj.uid()
        .unwrap_or_else(|| format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any()))
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
        ErrorClass::Definite if err.is_forbidden() => Failure::Forbidden(text),
        ErrorClass::Definite if err.is_email_not_on_user() => Failure::EmailNotOnUser(text),
        ErrorClass::Definite if err.is_not_found() => Failure::NotFound(text),
        ErrorClass::Definite => Failure::Rejected(text),
    }
}
