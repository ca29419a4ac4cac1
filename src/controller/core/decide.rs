//! The decision: given the resource, its status and what Graph said so far in this pass,
//! what is the next step? A pure function, so that every reason and every crash point can be
//! tested without I/O. The executor (`controller/exec/pass.rs`) performs the step, records what it
//! learnt in [`Learned`], and asks again until the answer is a [`Report`].
//!
//! The decision runs in the stages of docs/design.md: the **entry** (settled? a retry asked
//! for? a wait? an interrupted attempt to recover? a new generation to acknowledge?), the
//! **preflight** (resolve the user, refuse what must not be done) and the **issue** (intent,
//! mail, write slot, fresh reads, tenant gate, sending mark, POST). Each stage either hands the
//! next one what it needs or stops with the step to take.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::approval::{Gate, approval, awaiting};
use super::follow;
use super::input::{
    Failure, Learned, Observed, Posted, Settings, SlotTurn, TenantGate, Write, WritePrep,
};
use super::preflight::{Target, preflight};
use super::recover::recover;
use super::report::{Issued, Report, report_failure};
use super::step::{Stage, Step};
use super::time::{REFRESH_AFTER, SEND_WINDOW, ceil_to_second, until_from};
use crate::graph::DirectoryUser;
use crate::mutants::{Mutant, planted};
use crate::resource::reason::Reason;

/// Graph keeps refusing the reset although the mail was set: after this many tries the
/// refusal is taken as final rather than as the directory's replication delay.
pub const MAIL_PROPAGATION_TRIES: u32 = 6;

/// The decision. See the module documentation.
pub fn decide(
    o: &Observed<'_>,
    settings: &Settings,
    tenant: TenantGate,
    now: Timestamp,
    pass: &Learned,
) -> Step {
    let staged = entry(o, settings, now, pass)
        .and_then(|()| approval(o, settings, pass))
        .and_then(|gate| {
            let target = preflight(o, settings, now, pass)?;
            match gate {
                Gate::Awaiting => Err(awaiting(o, pass, target.plan())
                    .with_user(target.user)
                    .into()),
                Gate::NotRequired | Gate::Approved(_) | Gate::ByMigration => {
                    issue(o, tenant, now, pass, &target)
                }
            }
        });
    match staged {
        Ok(never) => match never {},
        Err(step) => follow::with_start(step, o, settings, now, pass),
    }
}

/// Settled, asked to retry, waiting, recovering an interrupted attempt, or a new generation.
fn entry(o: &Observed<'_>, settings: &Settings, now: Timestamp, pass: &Learned) -> Stage<()> {
    let status = o.status;
    let retry_pending = o
        .retry_annotation
        .filter(|token| Some(*token) != status.retry_token.as_deref());
    if let Some(reason) = settled_reason(o) {
        // A retry never drops an attempt that may have taken effect (a POST marked as sending,
        // its outcome lost with its process, its evidence read refused since): the attempt is
        // resolved first, and the retry then applies to what it became (docs/design.md,
        // "Asking again"). Found by the model test with a status write that failed.
        if retry_pending.is_some()
            && let Some(attempt) = interrupted(status, pass)
        {
            return Err(recover(o, settings, now, pass, attempt));
        }
        return Err(match retry_pending {
            Some(token) => Step::AcceptRetry {
                token: token.to_owned(),
            },
            // Settled for issuance; the follow-through is a separate, later concern.
            None if reason == Reason::Issued => follow::follow_through(o, settings, now, pass),
            None => Step::Nothing,
        });
    }
    if retry_pending.is_none()
        && status.observed_generation == Some(o.generation)
        && let Some(until) = status.next_attempt_at.as_ref().map(|t| t.0)
        && now < until
    {
        return Err(Step::Wait { until });
    }
    // An attempt that was being sent when a pass ended: find out what became of it before
    // anything else, and never post again blindly (docs/design.md, "Interrupted attempts").
    if let Some(attempt) = interrupted(status, pass)
        && !planted(Mutant::PostAgainAfterMark)
    {
        return Err(recover(o, settings, now, pass, attempt));
    }
    // A new generation is acknowledged by the first status write that has something to say
    // about it (the intent, or a report): no write of its own (docs/design.md, "One pass").
    Ok(())
}

