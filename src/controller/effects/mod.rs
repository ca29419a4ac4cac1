//! The effects of a pass against the real world: Graph through the client, the status through
//! guarded writes, the redeem-URL Secret, the tenant pause, Events.

pub mod approver;
pub mod events;

use std::future::Future;

use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use tracing::warn;

use crate::controller::context::Context;
use crate::controller::core::failure::failure_of;
use crate::controller::core::input::{
    Failure, FollowUp, Lookup, Posted, Resolution, SecretOwner, SlotTurn, TenantGate,
};
use crate::controller::core::time::{SEND_WINDOW, until_from};
use crate::controller::exec::io::Io;
use crate::controller::failpoint::Failpoint;
use crate::controller::tenant::ProbeClaim;
use crate::graph::{
    Admission, Authorization, DirectoryUser, GraphClient, RedeemUrl, ResetRedemptionRequest,
    SHORT_WAIT, Turn, TurnKey, WriteSlot,
};
use crate::resource::MANAGER;
use crate::resource::reason::Reason;
use crate::resource::{
    Approval, GuestRedemptionReset, PolicyVersion, REDEEM_URL_SECRET_KEY, RedemptionState,
};
use crate::shutdown::PostInFlight;

/// One pass's view of the world.
pub struct KubeIo<'a> {
    ctx: &'a Context,
    api: Api<GuestRedemptionReset>,
    secrets: Api<Secret>,
    /// The write slots this pass holds, in the order of its writes (mail, POST); unspent ones
    /// go back to the limiter when the pass ends.
    slots: std::collections::VecDeque<WriteSlot>,
    /// The POST's access token, fetched before the sending mark.
    post_auth: Option<Authorization>,
    /// The POST leaves before this or not at all: `postStartedAt` + the sending window.
    send_by: Option<tokio::time::Instant>,
    /// Held while this pass may send the one probe after a tenant cool-down.
    probe: Option<ProbeClaim>,
    /// The resource whose turn this pass took (the tenant probe may stay with it).
    resource: String,
    /// Held from the sending mark to the end of the pass, so a stop waits for the outcome.
    in_flight: Option<PostInFlight>,
}

impl<'a> KubeIo<'a> {
    pub fn new(ctx: &'a Context, namespace: &str) -> Self {
        KubeIo {
            ctx,
            api: Api::namespaced(ctx.client.clone(), namespace),
            secrets: Api::namespaced(ctx.client.clone(), namespace),
            slots: Default::default(),
            post_auth: None,
            send_by: None,
            probe: None,
            resource: String::new(),
            in_flight: None,
        }
    }

    fn graph(&self) -> &GraphClient {
        &self.ctx.graph
    }

    /// A mail write that no turn reserved: the restore of a refused target's previous mail
    /// after its POST (docs/design.md, "Refused targets"). It takes its own slot from the
    /// limiter (waiting for it, as nothing is checked after it but the pause) and is not sent
    /// during a tenant pause.
    async fn set_mail_outside_a_turn(&mut self, user_id: &str, email: &str) -> Result<(), Failure> {
        let (slot, _) = self.graph().limiter().take_slot().await;
        match self.ctx.tenant.gate(Timestamp::now(), false, "").await {
            Ok((TenantGate::Open, _)) => {}
            Ok((TenantGate::Paused { until }, _)) => {
                return Err(Failure::Transient(format!(
                    "the tenant pause holds Graph writes until {until}"
                )));
            }
            Err(err) => return Err(Failure::Transient(format!("tenant pause unknown: {err}"))),
        }
        self.graph()
            .set_mail_in_slot(slot, user_id, email)
            .await
            .map_err(|e| failure_of(&e))
    }

    /// A write of this pass went to Graph: if it was the tenant probe, the probe stays with
    /// this resource until Graph's answer on the block (docs/design.md, "The tenant pause").
    fn probe_wrote(&self) {
        if let Some(claim) = &self.probe {
            claim.wrote(Timestamp::now());
        }
    }

