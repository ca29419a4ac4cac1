//! Where the tenant pause is persisted, one ConfigMap in the controller's own namespace, and
//! this process's view of it (docs/design.md, "The tenant pause").
//!
//! The view follows the record with a watch of that one object, so the check right before each
//! Graph write reads memory instead of asking the API server twice per reset. A watch can go
//! quiet without a word (a black-holed connection, a stream that is alive but stale), so the
//! view is trusted only while it heard from the API server within the last [`FRESH`];
//! otherwise the check reads the record, at most once per [`FRESH`] for all passes together.
//! Each watch is a streaming list that the API server ends after [`WATCH_TIMEOUT_SECS`]: it
//! begins with the record as it is and a bookmark that says so, then sends its changes; the
//! next watch starts at once. A healthy watch is so heard from every few seconds even when the
//! record never changes (the API server's own bookmarks come about once a minute, and only
//! when something of the kind changed), and a stream that says nothing for
//! [`WATCH_TIMEOUT_SECS`] plus [`STREAM_MARGIN`] is given up.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, PostParams, Preconditions, WatchEvent, WatchParams};
use kube::core::Status;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::backoff::Backoff;
use crate::metrics::TenantRecordMetrics;

/// The ConfigMap key holding the time Graph blocked the tenant (RFC 3339).
pub const BLOCKED_AT_KEY: &str = "blockedAt";
/// How recently the view must have heard from the API server to be trusted for a write
/// (docs/design.md, "The tenant pause"); older, the record is read, and a read is trusted as
/// long.
pub const FRESH: Duration = Duration::from_secs(10);
/// The API server ends each watch after this long; the next one begins with the record as it
/// is, so the view hears from the API server at least this often.
const WATCH_TIMEOUT_SECS: u32 = 6;
/// A stream that says nothing for the watch timeout and this long is given up: its
/// connection died without a word.
const STREAM_MARGIN: Duration = Duration::from_secs(4);
/// A read (or the start of a watch) that takes longer failed.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
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

/// The record as last heard from the API server, and when.
#[derive(Clone, Copy, Debug)]
struct Heard {
    blocked_at: Option<Timestamp>,
    at: Instant,
}

impl Heard {
    fn fresh(self, now: Instant) -> Option<Option<Timestamp>> {
        (now.saturating_duration_since(self.at) < FRESH).then_some(self.blocked_at)
    }
}

/// The persisted record and the view of it.
#[derive(Clone)]
pub struct Record {
    api: Api<ConfigMap>,
    name: String,
    view: Arc<Mutex<View>>,
    /// When the watch last heard from the API server.
    heard: Arc<Mutex<Option<Instant>>>,
    /// The last read of the record; held while a read is under way, so that passes checking
    /// at once share one read.
    last_read: Arc<tokio::sync::Mutex<Option<Heard>>>,
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
            heard: Arc::default(),
            last_read: Arc::default(),
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

    /// The watch heard from the API server at `at` (an event, a bookmark, a list).
    fn heard_at(&self, at: Instant) {
        *self.heard.lock().unwrap_or_else(|e| e.into_inner()) = Some(at);
    }

    /// What the watch knows, if it heard from the API server within [`FRESH`].
    fn fresh_view(&self) -> Option<Option<Timestamp>> {
        let View::Known(blocked_at) = self.view() else {
            return None;
        };
        let at = (*self.heard.lock().unwrap_or_else(|e| e.into_inner()))?;
        Heard { blocked_at, at }.fresh(Instant::now())
    }

    /// The time of the recorded block: from the watch when it heard from the API server
    /// within [`FRESH`], otherwise from a read of the record no older than that.
    pub async fn blocked_at(&self) -> Result<Option<Timestamp>, kube::Error> {
        if let Some(blocked_at) = self.fresh_view() {
            return Ok(blocked_at);
        }
        let mut last_read = self.last_read.lock().await;
        // Another pass may have read meanwhile, or the watch heard again.
        if let Some(blocked_at) = self.fresh_view() {
            return Ok(blocked_at);
        }
        if let Some(blocked_at) = last_read.and_then(|read| read.fresh(Instant::now())) {
            return Ok(blocked_at);
        }
        // Trusted from the moment it was sent: the answer may describe any moment after.
        let at = Instant::now();
        let blocked_at = self.read().await?;
        *last_read = Some(Heard { blocked_at, at });
        Ok(blocked_at)
    }

