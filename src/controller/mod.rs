//! The controller: watches `GuestRedemptionReset` resources and reconciles each one.
//!
//! The flow of one pass: [`decide::decide`] names the next step, the effects below perform it
//! (a Graph call or a guarded status write) and record what was learnt, until the decision is
//! a report, which becomes the status, an Event and the requeue.

pub mod decide;
pub mod reason;
pub mod status;
pub mod tenant;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Resource, ResourceExt};
use tracing::{Instrument, info, warn};

use crate::admin::Readiness;
use crate::graph::{
    DirectoryUser, ErrorClass, FailureKind, GraphClient, GraphError, InvitationMessage, RedeemUrl,
    ResetRedemptionRequest, WriteSlot,
};
use crate::metrics::Metrics;
use crate::resource::{
    Attempt, GuestRedemptionReset, GuestRedemptionResetStatus, REDEEM_URL_SECRET_KEY,
    RETRY_ANNOTATION, UserKey,
};
use crate::shutdown::Shutdown;
use decide::{
    Failure, Observed, Pass, Posted, Report, Resolution, Settings, Step, TenantGate, decide,
};
use reason::Reason;
use status::Stamp;
use tenant::TenantGuard;

/// The pass ends early and runs again soon on the fresh object.
const START_OVER: Action = Action::requeue(Duration::from_millis(200));

/// kubectl's copy of the last applied manifest, kept in an annotation.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Field manager and Event reporter name.
pub const MANAGER: &str = "guestreset";

/// Test-only fault injection, read from `GUESTRESET_FAILPOINT` at start-up: `hang-after-intent`
/// stops a pass right after the intent was recorded, so a test can kill the process there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failpoint {
    HangAfterIntent,
}

impl Failpoint {
    pub fn from_env() -> Option<Self> {
        match std::env::var("GUESTRESET_FAILPOINT").ok().as_deref() {
            Some("hang-after-intent") => Some(Failpoint::HangAfterIntent),
            _ => None,
        }
    }
}

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
    /// The process is stopping: passes abandon themselves, except one whose POST is in flight
    /// (docs/operations.md).
    pub shutdown: Shutdown,
    pub failpoint: Option<Failpoint>,
    /// Consecutive failed passes per resource and generation, for backoff. Lost on restart,
    /// which only shortens one backoff.
    failures: Mutex<HashMap<(String, i64), u32>>,
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
            failures: Mutex::default(),
        }
    }

    fn failures_of(&self, key: &(String, i64)) -> u32 {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .copied()
            .unwrap_or(0)
    }

    fn set_failures(&self, key: (String, i64), failed: bool) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failed {
            *failures.entry(key).or_default() += 1;
        } else {
            failures.remove(&key);
        }
    }
}

/// Errors of the effects layer. Graph failures are not errors here: they become reasons.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the resource has no namespace or name")]
    Unaddressable,
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

/// Runs the controller until the shutdown future completes.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    concurrency: u16,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let api: Api<GuestRedemptionReset> = match &namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    let config = kube::runtime::controller::Config::default().concurrency(concurrency);
    // The cache keeps every resource in memory; managedFields and kubectl's last-applied copy
    // of the manifest are most of a small object and nothing a pass reads, so they are dropped
    // before caching (a third of the memory at 10,000 resources, docs/performance.md).
    let (reader, writer) = reflector::store();
    let resources = watcher(api.clone(), watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(|obj: &mut GuestRedemptionReset| {
            obj.managed_fields_mut().clear();
            obj.annotations_mut().remove(LAST_APPLIED);
        })
        .reflect(writer)
        .applied_objects();
    let resources = crate::shutdown::end_on_stop(resources, ctx.shutdown.clone());
    let controller = Controller::for_stream(resources, reader).with_config(config);
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
}

fn error_policy(_obj: Arc<GuestRedemptionReset>, err: &Error, _ctx: Arc<Context>) -> Action {
    warn!(error = %err, "reconcile failed; retrying");
    Action::requeue(jitter(Duration::from_secs(5)))
}