    /// Why a POST did not leave after its mark: the attempt goes to recovery by evidence
    /// (docs/design.md, "The sending window"), as for a pass that stalled.
    fn not_sent(why: &str) -> Failure {
        Failure::Ambiguous(format!(
            "the invitation was marked as sending but not sent ({why}); looking for evidence"
        ))
    }
}

/// The turn of `obj`'s current generation at the write limiter.
fn turn_key(obj: &GuestRedemptionReset) -> TurnKey {
    TurnKey {
        resource: obj.uid().unwrap_or_else(|| obj.name_any()),
        generation: obj.metadata.generation.unwrap_or(0),
    }
}

fn is_conflict(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 409)
}

fn is_not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 404)
}

impl Io for KubeIo<'_> {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    fn stopping(&self) -> impl Future<Output = ()> + Send + 'static {
        crate::shutdown::stopping_owned(self.ctx.shutdown.clone())
    }

    fn can_approve(
        &mut self,
        obj: &GuestRedemptionReset,
        approval: &Approval,
    ) -> impl Future<Output = Result<Result<(), String>, kube::Error>> + Send {
        let policy = self.ctx.approval_policy.clone();
        approver::may_approve(self.ctx.client.clone(), policy, obj, approval)
    }

    async fn migration_grant(
        &mut self,
        obj: &GuestRedemptionReset,
        name: &str,
    ) -> Result<Result<String, String>, kube::Error> {
        let Some(me) = self.ctx.settings.own_identity.as_deref() else {
            return Ok(Err(
                "the controller does not know its own user name, so it cannot tell a reset it created".to_owned(),
            ));
        };
        let namespace = obj.namespace().unwrap_or_default();
        let migrations: Api<crate::resource::GuestDomainMigration> =
            Api::namespaced(self.ctx.client.clone(), &namespace);
        let Some(migration) = migrations.get_opt(name).await? else {
            return Ok(Err(format!("migration {name} does not exist")));
        };
        let maps: Api<k8s_openapi::api::core::v1::ConfigMap> =
            Api::namespaced(self.ctx.client.clone(), &namespace);
        let listed = maps
            .get_opt(&crate::migration::reconcile::plan_config_map(name))
            .await?
            .and_then(|cm| cm.data)
            .and_then(|mut d| d.remove(crate::resource::migration::PLAN_KEY));
        Ok(crate::migration::approval::grant(
            obj,
            me,
            &migration,
            listed.as_deref(),
        ))
    }

    async fn policy_version(&mut self) -> Result<Option<PolicyVersion>, kube::Error> {
        match &self.ctx.approval_policy {
            Some(name) => Ok(crate::admission_policy::enforced(&self.ctx.client, name)
                .await?
                .ok()),
            None => Ok(None),
        }
    }

    fn is_stopping(&self) -> bool {
        self.ctx.shutdown.is_stopping()
    }

    fn local_gate(&self, now: Timestamp) -> TenantGate {
        self.ctx.tenant.local_gate(now)
    }

    fn new_attempt_id(&mut self) -> String {
        uuid::Uuid::new_v4().to_string()
    }

    async fn resolve(&mut self, lookup: &Lookup) -> Result<Resolution, Failure> {
        let found = match lookup {
            Lookup::Id(id) | Lookup::UserPrincipalName(id) => self
                .graph()
                .get_user(id)
                .await
                .map(|u| u.into_iter().collect()),
            Lookup::Mail(mail) => self.graph().find_users_by_mail(mail).await,
        };
        let mut users: Vec<DirectoryUser> = found.map_err(|e| failure_of(&e))?;
        Ok(match users.len() {
            0 => Resolution::NotFound,
            1 => Resolution::Found(users.remove(0)),
            n => Resolution::Ambiguous(n),
        })
    }

    async fn get_user(&mut self, id: &str) -> Result<Option<DirectoryUser>, Failure> {
        self.graph().get_user(id).await.map_err(|e| failure_of(&e))
    }

    async fn email_holders(&mut self, email: &str) -> Result<Vec<DirectoryUser>, Failure> {
        self.graph()
            .find_users_holding_email(email)
            .await
            .map_err(|e| failure_of(&e))
    }

    async fn secret_owner(
        &mut self,
        obj: &GuestRedemptionReset,
        name: &str,
    ) -> Result<SecretOwner, kube::Error> {
        secret_owner(&self.secrets, obj, name).await
    }

    async fn take_slots(&mut self, obj: &GuestRedemptionReset, writes: u32) -> SlotTurn {
        let key = turn_key(obj);
        self.resource = key.resource.clone();
        let limiter = self.graph().limiter().clone();
        let (slots, waited) = loop {
            match limiter.turn(&key, writes) {
                Turn::Now { slots, waited } => break (slots, waited),
                // Due within a moment: waited for here, in line (the turn keeps its place).
                Turn::After(wait) if wait <= SHORT_WAIT => tokio::time::sleep(wait).await,
                Turn::After(wait) => {
                    tracing::info!(
                        wait_ms = wait.as_millis() as u64,
                        "write slots reserved; the reset waits for its turn"
                    );
                    return SlotTurn::At(Timestamp::now() + wait);
                }
            }
        };
        // One observation per write, as when each write waited for its own slot.
        for _ in &slots {
            self.graph().observe_limiter_wait(waited);
        }
        let last = slots.last().map(WriteSlot::usable_from);
        self.slots = slots.into();
        let now = tokio::time::Instant::now();
        match last.filter(|last| *last > now) {
            Some(last) => SlotTurn::Spaced {
                last: Timestamp::now() + (last - now),
            },
            None => SlotTurn::Now,
        }
    }

    async fn tenant_gate(&mut self) -> Result<TenantGate, kube::Error> {
        let probing = self.probe.is_some();
        let (gate, claim) = self
            .ctx
            .tenant
            .gate(Timestamp::now(), probing, &self.resource)
            .await?;
        if claim.is_some() {
            self.probe = claim;
        }
        Ok(gate)
    }

    async fn set_mail(&mut self, user_id: &str, email: &str) -> Result<(), Failure> {
        let Some(slot) = self.slots.pop_front() else {
            return self.set_mail_outside_a_turn(user_id, email).await;
        };
        let sent = self.graph().set_mail_in_slot(slot, user_id, email).await;
        self.probe_wrote();
        sent.map_err(|e| failure_of(&e))
    }

    async fn post_invitation(
        &mut self,
        request: &ResetRedemptionRequest,
    ) -> Result<(Posted, RedeemUrl), Failure> {
        // Nothing here waits: the slot and the token are in hand, the window is checked last.
        let (Some(slot), Some(auth)) = (self.slots.pop_back(), self.post_auth.take()) else {
            return Err(Self::not_sent("no write slot or token in hand"));
        };
        let now = tokio::time::Instant::now();
        if slot.usable_from() > now {
            return Err(Self::not_sent("its write slot was not due yet"));
        }
        if self.send_by.is_none_or(|by| now > by) {
            return Err(Self::not_sent("the sending window had passed"));
        }
        // A test hook standing for a request that is slow to leave after every check: the
        // leader's write fence, checked as the request leaves, must still hold it back.
        if let Some(Failpoint::StallBeforePost(stall)) = self.ctx.failpoint {
            warn!(
                stall_ms = stall.as_millis() as u64,
                "failpoint stall-before-post reached"
            );
            tokio::time::sleep(stall).await;
        }
        let sent = self
            .graph()
            .reset_redemption_sending(slot, auth, request)
            .await;
        self.probe_wrote();
        let invitation = sent.map_err(|e| failure_of(&e))?;
        let posted = Posted {
            invitation_id: invitation.id.clone(),
            redeem_status: invitation.status.clone(),
            request_id: invitation.request_id.clone(),
            client_request_id: Some(invitation.client_request_id.clone()),
        };
        Ok((posted, invitation.redeem_url))
    }

    async fn write_status(
        &mut self,
        obj: &GuestRedemptionReset,
    ) -> Result<Option<GuestRedemptionReset>, kube::Error> {
        let mut next = obj.clone();
        next.metadata.managed_fields = None;
        let written = match self
            .api
            .replace_status(&obj.name_any(), &PostParams::default(), &next)
            .await
        {
            Ok(written) => Some(written),
            Err(err) if is_conflict(&err) => None,
            Err(err) => return Err(err),
        };
        // Either way the version written from is outdated; a cached copy at it is stale.
        self.ctx.mark_outdated(obj);
        Ok(written)
    }

    async fn read_again(
        &mut self,
        obj: &GuestRedemptionReset,
    ) -> Result<Option<GuestRedemptionReset>, kube::Error> {
        match self.api.get_status(&obj.name_any()).await {
            Ok(fresh) => Ok(Some(fresh)),
            Err(err) if is_not_found(&err) => Ok(None),
            Err(err) => Err(err),
        }
    }

    async fn store_secret(
        &mut self,
        obj: &GuestRedemptionReset,
        name: &str,
        url: &RedeemUrl,
    ) -> Result<(), String> {
        store_redeem_url(&self.secrets, obj, name, url)
            .await
            .map_err(|e| e.to_string())
    }

    async fn pause_tenant(&mut self, now: Timestamp) -> Timestamp {
        // No turn outlives the pause: after it, resets queue again from the bucket as it is.
        self.graph().limiter().drop_turns();
        let until = match self.ctx.tenant.block(now).await {
            Ok(until) => until,
            Err(err) => {
                warn!(error = %err, "could not persist the tenant pause; it holds in this process and the record is retried until it lands");
                now + self.ctx.tenant.cooldown()
            }
        };
        self.ctx.metrics.tenant_paused.set(1);
        until
    }

    async fn clear_tenant(&mut self) {
        if let Err(err) = self.ctx.tenant.clear().await {
            warn!(error = %err, "could not clear the persisted tenant pause");
        }
        self.ctx.metrics.tenant_paused.set(0);
    }

    async fn publish(&mut self, obj: &GuestRedemptionReset, reason: Reason, message: &str) {
        events::publish(self.ctx, obj, reason, message).await;
    }

    fn sending(&mut self, marked_at: Timestamp) {
        self.in_flight = Some(self.ctx.shutdown.post_in_flight());
        let window = SEND_WINDOW - Timestamp::now().duration_since(marked_at);
        let left = std::time::Duration::try_from(window).unwrap_or_default();
        self.send_by = Some(tokio::time::Instant::now() + left);
    }

    async fn sleep_until(&mut self, until: Timestamp) {
        tokio::time::sleep(until_from(Timestamp::now(), until)).await;
        // The slot's own clock has the last word.
        if let Some(slot) = self.slots.back() {
            tokio::time::sleep_until(slot.usable_from()).await;
        }
    }

    async fn prepare_post(&mut self) -> Result<(), Failure> {
        let auth = self
            .graph()
            .post_authorization()
            .await
            .map_err(|e| failure_of(&e))?;
        self.post_auth = Some(auth);
        Ok(())
    }

    fn spread(&mut self) -> f64 {
        rand::random::<f64>()
    }

    async fn read_redemption(
        &mut self,
        obj: &GuestRedemptionReset,
        user_id: &str,
    ) -> Result<Option<DirectoryUser>, Failure> {
        let key = obj.uid().unwrap_or_else(|| obj.name_any());
        if let Admission::After(wait) = self.ctx.read_budget.admit(&key) {
            self.ctx.metrics.record_redemption_check("deferred");
            return Err(Failure::Throttled {
                retry_after: Some(wait),
            });
        }
        self.ctx.metrics.record_redemption_check("read");
        self.graph()
            .get_user_once(user_id)
            .await
            .map_err(|e| failure_of(&e))
    }

    async fn redemption_changed(&mut self, obj: &GuestRedemptionReset, follow_up: &FollowUp) {
        let state = follow_up.redemption.state;
        self.ctx.metrics.record_redemption(state);
        let warning = state == RedemptionState::NotRedeemed;
        events::publish_event(self.ctx, obj, state.as_str(), warning, &follow_up.message).await;
    }

    async fn intent_recorded(&mut self) {
        if self.ctx.failpoint == Some(Failpoint::HangAfterIntent) {
            warn!("failpoint hang-after-intent reached");
            std::future::pending::<()>().await;
        }
    }
}

