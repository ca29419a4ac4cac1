//! Wiring: the watch, the cache, the controller loop, readiness, and the entry of each pass.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Resource, ResourceExt};
use tracing::{Instrument, warn};

use super::context::{Context, Watched};
use super::core::decide::decide;
use super::core::input::{Learned, Observed, Settings, TenantGate};
use super::core::step::Step;
use super::core::time::until_from;
use super::effects::KubeIo;
use super::error::Error;
use super::exec::pass::{Outcome, PassRunner};
use crate::resource::reason::Reason;
use crate::resource::{
    GuestRedemptionReset, REQUESTED_BY_ANNOTATION, RETRY_ANNOTATION, RETRY_REQUESTED_BY_ANNOTATION,
};

/// kubectl's copy of the last applied manifest, kept in an annotation.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// A pass that found a newer object runs again this soon.
const START_OVER: Duration = Duration::from_millis(200);
/// A pass whose effect failed runs again after about this long.
const ERROR_RETRY: Duration = Duration::from_secs(5);

/// Runs the controller until the shutdown future completes.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    concurrency: u16,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    // A process that starts writing (or takes over the lead) may follow one that spent its
    // burst a moment ago: it starts with an empty bucket (docs/design.md, "The write limit in
    // every window").
    ctx.graph.limiter().start_empty(tokio::time::Instant::now());
    let api: Api<Watched> = match &namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    let config = kube::runtime::controller::Config::default().concurrency(concurrency);
    // The cache keeps every resource in memory; managedFields and kubectl's last-applied copy
    // of the manifest are most of a small object and nothing a pass reads, so they are dropped
    // before caching (a third of the memory at 10,000 resources, docs/performance.md).
    let (reader, writer) = reflector::store();
    ctx.set_store(reader.clone());
    let resources = watcher(api.clone(), watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(|obj: &mut Watched| {
            obj.managed_fields_mut().clear();
            obj.annotations_mut().remove(LAST_APPLIED);
        })
        .reflect(writer)
        .applied_objects();
    // The controller waits for its cache to sync before it reconciles; a stop before that must
    // end the watch, or the graceful shutdown would wait for a sync that never comes.
    let resources = crate::shutdown::end_on_stop(resources, ctx.shutdown.clone());
    let controller = Controller::for_stream(resources, reader.clone()).with_config(config);
    let gauges = tokio::spawn(super::gauges::keep(reader.clone(), ctx.clone()));
    // Domain migrations: their own watch, beside the resets'. Aborted when the resets' ends
    // (a migration pass writes only to the API server, never to Graph).
    let migrations = tokio::spawn(crate::migration::run(
        ctx.clone(),
        namespace.clone(),
        crate::shutdown::stopping_owned(ctx.shutdown.clone()),
    ));
    // The tenant pause is checked before every Graph write against this watch of its record.
    let _tenant_record = ctx.tenant.follow_record();
    // Ready once the watch cache has synced. Store::wait_until_ready cannot be awaited here:
    // its one-shot keeps a single waker and the controller awaits it too. The controller starts
    // reconciling only once its store is ready, so the first reconcile marks readiness; with no
    // resources at all, an empty list of them does.
    match api.list(&kube::api::ListParams::default().limit(1)).await {
        Ok(list) if list.items.is_empty() => ctx.readiness.set_ready(true),
        Ok(_) => {}
        Err(err) => {
            warn!(error = %err, "cannot list GuestRedemptionResets yet; is the CRD installed?")
        }
    }
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(err) = result {
                tracing::debug!(error = %err, "reconcile ended with an error");
            }
        })
        .await;
    gauges.abort();
    migrations.abort();
}

/// A failed effect: logged, counted by its step, and told on the resource as a Warning Event.
fn error_policy(obj: Arc<Watched>, err: &Error, ctx: Arc<Context>) -> Action {
    warn!(step = err.step(), error = %err, "reconcile failed; retrying");
    let event = Event {
        type_: EventType::Warning,
        reason: "ReconcileFailed".to_owned(),
        note: Some(format!("step {}: {err}", err.step())),
        action: err.step().to_owned(),
        secondary: None,
    };
    let reference = obj.object_ref(&());
    tokio::spawn(async move {
        if let Err(err) = ctx.recorder.publish(&event, &reference).await {
            warn!(error = %err, "could not publish an event");
        }
    });
    match err {
        // Nothing changes until someone fixes the object, which the watch delivers.
        Error::InvalidObject(_) => Action::await_change(),
        _ => Action::requeue(jitter(ERROR_RETRY)),
    }
}

