//! The follow-through stage, tested without I/O: from the record an `Issued` report starts to
//! `Accepted` or `NotRedeemed`, what is read when, and when the status is written.

use super::*;
use crate::controller::core::decide::decide;
use crate::controller::core::input::TenantGate;
use crate::controller::core::report::Issued;
use crate::controller::core::schedule::Schedule;
use crate::controller::status::{Stamp, acknowledge, apply_report, set_redemption};
use crate::resource::reason::{REDEEMED, Reason};
use crate::resource::{
    Attempt, GuestRedemptionResetSpec, GuestRedemptionResetStatus, ResolvedUser,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use std::time::Duration;

const ID: &str = "3f0a6c1e-8d2b-4c55-9b0e-2f6a1d9c7e41";

fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

fn spec(dry_run: bool) -> GuestRedemptionResetSpec {
    GuestRedemptionResetSpec {
        dry_run,
        ..crate::controller::fixtures::spec(ID, "alice@newco.example")
    }
}

fn settings() -> Settings {
    Settings {
        schedule: Schedule {
            first: SignedDuration::from_mins(5),
            watch: SignedDuration::from_hours(24 * 30),
        },
        ..Settings::default()
    }
}

fn guest(state: &str, changed: Timestamp) -> DirectoryUser {
    DirectoryUser {
        id: ID.into(),
        user_type: Some("Guest".into()),
        user_principal_name: Some("alice_contoso.com#EXT#@fabrikam.onmicrosoft.com".into()),
        mail: Some("alice@newco.example".into()),
        other_mails: vec![],
        external_user_state: Some(state.into()),
        external_user_state_change_date_time: Some(changed),
    }
}

/// A status just issued at t(0) for generation 1 by a POST whose attempt started at t(-2).
fn issued(dry_run: bool) -> GuestRedemptionResetStatus {
    let spec = spec(dry_run);
    let mut status = GuestRedemptionResetStatus {
        user: Some(ResolvedUser {
            id: ID.into(),
            ..Default::default()
        }),
        attempt: Some(Attempt {
            id: "a1".into(),
            generation: 1,
            started_at: Time(t(-2)),
            post_started_at: Some(Time(t(-1))),
            email: Some(spec.email.clone()),
            user_state_before: None,
            audit: None,
        }),
        ..Default::default()
    };
    let o = observed(&spec, &status, 1);
    let report = Report {
        issued: Some(Issued {
            generation: 1,
            email: spec.email.clone(),
            invitation_id: "inv".into(),
            redeem_status: Some("PendingAcceptance".into()),
            recovered: false,
            request_id: None,
            client_request_id: None,
        }),
        ..Report::new(Reason::Issued, "issued")
    }
    .clear_attempt();
    let Step::Report(report) = with_start(
        Step::Report(Box::new(report)),
        &o,
        &settings(),
        t(0),
        &Learned::default(),
    ) else {
        panic!("a report stays a report");
    };
    status = apply_report(&status, &report, stamp(1, t(0))).unwrap();
    status
}

fn stamp(generation: i64, now: Timestamp) -> Stamp<'static> {
    Stamp {
        generation,
        now,
        retry_annotation: None,
        key: None,
        requested_by: None,
        approval_required: false,
    }
}

fn observed<'a>(
    spec: &'a GuestRedemptionResetSpec,
    status: &'a GuestRedemptionResetStatus,
    generation: i64,
) -> Observed<'a> {
    Observed {
        spec,
        generation,
        retry_annotation: None,
        requested_by: None,
        retry_requested_by: None,
        status,
        failures: 0,
        migration: None,
    }
}

fn decide_at(status: &GuestRedemptionResetStatus, now: Timestamp, pass: &Learned) -> Step {
    let spec = spec(false);
    decide(
        &observed(&spec, status, 1),
        &settings(),
        TenantGate::Open,
        now,
        pass,
    )
}

fn after_read(result: Result<Option<DirectoryUser>, Failure>, now: Timestamp) -> Learned {
    Learned {
        redemption_read: Some(Read { result, at: now }),
        ..Learned::default()
    }
}

fn redeemed(status: &GuestRedemptionResetStatus) -> &Condition {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == REDEEMED)
        .expect("a Redeemed condition")
}

