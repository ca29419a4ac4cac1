//! Four eyes, enforced by the API server: the ValidatingAdmissionPolicy of the chart
//! (docs/security.md, "Approval (four eyes)"), rendered by a real Helm and applied to a real
//! kube-apiserver with the chart's RBAC and the example RoleBindings of `examples/rbac/`, then
//! exercised by people with client certificates of their own:
//!
//! * alice and carol ask for resets (group `guestreset-requesters`); carol may also write status
//!   but holds no `approve`, so that a refusal of her decisions is the policy's, not RBAC's;
//! * bob approves (group `guestreset-approvers`); dave approves the reset `alice-to-newco` only,
//!   and may write every status;
//! * `guestreset-controller` holds the chart's controller role;
//! * `guestreset-admin` is the control plane's admin (`system:masters`).
//!
//! One test per way around the rules, each asserting the refusal (by this policy, with a
//! message that names the field) and that the stored object did not change, next to the
//! allowed path. Each test has a namespace and a release of its own, whose policy is bound to
//! that namespace only.

#[path = "approval_policy/fixture.rs"]
mod fixture;

use fixture::{
    APPROVERS, AT, CONTROLLER, Chart, DAVE, Fixture, ONE_RESET, REQUESTERS, approval, identity,
};
use guestreset::resource::REQUESTED_BY_ANNOTATION;
use guestreset_testsupport::chart::TOOL_DEADLINE;
use guestreset_testsupport::{describe, run_bounded};
use kube::ResourceExt;
use serde_json::{Value, json};

/// What the requester annotation looks like in a merge patch.
fn requested_by(name: &str) -> Value {
    json!({ REQUESTED_BY_ANNOTATION: name })
}

/// The status the controller writes while it issues generation `generation` of a reset that
/// `requester` asked for: Ready=Unknown InProgress, with the intent record.
fn in_progress(generation: i64, requester: &str) -> Value {
    json!({
        "observedGeneration": generation,
        "phase": "InProgress",
        "target": "alice_contoso.com#EXT#@fabrikam.onmicrosoft.com",
        "conditions": [{
            "type": "Ready", "status": "Unknown", "reason": "InProgress",
            "message": "issuing the invitation", "observedGeneration": generation,
            "lastTransitionTime": AT,
        }],
        "attempt": {"id": "5b1c7c9e-2f0a-4c1e-9d7e-0e4b8f3a2d11", "generation": generation, "startedAt": AT},
        "requestedBy": requester,
        "plan": "reset the redemption of alice_contoso.com#EXT#@fabrikam.onmicrosoft.com to alice@newco.example",
    })
}

#[tokio::test]
async fn requester_cannot_decide_about_their_own_generation() {
    let fx = Fixture::new("own-generation", Chart::RequireApproval).await;
    fx.requested(&fx.alice, "mine").await;
    // alice may approve in this namespace, so only the requester rule stands in her way.
    fx.grant("alice", &fx.approver_role(), "approve", "").await;
    assert!(fx.may("alice", "patch", "status", "mine").await);
    for decision in ["Approved", "Denied"] {
        fx.refused(
            "mine",
            "you ('alice') requested generation 1",
            fx.decide(&fx.alice, "mine", 1, decision),
        )
        .await;
    }

    // Not even the cluster's admin, who holds every verb.
    fx.requested(&fx.admin, "admins-own").await;
    fx.refused(
        "admins-own",
        "you ('guestreset-admin') requested generation 1",
        fx.decide(&fx.admin, "admins-own", 1, "Approved"),
    )
    .await;

    // Nor through the resource itself, on creation or later: the API server keeps status out
    // of those writes.
    let mut preapproved = fixture::reset("preapproved", Some("alice"));
    preapproved.status = Some(
        serde_json::from_value(json!({"approval": approval(1, "Approved", "bob")}))
            .expect("a status"),
    );
    let created = fx
        .alice
        .grr
        .create(&Default::default(), &preapproved)
        .await
        .expect("alice creates a reset with a status");
    assert_eq!(created.status, None);
    let patch = json!({"status": {"approval": approval(1, "Approved", "bob")}});
    fx.patch(&fx.alice, "mine", patch)
        .await
        .expect("a write of the resource");
    assert_eq!(fx.get("mine").await.status, None);

    // Someone else may.
    fx.decide(&fx.bob, "mine", 1, "Approved")
        .await
        .expect("bob approves");
}