/// Adds up to 20% random delay so that many resources do not retry in lockstep.
fn jitter(base: Duration) -> Duration {
    base + base.mul_f64(rand::random::<f64>() * 0.2)
}

/// A guarded status write failed because someone else wrote first.
fn is_conflict(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 409)
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

async fn resolve(graph: &GraphClient, key: &UserKey<'_>) -> Result<Resolution, Failure> {
    let found = match key {
        UserKey::Id(id) | UserKey::UserPrincipalName(id) => {
            graph.get_user(id).await.map(|u| u.into_iter().collect())
        }
        UserKey::Mail(mail) => graph.find_users_by_mail(mail).await,
    };
    let mut users: Vec<DirectoryUser> = found.map_err(|e| failure_of(&e))?;
    Ok(match users.len() {
        0 => Resolution::NotFound,
        1 => Resolution::Found(users.remove(0)),
        n => Resolution::Ambiguous(n),
    })
}

fn invitation_request(obj: &GuestRedemptionReset, user_id: &str) -> ResetRedemptionRequest {
    let spec = &obj.spec;
    ResetRedemptionRequest {
        user_id: user_id.to_owned(),
        email: spec.email.clone(),
        redirect_url: spec.redirect_url.clone(),
        send_invitation_message: spec.send_invitation_message,
        message: spec.message.as_ref().map(|m| InvitationMessage {
            language: Some(m.language.clone()),
            body: m.body.clone(),
            cc_recipient: m.cc_recipient.clone(),
        }),
    }
}

/// One resource's pass: the object as it is now on the server (after our own writes).
struct Effects<'a> {
    ctx: &'a Context,
    api: Api<GuestRedemptionReset>,
    current: GuestRedemptionReset,
}

impl Effects<'_> {
    fn status(&self) -> GuestRedemptionResetStatus {
        self.current.status.clone().unwrap_or_default()
    }

    /// Writes the status with the object's resourceVersion as precondition.
    async fn write_status(
        &mut self,
        status: GuestRedemptionResetStatus,
    ) -> Result<(), kube::Error> {
        let mut next = self.current.clone();
        next.status = Some(status);
        next.metadata.managed_fields = None;
        let name = self.current.name_any();
        self.current = self
            .api
            .replace_status(&name, &PostParams::default(), &next)
            .await?;
        Ok(())
    }

    /// Writes the status with the object's resourceVersion as precondition; `false` when another
    /// writer (a replica, a human, a spec edit) changed the resource first, so the pass must
    /// start over from the fresh object rather than act on a stale view.
    async fn write_guarded(
        &mut self,
        status: GuestRedemptionResetStatus,
    ) -> Result<bool, kube::Error> {
        match self.write_status(status).await {
            Ok(()) => Ok(true),
            Err(err) if is_conflict(&err) => {
                info!("another writer changed the resource first; starting over");
                Ok(false)
            }
            Err(err) => Err(err),
        }
    }

    /// Writes a report's status. After a POST the outcome must not be lost to a conflict, so it
    /// is re-applied on the fresh object until it lands.
    async fn write_report(
        &mut self,
        report: &Report,
        stamp: Stamp<'_>,
        must_land: bool,
    ) -> Result<bool, kube::Error> {
        for _ in 0..8 {
            let old = self.status();
            let next = status::apply_report(&old, report, stamp);
            if next == old {
                return Ok(true);
            }
            match self.write_status(next).await {
                Ok(()) => return Ok(true),
                Err(err) if is_conflict(&err) && must_land => {
                    self.current = self.api.get_status(&self.current.name_any()).await?;
                }
                Err(err) if is_conflict(&err) => return Ok(false),
                Err(err) => return Err(err),
            }
        }
        Ok(false)
    }

    async fn publish(&self, reason: Reason, message: &str) {
        let change_ref = self.current.spec.change_ref.as_deref();
        let note = match change_ref {
            Some(change) => format!("[{change}] {message}"),
            None => message.to_owned(),
        };
        let event = Event {
            type_: if reason.is_warning() {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.as_str().to_owned(),
            note: Some(truncate(&note, 1000)),
            action: "Reconcile".to_owned(),
            secondary: None,
        };
        if let Err(err) = self
            .ctx
            .recorder
            .publish(&event, &self.current.object_ref(&()))
            .await
        {
            warn!(error = %err, "could not publish an event");
        }
    }

    /// Stores the redeem URL in the Secret the spec names, owned by the resource.
    async fn store_redeem_url(
        &self,
        secret_name: &str,
        url: &RedeemUrl,
    ) -> Result<(), kube::Error> {
        let owner = OwnerReference {
            api_version: "guestreset.io/v1alpha1".to_owned(),
            kind: "GuestRedemptionReset".to_owned(),
            name: self.current.name_any(),
            uid: self.current.uid().unwrap_or_default(),
            controller: Some(true),
            block_owner_deletion: None,
        };
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(secret_name.to_owned()),
                owner_references: Some(vec![owner]),
                labels: Some(
                    [(
                        "app.kubernetes.io/managed-by".to_owned(),
                        MANAGER.to_owned(),
                    )]
                    .into(),
                ),
                ..Default::default()
            },
            type_: Some("Opaque".to_owned()),
            data: Some(
                [(
                    REDEEM_URL_SECRET_KEY.to_owned(),
                    ByteString(url.expose_secret().as_bytes().to_vec()),
                )]
                .into(),
            ),
            ..Default::default()
        };
        let secrets: Api<Secret> = Api::namespaced(
            self.ctx.client.clone(),
            &self.current.namespace().unwrap_or_default(),
        );
        secrets
            .patch(
                secret_name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&secret),
            )
            .await
            .map(|_| ())
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Reconciles one resource. See the module documentation for the flow.
pub async fn reconcile(obj: Arc<GuestRedemptionReset>, ctx: Arc<Context>) -> Result<Action, Error> {
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
    let metrics = ctx.metrics.clone();
    let result = fresh_pass(obj, ctx, namespace, name, generation)
        .instrument(span)
        .await;
    metrics.record_reconcile(result.is_ok(), started.elapsed());
    result
}