    async fn read(&self) -> Result<Option<Timestamp>, kube::Error> {
        self.metrics.reads.inc();
        let map = within(READ_TIMEOUT, self.api.get_opt(&self.name)).await?;
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

    /// Watches the record, again after every failure (the view is unknown meanwhile).
    async fn keep_following(self) {
        let mut fold = Fold::default();
        let mut failures = 0;
        loop {
            let err = self.follow_once(&mut fold, &mut failures).await;
            fold.lost();
            failures += 1;
            self.set_view(View::Unknown);
            warn!(error = %err, record = %self.name, "lost the watch of the tenant-pause record; reading it before each Graph write until it is followed again");
            tokio::time::sleep(RESTART.ceiling(failures)).await;
        }
    }

    /// Watches the record, one watch after another, until something fails; `failures` is
    /// reset once the record is followed again. Each watch begins with the record as it is
    /// (a streaming list: the record if it exists, then a bookmark), so the view is heard
    /// from at least once per watch even when the record never changes.
    async fn follow_once(&self, fold: &mut Fold, failures: &mut u32) -> FollowError {
        let params = WatchParams::streaming_lists()
            .fields(&format!("metadata.name={}", self.name))
            .timeout(WATCH_TIMEOUT_SECS);
        let quiet = Duration::from_secs(WATCH_TIMEOUT_SECS.into()) + STREAM_MARGIN;
        loop {
            let stream = match within(READ_TIMEOUT, self.api.watch(&params, "")).await {
                Ok(stream) => stream,
                Err(err) => return FollowError::Kube(err),
            };
            let mut stream = std::pin::pin!(stream);
            fold.start();
            loop {
                let event = match tokio::time::timeout(quiet, stream.next()).await {
                    Err(_) => return FollowError::Quiet,
                    // The API server ended the watch: the next one starts at once.
                    Ok(None) => break,
                    Ok(Some(Err(err))) => return FollowError::Kube(err),
                    Ok(Some(Ok(event))) => event,
                };
                let was_followed = matches!(self.view(), View::Known(_));
                let change = match fold.on(event) {
                    Ok(change) => change,
                    Err(status) => return FollowError::Watch(status),
                };
                self.set_ended(change.ended);
                if let Some(blocked_at) = change.record {
                    if !was_followed {
                        info!(record = %self.name, "following the tenant-pause record");
                        *failures = 0;
                    }
                    self.set_view(View::Known(blocked_at));
                }
                if !fold.listing() {
                    self.heard_at(Instant::now());
                }
            }
        }
    }

    /// Writes the later of the recorded block and `at`, with the ConfigMap's resourceVersion as
    /// precondition, so two replicas blocking at once keep the later time.
    pub async fn record_block(&self, at: Timestamp) -> Result<(), kube::Error> {
        let mut tries = 0;
        loop {
            tries += 1;
            let result = match within(READ_TIMEOUT, self.api.get_opt(&self.name)).await? {
                None => {
                    let map = self.map(at, None);
                    within(READ_TIMEOUT, self.api.create(&PostParams::default(), &map)).await
                }
                Some(existing) => {
                    let at = blocked_at_of(&existing).map_or(at, |t| t.max(at));
                    let rv = existing.metadata.resource_version.clone();
                    let map = self.map(at, rv);
                    within(
                        READ_TIMEOUT,
                        self.api.replace(&self.name, &PostParams::default(), &map),
                    )
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
                        crate::resource::MANAGER.to_owned(),
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

/// `fut`, failing with a timeout error after `limit`: kube's client has no read timeout.
async fn within<T>(
    limit: Duration,
    fut: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, kube::Error> {
    tokio::time::timeout(limit, fut).await.unwrap_or_else(|_| {
        Err(kube::Error::Service(
            format!("no answer from the API server within {limit:?}").into(),
        ))
    })
}

/// Why a watch of the record ended.
#[derive(Debug, thiserror::Error)]
enum FollowError {
    #[error("{0}")]
    Kube(kube::Error),
    #[error("the API server ended the watch: {}", .0.message)]
    Watch(Box<Status>),
    #[error("no event, bookmark or end of the watch within its timeout")]
    Quiet,
}

/// The bookmark that ends the record as it was when a watch began.
const INITIAL_EVENTS_END: &str = "k8s.io/initial-events-end";

/// The view that a stream of watch events leads to: the pure part of following the record.
#[derive(Debug, Default)]
struct Fold {
    /// While a watch sends the record as it is: what it has found so far.
    initial: Option<Option<Timestamp>>,
    /// The record as last followed; `None` while unknown.
    known: Option<Option<Timestamp>>,
}

/// What one watch event changes.
#[derive(Debug, Default, PartialEq, Eq)]
struct Change {
    /// The record now (the time of the block, or none), when the event says.
    record: Option<Option<Timestamp>>,
    /// The block whose record was deleted.
    ended: Option<Timestamp>,
}

impl Fold {
    /// A watch begins: the record as it is comes first.
    fn start(&mut self) {
        self.initial = Some(None);
    }

    /// The watch failed: nothing is known.
    fn lost(&mut self) {
        *self = Fold::default();
    }

    /// Whether the watch is still sending the record as it was when it began.
    fn listing(&self) -> bool {
        self.initial.is_some()
    }

    fn on(&mut self, event: WatchEvent<ConfigMap>) -> Result<Change, Box<Status>> {
        let change = match event {
            WatchEvent::Added(map) | WatchEvent::Modified(map) => match &mut self.initial {
                Some(found) => {
                    *found = blocked_at_of(&map);
                    Change::default()
                }
                None => Change {
                    record: Some(blocked_at_of(&map)),
                    ended: None,
                },
            },
            WatchEvent::Deleted(map) => Change {
                record: Some(None),
                ended: blocked_at_of(&map),
            },
            WatchEvent::Bookmark(bookmark) => {
                let ends_initial = bookmark
                    .metadata
                    .annotations
                    .contains_key(INITIAL_EVENTS_END);
                match self.initial.take_if(|_| ends_initial) {
                    Some(found) => self.found(found),
                    None => Change::default(),
                }
            }
            WatchEvent::Error(status) => {
                self.lost();
                return Err(status);
            }
        };
        if let Some(record) = change.record {
            self.known = Some(record);
        }
        Ok(change)
    }

    /// The record as a watch found it when it began. A record that was followed and is gone
    /// was deleted between two watches: its block ended, as if the deletion had been seen.
    fn found(&self, found: Option<Timestamp>) -> Change {
        let ended = match (self.known, found) {
            (Some(Some(before)), None) => Some(before),
            _ => None,
        };
        Change {
            record: Some(found),
            ended,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn record(blocked_at: Option<&str>) -> ConfigMap {
        ConfigMap {
            metadata: kube::api::ObjectMeta {
                resource_version: Some("7".to_owned()),
                ..Default::default()
            },
            data: blocked_at.map(|at| [(BLOCKED_AT_KEY.to_owned(), at.to_owned())].into()),
            ..Default::default()
        }
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    /// A record whose API server is nowhere: every read fails.
    fn unreachable(metrics: &TenantRecordMetrics) -> Record {
        let config = kube::Config::new("https://127.0.0.1:1".parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        Record::new(client, "ns", "r", metrics.clone())
    }

    fn bookmark(initial_events_end: bool) -> WatchEvent<ConfigMap> {
        let annotations = if initial_events_end {
            serde_json::json!({INITIAL_EVENTS_END: "true"})
        } else {
            serde_json::json!({})
        };
        WatchEvent::Bookmark(
            serde_json::from_value(serde_json::json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"resourceVersion": "9", "annotations": annotations}
            }))
            .unwrap(),
        )
    }

    #[test]
    fn nothing_is_known_until_the_record_as_it_is_has_been_sent() {
        let mut fold = Fold::default();
        fold.start();
        let blocked = "2026-12-02T10:00:00Z";
        let added = fold.on(WatchEvent::Added(record(Some(blocked)))).unwrap();
        assert_eq!(added, Change::default());
        assert!(fold.listing());
        assert_eq!(fold.on(bookmark(false)).unwrap(), Change::default());
        let end = fold.on(bookmark(true)).unwrap();
        assert_eq!(end.record, Some(Some(at(blocked))));
        assert!(!fold.listing());
    }

    #[test]
    fn no_record_at_the_start_of_a_watch_means_no_block() {
        let mut fold = Fold::default();
        fold.start();
        let end = fold.on(bookmark(true)).unwrap();
        let nothing = Change {
            record: Some(None),
            ended: None,
        };
        assert_eq!(end, nothing);
    }

    #[test]
    fn changes_and_deletion_are_followed() {
        let mut fold = Fold::default();
        fold.start();
        fold.on(bookmark(true)).unwrap();
        let blocked = "2026-12-02T10:00:00Z";
        let change = fold
            .on(WatchEvent::Modified(record(Some(blocked))))
            .unwrap();
        assert_eq!(change.record, Some(Some(at(blocked))));
        let change = fold.on(WatchEvent::Deleted(record(Some(blocked)))).unwrap();
        assert_eq!(change.record, Some(None));
        assert_eq!(change.ended, Some(at(blocked)), "the deleted block is over");
        // A record without a readable time pauses nothing (as when read from the API server).
        let change = fold
            .on(WatchEvent::Added(record(Some("yesterday"))))
            .unwrap();
        assert_eq!((change.record, change.ended), (Some(None), None));
        // A plain bookmark only says that the watch is alive.
        assert_eq!(fold.on(bookmark(false)).unwrap(), Change::default());
    }

    #[test]
    fn a_record_deleted_between_two_watches_ended_its_block() {
        let mut fold = Fold::default();
        let blocked = "2026-12-02T10:00:00Z";
        fold.start();
        fold.on(WatchEvent::Added(record(Some(blocked)))).unwrap();
        fold.on(bookmark(true)).unwrap();
        fold.start();
        let end = fold.on(bookmark(true)).unwrap();
        assert_eq!((end.record, end.ended), (Some(None), Some(at(blocked))));
        // After a failure nothing was followed: an absent record ends nothing.
        fold.lost();
        fold.start();
        fold.on(WatchEvent::Added(record(Some(blocked)))).unwrap();
        let gone = Status::failure("too old", "Expired").with_code(410);
        assert!(fold.on(WatchEvent::Error(Box::new(gone))).is_err());
        assert!(!fold.listing(), "what the broken watch found is dropped");
        fold.start();
        assert_eq!(fold.on(bookmark(true)).unwrap().ended, None);
    }

    #[test]
    fn what_was_heard_is_trusted_for_ten_seconds() {
        let heard = Heard {
            blocked_at: None,
            at: Instant::now(),
        };
        assert_eq!(
            heard.fresh(heard.at + Duration::from_millis(9_999)),
            Some(None)
        );
        assert_eq!(heard.fresh(heard.at + FRESH), None);
    }

    #[tokio::test]
    async fn the_check_asks_the_api_server_unless_the_watch_heard_from_it_lately() {
        let metrics = TenantRecordMetrics::default();
        let record = unreachable(&metrics);
        assert!(record.blocked_at().await.is_err(), "unknown: read it");
        assert_eq!(metrics.reads.get(), 1);
        let blocked = at("2026-12-02T10:00:00Z");
        record.set_view(View::Known(Some(blocked)));
        assert_eq!(metrics.followed.get(), 1);
        assert!(record.blocked_at().await.is_err(), "never heard: read it");
        record.heard_at(Instant::now());
        assert_eq!(record.blocked_at().await.unwrap(), Some(blocked));
        record.set_view(View::Known(None));
        assert_eq!(record.blocked_at().await.unwrap(), None);
        assert_eq!(
            metrics.reads.get(),
            2,
            "no read while the watch is heard from"
        );
        // Known, but the watch has said nothing for longer than the bound: a stalled stream.
        record.heard_at(Instant::now().checked_sub(FRESH).unwrap());
        assert!(record.blocked_at().await.is_err(), "stale: read it");
        assert_eq!(metrics.reads.get(), 3);
        record.set_view(View::Unknown);
        assert_eq!(metrics.followed.get(), 0);
    }

    /// An API server that answers GETs of ConfigMap `r` in namespace `ns` with a recorded
    /// block, slowly enough that checks overlap, counting the reads.
    async fn slow_api_server(blocked: &'static str) -> (kube::Client, Arc<AtomicU64>) {
        let gets = Arc::new(AtomicU64::new(0));
        let counted = gets.clone();
        let app = axum::Router::new().route(
            "/api/v1/namespaces/ns/configmaps/r",
            axum::routing::get(move || {
                let counted = counted.clone();
                async move {
                    counted.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let map = serde_json::json!({
                        "apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": "r", "namespace": "ns", "resourceVersion": "3"},
                        "data": {BLOCKED_AT_KEY: blocked},
                    });
                    ([("content-type", "application/json")], map.to_string())
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
        (client, gets)
    }

    #[tokio::test]
    async fn concurrent_checks_share_one_read_per_ten_seconds() {
        let blocked = "2026-12-02T10:00:00Z";
        let (client, gets) = slow_api_server(blocked).await;
        let metrics = TenantRecordMetrics::default();
        let record = Record::new(client, "ns", "r", metrics.clone());
        let checks = (0..8).map(|_| {
            let record = record.clone();
            tokio::spawn(async move { record.blocked_at().await.unwrap() })
        });
        for check in futures::future::join_all(checks).await {
            assert_eq!(check.unwrap(), Some(at(blocked)));
        }
        assert_eq!(record.blocked_at().await.unwrap(), Some(at(blocked)));
        assert_eq!(gets.load(Ordering::SeqCst), 1, "one read for nine checks");
        assert_eq!(metrics.reads.get(), 1);
        // The read grows old: the next check reads again.
        *record.last_read.lock().await = Some(Heard {
            blocked_at: None,
            at: Instant::now().checked_sub(FRESH).unwrap(),
        });
        assert_eq!(record.blocked_at().await.unwrap(), Some(at(blocked)));
        assert_eq!(gets.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_view_is_trusted_only_while_its_watch_is_held() {
        let metrics = TenantRecordMetrics::default();
        let record = unreachable(&metrics);
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
