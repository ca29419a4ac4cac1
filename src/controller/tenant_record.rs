//! Where the tenant pause is persisted, one ConfigMap in the controller's own namespace, and
//! this process's view of it (docs/design.md, "The tenant pause").
//!
//! The view follows the record with a watch of that one object, so the check right before each
//! Graph write reads memory that the API server keeps current instead of asking the API server
//! twice per reset. The view is trusted only between a complete list of the record and the
//! watch's next error: before the first list, and from an error until the watch has listed
//! again, the check reads the record from the API server as it always did.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::runtime::watcher;
use tracing::{info, warn};

use crate::backoff::Backoff;
use crate::metrics::TenantRecordMetrics;

/// The ConfigMap key holding the time Graph blocked the tenant (RFC 3339).
pub const BLOCKED_AT_KEY: &str = "blockedAt";
/// The API server ends each watch after this long and the watch starts again from where it
/// was; a connection that died without a word is given up 5 s after that.
const WATCH_TIMEOUT_SECS: u32 = 30;
/// Between a failed watch and the next list of the record.
const RESTART: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));

/// What this process knows of the persisted record without asking.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum View {
    /// Not listed yet, or the watch failed since: ask the API server.
    #[default]
    Unknown,
    /// The record as the watch last saw it: the time of the block, or no record.
    Known(Option<Timestamp>),
}

/// The persisted record and the view of it.
#[derive(Clone)]
pub struct Record {
    api: Api<ConfigMap>,
    name: String,
    view: Arc<Mutex<View>>,
    /// The latest block whose record the watch saw deleted: a probe went through after it
    /// (or an administrator ended the pause).
    ended: Arc<Mutex<Option<Timestamp>>>,
    metrics: TenantRecordMetrics,
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("name", &self.name)
            .field("view", &self.view())
            .finish()
    }
}

impl Record {
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        metrics: TenantRecordMetrics,
    ) -> Self {
        Record {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            view: Arc::default(),
            ended: Arc::default(),
            metrics,
        }
    }

    /// The latest block this process saw ended by the deletion of its record.
    pub fn ended(&self) -> Option<Timestamp> {
        *self.ended.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_ended(&self, ended: Option<Timestamp>) {
        let mut latest = self.ended.lock().unwrap_or_else(|e| e.into_inner());
        *latest = (*latest).max(ended);
    }

    fn view(&self) -> View {
        *self.view.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_view(&self, view: View) {
        *self.view.lock().unwrap_or_else(|e| e.into_inner()) = view;
        self.metrics
            .followed
            .set(i64::from(matches!(view, View::Known(_))));
    }

    /// The time of the recorded block: from the watch when it is following the record,
    /// otherwise read from the API server.
    pub async fn blocked_at(&self) -> Result<Option<Timestamp>, kube::Error> {
        match self.view() {
            View::Known(blocked_at) => Ok(blocked_at),
            View::Unknown => self.read().await,
        }
    }

    async fn read(&self) -> Result<Option<Timestamp>, kube::Error> {
        self.metrics.reads.inc();
        let map = self.api.get_opt(&self.name).await?;
        Ok(map.as_ref().and_then(blocked_at_of))
    }

    /// Follows the record until the returned handle is dropped. The view starts unknown (a
    /// view left from an earlier term of leadership is not trusted) and is forgotten again
    /// when the handle goes.
    pub fn follow(&self) -> Following {
        self.set_view(View::Unknown);
        Following {
            task: tokio::spawn(self.clone().keep_following()),
            record: self.clone(),
        }
    }

    /// One watch of the record, listed again after every error (the view is unknown
    /// meanwhile).
    async fn keep_following(self) {
        let config = watcher::Config::default()
            .fields(&format!("metadata.name={}", self.name))
            .timeout(WATCH_TIMEOUT_SECS);
        let mut failures = 0;
        loop {
            let mut fold = Fold::default();
            let mut events = std::pin::pin!(watcher(self.api.clone(), config.clone()));
            while let Some(event) = events.next().await {
                if let Err(err) = &event {
                    failures += 1;
                    warn!(error = %err, record = %self.name, "lost the watch of the tenant-pause record; reading it before each Graph write until it is listed again");
                }
                let failed = event.is_err();
                let view = fold.on(event);
                self.set_ended(fold.ended);
                if let Some(view) = view {
                    if let (View::Known(_), View::Unknown) = (view, self.view()) {
                        info!(record = %self.name, "following the tenant-pause record");
                        failures = 0;
                    }
                    self.set_view(view);
                }
                if failed {
                    break;
                }
            }
            self.set_view(View::Unknown);
            tokio::time::sleep(RESTART.ceiling(failures.max(1))).await;
        }
    }

    /// Writes the later of the recorded block and `at`, with the ConfigMap's resourceVersion as
    /// precondition, so two replicas blocking at once keep the later time.
    pub async fn record_block(&self, at: Timestamp) -> Result<(), kube::Error> {
        let mut tries = 0;
        loop {
            tries += 1;
            let result = match self.api.get_opt(&self.name).await? {
                None => {
                    self.api
                        .create(&PostParams::default(), &self.map(at, None))
                        .await
                }
                Some(existing) => {
                    let at = blocked_at_of(&existing).map_or(at, |t| t.max(at));
                    let rv = existing.metadata.resource_version.clone();
                    self.api
                        .replace(&self.name, &PostParams::default(), &self.map(at, rv))
                        .await
                }
            };
            match result {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(e)) if e.code == 409 && tries < 5 => continue,
                Err(err) => return Err(err),
            }
        }
    }

    /// Deletes the record if it holds a block no later than `answered` (the block an
    /// invitation went through after), with the version read as precondition, so a block
    /// recorded meanwhile by another replica stays.
    pub async fn clear(&self, answered: Timestamp) -> Result<(), kube::Error> {
        let Some(existing) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        if blocked_at_of(&existing).is_some_and(|blocked_at| blocked_at > answered) {
            return Ok(());
        }
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: existing.metadata.resource_version.clone(),
                uid: None,
            }),
            ..DeleteParams::default()
        };
        match self.api.delete(&self.name, &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if matches!(e.code, 404 | 409) => Ok(()),
            Err(err) => Err(err),
        }
    }

    fn map(&self, at: Timestamp, resource_version: Option<String>) -> ConfigMap {
        ConfigMap {
            metadata: kube::api::ObjectMeta {
                name: Some(self.name.clone()),
                resource_version,
                labels: Some(
                    [(
                        "app.kubernetes.io/managed-by".to_owned(),
                        super::MANAGER.to_owned(),
                    )]
                    .into(),
                ),
                ..Default::default()
            },
            data: Some([(BLOCKED_AT_KEY.to_owned(), at.to_string())].into()),
            ..Default::default()
        }
    }
}

