//! The step executor: one pass over one resource. It asks [`decide`] for the next step,
//! performs it through [`Io`] (a Graph call, a guarded status write), records what it learnt,
//! and asks again, until the decision is a report. Every effect goes through `Io`, so the same
//! executor runs against the API server and Graph (`effects/`) and against an in-memory
//! model in the randomized tests.

use std::future::Future;
use std::time::Duration;

use jiff::Timestamp;
use kube::ResourceExt;
use tracing::{info, warn};

use super::io::Io;
use crate::controller::audit;
use crate::controller::core::decide::decide;
use crate::controller::core::input::{FollowUp, Learned, Observed, Read, Resolution, Settings};
use crate::controller::core::report::Report;
use crate::controller::core::step::Step;
use crate::controller::core::time::until_from;
use crate::controller::error::Error;
use crate::controller::status::{self, Stamp};
use crate::graph::{DirectoryUser, InvitationMessage, RedeemUrl, ResetRedemptionRequest};
use crate::mutants::{Mutant, planted};
use crate::resource::reason::Reason;
use crate::resource::{
    GuestRedemptionReset, GuestRedemptionResetStatus, REQUESTED_BY_ANNOTATION, RETRY_ANNOTATION,
    RETRY_REQUESTED_BY_ANNOTATION,
};

/// Steps one pass may take before it is cut short (a guard: a pass takes about a dozen).
const MAX_STEPS: usize = 64;

/// How a pass ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Nothing to do until the resource changes.
    Settled,
    /// Nothing before `status.nextAttemptAt`.
    Wait(Duration),
    /// A report was written.
    Reported(Box<Report>),
    /// Another writer changed the resource first: run again on the fresh object.
    StartOver,
    /// The status moved on from the attempt this pass reported on; its report was dropped.
    Superseded,
    /// The process is stopping and nothing was in flight.
    Abandoned,
}

/// What ends a step: the pass's outcome, or an effect's failure.
#[derive(Debug)]
pub enum End {
    Done(Outcome),
    Failed(Error),
}

impl From<Error> for End {
    fn from(err: Error) -> Self {
        End::Failed(err)
    }
}

type Flow = Result<(), End>;

/// One pass over one resource.
pub struct PassRunner {
    current: GuestRedemptionReset,
    generation: i64,
    failures: u32,
    pass: Learned,
    redeem_url: Option<RedeemUrl>,
    /// `--require-approval`, for the `Approved` condition of the writes.
    approval_required: bool,
}

impl PassRunner {
    /// A pass over `obj` as read from the API server; `failures` counts the consecutive failed
    /// passes of this generation.
    pub fn new(obj: GuestRedemptionReset, failures: u32) -> Self {
        PassRunner {
            generation: obj.metadata.generation.unwrap_or(0),
            current: obj,
            failures,
            pass: Learned::default(),
            redeem_url: None,
            approval_required: false,
        }
    }

    /// The resource as this pass last saw it (after its own writes).
    pub fn current(&self) -> &GuestRedemptionReset {
        &self.current
    }

    /// Runs the pass to its end.
    pub async fn run<I: Io>(mut self, io: &mut I, settings: &Settings) -> Result<Outcome, Error> {
        self.pass.spread = io.spread();
        self.approval_required = settings.require_approval;
        for _ in 0..MAX_STEPS {
            match self.step(io, settings).await {
                Ok(()) => {}
                Err(End::Done(outcome)) => return Ok(outcome),
                Err(End::Failed(err)) => return Err(err),
            }
        }
        warn!("a pass took {MAX_STEPS} steps without ending; it runs again");
        Ok(Outcome::StartOver)
    }

    fn status(&self) -> GuestRedemptionResetStatus {
        self.current.status.clone().unwrap_or_default()
    }

    fn retry_annotation(&self) -> Option<&str> {
        self.current
            .annotations()
            .get(RETRY_ANNOTATION)
            .map(String::as_str)
    }

    fn requested_by(&self) -> Option<&str> {
        self.current
            .annotations()
            .get(REQUESTED_BY_ANNOTATION)
            .map(String::as_str)
    }

    fn retry_requested_by(&self) -> Option<&str> {
        self.current
            .annotations()
            .get(RETRY_REQUESTED_BY_ANNOTATION)
            .map(String::as_str)
    }

