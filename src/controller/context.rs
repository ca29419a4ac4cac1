//! What every pass shares: the clients, the settings, the tenant pause, the Event recorder,
//! the metrics, and this process's memory of its own writes and failures.

use std::sync::{Arc, Mutex, OnceLock};

use kube::ResourceExt;
use kube::core::DeserializeGuard;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::Store;

use super::core::input::Settings;
use super::failpoint::Failpoint;
use super::memory::Memory;
use super::tenant::TenantGuard;
use crate::admin::Readiness;
use crate::graph::{GraphClient, ReadBudget};
use crate::metrics::Metrics;
use crate::resource::{GuestRedemptionReset, MANAGER};
use crate::shutdown::Shutdown;

/// What the watch hands a pass: the resource, or why it could not be read as one.
pub type Watched = DeserializeGuard<GuestRedemptionReset>;

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
    pub failpoint: Option<Failpoint>,
    /// The follow-through's read budget (`--max-reads-per-minute`), apart from the writes'.
    pub read_budget: ReadBudget,
    /// The admission policy that enforces approvals (with `--require-approval`): checked
    /// again before any approval is acted on.
    pub approval_policy: Option<String>,
    /// Consecutive failed passes per resource, for the backoff.
    memory: Mutex<Memory>,
    /// The watch cache, to prune failure counts of deleted resources.
    store: OnceLock<Store<Watched>>,
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
            failpoint: Failpoint::from_env(),
            read_budget: ReadBudget::new(60),
            approval_policy: None,
            memory: Mutex::default(),
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

    pub(super) fn set_store(&self, store: Store<Watched>) {
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

    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.memory.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The uids of the watch cache.
    fn live(&self) -> std::collections::HashSet<String> {
        self.store
            .get()
            .map(|store| store.state().iter().filter_map(|o| o.uid()).collect())
            .unwrap_or_default()
    }

    /// Consecutive failed passes of the resource's current generation.
    pub(super) fn failures_of(&self, obj: &GuestRedemptionReset) -> u32 {
        self.memory()
            .failures_of(&uid_of(obj), obj.metadata.generation.unwrap_or(0))
    }

    /// Counts a failed pass, or forgets the count after a pass that did not fail.
    pub(super) fn record_failure(&self, obj: &GuestRedemptionReset, failed: bool) {
        let generation = obj.metadata.generation.unwrap_or(0);
        self.memory()
            .record_failure(&uid_of(obj), generation, failed, || self.live());
    }

    /// `obj`'s version is no longer current: a write of this process replaced it, or found
    /// it replaced.
    pub(super) fn mark_outdated(&self, obj: &GuestRedemptionReset) {
        if let Some(version) = obj.resource_version() {
            self.memory()
                .mark_outdated(&uid_of(obj), &version, || self.live());
        }
    }

    /// Whether the cached `obj` is behind a write of this process.
    pub(super) fn is_behind(&self, obj: &GuestRedemptionReset) -> bool {
        self.memory()
            .is_behind(&uid_of(obj), obj.metadata.resource_version.as_deref())
    }
}

fn uid_of(obj: &GuestRedemptionReset) -> String {
    obj.uid()
        .unwrap_or_else(|| format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any()))
}