#[tokio::test]
async fn outsider_without_the_approve_verb_cannot_decide() {
    let fx = Fixture::new("outsider", Chart::RequireApproval).await;
    fx.requested(&fx.alice, "theirs").await;
    assert!(fx.may("carol", "patch", "status", "theirs").await);
    assert!(!fx.may("carol", "approve", "", "theirs").await);
    for decision in ["Approved", "Denied"] {
        fx.refused(
            "theirs",
            "you ('carol') may not approve or deny: that needs the RBAC verb 'approve' on guestredemptionresets.guestreset.io 'theirs'",
            fx.decide(&fx.carol, "theirs", 1, decision),
        )
        .await;
    }
}

#[tokio::test]
async fn approver_decision_is_recorded() {
    let fx = Fixture::new("approver", Chart::RequireApproval).await;
    let created = fx.requested(&fx.alice, "approve-me").await;

    // As an approver does it with kubectl: a merge patch of the status subresource that
    // carries the resourceVersion read, so that the decision is about what was reviewed.
    let decision = approval(1, "Approved", "bob");
    let patch = json!({
        "metadata": {"resourceVersion": created.resource_version()},
        "status": {"approval": decision},
    });
    let mut kubectl = tokio::process::Command::from(identity(fx.cp, "bob").kubectl());
    kubectl
        .args([
            "patch",
            "guestredemptionresets.guestreset.io",
            "approve-me",
            "--namespace",
        ])
        .arg(&fx.ns)
        .args(["--subresource=status", "--type=merge", "--patch"])
        .arg(patch.to_string())
        .kill_on_drop(true);
    let out = run_bounded(kubectl, None, "kubectl patch as bob", TOOL_DEADLINE).await;
    assert!(out.status.success(), "bob's approval: {}", describe(&out));
    let stored = serde_json::to_value(fx.get("approve-me").await).expect("serialise");
    assert_eq!(stored["status"]["approval"], decision);

    // A denial is recorded the same way.
    fx.requested(&fx.alice, "deny-me").await;
    let denied = fx
        .decide(&fx.bob, "deny-me", 1, "Denied")
        .await
        .expect("bob denies");
    let denied = serde_json::to_value(denied).expect("serialise");
    assert_eq!(denied["status"]["approval"], approval(1, "Denied", "bob"));

    // A decision about an object that changed since it was read is a conflict.
    fx.requested(&fx.alice, "changed-since").await;
    let read = fx.get("changed-since").await;
    fx.change_spec(
        &fx.alice,
        "changed-since",
        "alice@other.example",
        requested_by("alice"),
    )
    .await
    .expect("alice changes the spec");
    let stale = json!({
        "metadata": {"resourceVersion": read.resource_version()},
        "status": {"approval": approval(1, "Approved", "bob")},
    });
    let outcome = fx
        .bob
        .grr
        .patch_status(
            "changed-since",
            &Default::default(),
            &kube::api::Patch::Merge(stale),
        )
        .await;
    assert!(
        matches!(&outcome, Err(kube::Error::Api(s)) if s.code == 409),
        "a stale resourceVersion must conflict: {outcome:?}"
    );
}

#[tokio::test]
async fn decision_about_a_stale_generation_is_refused() {
    let fx = Fixture::new("stale", Chart::RequireApproval).await;
    fx.requested(&fx.alice, "moving").await;
    let changed = fx
        .change_spec(
            &fx.alice,
            "moving",
            "alice@other.example",
            requested_by("alice"),
        )
        .await
        .expect("alice changes the spec");
    assert_eq!(changed.metadata.generation, Some(2));
    fx.refused(
        "moving",
        "status.approval.generation is 1, but the current generation is 2",
        fx.decide(&fx.bob, "moving", 1, "Approved"),
    )
    .await;
    fx.refused(
        "moving",
        "status.approval.generation is 3, but the current generation is 2",
        fx.decide(&fx.bob, "moving", 3, "Approved"),
    )
    .await;
    fx.decide(&fx.bob, "moving", 2, "Approved")
        .await
        .expect("an approval of the current generation");
}

