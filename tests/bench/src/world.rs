//! The cluster side of the benchmarks: the CRD, namespaces, guests and their resources, bulk
//! creation, and a watch that sees every write to a namespace's resources.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt};
use graph_sim::SeedUser;
use guestreset_testsupport::ControlPlane;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;

pub const GROUP: &str = "guestreset.io";
pub const VERSION: &str = "v1alpha1";
pub const KIND: &str = "GuestRedemptionReset";
pub const PLURAL: &str = "guestredemptionresets";

pub fn grr_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, VERSION, KIND), PLURAL)
}

/// The control plane with the CRD installed, and a client of it.
pub struct Cluster {
    pub cp: &'static ControlPlane,
    pub client: kube::Client,
    pub resource: ApiResource,
}

impl Cluster {
    pub async fn start() -> Result<Cluster> {
        let cp = ControlPlane::shared().await;
        cp.install_guestreset_crd().map_err(anyhow::Error::msg)?;
        Ok(Cluster {
            cp,
            client: cp.client().await,
            resource: grr_resource(),
        })
    }

    pub fn grr(&self, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), namespace, &self.resource)
    }

    pub async fn namespace(&self, prefix: &str) -> String {
        self.cp.namespace(prefix).await
    }

    /// Events in the namespace, counted by reason.
    pub async fn events_by_reason(&self, namespace: &str) -> Result<BTreeMap<String, usize>> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), namespace);
        let mut counts = BTreeMap::new();
        for event in events.list(&ListParams::default()).await?.items {
            *counts.entry(event.reason.unwrap_or_default()).or_default() += 1;
        }
        Ok(counts)
    }
}

/// One guest to reset and the resource that asks for it.
#[derive(Clone, Debug)]
pub struct Target {
    pub name: String,
    pub user_id: String,
    pub upn: String,
    /// The guest's mail in the directory before the reset.
    pub old_mail: String,
    /// The new sign-in email (`spec.email`).
    pub email: String,
}

/// `n` guests named `{tag}-{i}`. With `email_on_user` the directory already carries the new
/// email as mail (one Graph write per reset, the POST); otherwise each reset needs the PATCH.
pub fn targets(tag: &str, n: usize, email_on_user: bool) -> Vec<Target> {
    (0..n)
        .map(|i| {
            let local = format!("{tag}-{i}");
            let email = format!("{local}@newco.example");
            let old_mail = if email_on_user {
                email.clone()
            } else {
                format!("{local}@partner.example")
            };
            Target {
                name: local.clone(),
                user_id: uuid::Uuid::new_v4().to_string(),
                upn: format!("{local}_partner.example#EXT#@fabrikam.onmicrosoft.com"),
                old_mail,
                email,
            }
        })
        .collect()
}

pub fn seed_users(targets: &[Target]) -> Vec<SeedUser> {
    targets
        .iter()
        .map(|t| SeedUser::guest(&t.user_id, &t.upn, &t.old_mail))
        .collect()
}

pub fn new_resource(resource: &ApiResource, target: &Target) -> DynamicObject {
    DynamicObject::new(&target.name, resource).data(json!({
        "spec": {"user": {"id": target.user_id}, "email": target.email},
    }))
}

/// Creates the objects with `in_flight` requests at once.
pub async fn create_all(
    api: &Api<DynamicObject>,
    objects: Vec<DynamicObject>,
    in_flight: usize,
) -> Result<Vec<DynamicObject>> {
    futures::stream::iter(objects)
        .map(|object| {
            let api = api.clone();
            async move {
                let name = object.metadata.name.clone().unwrap_or_default();
                api.create(&PostParams::default(), &object)
                    .await
                    .with_context(|| format!("creating {name}"))
            }
        })
        .buffer_unordered(in_flight)
        .try_collect()
        .await
}

/// The Ready condition's reason, if it describes the object's current generation.
pub fn current_ready_reason(object: &DynamicObject) -> Option<String> {
    let generation = object.metadata.generation?;
    let ready = object.data["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")?;
    (ready["observedGeneration"].as_i64() == Some(generation)
        && object.data["status"]["observedGeneration"].as_i64() == Some(generation))
    .then(|| ready["reason"].as_str().unwrap_or_default().to_owned())
}

struct Seen {
    versions: HashSet<String>,
    reason: Option<String>,
    first_seen: Instant,
    /// When a Ready condition for the current generation was first seen (the first pass began).
    worked_at: Option<Instant>,
    issued_at: Option<Instant>,
}

impl Default for Seen {
    fn default() -> Self {
        Seen {
            versions: HashSet::new(),
            reason: None,
            first_seen: Instant::now(),
            worked_at: None,
            issued_at: None,
        }
    }
}

#[derive(Default)]
struct Track {
    objects: HashMap<String, Seen>,
    synced: bool,
    error: Option<String>,
}

/// A watch on one namespace's resources: every resourceVersion each object went through, and
/// when it first reached Ready=Issued for its current generation.
pub struct Tracker {
    track: Arc<Mutex<Track>>,
    task: tokio::task::JoinHandle<()>,
}