/// Adds up to 20% random delay so that many resources do not retry in lockstep.
fn jitter(base: Duration) -> Duration {
    crate::backoff::spread(base, rand::random::<f64>())
}

/// Reconciles one resource: a pass on the fresh object when there is work to do.
pub async fn reconcile(obj: Arc<Watched>, ctx: Arc<Context>) -> Result<Action, Error> {
    let obj = match &obj.0 {
        Ok(valid) => Arc::new(valid.clone()),
        Err(invalid) => return Err(Error::InvalidObject(invalid.error.clone())),
    };
    let namespace = obj.namespace().ok_or(Error::Unaddressable)?;
    let name = obj.meta().name.clone().ok_or(Error::Unaddressable)?;
    let generation = obj.meta().generation.unwrap_or(0);
    // Every log line of the pass, Graph's client-request-ids included, carries these fields.
    let span = tracing::info_span!(
        "reconcile",
        resource = %format!("{namespace}/{name}"),
        generation,
        change_ref = obj.spec.change_ref.as_deref().unwrap_or(""),
    );
    // The controller starts reconciling only once its watch cache has synced.
    ctx.readiness.set_ready(true);
    let started = std::time::Instant::now();
    let result = pass_unless_superseded(obj, &ctx, &namespace)
        .instrument(span)
        .await;
    ctx.metrics
        .record_reconcile(result.as_ref().err().map(Error::step), started.elapsed());
    result
}

/// What a pass would do without looking further: nothing (settled) or wait (`nextAttemptAt`,
/// or the follow-through's `nextCheckAt`).
fn quiet_action(obj: &GuestRedemptionReset, settings: &Settings, now: Timestamp) -> Option<Action> {
    let status = obj.status.clone().unwrap_or_default();
    let observed = Observed {
        spec: &obj.spec,
        generation: obj.meta().generation.unwrap_or(0),
        retry_annotation: obj.annotations().get(RETRY_ANNOTATION).map(String::as_str),
        requested_by: obj
            .annotations()
            .get(REQUESTED_BY_ANNOTATION)
            .map(String::as_str),
        retry_requested_by: obj
            .annotations()
            .get(RETRY_REQUESTED_BY_ANNOTATION)
            .map(String::as_str),
        status: &status,
        failures: 0,
        migration: crate::migration::approval::controlling_migration(obj).map(|(name, _)| name),
    };
    // The tenant gate matters only deeper in the flow; Open claims nothing.
    match decide(
        &observed,
        settings,
        TenantGate::Open,
        now,
        &Learned::default(),
    ) {
        Step::Nothing => Some(Action::await_change()),
        Step::Wait { until } => Some(action_of(Outcome::Wait(until_from(now, until)))),
        _ => None,
    }
}

/// The cache can lag behind this process's own writes: the watch events of the writes of a
/// pass arrive after it was queued again (each write queues it). A cached copy at a version
/// this process's own write replaced is skipped: the event of the newer version is on its way
/// and queues the next pass. Any other copy is current as far as this process knows, and the
/// pass works on it without reading it again; a write by somebody else that the cache has not
/// shown yet fails the first guarded write, and the pass starts over.
async fn pass_unless_superseded(
    cached: Arc<GuestRedemptionReset>,
    ctx: &Context,
    namespace: &str,
) -> Result<Action, Error> {
    if ctx.is_behind(&cached) {
        return Ok(Action::await_change());
    }
    if let Some(action) = quiet_action(&cached, &ctx.settings, Timestamp::now()) {
        return Ok(action);
    }
    let current = GuestRedemptionReset::clone(&cached);
    let failures = ctx.failures_of(&current);
    let mut io = KubeIo::new(ctx, namespace);
    let outcome = PassRunner::new(current.clone(), failures)
        .run(&mut io, &ctx.settings)
        .await?;
    if let Outcome::Reported(report) = &outcome {
        ctx.metrics.record_outcome(report.reason);
        let failed = matches!(report.reason, Reason::Throttled | Reason::TransientError);
        ctx.record_failure(&current, failed);
    }
    Ok(action_of(outcome))
}

/// The one place a pass's outcome becomes the controller's next action.
pub fn action_of(outcome: Outcome) -> Action {
    match outcome {
        Outcome::Settled | Outcome::Abandoned => Action::await_change(),
        Outcome::Wait(wait) => Action::requeue(wait.max(Duration::from_millis(100))),
        Outcome::Reported(report) => match report.requeue {
            Some(after) if report.on_time => Action::requeue(after),
            Some(after) => Action::requeue(jitter(after)),
            None => Action::await_change(),
        },
        Outcome::StartOver | Outcome::Superseded => Action::requeue(START_OVER),
    }
}
