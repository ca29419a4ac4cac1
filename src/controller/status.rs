//! Pure status transitions: how a [`Report`], an intent or an accepted retry changes the status.
//! The rules of docs/resource.md ("Status") live here: `phase` follows Ready, `observedGeneration` on the
//! status and the condition, `lastTransitionTime` moves only when Ready's status flips, and
//! the history keeps the newest ten issuances.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::core::input::FollowUp;
use super::core::report::{AttemptChange, Report};
use super::core::time::ceil_to_second;
use crate::graph::DirectoryUser;
use crate::resource::reason::{APPROVED, READY, RECONCILING, REDEEMED, Reason, STALLED};
use crate::resource::{
    Attempt, Decision, GuestRedemptionResetStatus, HISTORY_LIMIT, HistoryEntry, IssuedInvitation,
    ResolvedUser, UserKey, UserStateBefore,
};

/// Identity of the resource version a status is written for.
#[derive(Clone, Copy, Debug)]
pub struct Stamp<'a> {
    pub generation: i64,
    pub now: Timestamp,
    /// The retry annotation's value: every write records it as seen, so a value set while the
    /// controller was busy is never acted on later (docs/resource.md, "Asking again").
    pub retry_annotation: Option<&'a str>,
    /// The spec's key, shown in the `User` column until the user is resolved.
    pub key: Option<UserKey<'a>>,
    /// The requester of the generation (the `guestreset.io/requested-by` annotation).
    pub requested_by: Option<&'a str>,
    /// The controller runs with `--require-approval`: the status carries `Approved`.
    pub approval_required: bool,
}

/// Puts `condition` in place of the one of its type; its `lastTransitionTime` moves only when
/// its status flips.
pub fn put_condition(status: &mut GuestRedemptionResetStatus, mut condition: Condition) {
    if let Some(previous) = status
        .conditions
        .iter()
        .find(|c| c.type_ == condition.type_)
        && previous.status == condition.status
    {
        condition.last_transition_time = previous.last_transition_time.clone();
    }
    status.conditions.retain(|c| c.type_ != condition.type_);
    status.conditions.push(condition);
}

fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    stamp: Stamp<'_>,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: Some(stamp.generation),
        last_transition_time: Time(stamp.now),
    }
}

fn true_or_false(value: bool) -> &'static str {
    if value { "True" } else { "False" }
}

/// Sets Ready (and `phase`, `observedGeneration`) for `reason`.
pub fn set_ready(
    status: &mut GuestRedemptionResetStatus,
    stamp: Stamp<'_>,
    reason: Reason,
    message: &str,
) {
    put_condition(
        status,
        condition(
            READY,
            reason.readiness().as_str(),
            reason.as_str(),
            message.to_owned(),
            stamp,
        ),
    );
    set_progress(status, stamp, reason, message);
    set_approved(status, stamp, reason);
    status.phase = Some(reason.phase());
    status.observed_generation = Some(stamp.generation);
    if let Some(token) = stamp.retry_annotation {
        status.retry_token = Some(token.to_owned());
    }
    if status
        .user
        .as_ref()
        .and_then(|u| u.user_principal_name.as_ref())
        .is_none()
        && let Some(key) = &stamp.key
    {
        status.target = Some(key.to_string());
    }
}

/// `Reconciling` and `Stalled` follow Ready's reason, so that kstatus tells a reset that
/// stopped (Failed) from one still at work (InProgress) and from one done (Current).
fn set_progress(
    status: &mut GuestRedemptionResetStatus,
    stamp: Stamp<'_>,
    reason: Reason,
    message: &str,
) {
    let reconciling = reason.is_reconciling();
    let stalled = reason.is_stalled();
    let said = |on: bool| {
        if on {
            message.to_owned()
        } else {
            String::new()
        }
    };
    put_condition(
        status,
        condition(
            RECONCILING,
            true_or_false(reconciling),
            reason.as_str(),
            said(reconciling),
            stamp,
        ),
    );
    put_condition(
        status,
        condition(
            STALLED,
            true_or_false(stalled),
            reason.as_str(),
            said(stalled),
            stamp,
        ),
    );
}

