//! Following through after `Issued` (docs/resource.md, "Following through"): did the guest
//! redeem the new invitation? A later, separate concern of the entry stage: it starts only
//! once the current generation is settled as `Issued` and never touches the intent, the
//! sending mark or the attempt. Pure: the decision of the stage, the record it writes, and the
//! `Redeemed` condition.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::input::{Failure, FollowUp, Learned, Observed, Read, Settings};
use super::report::Report;
use super::schedule::stretch;
use super::step::Step;
use super::time::ceil_to_second;
use crate::graph::DirectoryUser;
use crate::resource::reason::Reason;
use crate::resource::{GuestRedemptionReset, Redemption, RedemptionState};

const ACCEPTED: &str = "Accepted";

/// The follow-through record of the current generation, if it has one.
fn current_record<'s>(o: &Observed<'s>) -> Option<&'s Redemption> {
    o.status
        .redemption
        .as_ref()
        .filter(|r| r.generation == o.generation)
}

/// The entry stage for a resource settled as `Issued`: nothing once the follow-through ended
/// (or for a generation that has none), a wait until the next check, the check when due, and
/// after it the record to write — or, when neither the state changed nor the next check moved
/// by more than the schedule's step, only the wait (no status write per read).
pub(super) fn follow_through(
    o: &Observed<'_>,
    settings: &Settings,
    now: Timestamp,
    pass: &Learned,
) -> Step {
    let Some(record) = current_record(o) else {
        return Step::Nothing;
    };
    if record.state.is_final() {
        return Step::Nothing;
    }
    let due_at = record
        .next_check_at
        .as_ref()
        .map_or(record.since.0, |t| t.0);
    let Some(read) = pass
        .redemption_read
        .as_ref()
        .filter(|_| !pass.redemption_recorded)
    else {
        if now < due_at || pass.redemption_recorded {
            return Step::Wait { until: due_at };
        }
        return match &o.status.user {
            Some(user) => Step::CheckRedemption {
                user_id: user.id.clone(),
            },
            None => Step::Nothing,
        };
    };
    let follow_up = judge(record, read, settings, now, pass.spread);
    let next = follow_up.redemption.next_check_at.as_ref().map(|t| t.0);
    let step = settings.schedule.step(now.duration_since(record.since.0));
    match next {
        Some(next) if !follow_up.changed && next.duration_since(due_at).abs() <= step => {
            Step::Wait { until: next }
        }
        _ => Step::RecordRedemption(Box::new(follow_up)),
    }
}

/// What the read says: the guest redeemed, is gone, ran out of watch, or is still pending
/// (the next check per the schedule, or later when the read was deferred or failed).
fn judge(
    record: &Redemption,
    read: &Read<Option<DirectoryUser>>,
    settings: &Settings,
    now: Timestamp,
    spread: f64,
) -> FollowUp {
    let (since, schedule) = (record.since.0, settings.schedule);
    let age = now.duration_since(since);
    let step = schedule.step(age);
    let pending = |next: Timestamp, checked: bool, message: String| FollowUp {
        redemption: Redemption {
            last_checked_at: if checked {
                Some(Time(now))
            } else {
                record.last_checked_at.clone()
            },
            next_check_at: Some(ceil_to_second(next)),
            ..record.clone()
        },
        message,
        changed: false,
    };
    match &read.result {
        Ok(Some(user)) if redeemed_after(user, since - settings.clock_skew) => {
            let at = user.external_user_state_change_date_time.unwrap_or(now);
            let message = format!(
                "{} redeemed the new invitation at {at}, {} after it was issued",
                user.display_name(),
                friendly(at.duration_since(since))
            );
            final_state(record, RedemptionState::Accepted, Some(at), now, message)
        }
        Ok(None) => final_state(
            record,
            RedemptionState::NotRedeemed,
            None,
            now,
            "the guest is no longer in the directory (deleted, perhaps by a guest-lifecycle policy) and never redeemed the new invitation".to_owned(),
        ),
        Ok(Some(_)) if now >= schedule.deadline(since) => final_state(
            record,
            RedemptionState::NotRedeemed,
            None,
            now,
            format!(
                "the guest has not redeemed the invitation within the watch of {}; a guest left in PendingAcceptance may be removed by a guest-lifecycle policy",
                friendly(schedule.watch)
            ),
        ),
        Ok(Some(_)) => {
            let next = schedule.next_check(since, now, spread);
            pending(next, true, pending_message(age, next))
        }
        Err(Failure::Throttled { retry_after }) => {
            let wait = retry_after
                .and_then(|d| SignedDuration::try_from(d).ok())
                .unwrap_or(step);
            let next = now + wait;
            pending(next, false, pending_message(age, next))
        }
        Err(failure) => {
            let next = now + stretch(step, spread);
            let message = format!(
                "{}; the last check failed ({failure:?})",
                pending_message(age, next)
            );
            pending(next, false, message)
        }
    }
}

