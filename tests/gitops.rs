//! End-to-end: what GitOps tools make of live resets. The controller drives resets into each
//! kind of state against a real kube-apiserver and the Graph simulator; the objects, as the API
//! server returns them, go through the real kstatus library (Flux's `wait`, kpt) and through
//! `examples/argocd/health.lua` run as Argo CD runs a health script (tests/gitops-check).

mod common;

use std::time::Duration;

use common::World;
use graph_sim::{Call, FaultAction, FaultRule, SeedUser};
use guestreset_testsupport::gitops::{Verdict, judge};
use guestreset_testsupport::{describe, repo_root};
use serde_json::{Value, json};

const ALICE: &str = "3f0a6c1e-8d2b-4c55-9b0e-2f6a1d9c7e41";
const BOB: &str = "5b7e2a10-4c3d-4e5f-8a9b-0c1d2e3f4a5b";
const CAROL: &str = "6c8f3b21-5d4e-4f60-9bac-1d2e3f4a5b6c";
const DAVE: &str = "8e015d43-7f60-4182-bdce-3f4a5b6c7d8e";
const ERIN: &str = "9f126e54-8071-4293-8edf-4a5b6c7d8e9f";
const MEMBER: &str = "7d904c32-6e5f-4071-acbd-2e3f4a5b6c7d";
const WAIT: Duration = Duration::from_secs(60);

fn directory() -> Vec<SeedUser> {
    let guest = |id, name: &str, domain: &str| {
        SeedUser::guest(
            id,
            &format!("{name}_{domain}#EXT#@fabrikam.onmicrosoft.com"),
            &format!("{name}@{domain}"),
        )
    };
    vec![
        guest(ALICE, "alice", "contoso.com"),
        guest(BOB, "bob", "partner.example"),
        guest(CAROL, "carol", "supplier.example"),
        guest(DAVE, "dave", "contoso.com"),
        guest(ERIN, "erin", "contoso.com"),
        SeedUser::member(
            MEMBER,
            "mallory@fabrikam.onmicrosoft.com",
            "mallory@fabrikam.example",
        ),
    ]
}

fn by_id(id: &str, email: &str) -> Value {
    json!({"user": {"id": id}, "email": email})
}

/// The reset as the API server returns it to `kubectl get -o json`.
fn live(w: &World, name: &str) -> Value {
    let out =
        w.cp.kubectl()
            .args(["get", "-o", "json", "-n", &w.ns, &format!("grr/{name}")])
            .output()
            .expect("kubectl get");
    assert!(out.status.success(), "{}", describe(&out));
    serde_json::from_slice(&out.stdout).expect("kubectl's JSON")
}