/// `Approved`, with `--require-approval`: True once the controller acted on an approval of the
/// generation, False on a denial, Unknown while no decision was acted on (none yet, or one the
/// controller would not act on: Ready's message says why). Absent without approval.
fn set_approved(status: &mut GuestRedemptionResetStatus, stamp: Stamp<'_>, ready: Reason) {
    if !stamp.approval_required {
        status.conditions.retain(|c| c.type_ != APPROVED);
        return;
    }
    // A decision on this generation and, for an approval, this retry (a retry is a new request).
    let decision = status
        .approval
        .as_ref()
        .filter(|a| a.covers(stamp.generation, stamp.retry_annotation));
    let acted_on = !matches!(ready, Reason::AwaitingApproval | Reason::Pending);
    let approved = match decision.filter(|_| acted_on) {
        Some(a) => {
            let (value, reason, verb) = match a.decision {
                Decision::Approved => ("True", "Approved", "approved"),
                Decision::Denied => ("False", "Denied", "denied"),
            };
            let message = format!("{verb} by {} at {}: {}", a.by, a.at.0, a.reason);
            condition(APPROVED, value, reason, message, stamp)
        }
        None => condition(
            APPROVED,
            "Unknown",
            Reason::AwaitingApproval.as_str(),
            format!(
                "no decision on generation {} was acted on yet",
                stamp.generation
            ),
            stamp,
        ),
    };
    put_condition(status, approved);
}

/// The Ready condition's reason, if the status has one.
pub fn ready_reason(status: &GuestRedemptionResetStatus) -> Option<Reason> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == READY)
        .and_then(|c| Reason::parse(&c.reason))
}

fn record_user(status: &mut GuestRedemptionResetStatus, user: &DirectoryUser) {
    // previousMail is the mail before this reset changed it: keep the first one seen for the
    // same user, since a re-read after the mail PATCH already shows the new address.
    let known = status.user.as_ref().filter(|known| known.id == user.id);
    let previous_mail = match known {
        Some(known) => known.previous_mail.clone().or_else(|| user.mail.clone()),
        None => user.mail.clone(),
    };
    status.user = Some(ResolvedUser {
        id: user.id.clone(),
        user_principal_name: user.user_principal_name.clone(),
        previous_mail,
        mail_changed_from: known.and_then(|known| known.mail_changed_from.clone()),
        mail_changed_to: known.and_then(|known| known.mail_changed_to.clone()),
    });
    status.target = Some(
        user.user_principal_name
            .clone()
            .unwrap_or_else(|| user.id.clone()),
    );
}

/// Records a planned mail PATCH to `email` of a user whose mail is `current`. The mail before
/// the controller's change stays recorded only while the user still carries the e-mail that
/// change set; otherwise nothing of the controller's is on the user (its PATCH never went
/// out, or someone changed the mail since), and `current` is what this change replaces. A
/// record without the e-mail (written by an earlier version) is kept, as it was then.
fn record_mail_change(known: &mut ResolvedUser, current: Option<&str>, email: &str) {
    let ours_still_there = match (&known.mail_changed_from, &known.mail_changed_to) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(_), Some(to)) => current == Some(to.as_str()),
    };
    if !ours_still_there {
        known.mail_changed_from = Some(current.unwrap_or_default().to_owned());
    }
    known.mail_changed_to = Some(email.to_owned());
}