/// An error storing the redeem URL.
#[derive(Debug, thiserror::Error)]
enum SecretError {
    #[error("the resource has no uid to own the Secret")]
    NoOwner,
    #[error("Secret {0} exists and is not owned by this resource; it is left alone")]
    Foreign(String),
    #[error("{0}")]
    Kube(#[from] kube::Error),
}

/// A JSON patch that applies only to a Secret whose first owner is this resource: its `test`
/// operation makes the API server refuse the whole patch otherwise. This way the controller
/// never needs to read a Secret (it holds no `get` on Secrets), and never writes into one it
/// does not own.
fn owned_patch(uid: &str, data: Option<serde_json::Value>) -> Patch<()> {
    let mut ops = vec![serde_json::json!({
        "op": "test",
        "path": "/metadata/ownerReferences/0/uid",
        "value": uid,
    })];
    if let Some(data) = data {
        ops.push(serde_json::json!({"op": "add", "path": "/data", "value": data}));
    }
    let patch: json_patch::Patch =
        serde_json::from_value(serde_json::Value::Array(ops)).expect("a valid JSON patch");
    Patch::Json(patch)
}

/// How the API server answers a patch whose ownership test failed (or found no owner).
fn is_refused_patch(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if matches!(status.code, 400 | 422 | 500) && !is_conflict(err))
}