#[tokio::test]
async fn recorded_decision_is_final_for_its_generation() {
    let fx = Fixture::new("final", Chart::RequireApproval).await;
    fx.requested(&fx.alice, "approved").await;
    fx.decide(&fx.bob, "approved", 1, "Approved")
        .await
        .expect("approve");
    fx.refused(
        "approved",
        "status.approval already records Approved by 'bob' for generation 1",
        fx.decide(&fx.bob, "approved", 1, "Denied"),
    )
    .await;
    // Nor swapped for another approval (another approver, another reason).
    fx.refused(
        "approved",
        "status.approval already records Approved by 'bob' for generation 1",
        fx.decide(&fx.admin, "approved", 1, "Approved"),
    )
    .await;

    fx.requested(&fx.alice, "denied").await;
    fx.decide(&fx.bob, "denied", 1, "Denied")
        .await
        .expect("deny");
    fx.refused(
        "denied",
        "status.approval already records Denied by 'bob' for generation 1",
        fx.decide(&fx.bob, "denied", 1, "Approved"),
    )
    .await;

    // A new generation needs, and may get, a decision of its own.
    fx.change_spec(
        &fx.alice,
        "denied",
        "alice@other.example",
        requested_by("alice"),
    )
    .await
    .expect("alice changes the spec");
    fx.decide(&fx.bob, "denied", 2, "Approved")
        .await
        .expect("a decision about generation 2");
}

#[tokio::test]
async fn decision_signed_with_another_name_is_refused() {
    let fx = Fixture::new("signed", Chart::RequireApproval).await;
    fx.requested(&fx.alice, "signed").await;
    for signed in [DAVE, "alice", "bob@fabrikam.example"] {
        fx.refused(
            "signed",
            &format!("status.approval.by is '{signed}', but you are 'bob'"),
            fx.decide_as(&fx.bob, "signed", 1, "Approved", signed),
        )
        .await;
    }
}

/// The controller asks the API server about an approver with the groups the approval records;
/// a group the approver is not in would lend them someone else's right.
#[tokio::test]
async fn decision_claiming_a_group_the_approver_lacks_is_refused() {
    let fx = Fixture::new("groups", Chart::RequireApproval).await;
    fx.requested(&fx.alice, "groups").await;
    let mut forged = approval(1, "Approved", "carol");
    forged["groups"] = json!([REQUESTERS, "system:masters"]);
    fx.refused(
        "groups",
        "status.approval.groups may name only groups you belong to; you are not in system:masters",
        fx.patch_status(&fx.carol, "groups", json!({"approval": forged})),
    )
    .await;
    // Its own groups (or fewer) are accepted from an approver.
    let mut own = approval(1, "Approved", "bob");
    own["groups"] = json!([APPROVERS, "system:authenticated"]);
    let stored = fx
        .patch_status(&fx.bob, "groups", json!({"approval": own}))
        .await
        .expect("bob approves naming his own groups");
    let recorded = stored.status.unwrap().approval.unwrap();
    assert_eq!(recorded.groups, [APPROVERS, "system:authenticated"]);
}

#[tokio::test]
async fn decision_cannot_be_removed() {
    let fx = Fixture::new("removal", Chart::RequireApproval).await;
    fx.requested(&fx.alice, "kept").await;
    fx.decide(&fx.bob, "kept", 1, "Denied").await.expect("deny");
    for who in [&fx.bob, &fx.carol, &fx.admin] {
        fx.refused(
            "kept",
            "status.approval may not be removed: it records Denied by 'bob' for generation 1",
            fx.patch_status(who, "kept", json!({"approval": null})),
        )
        .await;
    }
    fx.refused(
        "kept",
        "the controller ('guestreset-controller') may not write, change or remove it",
        fx.patch_status(&fx.controller, "kept", json!({"approval": null})),
    )
    .await;
    // Once the spec changed, the old decision is stale, and still stays on record.
    fx.change_spec(
        &fx.alice,
        "kept",
        "alice@other.example",
        requested_by("alice"),
    )
    .await
    .expect("alice changes the spec");
    fx.refused(
        "kept",
        "status.approval may not be removed",
        fx.patch_status(&fx.bob, "kept", json!({"approval": null})),
    )
    .await;
}