    fn stamp(&self, now: Timestamp) -> Stamp<'_> {
        Stamp {
            generation: self.generation,
            now,
            retry_annotation: self.retry_annotation(),
            key: self.current.spec.user.key(),
            requested_by: self.requested_by(),
            approval_required: self.approval_required,
        }
    }

    /// Decides on the status as it is now, after this pass's own writes.
    pub fn next_step<I: Io>(&self, io: &I, settings: &Settings, now: Timestamp) -> Step {
        let status = self.status();
        let observed = Observed {
            spec: &self.current.spec,
            generation: self.generation,
            retry_annotation: self.retry_annotation(),
            requested_by: self.requested_by(),
            retry_requested_by: self.retry_requested_by(),
            status: &status,
            failures: self.failures,
            migration: crate::migration::approval::controlling_migration(&self.current)
                .map(|(name, _)| name),
        };
        decide(&observed, settings, io.local_gate(now), now, &self.pass)
    }

    /// Decides and performs one step.
    pub async fn step<I: Io>(&mut self, io: &mut I, settings: &Settings) -> Flow {
        let now = io.now();
        let step = self.next_step(io, settings, now);
        if !self.pass.marked_sending && io.is_stopping() && !planted(Mutant::WorkWhileStopping) {
            return Err(End::Done(Outcome::Abandoned));
        }
        match step {
            Step::Nothing => Err(End::Done(Outcome::Settled)),
            Step::Wait { until } => Err(End::Done(Outcome::Wait(until_from(now, until)))),
            Step::AcceptRetry { token } => self.accept_retry(io, &token, now).await,
            Step::CheckApprover { approval } => {
                let current = self.current.clone();
                let allowed = self
                    .unless_stopping(io, |io| io.can_approve(&current, &approval))
                    .await?
                    .map_err(Error::CheckApprover)?;
                self.pass.approver_allowed = Some(allowed);
                Ok(())
            }
            Step::CheckMigration { name } => {
                let current = self.current.clone();
                let grant = self
                    .unless_stopping(io, |io| io.migration_grant(&current, &name))
                    .await?
                    .map_err(Error::CheckApprover)?;
                self.pass.migration_grant = Some(grant);
                Ok(())
            }
            Step::ReadPolicy => {
                let version = self
                    .unless_stopping(io, |io| io.policy_version())
                    .await?
                    .map_err(Error::CheckApprover)?;
                self.pass.policy = Some(version);
                Ok(())
            }
            Step::ReadEvidence { user_id } => {
                let result = self.unless_stopping(io, |io| io.get_user(&user_id)).await?;
                self.pass.evidence = Some(Read { result, at: now });
                Ok(())
            }
            Step::ReadUser { lookup } => {
                let result = self.unless_stopping(io, |io| io.resolve(&lookup)).await?;
                self.pass.target = Some(Read { result, at: now });
                Ok(())
            }
            Step::ReadUserById { user_id } => {
                let read = self.unless_stopping(io, |io| io.get_user(&user_id)).await?;
                let result = read.map(|user| user.map_or(Resolution::NotFound, Resolution::Found));
                self.pass.target = Some(Read { result, at: now });
                self.pass.resolved_by_id = true;
                self.pass.user_read_after_mail = self.pass.mail_set.is_some();
                Ok(())
            }
            Step::ReadEmailHolders { email } => {
                let result = self
                    .unless_stopping(io, |io| io.email_holders(&email))
                    .await?;
                self.pass.holders = Some(Read { result, at: now });
                self.pass.holders_read_after_mail = self.pass.mail_set.is_some();
                Ok(())
            }
            Step::CheckSecret { name } => {
                let current = self.current.clone();
                let owner = self
                    .unless_stopping(io, |io| io.secret_owner(&current, &name))
                    .await?
                    .map_err(Error::CheckSecret)?;
                self.pass.secret = Some(owner);
                Ok(())
            }
            Step::RecordIntent { user } => self.record_intent(io, &user, now).await,
            Step::TakeSlots { writes } => {
                let current = self.current.clone();
                let turn = self
                    .unless_stopping(io, |io| io.take_slots(&current, writes))
                    .await?;
                self.pass.slots = Some(turn);
                self.pass.slot_writes = writes;
                Ok(())
            }
            Step::CheckTenant { write } => {
                let gate = self
                    .unless_stopping(io, |io| io.tenant_gate())
                    .await?
                    .map_err(Error::CheckTenant)?;
                self.pass.prep_mut(write).gate = Some(gate);
                Ok(())
            }
            Step::AwaitSlot { until } => {
                self.unless_stopping(io, |io| io.sleep_until(until)).await?;
                self.pass.slot_awaited = true;
                Ok(())
            }
            Step::PrepareSend => {
                let ready = self.unless_stopping(io, |io| io.prepare_post()).await?;
                self.pass.send_ready = Some(ready);
                Ok(())
            }
            Step::SetMail { user_id, email } => {
                let result = self
                    .unless_stopping(io, |io| io.set_mail(&user_id, &email))
                    .await?;
                self.pass.mail_set = Some(result);
                Ok(())
            }
            Step::RestoreMail { user_id, mail } => {
                let result = self
                    .unless_stopping(io, |io| io.set_mail(&user_id, &mail))
                    .await?;
                self.pass.mail_restored = Some(result);
                Ok(())
            }
            Step::MarkSending { user } => self.mark_sending(io, &user, now).await,
            Step::PostInvitation { user_id } => {
                let request = invitation_request(&self.current, &user_id);
                let posted = io.post_invitation(&request).await.map(|(posted, url)| {
                    self.redeem_url = Some(url);
                    posted
                });
                self.pass.posted = Some(posted);
                Ok(())
            }
            Step::Report(report) => self.finish(io, *report, now).await,
            Step::CheckRedemption { user_id } => self.check_redemption(io, &user_id, now).await,
            Step::RecordRedemption(up) => self.record_redemption(io, &up, now).await,
        }
    }

    /// Runs an effect, unless the process stops first and nothing is in flight.
    async fn unless_stopping<'io, I: Io, T, F>(
        &self,
        io: &'io mut I,
        effect: impl FnOnce(&'io mut I) -> F,
    ) -> Result<T, End>
    where
        F: Future<Output = T> + 'io,
    {
        let stopping = io.stopping();
        if self.pass.marked_sending || planted(Mutant::WorkWhileStopping) {
            return Ok(effect(io).await);
        }
        tokio::select! {
            biased;
            () = stopping => Err(End::Done(Outcome::Abandoned)),
            value = effect(io) => Ok(value),
        }
    }

    /// Writes the status with the object's resourceVersion as precondition; when another
    /// writer changed the resource first, the pass starts over from the fresh object rather
    /// than act on a stale view.
    async fn guarded<I: Io>(
        &mut self,
        io: &mut I,
        status: GuestRedemptionResetStatus,
        step: fn(kube::Error) -> Error,
    ) -> Flow {
        let mut next = self.current.clone();
        next.status = Some(status);
        match io.write_status(&next).await.map_err(step)? {
            Some(written) => {
                self.current = written;
                Ok(())
            }
            None => {
                info!("another writer changed the resource first; starting over");
                Err(End::Done(Outcome::StartOver))
            }
        }
    }

    async fn accept_retry<I: Io>(&mut self, io: &mut I, token: &str, now: Timestamp) -> Flow {
        let next = status::with_retry_accepted(&self.status(), token, self.stamp(now));
        self.guarded(io, next, Error::AcceptRetry).await?;
        info!(token, "retry annotation accepted");
        let message = format!(
            "retrying generation {} as asked (retry token {token})",
            self.generation
        );
        io.publish(&self.current, Reason::InProgress, &message)
            .await;
        Ok(())
    }

    async fn record_intent<I: Io>(
        &mut self,
        io: &mut I,
        user: &DirectoryUser,
        now: Timestamp,
    ) -> Flow {
        let id = io.new_attempt_id();
        let mut attempt = status::new_attempt(id, &self.current.spec.email, user, self.stamp(now));
        let mut audit = audit::capture(&self.current);
        // A reset approved through its migration's plan names the plan's approver.
        if let Some(Ok(approver)) = &self.pass.migration_grant {
            audit.approved_by = Some(approver.clone());
        }
        attempt.audit = Some(audit);
        let next = status::with_intent(&self.status(), &attempt, user, self.stamp(now));
        self.guarded(io, next, Error::RecordIntent).await?;
        info!(attempt = %attempt.id, "intent recorded");
        self.pass.intent = Some(attempt);
        io.intent_recorded().await;
        Ok(())
    }

    async fn mark_sending<I: Io>(
        &mut self,
        io: &mut I,
        user: &DirectoryUser,
        now: Timestamp,
    ) -> Flow {
        let next = status::with_sending(&self.status(), user, self.stamp(now));
        self.guarded(io, next, Error::MarkSending).await?;
        if let Some(attempt) = &self.status().attempt {
            io.audit(audit::sending(&self.current, attempt));
        }
        self.pass.marked_sending = true;
        self.pass.marked_at = Some(now);
        io.sending(now);
        Ok(())
    }

    /// The follow-through's read of the guest, within the read budget.
    async fn check_redemption<I: Io>(&mut self, io: &mut I, user_id: &str, now: Timestamp) -> Flow {
        let current = self.current.clone();
        let result = self
            .unless_stopping(io, |io| io.read_redemption(&current, user_id))
            .await?;
        self.pass.redemption_read = Some(Read { result, at: now });
        Ok(())
    }

    /// Writes the follow-through record (guarded, like every status write); an Event and the
    /// counters when its state changed.
    async fn record_redemption<I: Io>(
        &mut self,
        io: &mut I,
        follow_up: &FollowUp,
        now: Timestamp,
    ) -> Flow {
        let mut next = self.status();
        status::set_redemption(&mut next, follow_up, now);
        self.guarded(io, next, Error::RecordRedemption).await?;
        self.pass.redemption_recorded = true;
        if follow_up.changed {
            info!(state = follow_up.redemption.state.as_str(), message = %follow_up.message, "follow-through");
            io.redemption_changed(&self.current, follow_up).await;
        }
        Ok(())
    }

    /// Writes the report, with what the pass leaves behind: the tenant pause, the Secret, the
    /// Event.
    async fn finish<I: Io>(&mut self, io: &mut I, mut report: Report, now: Timestamp) -> Flow {
        if report.pause_tenant {
            let until = io.pause_tenant(now).await;
            report.requeue = report.requeue.or(Some(until_from(now, until)));
        } else if report.issued.as_ref().is_some_and(|i| !i.recovered) {
            io.clear_tenant().await;
        }
        self.store_redeem_url(io, &mut report).await;
        let before = self.status();
        let previous = (status::ready_reason(&before), before.observed_generation);
        // The audit line before the outcome's write: a resource deleted during the POST (the
        // write then finds nothing) loses no record of what was issued.
        if let Some(issued) = &report.issued {
            let user_id = before.user.as_ref().map(|u| u.id.as_str());
            io.audit(audit::issuance(
                &self.current,
                issued,
                user_id,
                before.attempt.as_ref(),
            ));
        }
        if !self.write_report(io, &report, now).await? {
            warn!(
                reason = %report.reason,
                "the status moved on from this pass's attempt; its report is dropped"
            );
            return Err(End::Done(Outcome::Superseded));
        }
        if previous != (Some(report.reason), Some(self.generation)) {
            if report.reason.is_warning() {
                warn!(reason = %report.reason, message = %report.message, "reconciled");
            } else {
                info!(reason = %report.reason, message = %report.message, "reconciled");
            }
            io.publish(&self.current, report.reason, &report.message)
                .await;
        }
        // A follow-through's start has no Event: Issued's says PendingAcceptance (resource.md).
        Err(End::Done(Outcome::Reported(Box::new(report))))
    }

    async fn store_redeem_url<I: Io>(&mut self, io: &mut I, report: &mut Report) {
        let Some(url) = self.redeem_url.take() else {
            return;
        };
        let Some(secret) = self.current.spec.redeem_url_secret.clone() else {
            return;
        };
        match io.store_secret(&self.current, &secret.name, &url).await {
            Ok(()) => report
                .message
                .push_str(&format!("; redeem URL stored in Secret {}", secret.name)),
            Err(err) => {
                warn!(secret = %secret.name, error = %err, "could not store the redeem URL");
                report.message.push_str(&format!(
                    "; the redeem URL could NOT be written to Secret {} ({err}); set the guestreset.io/retry annotation to issue a fresh invitation",
                    secret.name
                ));
            }
        }
    }

    /// Writes a report; `false` when it was dropped because the status moved on. A report on
    /// an attempt must not be lost to a conflict: it is applied again on the fresh object, as
    /// long as that object still holds the same attempt.
    async fn write_report<I: Io>(
        &mut self,
        io: &mut I,
        report: &Report,
        now: Timestamp,
    ) -> Result<bool, End> {
        for _ in 0..8 {
            let old = self.status();
            let Some(next) = status::apply_report(&old, report, self.stamp(now)) else {
                return Ok(false);
            };
            if next == old {
                return Ok(true);
            }
            let mut obj = self.current.clone();
            obj.status = Some(next);
            match io.write_status(&obj).await.map_err(Error::WriteReport)? {
                Some(written) => {
                    self.current = written;
                    return Ok(true);
                }
                None if report.for_attempt.is_some() => {
                    match io
                        .read_again(&self.current)
                        .await
                        .map_err(Error::WriteReport)?
                    {
                        Some(fresh) => self.current = fresh,
                        None => return Ok(false),
                    }
                }
                None => return Err(End::Done(Outcome::StartOver)),
            }
        }
        Err(End::Done(Outcome::StartOver))
    }
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