/// The watch of the record, for as long as it is held.
pub struct Following {
    task: tokio::task::JoinHandle<()>,
    record: Record,
}

impl Drop for Following {
    fn drop(&mut self) {
        self.task.abort();
        self.record.set_view(View::Unknown);
    }
}

fn blocked_at_of(map: &ConfigMap) -> Option<Timestamp> {
    map.data.as_ref()?.get(BLOCKED_AT_KEY)?.parse().ok()
}

/// The view that a stream of watch events leads to: the pure part of following the record.
#[derive(Debug, Default)]
struct Fold {
    /// While a list is under way: what it has found so far.
    listing: Option<Option<Timestamp>>,
    /// The latest block whose record was deleted.
    ended: Option<Timestamp>,
}

impl Fold {
    /// The new view after `event`, if it changes what is known.
    fn on(&mut self, event: Result<watcher::Event<ConfigMap>, watcher::Error>) -> Option<View> {
        match event {
            Ok(watcher::Event::Init) => {
                self.listing = Some(None);
                Some(View::Unknown)
            }
            Ok(watcher::Event::InitApply(map)) => {
                if let Some(found) = &mut self.listing {
                    *found = blocked_at_of(&map);
                }
                None
            }
            Ok(watcher::Event::InitDone) => {
                Some(View::Known(self.listing.take().and_then(|found| found)))
            }
            Ok(watcher::Event::Apply(map)) => Some(View::Known(blocked_at_of(&map))),
            Ok(watcher::Event::Delete(map)) => {
                self.ended = self.ended.max(blocked_at_of(&map));
                Some(View::Known(None))
            }
            Err(_) => {
                self.listing = None;
                Some(View::Unknown)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(blocked_at: Option<&str>) -> ConfigMap {
        ConfigMap {
            data: blocked_at.map(|at| [(BLOCKED_AT_KEY.to_owned(), at.to_owned())].into()),
            ..Default::default()
        }
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn failed() -> watcher::Error {
        watcher::Error::NoResourceVersion
    }

    #[test]
    fn nothing_is_known_until_the_list_is_complete() {
        let mut fold = Fold::default();
        assert_eq!(fold.on(Ok(watcher::Event::Init)), Some(View::Unknown));
        let blocked = "2026-12-02T10:00:00Z";
        assert_eq!(
            fold.on(Ok(watcher::Event::InitApply(record(Some(blocked))))),
            None
        );
        assert_eq!(
            fold.on(Ok(watcher::Event::InitDone)),
            Some(View::Known(Some(at(blocked))))
        );
    }

    #[test]
    fn an_empty_list_means_no_block() {
        let mut fold = Fold::default();
        fold.on(Ok(watcher::Event::Init));
        assert_eq!(
            fold.on(Ok(watcher::Event::InitDone)),
            Some(View::Known(None))
        );
    }

    #[test]
    fn changes_and_deletion_are_followed() {
        let mut fold = Fold::default();
        fold.on(Ok(watcher::Event::Init));
        fold.on(Ok(watcher::Event::InitDone));
        let blocked = "2026-12-02T10:00:00Z";
        assert_eq!(
            fold.on(Ok(watcher::Event::Apply(record(Some(blocked))))),
            Some(View::Known(Some(at(blocked))))
        );
        assert_eq!(
            fold.on(Ok(watcher::Event::Delete(record(Some(blocked))))),
            Some(View::Known(None))
        );
        assert_eq!(fold.ended, Some(at(blocked)), "the deleted block is over");
        // A record without a readable time pauses nothing (as when read from the API server).
        assert_eq!(
            fold.on(Ok(watcher::Event::Apply(record(Some("yesterday"))))),
            Some(View::Known(None))
        );
    }

    #[test]
    fn an_error_makes_the_view_unknown_even_in_the_middle_of_a_list() {
        let mut fold = Fold::default();
        fold.on(Ok(watcher::Event::Init));
        fold.on(Ok(watcher::Event::InitApply(record(Some(
            "2026-12-02T10:00:00Z",
        )))));
        assert_eq!(fold.on(Err(failed())), Some(View::Unknown));
        // What the broken list found is not carried into the next one.
        fold.on(Ok(watcher::Event::Init));
        assert_eq!(
            fold.on(Ok(watcher::Event::InitDone)),
            Some(View::Known(None))
        );
    }

    #[tokio::test]
    async fn the_check_asks_the_api_server_only_while_the_view_is_unknown() {
        // Nothing listens at this address: any read from the API server fails.
        let config = kube::Config::new("https://127.0.0.1:1".parse().unwrap());
        let metrics = TenantRecordMetrics::default();
        let client = kube::Client::try_from(config).unwrap();
        let record = Record::new(client, "ns", "r", metrics.clone());
        assert!(record.blocked_at().await.is_err(), "unknown: read it");
        assert_eq!(metrics.reads.get(), 1);
        let blocked = at("2026-12-02T10:00:00Z");
        record.set_view(View::Known(Some(blocked)));
        assert_eq!(metrics.followed.get(), 1);
        assert_eq!(record.blocked_at().await.unwrap(), Some(blocked));
        record.set_view(View::Known(None));
        assert_eq!(record.blocked_at().await.unwrap(), None);
        assert_eq!(metrics.reads.get(), 1, "no read while the view is known");
        record.set_view(View::Unknown);
        assert_eq!(metrics.followed.get(), 0);
        assert!(record.blocked_at().await.is_err(), "unknown again: read it");
        assert_eq!(metrics.reads.get(), 2);
    }

    #[tokio::test]
    async fn a_view_is_trusted_only_while_its_watch_is_held() {
        let config = kube::Config::new("https://127.0.0.1:1".parse().unwrap());
        let metrics = TenantRecordMetrics::default();
        let client = kube::Client::try_from(config).unwrap();
        let record = Record::new(client, "ns", "r", metrics.clone());
        // Left over from an earlier term of leadership.
        record.set_view(View::Known(None));
        let following = record.follow();
        assert_eq!(
            record.view(),
            View::Unknown,
            "not trusted before a new list"
        );
        record.set_view(View::Known(None));
        drop(following);
        assert_eq!(
            record.view(),
            View::Unknown,
            "forgotten when the watch ends"
        );
        assert_eq!(metrics.followed.get(), 0);
    }
}