/// The guest's state shows a redemption made after `after`: an earlier acceptance, still
/// visible while the directory replicates the reset, does not count.
fn redeemed_after(user: &DirectoryUser, after: Timestamp) -> bool {
    user.external_user_state.as_deref() == Some(ACCEPTED)
        && user
            .external_user_state_change_date_time
            .is_some_and(|changed| changed > after)
}

fn final_state(
    record: &Redemption,
    state: RedemptionState,
    accepted_at: Option<Timestamp>,
    now: Timestamp,
    message: String,
) -> FollowUp {
    FollowUp {
        redemption: Redemption {
            state,
            accepted_at: accepted_at.map(Time),
            last_checked_at: Some(Time(now)),
            next_check_at: None,
            ..record.clone()
        },
        message,
        changed: true,
    }
}

fn pending_message(age: SignedDuration, next: Timestamp) -> String {
    format!(
        "issued {} ago; the guest has not redeemed the invitation yet; next check at {}",
        friendly(age),
        ceil_to_second(next).0
    )
}

/// A duration to the second, as people read it ("2h 5m 3s").
fn friendly(d: SignedDuration) -> String {
    format!("{:#}", SignedDuration::from_secs(d.as_secs().max(0)))
}

/// The follow-through that an `Issued` report for the current generation starts: pending,
/// counted from the attempt's start, first check per the schedule. A dry run has none.
pub(super) fn with_start(
    mut step: Step,
    o: &Observed<'_>,
    settings: &Settings,
    now: Timestamp,
    pass: &Learned,
) -> Step {
    if let Step::Report(report) = &mut step
        && starts_follow_through(report, o)
    {
        let since = o.status.attempt.as_ref().map_or(now, |a| a.started_at.0);
        let first = settings.schedule.first_check(since, pass.spread);
        report.redemption = Some(FollowUp {
            redemption: Redemption {
                generation: o.generation,
                state: RedemptionState::PendingAcceptance,
                since: Time(since),
                accepted_at: None,
                last_checked_at: None,
                next_check_at: Some(ceil_to_second(first)),
            },
            message: pending_message(now.duration_since(since), first),
            changed: true,
        });
    }
    step
}

fn starts_follow_through(report: &Report, o: &Observed<'_>) -> bool {
    report.reason == Reason::Issued
        && !o.spec.dry_run
        && report
            .issued
            .as_ref()
            .is_some_and(|i| i.generation == o.generation)
}

/// The number of pending follow-throughs and the age of the oldest (for the gauges).
pub fn pending_summary<'a>(
    resources: impl IntoIterator<Item = &'a GuestRedemptionReset>,
    now: Timestamp,
) -> (i64, SignedDuration) {
    let mut count = 0;
    let mut oldest = SignedDuration::ZERO;
    for obj in resources {
        let Some(r) = obj.status.as_ref().and_then(|s| s.redemption.as_ref()) else {
            continue;
        };
        if r.state == RedemptionState::PendingAcceptance
            && Some(r.generation) == obj.metadata.generation
        {
            count += 1;
            oldest = oldest.max(now.duration_since(r.since.0));
        }
    }
    (count, oldest)
}

#[cfg(test)]
#[path = "follow_tests.rs"]
mod tests;