#[tokio::test]
async fn only_the_controller_writes_status() {
    let fx = Fixture::new("forge", Chart::RequireApproval).await;
    fx.requested(&fx.alice, "issuing").await;
    // Before the controller wrote anything, an approval cannot carry a condition along.
    let issued = json!([{
        "type": "Ready", "status": "True", "reason": "Issued", "message": "invitation issued",
        "observedGeneration": 1, "lastTransitionTime": AT,
    }]);
    fx.refused(
        "issuing",
        "denied request: status.conditions: only the guestreset controller writes status; you ('bob')",
        fx.patch_status(
            &fx.bob,
            "issuing",
            json!({"approval": approval(1, "Approved", "bob"), "conditions": issued}),
        ),
    )
    .await;
    fx.decide(&fx.bob, "issuing", 1, "Approved")
        .await
        .expect("approve");
    fx.patch_status(&fx.controller, "issuing", in_progress(1, "alice"))
        .await
        .expect("the controller records its attempt");
    // alice too may write status here: the refusals below are the policy's.
    fx.grant("alice", fx.status_writer_role(), "patch", "status")
        .await;

    let invitation = json!({"invitation": {
        "id": "forged", "email": "mallory@evil.example", "issuedAt": AT, "generation": 1,
    }});
    let forgeries = [
        (json!({"conditions": issued}), "status.conditions"),
        (json!({"attempt": null}), "status.attempt"),
        (invitation, "status.invitation"),
        (json!({"requestedBy": "carol"}), "status.requestedBy"),
        (json!({"plan": "nothing to do"}), "status.plan"),
    ];
    for who in [&fx.alice, &fx.bob, &fx.carol, &fx.admin] {
        for (forged, field) in &forgeries {
            let says = format!(
                "denied request: {field}: only the guestreset controller writes status; you ('{}') may write status.approval only",
                who.name
            );
            fx.refused(
                "issuing",
                &says,
                fx.patch_status(who, "issuing", forged.clone()),
            )
            .await;
        }
    }

    // Through the resource itself, status is not written at all (the API server keeps the
    // stored status on writes that are not to the subresource).
    let before = fx.get("issuing").await;
    fx.patch(
        &fx.alice,
        "issuing",
        json!({"status": {"attempt": null, "phase": "Succeeded"}}),
    )
    .await
    .expect("a write of the resource");
    assert_eq!(fx.get("issuing").await.status, before.status);
}

#[tokio::test]
async fn controller_writes_status_but_cannot_decide() {
    let fx = Fixture::new("controller", Chart::RequireApproval).await;
    fx.requested(&fx.alice, "plan").await;
    let awaiting = json!({
        "observedGeneration": 1,
        "phase": "Pending",
        "conditions": [{
            "type": "Ready", "status": "Unknown", "reason": "AwaitingApproval",
            "message": "generation 1 awaits approval", "observedGeneration": 1,
            "lastTransitionTime": AT,
        }],
        "requestedBy": "alice",
        "plan": "reset the redemption to alice@newco.example",
    });
    fx.patch_status(&fx.controller, "plan", awaiting)
        .await
        .expect("the controller records the plan");
    for decision in ["Approved", "Denied"] {
        fx.refused(
            "plan",
            "status.approval is the approvers' record: the controller ('guestreset-controller') may not write",
            fx.decide(&fx.controller, "plan", 1, decision),
        )
        .await;
    }

    fx.decide(&fx.bob, "plan", 1, "Approved")
        .await
        .expect("bob approves");
    fx.refused(
        "plan",
        "the controller ('guestreset-controller') may not write, change or remove it",
        fx.patch_status(
            &fx.controller,
            "plan",
            json!({"approval": {"decision": "Denied"}}),
        ),
    )
    .await;
    // Around the approval, the controller goes on writing.
    let written = fx
        .patch_status(&fx.controller, "plan", in_progress(1, "alice"))
        .await
        .expect("the controller records its attempt");
    let written = serde_json::to_value(written).expect("serialise");
    assert_eq!(
        written["status"]["approval"],
        approval(1, "Approved", "bob")
    );
    assert_eq!(written["status"]["phase"], "InProgress");
}