/// Applies a report of the decision to the status; `None` when the status has moved on from
/// the attempt the report is the outcome of (another writer settled or replaced it), so the
/// report must be dropped rather than written over a newer outcome.
pub fn apply_report(
    status: &GuestRedemptionResetStatus,
    report: &Report,
    stamp: Stamp<'_>,
) -> Option<GuestRedemptionResetStatus> {
    if let Some(id) = &report.for_attempt
        && status.attempt.as_ref().map(|a| &a.id) != Some(id)
    {
        return None;
    }
    let mut next = status.clone();
    acknowledge(&mut next, stamp);
    if let Some(user) = &report.user {
        record_user(&mut next, user);
    }
    if let Some(missing) = report.user_missing_since {
        next.user_missing_since = missing.map(ceil_to_second);
    } else if report.user.is_some() {
        next.user_missing_since = None;
    }
    if let Some(issued) = &report.issued {
        let invitation = IssuedInvitation {
            id: issued.invitation_id.clone(),
            email: issued.email.clone(),
            redeem_status: issued.redeem_status.clone(),
            issued_at: Time(stamp.now),
            generation: issued.generation,
            recovered: issued.recovered,
            request_id: issued.request_id.clone(),
            client_request_id: issued.client_request_id.clone(),
            audit: status.attempt.as_ref().and_then(|a| a.audit.clone()),
        };
        next.history.insert(0, HistoryEntry::from(&invitation));
        next.history.truncate(HISTORY_LIMIT);
        next.invitation = Some(invitation);
        // The mail the controller set went with a reset: it is the user's mail now.
        if let Some(user) = next.user.as_mut() {
            user.mail_changed_from = None;
            user.mail_changed_to = None;
        }
    }
    let unsent_leftover = next
        .attempt
        .as_ref()
        .is_some_and(|a| a.post_started_at.is_none())
        && report.reason.is_settled();
    if report.attempt == AttemptChange::Clear || unsent_leftover {
        next.attempt = None;
    }
    // A newer generation was acknowledged meanwhile: its Ready and observedGeneration stay.
    if status.observed_generation > Some(stamp.generation) {
        return Some(next);
    }
    next.next_attempt_at = report
        .requeue
        .and_then(|after| jiff::SignedDuration::try_from(after).ok())
        .map(|after| ceil_to_second(stamp.now + after));
    set_ready(&mut next, stamp, report.reason, &report.message);
    if report.plan.is_some() {
        next.plan.clone_from(&report.plan);
        next.admitted_under.clone_from(&report.admitted_under);
    }
    if let Some(follow_up) = &report.redemption {
        set_redemption(&mut next, follow_up, stamp.now);
    }
    Some(next)
}

/// A fresh attempt for the stamp's generation, issuing for `email`.
pub fn new_attempt(id: String, email: &str, user: &DirectoryUser, stamp: Stamp<'_>) -> Attempt {
    Attempt {
        id,
        generation: stamp.generation,
        started_at: Time(stamp.now),
        post_started_at: None,
        email: Some(email.to_owned()),
        user_state_before: Some(state_of(user)),
        audit: None,
    }
}

/// The user's redemption state, as recovery compares it later.
fn state_of(user: &DirectoryUser) -> UserStateBefore {
    UserStateBefore {
        external_user_state: user.external_user_state.clone(),
        changed_at: user.external_user_state_change_date_time.map(Time),
    }
}

/// The status that records the intent to post, before any Graph write (docs/design.md,
/// "One pass").
pub fn with_intent(
    status: &GuestRedemptionResetStatus,
    attempt: &Attempt,
    user: &DirectoryUser,
    stamp: Stamp<'_>,
) -> GuestRedemptionResetStatus {
    let mut next = status.clone();
    acknowledge(&mut next, stamp);
    record_user(&mut next, user);
    // The mail PATCH this intent plans is recorded before it is sent, so that a refusal of
    // the target by any later pass puts the user's mail back (docs/design.md, "Refused
    // targets").
    let patched_to = attempt
        .email
        .as_deref()
        .filter(|email| !user.carries_email(email));
    if let (Some(known), Some(email)) = (next.user.as_mut(), patched_to) {
        record_mail_change(known, user.mail.as_deref(), email);
    }
    next.user_missing_since = None;
    // The pass is working now: a wait it overrode (a retry asked for) is over.
    next.next_attempt_at = None;
    next.attempt = Some(attempt.clone());
    set_ready(
        &mut next,
        stamp,
        Reason::InProgress,
        &format!("issuing the invitation for generation {}", stamp.generation),
    );
    next
}