/// The attempt of an earlier pass that was being sent and has no outcome yet.
fn interrupted<'s>(
    status: &'s crate::resource::GuestRedemptionResetStatus,
    pass: &Learned,
) -> Option<&'s crate::resource::Attempt> {
    status
        .attempt
        .as_ref()
        .filter(|a| a.post_started_at.is_some() && pass.intent.is_none())
}

/// From the intent to the POST: every Graph write prepared by a slot, fresh reads and the
/// tenant gate, and the POST marked as sending right before it goes.
fn issue(
    o: &Observed<'_>,
    tenant: TenantGate,
    now: Timestamp,
    pass: &Learned,
    target: &Target<'_>,
) -> Stage<std::convert::Infallible> {
    let user = target.user;
    // A pause stops what this pass has not yet sent. Once the POST was answered, its answer
    // is the outcome: a pause recorded meanwhile by another resource of this process must not
    // turn an issued invitation into a dropped intent (whose generation would then post again).
    if let TenantGate::Paused { until } = tenant
        && (pass.posted.is_none() || planted(Mutant::PauseHidesAnswer))
        && !planted(Mutant::IgnorePause)
    {
        return Err(tenant_blocked(now, until, user).into());
    }
    if pass.intent.is_none() {
        reserve(target, pass, now, user)?;
    }
    let Some(intent) = &pass.intent else {
        return Err(Step::RecordIntent {
            user: Box::new(user.clone()),
        });
    };
    if target.needs_mail && pass.mail_set.is_none() {
        if pass.slot_writes < 2 {
            return Err(short_of_slots(user).into());
        }
        prepare(pass.mail, Write::Mail, now, user)?;
        return Err(Step::SetMail {
            user_id: user.id.clone(),
            email: o.spec.email.clone(),
        });
    }
    if let Some(Err(failure)) = &pass.mail_set {
        return Err(report_failure(o, failure, "setting the user's mail")
            .clear_attempt()
            .with_user(user)
            .into());
    }
    if !pass.marked_sending {
        ready_to_send(o, now, pass, user)?;
        refresh_if_stale(o, now, pass, user)?;
        prepare(pass.invitation, Write::Invitation, now, user)?;
        return Err(Step::MarkSending {
            user: Box::new(user.clone()),
        });
    }
    let Some(posted) = &pass.posted else {
        if pass
            .marked_at
            .is_some_and(|marked| now.duration_since(marked) > SEND_WINDOW)
            && !planted(Mutant::SendAfterWindow)
        {
            return Err(Report::new(
                Reason::InProgress,
                "the invitation was marked as sending but the pass stalled before sending it; looking for evidence in the directory instead",
            )
            .requeue(Duration::from_secs(1))
            .for_attempt(&intent.id)
            .with_user(user)
            .into());
        }
        return Err(Step::PostInvitation {
            user_id: user.id.clone(),
        });
    };
    if let Err(Failure::TargetRefused(detail)) = posted {
        return Err(refused_target(o, pass, user, detail));
    }
    Err(posted_report(o, posted, user)
        .for_attempt(&intent.id)
        .into())
}

/// Graph refused to reset this user (it holds a directory role), which no read within
/// `User.ReadWrite.All` can tell beforehand (listing a user's directory roles needs
/// `Directory.Read.All`): the mail this pass set is put back first, then the refusal is
/// reported as final (`Forbidden` without a next attempt; docs/design.md, "Refused targets").
fn refused_target(o: &Observed<'_>, pass: &Learned, user: &DirectoryUser, detail: &str) -> Step {
    let known = o.status.user.as_ref().filter(|known| known.id == user.id);
    let mail_set = matches!(pass.mail_set, Some(Ok(())));
    // The mail before the controller's change, by this pass or an earlier one of a reset that
    // never went out (an older status without the record: this pass's own change only).
    let from = known.and_then(|known| {
        let recorded = known.mail_changed_from.as_deref();
        let previous = known.previous_mail.as_deref().filter(|_| mail_set);
        recorded.or(previous)
    });
    let earlier = from.is_some_and(|from| user.mail.as_deref().unwrap_or("") != from)
        && !planted(Mutant::RefusalKeepsMail);
    let changed = mail_set || earlier;
    let previous = from.filter(|from| !from.is_empty());
    let restore = match (changed, previous, &pass.mail_restored) {
        (false, _, _) => "its mail was not changed".to_owned(),
        (true, Some(mail), None) => {
            return Step::RestoreMail {
                user_id: user.id.clone(),
                mail: mail.to_owned(),
            };
        }
        (true, Some(mail), Some(Ok(()))) => {
            format!(
                "its mail was set to {} and put back to {mail}",
                o.spec.email
            )
        }
        (true, Some(mail), Some(Err(failure))) => format!(
            "its mail was set to {} and could not be put back to {mail} ({failure:?}): put it back by hand",
            o.spec.email
        ),
        (true, None, _) => format!(
            "its mail was set to {} and had none before: clear it by hand",
            o.spec.email
        ),
    };
    let refusal = Failure::TargetRefused(format!("{detail}; {restore}"));
    report_failure(o, &refusal, "resetting the redemption")
        .clear_attempt()
        .with_user(user)
        .into()
}