fn condition<'a>(obj: &'a Value, type_: &str) -> &'a Value {
    obj["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .unwrap_or_else(|| panic!("no {type_} condition in {obj:#}"))
}

/// Waits for `name` to reach Ready's `reason`, then checks its kstatus conditions and what
/// kstatus and the Argo CD health script say of it.
async fn expect(w: &World, name: &str, reason: &str, kstatus: &str, argo: &str) -> Verdict {
    w.wait_reason_for(name, reason, WAIT).await;
    let obj = live(w, name);
    let generation = obj["metadata"]["generation"].clone();
    for type_ in ["Ready", "Reconciling", "Stalled"] {
        assert_eq!(
            condition(&obj, type_)["observedGeneration"],
            generation,
            "{name}: {type_} speaks of the current generation"
        );
    }
    let verdict = judge(&obj, &repo_root().join("examples/argocd/health.lua"))
        .await
        .remove(0);
    assert_eq!(
        (verdict.kstatus.as_str(), verdict.argo.as_str()),
        (kstatus, argo),
        "{name} ({reason}): {verdict:#?}\n{obj:#}"
    );
    // Argo CD shows the reason; a person reading it knows what happened.
    assert!(
        verdict.argo_message.contains(reason),
        "{name}: {verdict:#?}"
    );
    verdict
}

/// Every kind of state of a reset, through kstatus and Argo CD: done is Current and Healthy,
/// a stopping failure is Failed and Degraded (never InProgress forever), work under way or a
/// tenant pause is InProgress and Progressing.
#[tokio::test(flavor = "multi_thread")]
async fn kstatus_and_argo_cd_read_each_state_as_the_controller_means_it() {
    let mut w = World::with_users("gitops", directory()).await;
    w.start_operator(&["--tenant-block-cooldown", "1h"]);

    w.create("issued", by_id(ALICE, "alice@newco.example"))
        .await;
    expect(&w, "issued", "Issued", "Current", "Healthy").await;
    let mut dry = by_id(BOB, "bob@newco.example");
    dry["dryRun"] = json!(true);
    w.create("dry-run", dry).await;
    expect(&w, "dry-run", "DryRunComplete", "Current", "Healthy").await;

    w.create("member", by_id(MEMBER, "mallory@newco.example"))
        .await;
    expect(&w, "member", "NotAGuest", "Failed", "Degraded").await;
    w.create("in-use", by_id(CAROL, "bob@partner.example"))
        .await;
    expect(&w, "in-use", "EmailInUse", "Failed", "Degraded").await;

    // A connection lost before Graph answered, and no evidence in the directory.
    w.admin
        .add_fault(FaultRule::once(
            Call::PostInvitation,
            FaultAction::DropConnectionBefore,
        ))
        .await
        .unwrap();
    w.create("unknown", by_id(DAVE, "dave@newco.example")).await;
    expect(&w, "unknown", "OutcomeUnknown", "Failed", "Degraded").await;

    // Missing consent: retried every ten minutes, but only a person can end it.
    w.admin
        .add_fault(FaultRule::always(
            Call::PostInvitation,
            FaultAction::Forbidden,
        ))
        .await
        .unwrap();
    w.create("forbidden", by_id(ERIN, "erin@newco.example"))
        .await;
    expect(&w, "forbidden", "Forbidden", "Failed", "Degraded").await;
    w.admin.clear_faults().await.unwrap();

    // A tenant pause ends by itself: in progress, not failed.
    w.admin
        .add_fault(FaultRule::always(
            Call::PostInvitation,
            FaultAction::AbuseBlock,
        ))
        .await
        .unwrap();
    w.patch_spec("issued", by_id(ALICE, "alice@newco2.example"))
        .await;
    expect(&w, "issued", "TenantBlocked", "InProgress", "Progressing").await;

    // Through kstatus a spec edit the controller has not seen yet is InProgress too (its
    // observedGeneration is behind): `flux` waits for it rather than reporting the old result.
    let mut edited = live(&w, "dry-run");
    edited["metadata"]["generation"] = json!(2);
    let verdict = judge(&edited, &repo_root().join("examples/argocd/health.lua"))
        .await
        .remove(0);
    assert_eq!(
        (verdict.kstatus.as_str(), verdict.argo.as_str()),
        ("InProgress", "Progressing"),
        "{verdict:#?}"
    );
}

/// A reset queued behind the write limit is in progress, with its expected time.
#[tokio::test(flavor = "multi_thread")]
async fn a_reset_queued_for_a_write_slot_is_in_progress() {
    let mut w = World::with_users("gitops-queue", directory()).await;
    w.start_operator(&["--max-writes-per-minute", "1", "--write-burst", "1"]);
    w.create("first", by_id(ALICE, "alice@newco.example")).await;
    w.create("second", by_id(BOB, "bob@newco.example")).await;
    for name in ["first", "second"] {
        let verdict = expect(&w, name, "Pending", "InProgress", "Progressing").await;
        assert!(verdict.argo_message.contains("expected"), "{verdict:#?}");
    }
}

/// The Argo CD snippet in the docs carries the tested script, verbatim.
#[test]
fn the_argocd_cm_snippet_carries_the_health_script() {
    let dir = repo_root().join("examples/argocd");
    let script = std::fs::read_to_string(dir.join("health.lua")).unwrap();
    let cm: Value =
        serde_yaml::from_str(&std::fs::read_to_string(dir.join("argocd-cm.yaml")).unwrap())
            .unwrap();
    assert_eq!(
        cm["data"]["resource.customizations.health.guestreset.io_GuestRedemptionReset"].as_str(),
        Some(script.as_str()),
        "regenerate examples/argocd/argocd-cm.yaml from health.lua (docs/install.md, GitOps)"
    );
}
