//! Pure status transitions: how a [`Report`], an intent or an accepted retry changes the status.
//! The rules of docs/resource.md ("Status") live here: `phase` follows Ready, `observedGeneration` on the
//! status and the condition, `lastTransitionTime` moves only when Ready's status flips, and
//! the history keeps the newest ten issuances.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::reason::Reason;
use super::report::{AttemptChange, Report};
use crate::graph::DirectoryUser;
use crate::resource::{
    Attempt, GuestRedemptionResetStatus, HISTORY_LIMIT, HistoryEntry, IssuedInvitation,
    ResolvedUser, UserKey, UserStateBefore,
};

pub const READY: &str = "Ready";

/// Kubernetes stores times to the second, dropping the fraction. A time that starts a wait is
/// rounded up instead, so that the stored wait is never shorter than the one decided.
pub fn ceil_to_second(t: Timestamp) -> Time {
    let second = t.as_second() + i64::from(t.subsec_nanosecond() > 0);
    Time(Timestamp::from_second(second).unwrap_or(t))
}

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
}

/// Sets Ready (and `phase`, `observedGeneration`) for `reason`.
pub fn set_ready(
    status: &mut GuestRedemptionResetStatus,
    stamp: Stamp<'_>,
    reason: Reason,
    message: &str,
) {
    let readiness = reason.readiness().as_str();
    let previous = status.conditions.iter().find(|c| c.type_ == READY);
    let last_transition_time = match previous {
        Some(p) if p.status == readiness => p.last_transition_time.clone(),
        _ => Time(stamp.now),
    };
    let ready = Condition {
        type_: READY.to_owned(),
        status: readiness.to_owned(),
        reason: reason.as_str().to_owned(),
        message: message.to_owned(),
        observed_generation: Some(stamp.generation),
        last_transition_time,
    };
    status.conditions.retain(|c| c.type_ != READY);
    status.conditions.push(ready);
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
    let previous_mail = match &status.user {
        Some(known) if known.id == user.id => {
            known.previous_mail.clone().or_else(|| user.mail.clone())
        }
        _ => user.mail.clone(),
    };
    status.user = Some(ResolvedUser {
        id: user.id.clone(),
        user_principal_name: user.user_principal_name.clone(),
        previous_mail,
    });
    status.target = Some(
        user.user_principal_name
            .clone()
            .unwrap_or_else(|| user.id.clone()),
    );
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
        };
        next.history.insert(0, HistoryEntry::from(&invitation));
        next.history.truncate(HISTORY_LIMIT);
        next.invitation = Some(invitation);
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
    }
    if let Some(follow_up) = &report.redemption {
        super::follow::set_redemption(&mut next, follow_up, stamp.now);
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
    super::follow::clear_redemption(&mut next);
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
    super::follow::clear_redemption(next);
    // Who asked for this generation; the plan of the previous one no longer applies.
    next.requested_by = stamp.requested_by.map(str::to_owned);
    next.plan = None;
}