/// The write slots of this reset (the mail PATCH when needed, and the POST), reserved together
/// before the intent: due now, the pass goes on; due later, the pass ends and says when the
/// reset is expected to be issued, instead of holding a worker while it waits (docs/design.md,
/// "Waiting for a write slot").
fn reserve(target: &Target<'_>, pass: &Learned, now: Timestamp, user: &DirectoryUser) -> Stage<()> {
    match pass.slots {
        None => Err(Step::TakeSlots {
            writes: 1 + u32::from(target.needs_mail),
        }),
        Some(SlotTurn::At(at)) => Err(queued(now, at, user).into()),
        Some(SlotTurn::Now | SlotTurn::Spaced { .. }) => Ok(()),
    }
}

/// What must be in hand before the fresh reads, the gate and the sending mark, so that after
/// them nothing but the HTTP call stands before the POST: its write slot usable, its access
/// token (docs/design.md, "The sending window").
fn ready_to_send(
    o: &Observed<'_>,
    now: Timestamp,
    pass: &Learned,
    user: &DirectoryUser,
) -> Stage<()> {
    if let Some(SlotTurn::Spaced { last }) = pass.slots
        && !pass.slot_awaited
        && now < last
    {
        return Err(Step::AwaitSlot { until: last });
    }
    match &pass.send_ready {
        None => Err(Step::PrepareSend),
        Some(Err(failure)) => Err(report_failure(o, failure, "getting an access token")
            .clear_attempt()
            .with_user(user)
            .into()),
        Some(Ok(())) => Ok(()),
    }
}

/// A fresh read found the e-mail gone from the user since the slots were taken for the POST
/// alone: the mail PATCH may not spend the POST's slot (which would leave the POST to wait
/// after its checks). Nothing was written to Graph: the intent goes, and the next pass asks
/// for a turn of both writes (docs/design.md, "Waiting for a write slot").
fn short_of_slots(user: &DirectoryUser) -> Report {
    Report::new(
        Reason::Pending,
        "the e-mail left the user's mail since the write slot was taken; asking for a turn for the mail and the invitation",
    )
    .requeue(Duration::from_secs(1))
    .clear_attempt()
    .with_user(user)
}

/// The reset waits for its turn at the write limiter: `Pending`, with the expected time.
fn queued(now: Timestamp, at: Timestamp, user: &DirectoryUser) -> Report {
    // Back at the stored second (nextAttemptAt), not before it: the turn is due by then.
    let at = ceil_to_second(at).0;
    Report::new(
        Reason::Pending,
        format!("waiting for a write slot of the Graph write limit; expected to be issued at {at}"),
    )
    .requeue(until_from(now, at))
    .on_time()
    .with_user(user)
}

/// The tenant gate, read right before the write (its slot was reserved with the others).
fn prepare(prep: WritePrep, write: Write, now: Timestamp, user: &DirectoryUser) -> Stage<()> {
    match prep {
        WritePrep { gate: None, .. } => Err(Step::CheckTenant { write }),
        WritePrep {
            gate: Some(TenantGate::Paused { until }),
            ..
        } if !planted(Mutant::IgnorePause) => Err(tenant_blocked(now, until, user).into()),
        WritePrep {
            gate: Some(TenantGate::Paused { .. }),
            ..
        } => Ok(()),
        WritePrep {
            gate: Some(TenantGate::Open),
            ..
        } => Ok(()),
    }
}

