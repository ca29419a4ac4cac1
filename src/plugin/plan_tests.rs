use super::*;
use crate::plugin::fixtures::{approval, object, status};
use crate::resource::{Decision, GuestRedemptionResetStatus};

fn awaiting(generation: i64) -> GuestRedemptionResetStatus {
    GuestRedemptionResetStatus {
        plan: Some("resolve alice@contoso.com\nset mail to alice@newco.example".into()),
        requested_by: Some("alice@fabrikam.example".into()),
        ..status(
            generation,
            Reason::AwaitingApproval,
            "waiting for an approver",
        )
    }
}

#[test]
fn the_plan_of_the_current_generation_is_shown_with_its_requester() {
    let view = current_plan(&object(3, Some(awaiting(3)))).unwrap();
    assert_eq!(view.generation, 3);
    assert_eq!(view.namespace, "identity");
    assert_eq!(view.name, "alice");
    assert_eq!(view.requested_by.as_deref(), Some("alice@fabrikam.example"));
    assert_eq!(view.approval, None);
    let text = describe(&view);
    assert!(text.starts_with(
        "Plan for generation 3 of identity/alice, requested by alice@fabrikam.example:\n"
    ));
    assert!(
        text.contains("\n  set mail to alice@newco.example\n"),
        "{text}"
    );
}

#[test]
fn a_plan_for_an_older_generation_is_not_the_current_plan() {
    let err = current_plan(&object(4, Some(awaiting(3)))).unwrap_err();
    assert_eq!(
        err,
        NoPlan::NotObserved {
            generation: 4,
            observed: Some(3)
        }
    );
    assert!(err.to_string().contains("the status is for generation 3"));
    let err = current_plan(&object(1, None)).unwrap_err();
    assert!(err.to_string().starts_with("not planned yet"), "{err}");
    assert!(err.to_string().contains("no status yet"), "{err}");
}

#[test]
fn no_plan_says_why() {
    let cases = [
        (Reason::Pending, "not planned yet"),
        (Reason::InProgress, "not planned yet"),
        (Reason::Issued, "approval is not required"),
        (Reason::DryRunComplete, "approval is not required"),
        (
            Reason::UserNotFound,
            "stopped before one was made (UserNotFound: the message)",
        ),
    ];
    for (reason, words) in cases {
        let err = current_plan(&object(2, Some(status(2, reason, "the message")))).unwrap_err();
        assert!(err.to_string().contains(words), "{reason}: {err}");
        assert!(err.to_string().contains("generation 2"), "{reason}: {err}");
    }
    let mut bare = status(2, Reason::Pending, "");
    bare.conditions.clear();
    let err = current_plan(&object(2, Some(bare))).unwrap_err();
    assert!(
        err.to_string().contains("without a Ready condition"),
        "{err}"
    );
}

#[test]
fn a_decision_about_this_generation_is_part_of_the_view_an_older_one_is_not() {
    let mut decided = awaiting(3);
    decided.approval = Some(approval(3, Decision::Denied, "bob"));
    let view = current_plan(&object(3, Some(decided.clone()))).unwrap();
    assert_eq!(view.approval.as_ref().unwrap().decision, Decision::Denied);
    assert!(describe(&view).contains("Already decided: Denied by bob"));
    decided.approval = Some(approval(2, Decision::Approved, "bob"));
    assert_eq!(
        current_plan(&object(3, Some(decided))).unwrap().approval,
        None
    );
}

#[test]
fn the_machine_readable_view_has_the_generation_and_requester() {
    let view = current_plan(&object(3, Some(awaiting(3)))).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&output::render(&view, Format::Json)).unwrap();
    assert_eq!(json["generation"], 3);
    assert_eq!(json["requestedBy"], "alice@fabrikam.example");
    assert_eq!(json["name"], "alice");
    assert!(json["plan"].as_str().unwrap().contains("set mail"));
    assert!(json.get("approval").is_none());
}