/// The status that marks the attempt as being sent, right before the POST, with the user's
/// state as the freshest read showed it.
pub fn with_sending(
    status: &GuestRedemptionResetStatus,
    user: &DirectoryUser,
    stamp: Stamp<'_>,
) -> GuestRedemptionResetStatus {
    let mut next = status.clone();
    if let Some(attempt) = &mut next.attempt {
        attempt.post_started_at = Some(ceil_to_second(stamp.now));
        attempt.user_state_before = Some(state_of(user));
    }
    next
}

/// The status that accepts a new retry token: the generation is worked on again.
pub fn with_retry_accepted(
    status: &GuestRedemptionResetStatus,
    token: &str,
    stamp: Stamp<'_>,
) -> GuestRedemptionResetStatus {
    let mut next = status.clone();
    next.attempt = None;
    next.user_missing_since = None;
    next.next_attempt_at = None;
    // The invitation issued again supersedes the one followed so far.
    clear_redemption(&mut next);
    set_ready(
        &mut next,
        Stamp {
            retry_annotation: Some(token),
            ..stamp
        },
        Reason::InProgress,
        &format!(
            "retrying generation {} as asked by the guestreset.io/retry annotation ({token})",
            stamp.generation
        ),
    );
    next
}

/// What the first status write of a generation carries besides its own change, so that no
/// separate write is needed just to say the generation was seen (docs/design.md, "One pass"):
/// the requester of record, no plan, wait or follow-through of the previous generation. A no-op
/// once the status already speaks of this generation (or a newer one).
pub fn acknowledge(next: &mut GuestRedemptionResetStatus, stamp: Stamp<'_>) {
    if next
        .observed_generation
        .is_some_and(|seen| seen >= stamp.generation)
    {
        return;
    }
    next.user_missing_since = None;
    next.next_attempt_at = None;
    // A new generation asks for a new reset: the follow-through of the old one ends here.
    clear_redemption(next);
    // Who asked for this generation; the plan of the previous one no longer applies.
    next.requested_by = stamp.requested_by.map(str::to_owned);
    next.plan = None;
    next.admitted_under = None;
}

/// Records the follow-through and sets the `Redeemed` condition; its `lastTransitionTime`
/// moves only when its status flips.
pub fn set_redemption(
    status: &mut GuestRedemptionResetStatus,
    follow_up: &FollowUp,
    now: Timestamp,
) {
    let redemption = &follow_up.redemption;
    put_condition(
        status,
        Condition {
            type_: REDEEMED.to_owned(),
            status: redemption.state.condition_status().to_owned(),
            reason: redemption.state.as_str().to_owned(),
            message: follow_up.message.clone(),
            observed_generation: Some(redemption.generation),
            last_transition_time: Time(now),
        },
    );
    status.redemption = Some(redemption.clone());
}