#[tokio::test]
async fn requester_annotation_names_the_creator() {
    let fx = Fixture::new("create", Chart::RequireApproval).await;
    fx.refused(
        "forged",
        "metadata.annotations['guestreset.io/requested-by'] is 'bob', but you are 'alice'",
        fx.create(&fx.alice, "forged", Some("bob")),
    )
    .await;
    fx.refused(
        "forged",
        "metadata.annotations['guestreset.io/requested-by'] is 'alice', but you are 'guestreset-admin'",
        fx.create(&fx.admin, "forged", Some("alice")),
    )
    .await;
    fx.refused(
        "unnamed",
        "metadata.annotations['guestreset.io/requested-by'] is required: approval is on, so whoever creates a GuestRedemptionReset or changes its spec must name themselves there ('alice')",
        fx.create(&fx.alice, "unnamed", None),
    )
    .await;
    let created = fx.requested(&fx.alice, "named").await;
    assert_eq!(
        created
            .annotations()
            .get(REQUESTED_BY_ANNOTATION)
            .map(String::as_str),
        Some("alice")
    );
}

/// Rules 2b and 2c: whoever sets the retry annotation names themselves, and the retry's
/// requester of record changes only with it; a decision on the retry comes from someone else
/// and names it, and an approval of an earlier retry may be followed by one of the current.
#[tokio::test]
async fn retry_requester_names_the_caller_and_changes_only_with_the_retry() {
    let fx = Fixture::new("retry-requester", Chart::RequireApproval).await;
    fx.requested(&fx.alice, "asked").await;
    fx.decide(&fx.bob, "asked", 1, "Approved")
        .await
        .expect("bob approves");
    let retry = |token: &str, by: &str| {
        json!({"metadata": {"annotations": {
            "guestreset.io/retry": token,
            "guestreset.io/retry-requested-by": by,
        }}})
    };
    fx.refused(
        "asked",
        "whoever sets or changes guestreset.io/retry",
        fx.patch(&fx.carol, "asked", retry("r1", "alice")),
    )
    .await;
    fx.patch(&fx.carol, "asked", retry("r1", "carol"))
        .await
        .expect("carol asks for a retry in her own name");
    let says = "names who asked for the retry 'r1' and changes only with guestreset.io/retry";
    for who in [&fx.alice, &fx.carol, &fx.admin] {
        let handed =
            json!({"metadata": {"annotations": {"guestreset.io/retry-requested-by": "dave"}}});
        fx.refused("asked", says, fx.patch(who, "asked", handed))
            .await;
        let removed =
            json!({"metadata": {"annotations": {"guestreset.io/retry-requested-by": null}}});
        fx.refused("asked", says, fx.patch(who, "asked", removed))
            .await;
    }
    // bob's approval of generation 1 without a retry approved nothing of r1: a decision naming
    // r1 replaces it, and is then final.
    let mut approval = fixture::approval(1, "Approved", "bob");
    approval["retry"] = json!("r1");
    fx.patch_status(&fx.bob, "asked", json!({"approval": approval.clone()}))
        .await
        .expect("bob approves the retry");
    approval["decision"] = json!("Denied");
    fx.refused(
        "asked",
        "that decision is final",
        fx.patch_status(&fx.bob, "asked", json!({"approval": approval})),
    )
    .await;
}

