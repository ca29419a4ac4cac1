//! The approval stage (docs/resource.md, "Approval"), through the same pure world as the rest
//! of the decision's tests: nothing is written to Graph for a generation before an approval
//! the controller could confirm, whatever the status says.

use super::*;
use crate::controller::fixtures::approval;
use crate::resource::Decision;

/// A world that requires approval, with alice as the requester of generation 1.
fn world() -> World {
    let mut w = World::new();
    w.settings.require_approval = true;
    w.requested_by = Some("alice".into());
    w
}

fn decide_on(w: &mut World, decision: Decision, by: &str) {
    w.status.approval = Some(approval(w.generation, decision, by));
}

fn ready_message(w: &World) -> String {
    w.status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

#[test]
fn without_approval_the_preflight_runs_and_the_plan_waits() {
    let mut w = world();
    let report = w.settle(4);
    assert_eq!(report.reason, Reason::AwaitingApproval);
    assert_eq!(
        (w.posts_sent, w.patches),
        (0, 0),
        "nothing written to Graph"
    );
    assert!(
        w.steps.contains(&"ReadEmailHolders".to_owned()),
        "{:?}",
        w.steps
    );
    let plan = w.status.plan.clone().expect("the plan is on record");
    assert!(plan.starts_with("generation 1: set mail of"), "{plan}");
    assert!(plan.contains(NEW), "{plan}");
    assert_eq!(w.status.requested_by.as_deref(), Some("alice"));
    assert!(
        ready_message(&w).contains("requested by alice"),
        "{}",
        ready_message(&w)
    );
    assert_eq!(w.status.attempt, None, "no intent before approval");
    // Passes triggered meanwhile (its own status write, a restart) read nothing again.
    let steps = w.steps.len();
    assert!(w.pass(None).is_none());
    assert_eq!(&w.steps[steps..], ["Nothing"]);
}

#[test]
fn an_approval_by_another_person_issues_once_after_a_fresh_preflight() {
    let mut w = world();
    assert_eq!(w.settle(4).reason, Reason::AwaitingApproval);
    let reads_before = w.steps.iter().filter(|s| *s == "ReadUser").count();
    decide_on(&mut w, Decision::Approved, "bob");
    assert_eq!(w.settle(4).reason, Reason::Issued);
    assert_eq!(w.posts_sent, 1);
    assert_eq!(w.approver_checks, 1);
    let reads_after = w.steps.iter().filter(|s| *s == "ReadUser").count();
    assert_eq!(
        reads_after,
        reads_before + 1,
        "the preflight ran again, fresh"
    );
    assert!(w.pass(None).is_none());
    assert_eq!(w.posts_sent, 1, "issued once");
}

#[test]
fn the_requester_cannot_approve_their_own_generation() {
    let mut w = world();
    decide_on(&mut w, Decision::Approved, "alice");
    let report = w.settle(4);
    assert_eq!(report.reason, Reason::AwaitingApproval);
    assert!(
        report.message.contains("cannot decide on it"),
        "{}",
        report.message
    );
    assert_eq!(w.posts_sent, 0);
    assert_eq!(w.approver_checks, 0, "refused before asking the API server");
}

#[test]
fn an_approval_without_a_requester_of_record_is_not_acted_on() {
    let mut w = world();
    w.requested_by = None;
    decide_on(&mut w, Decision::Approved, "bob");
    let report = w.settle(4);
    assert_eq!(report.reason, Reason::AwaitingApproval);
    assert!(
        report.message.contains("no requester of record"),
        "{}",
        report.message
    );
    assert_eq!(w.posts_sent, 0);
}

#[test]
fn an_approver_the_api_server_does_not_confirm_is_not_acted_on() {
    let mut w = world();
    w.approver_may = Err("the API server says bob may not approve".into());
    decide_on(&mut w, Decision::Approved, "bob");
    let report = w.settle(4);
    assert_eq!(report.reason, Reason::AwaitingApproval);
    assert!(
        report.message.contains("may not approve"),
        "{}",
        report.message
    );
    assert_eq!((w.posts_sent, w.patches), (0, 0));
    // Looked at again later, as a missing permission is, not only on the next change.
    assert_eq!(report.requeue, Some(FORBIDDEN_RETRY));
    // The right granted again: the same approval is acted on at the next pass.
    w.approver_may = Ok(());
    assert_eq!(w.settle(4).reason, Reason::Issued);
    assert_eq!(w.posts_sent, 1);
}

#[test]
fn an_approval_of_an_older_generation_approves_nothing() {
    let mut w = world();
    decide_on(&mut w, Decision::Approved, "bob");
    assert_eq!(w.settle(4).reason, Reason::Issued);
    // A spec edit: a new generation, by carol this time, with bob's approval of generation 1.
    w.spec.email = "alice@other.example".into();
    w.generation = 2;
    w.requested_by = Some("carol".into());
    let report = w.settle(4);
    assert_eq!(report.reason, Reason::AwaitingApproval);
    assert_eq!(
        w.posts_sent, 1,
        "no second invitation without a new approval"
    );
    assert_eq!(w.status.requested_by.as_deref(), Some("carol"));
    assert!(
        w.status
            .plan
            .as_deref()
            .unwrap()
            .starts_with("generation 2:")
    );
    decide_on(&mut w, Decision::Approved, "bob");
    assert_eq!(w.settle(4).reason, Reason::Issued);
    assert_eq!(w.posts_sent, 2);
}

#[test]
fn a_denial_is_final_for_its_generation() {
    let mut w = world();
    assert_eq!(w.settle(4).reason, Reason::AwaitingApproval);
    decide_on(&mut w, Decision::Denied, "bob");
    let report = w.settle(4);
    assert_eq!(report.reason, Reason::Denied);
    assert!(
        report.message.contains("bob denied generation 1"),
        "{}",
        report.message
    );
    assert_eq!(w.posts_sent, 0);
    // Settled: nothing more, not even for a retry annotation.
    assert!(w.pass(None).is_none());
    w.annotation = Some("again".into());
    let _ = w.settle(4);
    assert_eq!(status::ready_reason(&w.status), Some(Reason::Denied));
    assert_eq!(w.posts_sent, 0);
}

#[test]
fn a_dry_run_needs_no_approval() {
    let mut w = world();
    w.spec.dry_run = true;
    assert_eq!(w.settle(4).reason, Reason::DryRunComplete);
    assert_eq!(w.posts_sent, 0);
}

#[test]
fn without_require_approval_an_approval_changes_nothing() {
    let mut w = world();
    w.settings.require_approval = false;
    decide_on(&mut w, Decision::Denied, "bob");
    assert_eq!(w.settle(4).reason, Reason::Issued);
    assert_eq!(w.approver_checks, 0);
}

/// Issue 21, hole 1: a retry of a settled generation is a new request under approval.
#[test]
fn a_retry_of_an_issued_generation_waits_for_an_approval_of_that_retry() {
    let mut w = world();
    decide_on(&mut w, Decision::Approved, "bob");
    assert_eq!(w.settle(4).reason, Reason::Issued);
    w.annotation = Some("r1".into());
    w.retry_by = Some("carol".into());
    let report = w.settle(6);
    assert_eq!(
        report.reason,
        Reason::AwaitingApproval,
        "{}",
        report.message
    );
    assert!(
        report
            .message
            .contains("retry r1 of generation 1 requested by carol"),
        "{}",
        report.message
    );
    assert_eq!(w.posts_sent, 1, "the old approval approves nothing more");
    // The retry's requester cannot decide on it.
    decide_on(&mut w, Decision::Approved, "carol");
    w.status.approval.as_mut().unwrap().retry = Some("r1".into());
    let report = w.settle(4);
    assert!(
        report.message.contains("asked for retry r1"),
        "{}",
        report.message
    );
    assert_eq!(w.posts_sent, 1);
    decide_on(&mut w, Decision::Approved, "bob");
    w.status.approval.as_mut().unwrap().retry = Some("r1".into());
    assert_eq!(w.settle(4).reason, Reason::Issued);
    assert_eq!(w.posts_sent, 2);
}

/// Issue 21, hole 2: an approval pinning another spec's digest is not acted on.
#[test]
fn an_approval_of_another_spec_digest_is_not_acted_on() {
    let mut w = world();
    assert_eq!(w.settle(4).reason, Reason::AwaitingApproval);
    let plan = w.status.plan.clone().unwrap();
    let digest = crate::resource::spec_digest(&w.spec);
    assert!(plan.contains(&format!("spec digest: {digest}")), "{plan}");
    decide_on(&mut w, Decision::Approved, "bob");
    w.status.approval.as_mut().unwrap().digest = Some("sha256:00".into());
    let report = w.settle(4);
    assert_eq!(report.reason, Reason::AwaitingApproval);
    assert!(report.message.contains("has digest"), "{}", report.message);
    assert_eq!(w.posts_sent, 0);
    w.status.approval.as_mut().unwrap().digest = Some(digest);
    assert_eq!(w.settle(4).reason, Reason::Issued);
}

/// A new retry value while the generation waits is a new request: planned again, naming it.
#[test]
fn a_retry_while_waiting_is_planned_again() {
    let mut w = world();
    assert_eq!(w.settle(4).reason, Reason::AwaitingApproval);
    w.annotation = Some("r2".into());
    w.retry_by = Some("carol".into());
    let report = w.settle(4);
    assert!(
        report
            .message
            .contains("retry r2 of generation 1 requested by carol"),
        "{}",
        report.message
    );
    assert_eq!(w.status.retry_token.as_deref(), Some("r2"));
    assert!(w.pass(None).is_none(), "then it waits without reading");
    assert_eq!(w.posts_sent, 0);
}