/// What a pass would do without looking further: nothing (settled) or wait (`nextAttemptAt`).
fn quiet_action(
    obj: &GuestRedemptionReset,
    ctx: &Context,
    generation: i64,
    now: Timestamp,
) -> Option<Action> {
    let status = obj.status.clone().unwrap_or_default();
    let observed = Observed {
        spec: &obj.spec,
        generation,
        retry_annotation: obj.annotations().get(RETRY_ANNOTATION).map(String::as_str),
        status: &status,
        failures: 0,
    };
    // The tenant gate matters only deeper in the flow; Open claims nothing.
    match decide(
        &observed,
        &ctx.settings,
        TenantGate::Open,
        now,
        &Pass::default(),
    ) {
        Step::Nothing => Some(Action::await_change()),
        Step::Wait { until } => {
            let wait = Duration::try_from(until.duration_since(now)).unwrap_or_default();
            Some(Action::requeue(wait.max(Duration::from_millis(100))))
        }
        _ => None,
    }
}

/// The cache can lag behind this process's own last write: the watch event of the write that
/// ended a pass may arrive after the resource was queued again. A pass with work to do
/// therefore re-reads the resource first, so Graph is never called on a stale view; settled
/// and waiting resources (a restart over thousands of them) cost no read at all.
async fn fresh_pass(
    cached: Arc<GuestRedemptionReset>,
    ctx: Arc<Context>,
    namespace: String,
    name: String,
    generation: i64,
) -> Result<Action, Error> {
    if let Some(action) = quiet_action(&cached, &ctx, generation, Timestamp::now()) {
        return Ok(action);
    }
    let api: Api<GuestRedemptionReset> = Api::namespaced(ctx.client.clone(), &namespace);
    let Some(mut fresh) = api.get_opt(&name).await? else {
        return Ok(Action::await_change());
    };
    let generation = fresh.meta().generation.unwrap_or(generation);
    if let Some(action) = quiet_action(&fresh, &ctx, generation, Timestamp::now()) {
        return Ok(action);
    }
    fresh.managed_fields_mut().clear();
    reconcile_pass(Arc::new(fresh), ctx, namespace, name, generation).await
}