/// The user and the e-mail holders are read again when the reads are older than
/// [`REFRESH_AFTER`], so that the POST never acts on a read older than [`PREFLIGHT_FRESHNESS`],
/// and when they were read before the mail PATCH: the PATCH is a Graph call of its own, and
/// whatever happened to the user during it (a conversion to member) is seen before the POST.
fn refresh_if_stale(
    o: &Observed<'_>,
    now: Timestamp,
    pass: &Learned,
    user: &DirectoryUser,
) -> Stage<()> {
    if planted(Mutant::NoFreshRead) {
        return Ok(());
    }
    let stale = |at: Timestamp, read_after_mail: bool| {
        now.duration_since(at) > REFRESH_AFTER || (pass.mail_set.is_some() && !read_after_mail)
    };
    if pass
        .target
        .as_ref()
        .is_some_and(|r| stale(r.at, pass.user_read_after_mail))
    {
        return Err(Step::ReadUserById {
            user_id: user.id.clone(),
        });
    }
    if pass
        .holders
        .as_ref()
        .is_some_and(|r| stale(r.at, pass.holders_read_after_mail))
    {
        return Err(Step::ReadEmailHolders {
            email: o.spec.email.clone(),
        });
    }
    Ok(())
}

fn tenant_blocked(now: Timestamp, until: Timestamp, user: &DirectoryUser) -> Report {
    let wait = until.duration_since(now).max(SignedDuration::from_secs(1));
    Report::new(
        Reason::TenantBlocked,
        format!(
            "invitations are paused for the whole tenant after Graph's abuse protection blocked them; one probe will be tried after {until}"
        ),
    )
    .requeue(Duration::try_from(wait).unwrap_or(super::report::THROTTLE_DEFAULT))
    // An intent that never reached Graph is dropped: nothing was sent for it.
    .clear_attempt()
    .with_user(user)
}

/// The report for the POST's answer.
fn posted_report(
    o: &Observed<'_>,
    posted: &Result<Posted, Failure>,
    user: &DirectoryUser,
) -> Report {
    let name = user.display_name();
    match posted {
        Ok(posted) => Report {
            issued: Some(Issued {
                generation: o.generation,
                email: o.spec.email.clone(),
                invitation_id: posted.invitation_id.clone(),
                redeem_status: Some(posted.redeem_status.clone()),
                recovered: false,
                request_id: posted.request_id.clone(),
                client_request_id: posted.client_request_id.clone(),
            }),
            ..Report::new(
                Reason::Issued,
                format!(
                    "redemption of {name} reset to {}; invitation {} is {}",
                    o.spec.email, posted.invitation_id, posted.redeem_status
                ),
            )
        }
        .clear_attempt()
        .with_user(user),
        // The attempt stays: the next pass looks for evidence instead of posting again.
        Err(Failure::Ambiguous(detail)) => Report::new(
            Reason::InProgress,
            format!(
                "the invitation request may or may not have taken effect ({detail}); looking for evidence in the directory"
            ),
        )
        .requeue(Duration::from_secs(1))
        .with_user(user),
        // The read showed the email on the user (or the PATCH just put it there): the invite
        // service has not caught up with the directory yet.
        Err(Failure::EmailNotOnUser(detail)) if o.failures + 1 < MAIL_PROPAGATION_TRIES => {
            Report::new(
                Reason::TransientError,
                format!(
                    "Graph does not see the new mail on {name} yet ({detail}); retrying while the directory replicates"
                ),
            )
            .requeue(super::report::transient_backoff(o.failures))
            .clear_attempt()
            .with_user(user)
        }
        Err(failure) => report_failure(o, failure, "posting the invitation")
            .clear_attempt()
            .with_user(user),
    }
}

/// The reason the current generation is settled with, if it is.
fn settled_reason(o: &Observed<'_>) -> Option<Reason> {
    let status = o.status;
    if status.observed_generation != Some(o.generation) {
        return None;
    }
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready")?;
    if ready.observed_generation != Some(o.generation) {
        return None;
    }
    Reason::parse(&ready.reason).filter(|r| r.is_settled() || is_final_refusal(*r, status))
}

/// A `Forbidden` without a next attempt is Graph's final refusal of the target: it waits for
/// a new generation or the retry annotation, like any settled failure.
fn is_final_refusal(reason: Reason, status: &crate::resource::GuestRedemptionResetStatus) -> bool {
    reason == Reason::Forbidden && status.next_attempt_at.is_none()
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