impl Tracker {
    /// Starts watching and returns once the initial list is in.
    pub async fn start(api: Api<DynamicObject>) -> Result<Tracker> {
        let track = Arc::new(Mutex::new(Track::default()));
        let shared = track.clone();
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(watcher(api, watcher::Config::default()));
            while let Some(event) = stream.next().await {
                let mut track = shared.lock().unwrap_or_else(|e| e.into_inner());
                match event {
                    Ok(watcher::Event::Apply(object) | watcher::Event::InitApply(object)) => {
                        let name = object.metadata.name.clone().unwrap_or_default();
                        let seen = track.objects.entry(name).or_default();
                        if let Some(rv) = &object.metadata.resource_version {
                            seen.versions.insert(rv.clone());
                        }
                        seen.reason = current_ready_reason(&object);
                        if seen.reason.is_some() && seen.worked_at.is_none() {
                            seen.worked_at = Some(Instant::now());
                        }
                        if seen.reason.as_deref() == Some("Issued") && seen.issued_at.is_none() {
                            seen.issued_at = Some(Instant::now());
                        }
                    }
                    Ok(watcher::Event::InitDone) => track.synced = true,
                    Ok(_) => {}
                    Err(err) => track.error = Some(err.to_string()),
                }
            }
        });
        let tracker = Tracker { track, task };
        let deadline = Instant::now() + Duration::from_secs(120);
        while !tracker.lock().synced {
            if Instant::now() >= deadline {
                bail!("the watch did not sync within 120 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(tracker)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Track> {
        self.track.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes seen: every resourceVersion of an object after the first one seen.
    pub fn writes(&self) -> usize {
        self.lock()
            .objects
            .values()
            .map(|s| s.versions.len().saturating_sub(1))
            .sum()
    }

    /// Medians over the objects: from `start` to created (first seen), from created to the
    /// first status of the current generation, and from there to Ready=Issued.
    pub fn phases(&self, start: Instant) -> Phases {
        let track = self.lock();
        let mut created = Vec::new();
        let mut waiting = Vec::new();
        let mut working = Vec::new();
        for seen in track.objects.values() {
            created.push(seen.first_seen.saturating_duration_since(start));
            if let Some(worked) = seen.worked_at {
                waiting.push(worked.saturating_duration_since(seen.first_seen));
                if let Some(issued) = seen.issued_at {
                    working.push(issued.saturating_duration_since(worked));
                }
            }
        }
        Phases {
            created: median(created),
            waiting: median(waiting),
            working: median(working),
        }
    }

    /// Waits until `n` objects have a Ready condition, or `timeout`; returns how many have.
    pub async fn wait_worked(&self, n: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let worked = self
                .lock()
                .objects
                .values()
                .filter(|s| s.worked_at.is_some())
                .count();
            if worked >= n || Instant::now() >= deadline {
                return worked;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `n` objects have been Ready=Issued; returns when the last one got there.
    pub async fn wait_issued(&self, n: usize, timeout: Duration) -> Result<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let track = self.lock();
                let issued: Vec<Instant> =
                    track.objects.values().filter_map(|s| s.issued_at).collect();
                if issued.len() >= n {
                    return Ok(issued.into_iter().max().expect("n > 0 objects issued"));
                }
                if Instant::now() >= deadline {
                    bail!(
                        "{} of {n} resources Issued after {timeout:?}; by reason: {:?}; watch error: {:?}",
                        issued.len(),
                        reason_counts(&track),
                        track.error
                    );
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Medians of where one resource's time went.
#[derive(Clone, Copy, Debug)]
pub struct Phases {
    /// From the first create to this resource's create, as the watch saw it.
    pub created: Duration,
    /// From its create to the first status for its generation (the intent): queueing.
    pub waiting: Duration,
    /// From that first status to Ready=Issued: the pass itself.
    pub working: Duration,
}

impl Phases {
    pub fn describe(&self) -> String {
        format!(
            "created at +{:.2} s, first status {:.0} ms later, Issued {:.0} ms after that",
            self.created.as_secs_f64(),
            self.waiting.as_secs_f64() * 1000.0,
            self.working.as_secs_f64() * 1000.0
        )
    }
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

/// Objects by the reason of their Ready condition (for the current generation).
fn reason_counts(track: &Track) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for seen in track.objects.values() {
        *counts
            .entry(seen.reason.clone().unwrap_or_else(|| "(none)".into()))
            .or_default() += 1;
    }
    counts
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Lists the namespace's resources (paged) and checks that all `n` are Ready=Issued.
pub async fn verify_all_issued(api: &Api<DynamicObject>, n: usize) -> Result<()> {
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut params = ListParams::default().limit(500);
    loop {
        let page = api.list(&params).await?;
        for object in &page.items {
            *reasons
                .entry(current_ready_reason(object).unwrap_or_else(|| "(none)".into()))
                .or_default() += 1;
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    if reasons.get("Issued").copied().unwrap_or(0) != n || reasons.len() != 1 {
        bail!("expected {n} resources Ready=Issued, the list shows {reasons:?}");
    }
    Ok(())
}

/// Every object's resourceVersion (paged list).
pub async fn resource_versions(api: &Api<DynamicObject>) -> Result<HashMap<String, String>> {
    let mut versions = HashMap::new();
    let mut params = ListParams::default().limit(500);
    loop {
        let page = api.list(&params).await?;
        for object in page.items {
            versions.insert(
                object.metadata.name.unwrap_or_default(),
                object.metadata.resource_version.unwrap_or_default(),
            );
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(versions),
        }
    }
}

/// Counts of the simulator's journal by call, e.g. `{"PostInvitation": 1000, ...}`.
pub fn calls_by_kind(journal: &[graph_sim::JournalEntry]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for entry in journal {
        *counts.entry(format!("{:?}", entry.call)).or_default() += 1;
    }
    counts
}

pub fn count_of(counts: &BTreeMap<String, usize>, key: &str) -> usize {
    counts.get(key).copied().unwrap_or(0)
}

/// `{"a": 1, "b": 2}` as `a 1, b 2`.
pub fn describe_counts(counts: &BTreeMap<String, usize>) -> String {
    if counts.is_empty() {
        return "none".into();
    }
    counts
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}