/// A new generation, or a retry, restarts the follow-through: the old one is dropped.
pub fn clear_redemption(status: &mut GuestRedemptionResetStatus) {
    status.redemption = None;
    status.conditions.retain(|c| c.type_ != REDEEMED);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::Approval;

    fn stamp(generation: i64, second: i64, approval_required: bool) -> Stamp<'static> {
        Stamp {
            generation,
            now: Timestamp::from_second(1_800_000_000 + second).unwrap(),
            retry_annotation: None,
            key: None,
            requested_by: Some("alice"),
            approval_required,
        }
    }

    fn get<'a>(status: &'a GuestRedemptionResetStatus, type_: &str) -> Option<&'a Condition> {
        status.conditions.iter().find(|c| c.type_ == type_)
    }

    fn approval(generation: i64, decision: Decision) -> Approval {
        Approval {
            generation,
            decision,
            by: "bob".to_owned(),
            groups: vec![],
            at: Time(Timestamp::from_second(1_800_000_000).unwrap()),
            reason: "CHG-1 reviewed".to_owned(),
            retry: None,
            admitted_under: None,
            digest: None,
        }
    }

    #[test]
    fn reconciling_and_stalled_follow_ready_for_the_generation() {
        for &reason in Reason::ALL {
            let mut status = GuestRedemptionResetStatus::default();
            set_ready(&mut status, stamp(3, 0, false), reason, "why");
            let reconciling = get(&status, RECONCILING).unwrap();
            let stalled = get(&status, STALLED).unwrap();
            assert_eq!(reconciling.status == "True", reason.is_reconciling());
            assert_eq!(stalled.status == "True", reason.is_stalled());
            for c in [reconciling, stalled] {
                assert_eq!(c.observed_generation, Some(3), "{reason}");
                assert_eq!(c.reason, reason.as_str());
                assert_eq!(c.message == "why", c.status == "True", "{reason}: {c:?}");
            }
            assert!(get(&status, APPROVED).is_none(), "no approval, no Approved");
        }
    }

    #[test]
    fn a_condition_moves_its_transition_time_only_when_it_flips() {
        let mut status = GuestRedemptionResetStatus::default();
        set_ready(&mut status, stamp(1, 0, false), Reason::Pending, "");
        set_ready(&mut status, stamp(1, 10, false), Reason::InProgress, "");
        let since = |s: &GuestRedemptionResetStatus, t| get(s, t).unwrap().last_transition_time.0;
        assert_eq!(since(&status, RECONCILING), stamp(1, 0, false).now);
        set_ready(&mut status, stamp(1, 20, false), Reason::NotAGuest, "");
        assert_eq!(since(&status, RECONCILING), stamp(1, 20, false).now);
        assert_eq!(since(&status, STALLED), stamp(1, 20, false).now);
        assert_eq!(since(&status, READY), stamp(1, 20, false).now);
        let types: Vec<&str> = status.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types.len(), 3, "one condition per type: {types:?}");
    }

    #[test]
    fn approved_says_what_the_controller_acted_on() {
        let approved = |decision: Option<Approval>, ready: Reason| {
            let mut status = GuestRedemptionResetStatus {
                approval: decision,
                ..Default::default()
            };
            set_ready(&mut status, stamp(2, 0, true), ready, "");
            let c = get(&status, APPROVED).unwrap().clone();
            assert_eq!(c.observed_generation, Some(2));
            (c.status, c.reason)
        };
        let pair = |s: &str, r: &str| (s.to_owned(), r.to_owned());
        let awaiting = pair("Unknown", "AwaitingApproval");
        assert_eq!(approved(None, Reason::AwaitingApproval), awaiting);
        assert_eq!(approved(None, Reason::NotAGuest), awaiting);
        // A decision the controller would not act on (Ready is still AwaitingApproval).
        let yes = Some(approval(2, Decision::Approved));
        let no = Some(approval(2, Decision::Denied));
        assert_eq!(approved(yes.clone(), Reason::AwaitingApproval), awaiting);
        assert_eq!(approved(no.clone(), Reason::AwaitingApproval), awaiting);
        assert_eq!(approved(yes.clone(), Reason::Pending), awaiting);
        // A decision about another generation approves nothing.
        let old = Some(approval(1, Decision::Approved));
        assert_eq!(approved(old, Reason::InProgress), awaiting);
        assert_eq!(
            approved(yes.clone(), Reason::InProgress),
            pair("True", "Approved")
        );
        assert_eq!(approved(yes, Reason::Issued), pair("True", "Approved"));
        assert_eq!(approved(no, Reason::Denied), pair("False", "Denied"));
    }
}