async fn reconcile_pass(
    obj: Arc<GuestRedemptionReset>,
    ctx: Arc<Context>,
    namespace: String,
    name: String,
    generation: i64,
) -> Result<Action, Error> {
    let failure_key = (
        obj.uid().unwrap_or_else(|| format!("{namespace}/{name}")),
        generation,
    );
    let initial_status = obj.status.clone().unwrap_or_default();
    let retry_annotation = obj.annotations().get(RETRY_ANNOTATION).map(String::as_str);
    let observed = Observed {
        spec: &obj.spec,
        generation,
        retry_annotation,
        status: &initial_status,
        failures: ctx.failures_of(&failure_key),
    };
    let key = obj.spec.user.key();

    // A block recorded before a restart still holds for the rest of its cool-down.
    if status::ready_reason(&initial_status) == Some(Reason::TenantBlocked)
        && let Some(ready) = initial_status
            .conditions
            .iter()
            .find(|c| c.type_ == status::READY)
    {
        ctx.tenant
            .remember_block(ready.last_transition_time.0, Timestamp::now());
    }

    // Held for the whole pass: after a cool-down, only this pass may probe.
    let (gate, _probe) = ctx.tenant.gate(Timestamp::now());
    let mut fx = Effects {
        ctx: &ctx,
        api: Api::namespaced(ctx.client.clone(), &namespace),
        current: (*obj).clone(),
    };
    let mut pass = Pass::default();
    let mut redeem_url: Option<RedeemUrl> = None;
    let mut resolved_user: Option<DirectoryUser> = None;
    let mut slot: Option<WriteSlot> = None;

    loop {
        let now = Timestamp::now();
        let stamp = Stamp {
            generation,
            now,
            retry_annotation,
            key,
        };
        match decide(&observed, &ctx.settings, gate, now, &pass) {
            Step::Nothing => return Ok(Action::await_change()),
            Step::Wait { until } => {
                let wait = Duration::try_from(until.duration_since(now)).unwrap_or_default();
                return Ok(Action::requeue(wait.max(Duration::from_millis(100))));
            }
            Step::AcceptRetry { token } => {
                let next = status::with_retry_accepted(&fx.status(), &token, stamp);
                if !fx.write_guarded(next).await? {
                    return Ok(START_OVER);
                }
                info!(token, "retry annotation accepted");
                fx.publish(
                    Reason::InProgress,
                    &format!("retrying generation {generation} as asked (retry token {token})"),
                )
                .await;
                pass.retry_accepted = true;
            }
            Step::MarkPending => {
                if !fx
                    .write_guarded(status::pending(&fx.status(), stamp))
                    .await?
                {
                    return Ok(START_OVER);
                }
                fx.publish(Reason::Pending, &format!("generation {generation} seen"))
                    .await;
                pass.marked_pending = true;
            }
            Step::ReadEvidence { user_id } => {
                pass.evidence = Some(
                    ctx.graph
                        .get_user(&user_id)
                        .await
                        .map_err(|e| failure_of(&e)),
                );
            }
            Step::ReadUser => {
                let key =
                    key.expect("decide asks to read the user only when the spec names one key");
                let resolution = resolve(&ctx.graph, &key).await;
                if let Ok(Resolution::Found(user)) = &resolution {
                    resolved_user = Some(user.clone());
                }
                pass.target = Some(resolution);
            }
            Step::ReadEmailHolders => {
                pass.holders = Some(
                    ctx.graph
                        .find_users_holding_email(&obj.spec.email)
                        .await
                        .map_err(|e| failure_of(&e)),
                );
            }
            Step::SetMail { user_id } => {
                pass.mail_set = Some(
                    ctx.graph
                        .set_mail(&user_id, &obj.spec.email)
                        .await
                        .map_err(|e| failure_of(&e)),
                );
            }
            Step::RecordIntent => {
                let user = resolved_user
                    .clone()
                    .expect("the intent follows a resolved user");
                let attempt = Attempt {
                    id: uuid::Uuid::new_v4().to_string(),
                    generation,
                    started_at: Time(now),
                    post_started_at: None,
                };
                let next = status::with_intent(&fx.status(), &attempt, &user, stamp);
                if !fx.write_guarded(next).await? {
                    return Ok(START_OVER);
                }
                info!(attempt = %attempt.id, "intent recorded");
                pass.intent = Some(attempt);
                if ctx.failpoint == Some(Failpoint::HangAfterIntent) {
                    warn!("failpoint hang-after-intent reached");
                    std::future::pending::<()>().await;
                }
            }
            Step::MarkSending => {
                // The limiter wait comes before the mark: a pass killed while waiting leaves an
                // attempt that never reached Graph, which the next pass may safely restart.
                let (taken, waited) = ctx.graph.limiter().take_slot().await;
                ctx.graph.observe_limiter_wait(waited);
                slot = Some(taken);
                if !waited.is_zero() {
                    info!(
                        waited_ms = waited.as_millis() as u64,
                        "write limiter held the invitation"
                    );
                }
                let stamp = Stamp {
                    now: Timestamp::now(),
                    ..stamp
                };
                if !fx
                    .write_guarded(status::with_sending(&fx.status(), stamp))
                    .await?
                {
                    return Ok(START_OVER);
                }
                pass.marked_sending = true;
            }
            Step::PostInvitation { user_id } => {
                let request = invitation_request(&obj, &user_id);
                let slot = slot
                    .take()
                    .expect("the slot is taken before the attempt is marked as sending");
                pass.posted = Some(
                    match ctx.graph.reset_redemption_in_slot(slot, &request).await {
                        Ok(invitation) => {
                            let posted = Posted {
                                invitation_id: invitation.id.clone(),
                                redeem_status: invitation.status.clone(),
                            };
                            redeem_url = Some(invitation.redeem_url);
                            Ok(posted)
                        }
                        Err(err) => Err(failure_of(&err)),
                    },
                );
            }
            Step::Report(mut report) => {
                if report.pause_tenant {
                    ctx.tenant.block(now);
                } else if report.issued.as_ref().is_some_and(|i| !i.recovered) {
                    ctx.tenant.clear();
                }
                ctx.metrics
                    .tenant_paused
                    .set(i64::from(ctx.tenant.is_paused(now)));
                if let (Some(url), Some(secret)) = (&redeem_url, &obj.spec.redeem_url_secret) {
                    if let Err(err) = fx.store_redeem_url(&secret.name, url).await {
                        warn!(secret = %secret.name, error = %err, "could not store the redeem URL");
                        report.message.push_str(&format!(
                            "; the redeem URL could NOT be written to Secret {} ({err}); set the guestreset.io/retry annotation to issue a fresh invitation",
                            secret.name
                        ));
                    } else {
                        report
                            .message
                            .push_str(&format!("; redeem URL stored in Secret {}", secret.name));
                    }
                }
                let previous = (
                    status::ready_reason(&fx.status()),
                    fx.status().observed_generation,
                );
                let landed = fx.write_report(&report, stamp, pass.marked_sending).await?;
                if !landed {
                    return Ok(Action::requeue(Duration::from_millis(200)));
                }
                ctx.metrics.record_outcome(report.reason);
                let failed = matches!(report.reason, Reason::Throttled | Reason::TransientError);
                ctx.set_failures(failure_key, failed);
                if previous != (Some(report.reason), Some(generation)) {
                    if report.reason.is_warning() {
                        warn!(reason = %report.reason, message = %report.message, "reconciled");
                    } else {
                        info!(reason = %report.reason, message = %report.message, "reconciled");
                    }
                    fx.publish(report.reason, &report.message).await;
                }
                return Ok(match report.requeue {
                    Some(after) => Action::requeue(jitter(after)),
                    None => Action::await_change(),
                });
            }
        }
    }
}