fn record(status: &GuestRedemptionResetStatus) -> &Redemption {
    status.redemption.as_ref().unwrap()
}

fn written(
    status: &GuestRedemptionResetStatus,
    step: Step,
    now: Timestamp,
) -> GuestRedemptionResetStatus {
    let Step::RecordRedemption(follow_up) = step else {
        panic!("expected a record to write, got {step:?}");
    };
    let mut next = status.clone();
    set_redemption(&mut next, &follow_up, now);
    next
}

#[test]
fn issued_starts_pending_with_the_first_check_five_minutes_after_the_attempt() {
    let status = issued(false);
    let r = record(&status);
    assert_eq!(r.state, RedemptionState::PendingAcceptance);
    assert_eq!((r.generation, r.since.0), (1, t(-2)));
    assert_eq!(r.next_check_at.as_ref().unwrap().0, t(298));
    let c = redeemed(&status);
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("Unknown", "PendingAcceptance")
    );
    assert!(c.message.starts_with("issued 2s ago"), "{}", c.message);
    assert_eq!(c.observed_generation, Some(1));
}

#[test]
fn a_dry_run_has_no_follow_through() {
    let status = issued(true);
    assert_eq!(status.redemption, None);
    assert!(status.conditions.iter().all(|c| c.type_ != REDEEMED));
}

#[test]
fn before_the_check_is_due_a_pass_waits_and_reads_nothing() {
    let status = issued(false);
    assert_eq!(
        decide_at(&status, t(100), &Learned::default()),
        Step::Wait { until: t(298) }
    );
    assert_eq!(
        decide_at(&status, t(298), &Learned::default()),
        Step::CheckRedemption { user_id: ID.into() }
    );
}

#[test]
fn a_redemption_after_the_issuance_is_accepted_and_final() {
    let status = issued(false);
    let step = decide_at(
        &status,
        t(300),
        &after_read(Ok(Some(guest("Accepted", t(200)))), t(300)),
    );
    let status = written(&status, step, t(300));
    let r = record(&status);
    assert_eq!(r.state, RedemptionState::Accepted);
    assert_eq!(r.accepted_at.as_ref().unwrap().0, t(200));
    assert_eq!(r.next_check_at, None);
    let c = redeemed(&status);
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "Accepted"));
    assert_eq!(c.last_transition_time.0, t(300));
    assert_eq!(
        decide_at(&status, t(99_999), &Learned::default()),
        Step::Nothing
    );
}

#[test]
fn an_acceptance_older_than_the_issuance_is_not_a_redemption() {
    // Replication may still show the guest's earlier acceptance right after the reset.
    let status = issued(false);
    let step = decide_at(
        &status,
        t(300),
        &after_read(Ok(Some(guest("Accepted", t(-600)))), t(300)),
    );
    let status = written(&status, step, t(300));
    assert_eq!(record(&status).state, RedemptionState::PendingAcceptance);
    assert_eq!(redeemed(&status).status, "Unknown");
}

#[test]
fn a_pending_read_moves_the_next_check_along_the_schedule() {
    let status = issued(false);
    let step = decide_at(
        &status,
        t(300),
        &after_read(Ok(Some(guest("PendingAcceptance", t(-1)))), t(300)),
    );
    let status = written(&status, step, t(300));
    let r = record(&status);
    assert_eq!(r.last_checked_at.as_ref().unwrap().0, t(300));
    assert_eq!(r.next_check_at.as_ref().unwrap().0, t(600));
    assert_eq!(
        redeemed(&status).last_transition_time.0,
        t(0),
        "no flip, no transition"
    );
    // An hour in, the step is 15 minutes.
    let step = decide_at(
        &status,
        t(3000),
        &after_read(Ok(Some(guest("PendingAcceptance", t(-1)))), t(3000)),
    );
    assert_eq!(
        record(&written(&status, step, t(3000)))
            .next_check_at
            .as_ref()
            .unwrap()
            .0,
        t(3900)
    );
}