#[tokio::test]
async fn requester_annotation_changes_only_with_the_spec() {
    let fx = Fixture::new("annotation", Chart::RequireApproval).await;
    fx.requested(&fx.alice, "asked").await;
    let says = "metadata.annotations['guestreset.io/requested-by'] names who asked for generation 1 ('alice') and changes only with the spec";
    for who in [&fx.alice, &fx.carol, &fx.admin] {
        // Claiming the generation, handing it to someone else, or removing the record.
        for value in [
            json!("carol"),
            json!("guestreset-admin"),
            json!("bob"),
            Value::Null,
        ] {
            let patch = json!({"metadata": {"annotations": {REQUESTED_BY_ANNOTATION: value}}});
            fx.refused("asked", says, fx.patch(who, "asked", patch))
                .await;
        }
    }
    // Other metadata changes keep it and pass.
    let retried = fx
        .patch(
            &fx.carol,
            "asked",
            json!({"metadata": {"annotations": {
                "guestreset.io/retry": "1",
                "guestreset.io/retry-requested-by": "carol",
            }}}),
        )
        .await
        .expect("another annotation");
    assert_eq!(
        retried
            .annotations()
            .get(REQUESTED_BY_ANNOTATION)
            .map(String::as_str),
        Some("alice")
    );
}

#[tokio::test]
async fn spec_change_names_its_own_requester() {
    let fx = Fixture::new("spec-change", Chart::RequireApproval).await;
    fx.requested(&fx.alice, "handed-over").await;
    fx.refused(
        "handed-over",
        "metadata.annotations['guestreset.io/requested-by'] is 'alice', but you are 'carol'",
        fx.change_spec(&fx.carol, "handed-over", "carol@newco.example", json!({})),
    )
    .await;
    fx.refused(
        "handed-over",
        "metadata.annotations['guestreset.io/requested-by'] is required",
        fx.change_spec(
            &fx.carol,
            "handed-over",
            "carol@newco.example",
            json!({REQUESTED_BY_ANNOTATION: null}),
        ),
    )
    .await;
    let changed = fx
        .change_spec(
            &fx.carol,
            "handed-over",
            "carol@newco.example",
            requested_by("carol"),
        )
        .await
        .expect("carol changes the spec, naming herself");
    assert_eq!(changed.metadata.generation, Some(2));
    // Now carol is the requester, and alice is not: alice could decide about generation 2 if
    // she held approve, carol could not even then.
    fx.grant("carol", &fx.approver_role(), "approve", "").await;
    fx.refused(
        "handed-over",
        "you ('carol') requested generation 2",
        fx.decide(&fx.carol, "handed-over", 2, "Approved"),
    )
    .await;
    fx.grant("alice", &fx.approver_role(), "approve", "").await;
    fx.decide(&fx.alice, "handed-over", 2, "Approved")
        .await
        .expect("alice approves carol's generation");
}

#[tokio::test]
async fn per_name_approver_decides_only_that_reset() {
    let fx = Fixture::new("per-name", Chart::RequireApproval).await;
    fx.requested(&fx.alice, ONE_RESET).await;
    fx.requested(&fx.alice, "another-reset").await;
    assert!(fx.may(DAVE, "patch", "status", "another-reset").await);
    assert!(!fx.may(DAVE, "approve", "", "another-reset").await);
    fx.refused(
        "another-reset",
        "you ('dave@fabrikam.example') may not approve or deny: that needs the RBAC verb 'approve' on guestredemptionresets.guestreset.io 'another-reset'",
        fx.decide(&fx.dave, "another-reset", 1, "Approved"),
    )
    .await;
    fx.decide(&fx.dave, ONE_RESET, 1, "Approved")
        .await
        .expect("dave approves the one reset he may");
}

/// The chart's defaults: the policy guards status and approvals, and the requester annotation
/// is held to the truth when present but not required.
#[tokio::test]
async fn default_chart_guards_status_and_leaves_the_annotation_optional() {
    let fx = Fixture::new("defaults", Chart::PolicyOnly).await;
    let args = deployment_args(&fx.rendered);
    assert!(!args.iter().any(|a| a.contains("approval")), "{args:?}");

    fx.create(&fx.alice, "anonymous", None)
        .await
        .expect("no annotation needed");
    fx.refused(
        "forged",
        "is 'bob', but you are 'alice': whoever creates a GuestRedemptionReset or changes its spec is the requester of that generation and must name themselves there (or leave the annotation out)",
        fx.create(&fx.alice, "forged", Some("bob")),
    )
    .await;
    fx.refused(
        "anonymous",
        "status.requestedBy: only the guestreset controller writes status; you ('carol')",
        fx.patch_status(&fx.carol, "anonymous", json!({"requestedBy": "carol"})),
    )
    .await;
    // A generation without a requester of record cannot be decided about.
    fx.refused(
        "anonymous",
        "generation 1 has no requester of record",
        fx.decide(&fx.bob, "anonymous", 1, "Approved"),
    )
    .await;
}

