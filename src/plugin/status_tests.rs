use super::*;
use crate::plugin::fixtures::{approval, at, condition, now, object, status};
use crate::plugin::output::Format;
use crate::resource::{Decision, Redemption, RedemptionState};

fn throttled(generation: i64) -> GuestRedemptionResetStatus {
    GuestRedemptionResetStatus {
        next_attempt_at: Some(at("2026-12-02T14:03:10Z")),
        requested_by: Some("alice@fabrikam.example".into()),
        ..status(generation, Reason::Throttled, "Graph answered 429")
    }
}

fn issued_and_pending(generation: i64) -> GuestRedemptionResetStatus {
    let mut s = status(generation, Reason::Issued, "invitation issued");
    s.conditions.push(condition(
        "Redeemed",
        "Unknown",
        "PendingAcceptance",
        "issued 5m ago",
        generation,
    ));
    s.redemption = Some(Redemption {
        generation,
        state: RedemptionState::PendingAcceptance,
        since: at("2026-12-02T13:56:00Z"),
        accepted_at: None,
        last_checked_at: None,
        next_check_at: Some(at("2026-12-02T14:11:10Z")),
    });
    s.approval = Some(approval(
        generation,
        Decision::Approved,
        "bob@fabrikam.example",
    ));
    s
}

#[test]
fn a_throttled_reset_says_when_it_is_tried_next() {
    let s = summarize(&object(3, Some(throttled(3))), now());
    assert_eq!(s.ready, "Throttled");
    assert_eq!(s.next_try.as_deref(), Some("14:03:10Z, in 2m"));
    assert_eq!(s.age, "10m");
    assert_eq!(s.requested_by, "alice@fabrikam.example");
    assert_eq!(s.approval, "-");
    assert_eq!(s.redeemed, "-");
    assert_eq!(s.message.as_deref(), Some("Graph answered 429"));
}

#[test]
fn every_unsettled_reason_with_a_next_attempt_shows_it_settled_ones_do_not() {
    for reason in Reason::ALL {
        let s = GuestRedemptionResetStatus {
            next_attempt_at: Some(at("2026-12-02T14:03:10Z")),
            ..status(3, *reason, "m")
        };
        let shown = summarize(&object(3, Some(s)), now()).next_try.is_some();
        assert_eq!(shown, !reason.is_settled(), "{reason}");
    }
    for reason in [
        Reason::Throttled,
        Reason::TransientError,
        Reason::TenantBlocked,
    ] {
        assert!(!reason.is_settled());
    }
}

#[test]
fn a_next_attempt_of_an_older_generation_is_not_the_next_try() {
    let s = summarize(&object(4, Some(throttled(3))), now());
    assert_eq!(s.next_try, None);
    assert_eq!(s.ready, "Throttled (gen 3)");
}

#[test]
fn an_approval_for_an_older_generation_is_flagged() {
    let current = summarize(&object(3, Some(issued_and_pending(3))), now());
    assert_eq!(current.approval, "Approved by bob@fabrikam.example (gen 3)");
    let mut older = issued_and_pending(3);
    older.observed_generation = Some(4);
    older.conditions = vec![condition(
        "Ready",
        "Unknown",
        "AwaitingApproval",
        "waiting",
        4,
    )];
    let s = summarize(&object(4, Some(older)), now());
    assert_eq!(
        s.approval,
        "Approved by bob@fabrikam.example (gen 3, stale)"
    );
    assert_eq!(s.ready, "AwaitingApproval");
}

#[test]
fn redemption_shows_its_state_and_next_check() {
    let s = summarize(&object(3, Some(issued_and_pending(3))), now());
    assert_eq!(
        s.redeemed,
        "PendingAcceptance (next check 14:11:10Z, in 10m)"
    );
    let mut accepted = issued_and_pending(3);
    accepted.conditions[1] = condition("Redeemed", "True", "Accepted", "redeemed", 3);
    accepted.redemption.as_mut().unwrap().next_check_at = None;
    assert_eq!(
        summarize(&object(3, Some(accepted)), now()).redeemed,
        "Accepted"
    );
}

#[test]
fn an_unseen_resource_shows_dashes() {
    let s = summarize(&object(1, None), now());
    assert_eq!(
        (
            s.ready.as_str(),
            s.requested_by.as_str(),
            s.approval.as_str()
        ),
        ("-", "-", "-")
    );
    assert_eq!(s.next_try, None);
    assert_eq!(s.message, None);
}

#[test]
fn the_table_has_a_row_per_resource_and_a_namespace_column_on_request() {
    let objs = [
        object(3, Some(throttled(3))),
        object(3, Some(issued_and_pending(3))),
    ];
    let text = table(&objs, now(), false);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3);
    let headers: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        headers,
        [
            "NAME",
            "READY",
            "AGE",
            "REQUESTED-BY",
            "APPROVAL",
            "REDEEMED",
            "NEXT-TRY"
        ]
    );
    assert!(
        lines[1].starts_with("alice   Throttled   10m   alice@fabrikam.example"),
        "{text}"
    );
    assert!(lines[1].ends_with("14:03:10Z, in 2m"), "{text}");
    assert!(
        lines[2].contains("Approved by bob@fabrikam.example (gen 3)"),
        "{text}"
    );
    let wide = table(&objs, now(), true);
    assert!(wide.starts_with("NAMESPACE   NAME"), "{wide}");
    assert!(
        wide.lines()
            .nth(1)
            .unwrap()
            .starts_with("identity    alice"),
        "{wide}"
    );
}

#[test]
fn the_detail_carries_the_ready_message_and_the_approval_reason() {
    let text = describe(&summarize(&object(3, Some(issued_and_pending(3))), now()));
    assert!(text.contains("Name:         alice\n"), "{text}");
    assert!(text.contains("Ready:        Issued\n"), "{text}");
    assert!(text.contains("Message:      invitation issued\n"), "{text}");
    assert!(
        text.contains(
            "Approval:     Approved by bob@fabrikam.example (gen 3) at 13:58:00Z: CHG-1 reviewed\n"
        ),
        "{text}"
    );
    assert!(!text.contains("Next try"), "{text}");
}

#[test]
fn documents_carry_the_status_with_its_identity() {
    let objs = [object(3, Some(throttled(3))), object(2, None)];
    let value: serde_json::Value =
        serde_json::from_str(&output::render(&documents(&objs), Format::Json)).unwrap();
    let items = value["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["namespace"], "identity");
    assert_eq!(items[0]["generation"], 3);
    assert_eq!(items[0]["status"]["conditions"][0]["reason"], "Throttled");
    assert_eq!(items[0]["status"]["nextAttemptAt"], "2026-12-02T14:03:10Z");
    assert!(items[1]["status"].is_null());
    let one: serde_json::Value =
        serde_yaml::from_str(&output::render(&document(&objs[0]), Format::Yaml)).unwrap();
    assert_eq!(one["name"], "alice");
    assert_eq!(one["status"]["requestedBy"], "alice@fabrikam.example");
}
