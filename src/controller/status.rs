//! Pure status transitions: how a [`Report`], an intent or an accepted retry changes the status.
//! The rules of API.md section 2 live here: `phase` follows Ready, `observedGeneration` on the
//! status and the condition, `lastTransitionTime` moves only when Ready's status flips, and
//! the history keeps the newest ten issuances.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::decide::{AttemptChange, Report};
use super::reason::Reason;
use crate::graph::DirectoryUser;
use crate::resource::{
    Attempt, GuestRedemptionResetStatus, HISTORY_LIMIT, HistoryEntry, IssuedInvitation,
    ResolvedUser, UserKey,
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
    /// controller was busy is never acted on later (API.md 3.5).
    pub retry_annotation: Option<&'a str>,
    /// The spec's key, shown in the `User` column until the user is resolved.
    pub key: Option<UserKey<'a>>,
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

/// Applies a report of the decision to the status.
pub fn apply_report(
    status: &GuestRedemptionResetStatus,
    report: &Report,
    stamp: Stamp<'_>,
) -> GuestRedemptionResetStatus {
    let mut next = status.clone();
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
        };
        next.history.insert(
            0,
            HistoryEntry {
                generation: invitation.generation,
                email: invitation.email.clone(),
                invitation_id: invitation.id.clone(),
                issued_at: invitation.issued_at.clone(),
                recovered: invitation.recovered,
            },
        );
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
    next.next_attempt_at = report
        .requeue
        .and_then(|after| jiff::SignedDuration::try_from(after).ok())
        .map(|after| ceil_to_second(stamp.now + after));
    set_ready(&mut next, stamp, report.reason, &report.message);
    next
}

/// The status that records the intent to post (API.md 3.2 step 3).
pub fn with_intent(
    status: &GuestRedemptionResetStatus,
    attempt: &Attempt,
    user: &DirectoryUser,
    stamp: Stamp<'_>,
) -> GuestRedemptionResetStatus {
    let mut next = status.clone();
    record_user(&mut next, user);
    next.user_missing_since = None;
    next.attempt = Some(attempt.clone());
    set_ready(
        &mut next,
        stamp,
        Reason::InProgress,
        &format!("issuing the invitation for generation {}", stamp.generation),
    );
    next
}

/// The status that marks the attempt as being sent, right before the POST.
pub fn with_sending(
    status: &GuestRedemptionResetStatus,
    stamp: Stamp<'_>,
) -> GuestRedemptionResetStatus {
    let mut next = status.clone();
    if let Some(attempt) = &mut next.attempt {
        attempt.post_started_at = Some(ceil_to_second(stamp.now));
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

/// The status of a generation seen for the first time.
pub fn pending(
    status: &GuestRedemptionResetStatus,
    stamp: Stamp<'_>,
) -> GuestRedemptionResetStatus {
    let mut next = status.clone();
    next.user_missing_since = None;
    next.next_attempt_at = None;
    set_ready(
        &mut next,
        stamp,
        Reason::Pending,
        &format!("generation {} seen; not yet worked on", stamp.generation),
    );
    next
}