#[test]
fn a_deferred_read_moves_the_check_without_a_write_unless_it_moves_more_than_a_step() {
    let status = issued(false);
    let deferred = |secs| {
        Err(Failure::Throttled {
            retry_after: Some(Duration::from_secs(secs)),
        })
    };
    // Within a step of the persisted check: only a wait, no status write.
    assert_eq!(
        decide_at(&status, t(298), &after_read(deferred(120), t(298))),
        Step::Wait { until: t(418) }
    );
    // Further than a step: the new time is written so that a restart honours it.
    let step = decide_at(&status, t(298), &after_read(deferred(900), t(298)));
    let status = written(&status, step, t(298));
    assert_eq!(record(&status).next_check_at.as_ref().unwrap().0, t(1198));
    assert_eq!(record(&status).last_checked_at, None, "no read happened");
}

#[test]
fn no_redemption_within_the_watch_is_not_redeemed() {
    let status = issued(false);
    let deadline = t(-2) + SignedDuration::from_hours(24 * 30);
    let step = decide_at(
        &status,
        deadline,
        &after_read(Ok(Some(guest("PendingAcceptance", t(-1)))), deadline),
    );
    let status = written(&status, step, deadline);
    let c = redeemed(&status);
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "NotRedeemed")
    );
    assert!(
        c.message.contains("within the watch of 720h"),
        "{}",
        c.message
    );
    assert_eq!(
        decide_at(
            &status,
            deadline + SignedDuration::from_hours(1),
            &Learned::default()
        ),
        Step::Nothing
    );
}

#[test]
fn a_guest_gone_from_the_directory_is_not_redeemed() {
    let status = issued(false);
    let step = decide_at(&status, t(300), &after_read(Ok(None), t(300)));
    let status = written(&status, step, t(300));
    assert_eq!(record(&status).state, RedemptionState::NotRedeemed);
    assert!(
        redeemed(&status)
            .message
            .contains("no longer in the directory")
    );
}

#[test]
fn a_failed_read_tries_again_a_step_later() {
    let status = issued(false);
    let failed = || Err(Failure::Transient("503".into()));
    // On time: a step later, which a restart would read at anyway (no write).
    assert_eq!(
        decide_at(&status, t(298), &after_read(failed(), t(298))),
        Step::Wait { until: t(598) }
    );
    // Late by more than a step (the check waited for the budget): the move is written.
    let step = decide_at(&status, t(900), &after_read(failed(), t(900)));
    let status = written(&status, step, t(900));
    assert_eq!(record(&status).state, RedemptionState::PendingAcceptance);
    assert_eq!(
        record(&status).next_check_at.as_ref().unwrap().0,
        t(1800),
        "15 min at this age"
    );
    assert!(redeemed(&status).message.contains("the last check failed"));
}

#[test]
fn after_writing_its_record_a_pass_waits_for_the_next_check() {
    let status = issued(false);
    let pass = Learned {
        redemption_recorded: true,
        ..after_read(Ok(Some(guest("PendingAcceptance", t(-1)))), t(300))
    };
    assert_eq!(
        decide_at(&status, t(300), &pass),
        Step::Wait { until: t(298) }
    );
}

#[test]
fn a_new_generation_restarts_it() {
    let status = issued(false);
    let mut next = status.clone();
    acknowledge(&mut next, stamp(2, t(400)));
    assert_eq!(next.redemption, None);
    assert!(next.conditions.iter().all(|c| c.type_ != REDEEMED));
    // A record of an older generation is never acted on.
    let spec = spec(false);
    let mut stale = status.clone();
    stale.redemption.as_mut().unwrap().generation = 0;
    let step = decide(
        &observed(&spec, &stale, 1),
        &settings(),
        TenantGate::Open,
        t(9_999),
        &Learned::default(),
    );
    assert_eq!(step, Step::Nothing);
}

#[test]
fn the_gauges_count_pending_follow_throughs_of_the_current_generation() {
    let mut pending_obj = GuestRedemptionReset::new("a", spec(false));
    pending_obj.metadata.generation = Some(1);
    pending_obj.status = Some(issued(false));
    let mut stale = pending_obj.clone();
    stale.metadata.generation = Some(2);
    let mut accepted = pending_obj.clone();
    accepted
        .status
        .as_mut()
        .unwrap()
        .redemption
        .as_mut()
        .unwrap()
        .state = RedemptionState::Accepted;
    let (count, oldest) = pending_summary([&pending_obj, &stale, &accepted], t(3598));
    assert_eq!((count, oldest), (1, SignedDuration::from_hours(1)));
}
