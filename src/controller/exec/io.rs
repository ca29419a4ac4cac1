//! The effects a pass needs, as a trait: production implements it against the API server and
//! Graph (`effects/`), the tests against in-memory models, so both run the same executor.

use std::future::Future;

use jiff::Timestamp;

use crate::controller::audit::{self, AuditRecord};
use crate::controller::core::input::{
    Failure, FollowUp, Lookup, Posted, Resolution, SecretOwner, SlotTurn, TenantGate,
};
use crate::graph::{DirectoryUser, RedeemUrl, ResetRedemptionRequest};
use crate::resource::reason::Reason;
use crate::resource::{Approval, GuestRedemptionReset, PolicyVersion};

/// The effects a pass needs. Graph failures come back as [`Failure`]s (they become reasons);
/// Kubernetes failures as `kube::Error` (the executor names the step they failed in).
pub trait Io {
    fn now(&self) -> Timestamp;
    /// Resolves when the process is stopping; a pass that has not marked its POST as sending
    /// is abandoned then.
    fn stopping(&self) -> impl Future<Output = ()> + Send + 'static;
    fn is_stopping(&self) -> bool;
    /// What this process knows of the tenant pause, without asking anyone.
    fn local_gate(&self, now: Timestamp) -> TenantGate;
    fn new_attempt_id(&mut self) -> String;
    /// Whether the author of `approval` (with the groups it records) holds the verb `approve`
    /// on this resource, as the API server's authorizer says now, and the admission policy
    /// that enforces approvals is still in place; the error says why not.
    fn can_approve(
        &mut self,
        obj: &GuestRedemptionReset,
        approval: &Approval,
    ) -> impl Future<Output = Result<Result<(), String>, kube::Error>> + Send;
    /// Whether the approved plan of the migration `name`, which controls `obj`, covers it:
    /// the approver, or why not. By default no migration covers anything (the models).
    fn migration_grant(
        &mut self,
        _obj: &GuestRedemptionReset,
        name: &str,
    ) -> impl Future<Output = Result<Result<String, String>, kube::Error>> + Send {
        let problem = format!("migration {name} is not known here");
        async move { Ok(Err(problem)) }
    }
    /// The approval policy and binding in force now (`None`: not enforced). By default none is
    /// named, as in the models, which check approvers through `can_approve` alone.
    fn policy_version(
        &mut self,
    ) -> impl Future<Output = Result<Option<PolicyVersion>, kube::Error>> + Send {
        async { Ok(None) }
    }
    fn resolve(
        &mut self,
        lookup: &Lookup,
    ) -> impl Future<Output = Result<Resolution, Failure>> + Send;
    fn get_user(
        &mut self,
        id: &str,
    ) -> impl Future<Output = Result<Option<DirectoryUser>, Failure>> + Send;
    fn email_holders(
        &mut self,
        email: &str,
    ) -> impl Future<Output = Result<Vec<DirectoryUser>, Failure>> + Send;
    fn secret_owner(
        &mut self,
        obj: &GuestRedemptionReset,
        name: &str,
    ) -> impl Future<Output = Result<SecretOwner, kube::Error>> + Send;
    /// Reserves `writes` slots of the write limiter for this resource, or claims the ones
    /// reserved for it by an earlier pass. `Now`: this pass holds them and its next Graph
    /// writes spend them. `At`: they are kept for the resource until then; the pass ends and
    /// comes back, no worker waits (a turn due within a moment is waited for here).
    fn take_slots(
        &mut self,
        obj: &GuestRedemptionReset,
        writes: u32,
    ) -> impl Future<Output = SlotTurn> + Send;
    /// The tenant-wide pause, read from where every replica records it.
    fn tenant_gate(&mut self) -> impl Future<Output = Result<TenantGate, kube::Error>> + Send;
    fn set_mail(
        &mut self,
        user_id: &str,
        email: &str,
    ) -> impl Future<Output = Result<(), Failure>> + Send;
    fn post_invitation(
        &mut self,
        request: &ResetRedemptionRequest,
    ) -> impl Future<Output = Result<(Posted, RedeemUrl), Failure>> + Send;
    /// Replaces the status with the object's resourceVersion as precondition; `None` when
    /// another writer changed the resource first.
    fn write_status(
        &mut self,
        obj: &GuestRedemptionReset,
    ) -> impl Future<Output = Result<Option<GuestRedemptionReset>, kube::Error>> + Send;
    /// The resource as it is now; `None` when it is gone.
    fn read_again(
        &mut self,
        obj: &GuestRedemptionReset,
    ) -> impl Future<Output = Result<Option<GuestRedemptionReset>, kube::Error>> + Send;
    /// Stores the redeem URL in a Secret this resource owns; the error says why not.
    fn store_secret(
        &mut self,
        obj: &GuestRedemptionReset,
        name: &str,
        url: &RedeemUrl,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// Starts the tenant-wide pause; returns its end.
    fn pause_tenant(&mut self, now: Timestamp) -> impl Future<Output = Timestamp> + Send;
    fn clear_tenant(&mut self) -> impl Future<Output = ()> + Send;
    fn publish(
        &mut self,
        obj: &GuestRedemptionReset,
        reason: Reason,
        message: &str,
    ) -> impl Future<Output = ()> + Send;
    /// The POST was marked as sending at `marked_at` (`postStartedAt`): the process waits for
    /// its outcome before it exits, and the POST leaves within the sending window of that
    /// moment or not at all.
    fn sending(&mut self, marked_at: Timestamp);
    /// Waits until `until` (a spaced write slot), before the checks of the POST.
    fn sleep_until(&mut self, until: Timestamp) -> impl Future<Output = ()> + Send;
    /// Gets the POST's access token in hand, so that nothing but the HTTP call follows the
    /// sending mark.
    fn prepare_post(&mut self) -> impl Future<Output = Result<(), Failure>> + Send {
        std::future::ready(Ok(()))
    }
    /// The intent was recorded (a test failpoint may stop the pass here).
    fn intent_recorded(&mut self) -> impl Future<Output = ()> + Send;
    /// A random draw from 0 to 1, spreading the follow-through's checks over time.
    fn spread(&mut self) -> f64;
    /// The follow-through's read of the guest: one Graph read within the read budget, never
    /// waiting for it (nor for the write limiter). A read the budget defers comes back as
    /// `Failure::Throttled` with the time its turn comes.
    fn read_redemption(
        &mut self,
        obj: &GuestRedemptionReset,
        user_id: &str,
    ) -> impl Future<Output = Result<Option<DirectoryUser>, Failure>> + Send;
    /// An audit line (the sending mark, an issuance); production logs it.
    fn audit(&mut self, record: AuditRecord) {
        audit::log(&record);
    }
    /// The follow-through's state changed (written): an Event, and the counters.
    fn redemption_changed(
        &mut self,
        obj: &GuestRedemptionReset,
        follow_up: &FollowUp,
    ) -> impl Future<Output = ()> + Send;
}