fn uid_of(obj: &GuestRedemptionReset) -> Option<String> {
    obj.uid().filter(|uid| !uid.is_empty())
}

/// Who owns Secret `name`, found with a dry-run of the ownership patch: nothing is read or
/// written.
async fn secret_owner(
    secrets: &Api<Secret>,
    obj: &GuestRedemptionReset,
    name: &str,
) -> Result<SecretOwner, kube::Error> {
    let Some(uid) = uid_of(obj) else {
        return Ok(SecretOwner::Foreign);
    };
    let params = PatchParams {
        dry_run: true,
        ..PatchParams::default()
    };
    match secrets.patch(name, &params, &owned_patch(&uid, None)).await {
        Ok(_) => Ok(SecretOwner::ThisResource),
        Err(err) if is_not_found(&err) => Ok(SecretOwner::Absent),
        Err(err) if is_refused_patch(&err) => Ok(SecretOwner::Foreign),
        Err(err) => Err(err),
    }
}

/// Creates the Secret owned by the resource, or updates the one key in a Secret the resource
/// already owns; a Secret of that name that someone else owns is never written or adopted.
async fn store_redeem_url(
    secrets: &Api<Secret>,
    obj: &GuestRedemptionReset,
    name: &str,
    url: &RedeemUrl,
) -> Result<(), SecretError> {
    let owner = obj.controller_owner_ref(&()).ok_or(SecretError::NoOwner)?;
    let uid = uid_of(obj).ok_or(SecretError::NoOwner)?;
    let value = ByteString(url.expose_secret().as_bytes().to_vec());
    let data = serde_json::json!({ REDEEM_URL_SECRET_KEY: value });
    for _ in 0..3 {
        match secrets
            .patch(
                name,
                &PatchParams::default(),
                &owned_patch(&uid, Some(data.clone())),
            )
            .await
        {
            Ok(_) => return Ok(()),
            Err(err) if is_refused_patch(&err) => return Err(SecretError::Foreign(name.into())),
            Err(err) if !is_not_found(&err) => return Err(err.into()),
            Err(_) => {}
        }
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.to_owned()),
                owner_references: Some(vec![owner.clone()]),
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
            data: Some([(REDEEM_URL_SECRET_KEY.to_owned(), value.clone())].into()),
            ..Default::default()
        };
        match secrets.create(&PostParams::default(), &secret).await {
            Ok(_) => return Ok(()),
            // Created meanwhile: the ownership patch decides again.
            Err(err) if is_conflict(&err) => continue,
            Err(err) => return Err(err.into()),
        }
    }
    Err(SecretError::Foreign(name.to_owned()))
}