/// `admissionPolicy.enabled: false`: the chart installs no policy, passes no approval flag and
/// grants the controller nothing for approvals; in a namespace no policy is bound to, anything
/// RBAC allows goes through, as before this chart had a policy.
#[tokio::test]
async fn without_the_policy_nothing_is_installed_and_writes_are_as_before() {
    let fx = Fixture::new("no-policy", Chart::NoPolicy).await;
    let kinds: Vec<&str> = fx
        .rendered
        .iter()
        .filter_map(|o| o["kind"].as_str())
        .collect();
    assert!(
        !kinds
            .iter()
            .any(|k| k.starts_with("ValidatingAdmissionPolicy")),
        "{kinds:?}"
    );
    assert!(
        !fx.rendered
            .iter()
            .any(|o| o["metadata"]["name"] == format!("{}-approval", fx.policy)),
        "no approval rights for the controller"
    );
    let args = deployment_args(&fx.rendered);
    assert!(!args.iter().any(|a| a.contains("approval")), "{args:?}");

    fx.create(&fx.alice, "unchecked", Some("bob"))
        .await
        .expect("any annotation");
    fx.patch(
        &fx.carol,
        "unchecked",
        json!({"metadata": {"annotations": requested_by("carol")}}),
    )
    .await
    .expect("an annotation edit");
    fx.patch_status(&fx.carol, "unchecked", in_progress(1, "carol"))
        .await
        .expect("a status write by carol");
    fx.decide_as(&fx.carol, "unchecked", 7, "Approved", CONTROLLER)
        .await
        .expect("any approval");
}

/// The arguments of the rendered controller.
fn deployment_args(rendered: &[Value]) -> Vec<String> {
    let deployment = rendered
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .expect("a Deployment");
    deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string").to_owned())
        .collect()
}

/// Flux's kustomize-controller, the identity that applies `examples/gitops` in a cluster.
const FLUX: &str = "system:serviceaccount:flux-system:kustomize-controller";

/// `examples/gitops` as the GitOps controller applies it, under the chart's policy with
/// `requireApproval`: every reset is admitted, with the GitOps controller as requester of
/// record; applied by anyone else, the same reset is refused by the requester rule.
#[tokio::test]
async fn gitops_examples_are_admitted_under_four_eyes() {
    let fx = Fixture::new("gitops-examples", Chart::RequireApproval).await;
    let dir = guestreset_testsupport::repo_root().join("examples/gitops");
    let mut kustomize = fx.cp.kubectl();
    kustomize.args(["kustomize", guestreset_testsupport::path_str(&dir)]);
    let out = run_bounded(kustomize.into(), None, "kubectl kustomize", TOOL_DEADLINE).await;
    assert!(
        out.status.success(),
        "kubectl kustomize: {}",
        describe(&out)
    );
    let resets = guestreset_testsupport::chart::documents(&String::from_utf8_lossy(&out.stdout));
    assert!(resets.len() >= 2, "{resets:?}");

    let flux_client = fx.cp.user(FLUX, &[fixture::REQUESTERS]).client().await;
    let flux: kube::Api<guestreset::resource::GuestRedemptionReset> =
        kube::Api::namespaced(flux_client, &fx.ns);
    let pp = kube::api::PostParams::default();
    for mut reset in resets {
        reset["metadata"]["namespace"] = json!(fx.ns);
        let reset: guestreset::resource::GuestRedemptionReset =
            serde_json::from_value(reset).unwrap();
        let name = reset.name_any();
        // alice may create resets too, but not in Flux's name.
        fx.assert_refused(
            fx.alice.grr.create(&pp, &reset).await,
            "must name themselves",
        );
        let created = flux.create(&pp, &reset).await;
        let created = created.unwrap_or_else(|e| panic!("{name} refused: {e}"));
        assert_eq!(created.annotations()[REQUESTED_BY_ANNOTATION], FLUX);
    }
}
