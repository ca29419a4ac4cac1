//! End-to-end: four eyes with `--require-approval` (docs/resource.md, "Approval"). The
//! controller runs as a separate process against a real kube-apiserver with the chart's
//! admission policy, people are client-certificate identities signed by the control plane's
//! CA, and the kubectl plugin is the approvers' tool. The simulator's journal is the ground
//! truth of what reached Graph.

mod common;
#[allow(dead_code)] // the policy tests' fixture; this file uses its world and people
#[path = "approval_policy/fixture.rs"]
mod fixture;

use std::process::Output;
use std::time::Duration;

use common::{World, admin_addr, http_get};
use fixture::{CONTROLLER, Chart, Fixture, identity};
use graph_sim::{Call, FaultAction, FaultRule, SeedUser};
use guestreset::resource::{Decision, GuestRedemptionReset, REQUESTED_BY_ANNOTATION};
use guestreset_testsupport::{Identity, describe, wait_until};
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use kube::Api;
use kube::ResourceExt;
use kube::api::{DeleteParams, PostParams};
use serde_json::json;

const ALICE: &str = "3f0a6c1e-8d2b-4c55-9b0e-2f6a1d9c7e41";
const WAIT: Duration = Duration::from_secs(60);

fn directory() -> Vec<SeedUser> {
    vec![SeedUser::guest(
        ALICE,
        "alice_contoso.com#EXT#@fabrikam.onmicrosoft.com",
        "alice@contoso.com",
    )]
}

/// A policy and binding named `name` that admit everything: enough for the controller's check
/// that approvals are enforced, without enforcing anything in this test.
async fn install_placeholder_policy(client: &kube::Client, name: &str, ns: &str) {
    let policy: ValidatingAdmissionPolicy = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
                "resourceRules": [{
                    "apiGroups": ["guestreset.io"], "apiVersions": ["*"],
                    "operations": ["CREATE", "UPDATE"], "resources": ["guestredemptionresets"]
                }]
            },
            "validations": [{"expression": "true"}]
        }
    }))
    .unwrap();
    let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"]}
    }))
    .unwrap();
    let pp = PostParams::default();
    Api::<ValidatingAdmissionPolicy>::all(client.clone())
        .create(&pp, &policy)
        .await
        .unwrap();
    Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
        .create(&pp, &binding)
        .await
        .unwrap();
}

async fn remove_policy(client: &kube::Client, name: &str) {
    let dp = DeleteParams::default();
    let _ = Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
        .delete(name, &dp)
        .await;
    let _ = Api::<ValidatingAdmissionPolicy>::all(client.clone())
        .delete(name, &dp)
        .await;
}

/// With `--require-approval` and no policy enforcing approvals, the controller is not ready
/// and reconciles nothing: no status, no Graph call. Installed, it becomes ready and plans.
#[tokio::test(flavor = "multi_thread")]
async fn without_the_policy_the_controller_is_not_ready_and_reconciles_nothing() {
    let mut w = World::with_users("approval-ready", directory()).await;
    let policy = format!("guestreset-e2e-{}", w.ns);
    w.create_annotated(
        "alice",
        json!({"user": {"id": ALICE}, "email": "alice@newco.example"}),
        json!({"guestreset.io/requested-by": "guestreset-admin"}),
    )
    .await;
    let op = w.start_operator(&["--require-approval", "--admission-policy", &policy]);
    let addr = admin_addr(&w.operators[op]).await;
    wait_until(
        "the controller to say the policy is missing",
        WAIT,
        || async {
            w.operators[op]
                .read_log()
                .contains("not ready, and nothing is reconciled")
                .then_some(())
        },
    )
    .await;
    let readyz = format!("http://{addr}/readyz");
    assert_eq!(http_get(&readyz).await.map(|r| r.0), Some(503));
    assert_eq!(w.get("alice").await.status, None, "nothing reconciled");
    let graph_calls: Vec<_> = w
        .journal()
        .await
        .into_iter()
        .filter(|e| e.call != Call::Token)
        .collect();
    assert!(graph_calls.is_empty(), "no Graph call: {graph_calls:?}");

    install_placeholder_policy(&w.client, &policy, &w.ns).await;
    let obj = w.wait_reason("alice", "AwaitingApproval").await;
    let status = obj.status.unwrap();
    assert_eq!(status.requested_by.as_deref(), Some("guestreset-admin"));
    assert!(
        status
            .plan
            .unwrap()
            .starts_with("generation 1: set mail of")
    );
    assert_eq!(http_get(&readyz).await.map(|r| r.0), Some(200));
    assert!(w.posts().await.is_empty(), "nothing posted before approval");
    remove_policy(&w.client, &policy).await;
}

// ------------------------------------------------------------------ four eyes, end to end

/// A world with the chart's release for its namespace (policy, binding, the controller's and
/// the people's RBAC, as `helm template` renders them with requireApproval) and the controller
/// running as the chart's controller identity with `--require-approval`.
async fn four_eyes(prefix: &str) -> (World, Fixture) {
    let mut w = World::with_users(prefix, directory()).await;
    let fx = Fixture::in_namespace(&w.ns, Chart::RequireApproval).await;
    start_controller(&mut w, &fx);
    (w, fx)
}

/// The controller as the chart's controller identity, with `--require-approval` and the
/// release's policy (and its tenant record under the release's lease name).
fn start_controller(w: &mut World, fx: &Fixture) {
    let controller = identity(w.cp, CONTROLLER);
    let mut cmd = w.operator_command(&[
        "--require-approval",
        "--admission-policy",
        &fx.policy,
        "--leader-election-lease-name",
        &fx.policy,
    ]);
    cmd.env("KUBECONFIG", &controller.kubeconfig);
    w.start_operator_with(cmd);
}

/// `kubectl guestreset ARGS -n NS` as `who`.
async fn plugin(who: &Identity, ns: &str, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_kubectl-guestreset"))
        .args(args)
        .args(["-n", ns])
        .env("KUBECONFIG", &who.kubeconfig)
        .env_remove("GUESTRESET_FAILPOINT")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("run kubectl-guestreset")
}

/// `who` asks for a reset of alice's guest to alice@newco.example with `kubectl guestreset new
/// --apply` (which names them as requester).
async fn request(who: &Identity, ns: &str, name: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "new",
        name,
        "--user",
        ALICE,
        "--email",
        "alice@newco.example",
        "--apply",
    ];
    args.extend_from_slice(extra);
    plugin(who, ns, &args).await
}

/// Waits until `name` is at generation `generation` with Ready's reason `reason`.
async fn wait_generation(
    w: &World,
    name: &str,
    generation: i64,
    reason: &str,
) -> GuestRedemptionReset {
    let obj = w.wait_reason(name, reason).await;
    assert_eq!(
        obj.status.as_ref().and_then(|s| s.observed_generation),
        Some(generation)
    );
    obj
}

/// The `Approved` condition's status and reason.
fn approved(obj: &GuestRedemptionReset) -> (String, String) {
    let c = obj
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Approved"))
        .expect("an Approved condition with --require-approval");
    assert_eq!(c.observed_generation, obj.metadata.generation);
    (c.status.clone(), c.reason.clone())
}

fn approved_is(obj: &GuestRedemptionReset, status: &str, reason: &str) {
    assert_eq!(approved(obj), (status.to_owned(), reason.to_owned()));
}

/// kstatus's and Argo CD's verdicts on `obj` (tests/gitops.rs checks every other state).
async fn gitops_verdict(obj: &GuestRedemptionReset) -> (String, String) {
    let json = serde_json::to_value(obj).unwrap();
    let health = guestreset_testsupport::repo_root().join("examples/argocd/health.lua");
    let verdict = guestreset_testsupport::gitops::judge(&json, &health)
        .await
        .remove(0);
    (verdict.kstatus, verdict.argo)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The whole flow with people who are who they say (client certificates): alice asks, the
/// controller plans, alice and carol cannot approve, bob approves through the plugin, the
/// reset is issued once with an audit trail; a spec edit needs a new approval and issues once
/// more only after it.
#[tokio::test(flavor = "multi_thread")]
async fn a_reset_is_issued_once_only_after_another_person_approved_it() {
    let (w, fx) = four_eyes("approval-flow").await;
    let (alice, bob, carol) = (
        identity(w.cp, "alice"),
        identity(w.cp, "bob"),
        identity(w.cp, "carol"),
    );
    let name = "alice-to-newco";

    let out = request(&alice, &w.ns, name, &["--change-ref", "CHG-20931"]).await;
    assert!(out.status.success(), "alice's request: {}", describe(&out));
    let obj = wait_generation(&w, name, 1, "AwaitingApproval").await;
    assert_eq!(
        obj.annotations()
            .get(REQUESTED_BY_ANNOTATION)
            .map(String::as_str),
        Some("alice")
    );
    approved_is(&obj, "Unknown", "AwaitingApproval");
    // Waiting for a person: Flux waits, Argo CD shows it suspended.
    assert_eq!(
        gitops_verdict(&obj).await,
        ("InProgress".to_owned(), "Suspended".to_owned())
    );
    let status = obj.status.unwrap();
    assert_eq!(status.requested_by.as_deref(), Some("alice"));
    assert!(status.plan.unwrap().contains("alice@newco.example"));
    assert!(
        w.admin
            .journal()
            .await
            .unwrap()
            .iter()
            .all(|e| !matches!(e.call, Call::PatchUser | Call::PostInvitation)),
        "nothing written to Graph before approval"
    );

    let plan = plugin(&bob, &w.ns, &["plan", name]).await;
    assert!(plan.status.success(), "{}", describe(&plan));
    assert!(
        String::from_utf8_lossy(&plan.stdout).contains("requested by alice"),
        "{}",
        describe(&plan)
    );

    // The requester (an approver too, as people often are) and an outsider are refused by the
    // API server (exit 4), and nothing moves.
    fx.grant("alice", &fx.approver_role(), "approve", "").await;
    let own = plugin(
        &alice,
        &w.ns,
        &[
            "approve",
            name,
            "--generation",
            "1",
            "--reason",
            "looks right to me",
        ],
    )
    .await;
    assert_eq!(own.status.code(), Some(4), "{}", describe(&own));
    assert!(
        stderr(&own).contains("another person must approve or deny it"),
        "{}",
        stderr(&own)
    );
    let outsider = plugin(
        &carol,
        &w.ns,
        &["approve", name, "--generation", "1", "--reason", "why not"],
    )
    .await;
    assert_eq!(outsider.status.code(), Some(4), "{}", describe(&outsider));
    assert_eq!(fx.get(name).await.status.unwrap().approval, None);

    let approved = plugin(
        &bob,
        &w.ns,
        &[
            "approve",
            name,
            "--generation",
            "1",
            "--reason",
            "CHG-20931 reviewed",
        ],
    )
    .await;
    assert!(
        approved.status.success(),
        "bob's approval: {}",
        describe(&approved)
    );
    let obj = wait_generation(&w, name, 1, "Issued").await;
    assert_eq!(w.posts().await.len(), 1);
    approved_is(&obj, "True", "Approved");
    let waited =
        w.cp.kubectl()
            .args([
                "wait",
                "--for=condition=Approved",
                "--timeout=10s",
                "-n",
                &w.ns,
            ])
            .arg(format!("grr/{name}"))
            .output()
            .unwrap();
    assert!(waited.status.success(), "{}", describe(&waited));
    // With the chart's rights the tenant-pause record is followed by a watch of its one name:
    // the checks before the PATCH and the POST read nothing from the API server.
    let metrics = format!("http://{}/metrics", admin_addr(&w.operators[0]).await);
    let (_, text) = http_get(&metrics).await.expect("the controller's /metrics");
    assert!(
        text.contains("guestreset_tenant_record_followed 1")
            && text.contains("guestreset_tenant_record_reads_total 0"),
        "{text}"
    );
    let status = obj.status.unwrap();
    let approval = status.approval.unwrap();
    assert_eq!(
        (approval.generation, approval.decision, approval.by.as_str()),
        (1, Decision::Approved, "bob")
    );
    let invitation = status.invitation.unwrap();
    let request_id = invitation.request_id.expect("Graph's request-id on record");
    let client_request_id = invitation
        .client_request_id
        .expect("the client-request-id on record");

    // The audit trail: the Event and one log line name the change, the people and the ids.
    wait_until("the Issued Event", WAIT, || async {
        let events = w.events(name).await;
        Ok::<_, String>(
            events
                .into_iter()
                .find(|e| e.reason.as_deref() == Some("Issued")),
        )
    })
    .await;
    let issued = w
        .events(name)
        .await
        .into_iter()
        .find(|e| e.reason.as_deref() == Some("Issued"))
        .unwrap();
    let note = issued.note.unwrap_or_default();
    for needle in ["[CHG-20931]", "requested by alice", "approved by bob"] {
        assert!(note.contains(needle), "{needle} in {note}");
    }
    let logs = w.logs();
    let audit = logs
        .lines()
        .find(|l| l.contains("\"audit\":\"invitation-issued\""))
        .expect("one audit line per issuance");
    for needle in [
        "\"requested_by\":\"alice\"",
        "\"approved_by\":\"bob\"",
        "\"change_ref\":\"CHG-20931\"",
        &format!("\"request_id\":\"{request_id}\""),
        &format!("\"client_request_id\":\"{client_request_id}\""),
    ] {
        assert!(audit.contains(needle), "{needle} in {audit}");
    }

    // A spec edit is a new generation: it waits for a new approval and issues once after it.
    fx.change_spec(
        &fx.alice,
        name,
        "alice@newco2.example",
        serde_json::json!({REQUESTED_BY_ANNOTATION: "alice"}),
    )
    .await
    .expect("alice edits her request");
    wait_generation(&w, name, 2, "AwaitingApproval").await;
    assert_eq!(
        w.posts().await.len(),
        1,
        "the old approval approves nothing"
    );
    let again = plugin(
        &bob,
        &w.ns,
        &[
            "approve",
            name,
            "--generation",
            "2",
            "--reason",
            "CHG-20932 reviewed",
        ],
    )
    .await;
    assert!(again.status.success(), "{}", describe(&again));
    wait_generation(&w, name, 2, "Issued").await;
    let posts = w.posts().await;
    assert_eq!(posts.len(), 2, "{posts:?}");
    w.assert_no_secrets_in_logs().await;
}

/// A denial through the plugin stops the generation for good: not even a retry issues it.
#[tokio::test(flavor = "multi_thread")]
async fn a_denied_generation_is_never_issued() {
    let (w, _fx) = four_eyes("approval-deny").await;
    let (alice, bob) = (identity(w.cp, "alice"), identity(w.cp, "bob"));
    let name = "alice-to-newco";
    let out = request(&alice, &w.ns, name, &[]).await;
    assert!(out.status.success(), "{}", describe(&out));
    wait_generation(&w, name, 1, "AwaitingApproval").await;
    let denied = plugin(
        &bob,
        &w.ns,
        &[
            "deny",
            name,
            "--generation",
            "1",
            "--reason",
            "not the guest's address",
        ],
    )
    .await;
    assert!(denied.status.success(), "{}", describe(&denied));
    let obj = wait_generation(&w, name, 1, "Denied").await;
    let message = fixture_ready_message(&obj);
    assert!(message.contains("bob denied generation 1"), "{message}");
    approved_is(&obj, "False", "Denied");
    assert_eq!(
        gitops_verdict(&obj).await,
        ("Failed".to_owned(), "Degraded".to_owned())
    );
    let retry = plugin(&alice, &w.ns, &["retry", name, "--yes"]).await;
    assert!(
        retry.status.success(),
        "a retry of a denied generation is accepted but changes nothing: {}",
        describe(&retry)
    );
    wait_until("the retry to be seen", WAIT, || async {
        let obj = w.get(name).await;
        let token = obj.status.as_ref().and_then(|s| s.retry_token.clone());
        let asked = obj.annotations().get("guestreset.io/retry").cloned();
        Ok::<_, String>((token.is_some() && token == asked).then_some(()))
    })
    .await;
    wait_generation(&w, name, 1, "Denied").await;
    assert!(w.posts().await.is_empty(), "never issued");
}

/// The controller's own check (defence in depth): an approval whose author lost the right to
/// approve before the controller saw it is not acted on; the right granted again, his decision
/// on the retry that asks again is.
#[tokio::test(flavor = "multi_thread")]
async fn an_approval_by_someone_who_lost_the_right_is_not_acted_on() {
    let (mut w, fx) = four_eyes("approval-revoked").await;
    let name = "alice-to-newco";
    fx.requested(&fx.alice, name).await;
    wait_generation(&w, name, 1, "AwaitingApproval").await;
    w.operators[0].terminate();
    // bob approves while no controller runs, then loses the group binding that let him.
    // The plugin records the groups bob was authenticated with (his right comes from one).
    let bob = identity(w.cp, "bob");
    let approved = plugin(
        &bob,
        &w.ns,
        &["approve", name, "--generation", "1", "--reason", "reviewed"],
    )
    .await;
    assert!(approved.status.success(), "{}", describe(&approved));
    let bindings: kube::Api<k8s_openapi::api::rbac::v1::RoleBinding> =
        kube::Api::namespaced(w.client.clone(), &w.ns);
    bindings
        .delete("guestreset-approvers", &kube::api::DeleteParams::default())
        .await
        .expect("withdraw the approvers' binding");
    wait_until("bob to lose the right to approve", WAIT, || async {
        Ok::<_, String>((!fx.may("bob", "approve", "", "").await).then_some(()))
    })
    .await;
    start_controller(&mut w, &fx);
    let obj = wait_message(&w, name, "AwaitingApproval", "bob may not approve").await;
    approved_is(&obj, "Unknown", "AwaitingApproval");
    assert!(w.posts().await.is_empty());
    // The right back (a group binding: the approval's groups make the check see it).
    let rbac = guestreset_testsupport::chart::example_rbac(&w.ns, &fx.policy);
    let binding = rbac
        .into_iter()
        .find(|o| o["metadata"]["name"] == "guestreset-approvers")
        .unwrap();
    let binding: k8s_openapi::api::rbac::v1::RoleBinding = serde_json::from_value(binding).unwrap();
    bindings
        .create(&kube::api::PostParams::default(), &binding)
        .await
        .unwrap();
    wait_until("bob to be an approver again", WAIT, || async {
        Ok::<_, String>(fx.may("bob", "approve", "", "").await.then_some(()))
    })
    .await;
    // A retry asks again (the refusal is looked at again only every 10 minutes otherwise); it
    // is a new request, and bob's decision on it is checked with his groups and acted on.
    let retry = json!({"metadata": {"annotations": {
        "guestreset.io/retry": "after-the-right-came-back",
        "guestreset.io/retry-requested-by": fixture::ADMIN,
    }}});
    fx.patch(&fx.admin, name, retry)
        .await
        .expect("the admin asks again");
    // Bob decides on the retry once the controller took it up: a decision written while the
    // controller accepts the retry meets a conflict (exit 7) and writes nothing, by design.
    wait_until("the retry to be taken up", WAIT, || async {
        let obj = w.get(name).await;
        let token = obj.status.as_ref().and_then(|s| s.retry_token.clone());
        Ok::<_, String>((token.as_deref() == Some("after-the-right-came-back")).then_some(()))
    })
    .await;
    let again = decide(&bob, &w.ns, "approve", name, 1).await;
    assert!(again.status.success(), "{}", describe(&again));
    wait_generation(&w, name, 1, "Issued").await;
    assert_eq!(w.posts().await.len(), 1);
}

fn fixture_ready_message(obj: &GuestRedemptionReset) -> String {
    obj.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

// ------------------------------------------------------------------ the holes of issue 21

/// `approve`/`deny` through the plugin as `who`, naming the generation they reviewed.
async fn decide(who: &Identity, ns: &str, verb: &str, name: &str, generation: i64) -> Output {
    let generation = generation.to_string();
    let args = [
        verb,
        name,
        "--generation",
        &generation,
        "--reason",
        "CHG-1 reviewed",
    ];
    plugin(who, ns, &args).await
}

/// Waits until Ready's message of `name` contains `needle` (with reason `reason`).
async fn wait_message(w: &World, name: &str, reason: &str, needle: &str) -> GuestRedemptionReset {
    wait_until(
        &format!("{name}: {reason} saying {needle:?}"),
        WAIT,
        || async {
            let obj = w.get(name).await;
            let ready = obj
                .status
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
            let found = ready.is_some_and(|c| c.reason == reason && c.message.contains(needle));
            Ok::<_, String>(found.then_some(obj))
        },
    )
    .await
}

/// Hole 1: the retry annotation replayed an approved generation with no new approval. A retry
/// of a settled generation is a new request: carol (who may patch resets but not approve) asks
/// for it under her own name, the controller plans and waits, carol cannot decide on her own
/// retry even once she may approve, bob's old approval approves nothing, and only bob's
/// decision naming the retry issues once more.
#[tokio::test(flavor = "multi_thread")]
async fn a_retry_of_an_issued_generation_waits_for_its_own_approval() {
    let (w, fx) = four_eyes("approval-retry").await;
    let (alice, bob, carol) = (
        identity(w.cp, "alice"),
        identity(w.cp, "bob"),
        identity(w.cp, "carol"),
    );
    let name = "alice-to-newco";
    let out = request(&alice, &w.ns, name, &[]).await;
    assert!(out.status.success(), "{}", describe(&out));
    wait_generation(&w, name, 1, "AwaitingApproval").await;
    let approved = decide(&bob, &w.ns, "approve", name, 1).await;
    assert!(approved.status.success(), "{}", describe(&approved));
    wait_generation(&w, name, 1, "Issued").await;
    assert_eq!(w.posts().await.len(), 1);

    // The retry's requester is the API server's record of the caller, like the requester's.
    let retry = |token: &str, by: &str| {
        json!({"metadata": {"annotations": {
            "guestreset.io/retry": token,
            "guestreset.io/retry-requested-by": by,
        }}})
    };
    fx.refused(
        name,
        "whoever sets or changes guestreset.io/retry",
        fx.patch(&fx.carol, name, retry("r1", "bob")),
    )
    .await;
    let bare = json!({"metadata": {"annotations": {"guestreset.io/retry": "r1"}}});
    fx.refused(
        name,
        "retry-requested-by'] is required",
        fx.patch(&fx.carol, name, bare),
    )
    .await;
    fx.patch(&fx.carol, name, retry("r1", "carol"))
        .await
        .expect("carol asks for a retry in her own name");

    let obj = wait_message(
        &w,
        name,
        "AwaitingApproval",
        "retry r1 of generation 1 requested by carol",
    )
    .await;
    approved_is(&obj, "Unknown", "AwaitingApproval");
    assert_eq!(w.posts().await.len(), 1, "no POST under the old approval");
    let plan = obj.status.unwrap().plan.unwrap();
    assert!(plan.starts_with("generation 1: "), "{plan}");

    // bob's decision without the retry, and carol's on her own retry, are refused.
    fx.refused(
        name,
        "status.approval.retry is ''",
        fx.decide(&fx.bob, name, 1, "Approved"),
    )
    .await;
    fx.grant("carol", &fx.approver_role(), "approve", "").await;
    let own = decide(&carol, &w.ns, "approve", name, 1).await;
    assert_eq!(own.status.code(), Some(4), "{}", describe(&own));
    assert!(
        stderr(&own).contains("asked for retry 'r1'"),
        "{}",
        stderr(&own)
    );

    let again = decide(&bob, &w.ns, "approve", name, 1).await;
    assert!(again.status.success(), "{}", describe(&again));
    let obj = wait_message(&w, name, "Issued", "redemption of").await;
    let approval = obj.status.unwrap().approval.unwrap();
    assert_eq!(
        (approval.by.as_str(), approval.retry.as_deref()),
        ("bob", Some("r1"))
    );
    wait_until("the second POST", WAIT, || async {
        Ok::<_, String>((w.posts().await.len() == 2).then_some(()))
    })
    .await;
}

/// Hole 2: the approver approves what they read. The plan lists every value Graph receives
/// and the spec's digest; an approval naming a generation that is no longer current writes
/// nothing, one that names nothing is refused without a terminal, and an approval whose digest
/// is not the current spec's is not acted on by the controller.
#[tokio::test(flavor = "multi_thread")]
async fn an_approval_approves_only_what_the_approver_read() {
    let (w, fx) = four_eyes("approval-pinned").await;
    let bob = identity(w.cp, "bob");
    let name = "alice-to-newco";
    fx.requested(&fx.alice, name).await;
    let message = json!({"spec": {
        "message": {"ccRecipient": "alice@newco.example", "body": "Welcome back", "language": "de-DE"},
        "redirectUrl": "https://apps.fabrikam.example/start",
    }, "metadata": {"annotations": {REQUESTED_BY_ANNOTATION: "alice"}}});
    fx.patch(&fx.alice, name, message)
        .await
        .expect("alice's message");
    let obj = wait_generation(&w, name, 2, "AwaitingApproval").await;
    let digest = guestreset::resource::spec_digest(&obj.spec);
    let plan = obj.status.as_ref().unwrap().plan.clone().unwrap();
    for line in [
        &format!("target: {ALICE}"),
        "new e-mail: alice@newco.example",
        "mail change: alice@contoso.com -> alice@newco.example",
        "invitation e-mail sent: true",
        "cc recipient: alice@newco.example",
        "message language: de-DE",
        "message body: \"Welcome back\"",
        "redirect URL: https://apps.fabrikam.example/start",
        "redeem URL Secret: (none)",
        &format!("spec digest: {digest}"),
    ] {
        assert!(plan.contains(line), "{line} in {plan}");
    }

    // bob read generation 2; alice changes the e-mail meanwhile.
    fx.change_spec(
        &fx.alice,
        name,
        "alice@newco2.example",
        json!({REQUESTED_BY_ANNOTATION: "alice"}),
    )
    .await
    .expect("alice edits her request");
    let stale = decide(&bob, &w.ns, "approve", name, 2).await;
    assert_eq!(stale.status.code(), Some(5), "{}", describe(&stale));
    assert!(
        stderr(&stale).contains("current generation is 3"),
        "{}",
        stderr(&stale)
    );
    let old_digest = ["approve", name, "--digest", &digest, "--reason", "r"];
    let stale = plugin(&bob, &w.ns, &old_digest).await;
    assert_eq!(stale.status.code(), Some(5), "{}", describe(&stale));
    let unnamed = plugin(&bob, &w.ns, &["approve", name, "--reason", "r"]).await;
    assert_eq!(unnamed.status.code(), Some(6), "{}", describe(&unnamed));
    let blind = ["approve", name, "--without-plan", "--reason", "r"];
    assert_eq!(plugin(&bob, &w.ns, &blind).await.status.code(), Some(5));
    assert_eq!(
        fx.get(name).await.status.unwrap().approval,
        None,
        "nothing written"
    );

    // An approval for the current generation that pins another spec is not acted on.
    let obj = wait_generation(&w, name, 3, "AwaitingApproval").await;
    let mut approval = fixture::approval(3, "Approved", "bob");
    approval["digest"] = json!(digest);
    approval["groups"] = json!([fixture::APPROVERS]);
    approval["admittedUnder"] = serde_json::to_value(&obj.status.unwrap().admitted_under).unwrap();
    fx.patch_status(&fx.bob, name, json!({"approval": approval}))
        .await
        .expect("the policy admits it: generation, author and right are in order");
    wait_message(
        &w,
        name,
        "AwaitingApproval",
        "but the spec of generation 3 has digest",
    )
    .await;
    assert!(
        w.posts().await.is_empty(),
        "nothing issued on another spec's digest"
    );

    // A new generation, approved by its digest, issues.
    fx.change_spec(
        &fx.alice,
        name,
        "alice@newco3.example",
        json!({REQUESTED_BY_ANNOTATION: "alice"}),
    )
    .await
    .expect("alice asks again");
    let obj = wait_generation(&w, name, 4, "AwaitingApproval").await;
    let current = guestreset::resource::spec_digest(&obj.spec);
    let pinned = ["approve", name, "--digest", &current, "--reason", "r"];
    let ok = plugin(&bob, &w.ns, &pinned).await;
    assert!(ok.status.success(), "{}", describe(&ok));
    wait_generation(&w, name, 4, "Issued").await;
    assert_eq!(w.posts().await.len(), 1);
}

/// Hole 3: an approval forged while the policy's binding was away is never acted on, although
/// it names a real approver with his groups and the policy is back when the controller looks.
#[tokio::test(flavor = "multi_thread")]
async fn an_approval_written_while_the_binding_was_away_is_never_acted_on() {
    let (mut w, fx) = four_eyes("approval-unbound").await;
    let name = "alice-to-newco";
    fx.requested(&fx.alice, name).await;
    let obj = wait_generation(&w, name, 1, "AwaitingApproval").await;
    let published = obj
        .status
        .unwrap()
        .admitted_under
        .expect("the plan names the policy in force");
    w.operators[0].terminate();

    let binding = fx
        .rendered
        .iter()
        .find(|o| o["kind"] == "ValidatingAdmissionPolicyBinding")
        .cloned()
        .unwrap();
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(w.client.clone());
    bindings
        .delete(&fx.policy, &DeleteParams::default())
        .await
        .expect("the binding goes (a rollback, a reinstall)");
    // carol, who may patch status but not approve, writes bob's approval with everything a
    // real one carries, copied from the status.
    let mut forged = fixture::approval(1, "Approved", "bob");
    forged["groups"] = json!([fixture::APPROVERS]);
    forged["digest"] = json!(guestreset::resource::spec_digest(&fx.get(name).await.spec));
    forged["admittedUnder"] = serde_json::to_value(&published).unwrap();
    wait_until("carol's forged approval to land", WAIT, || async {
        let written = fx
            .patch_status(&fx.carol, name, json!({"approval": forged.clone()}))
            .await;
        Ok::<_, String>(written.ok().map(|_| ()))
    })
    .await;
    fixture::apply(&w.client, binding, None).await;
    fx.wait_for_policy().await;

    start_controller(&mut w, &fx);
    let obj = wait_message(&w, name, "AwaitingApproval", "re-created or edited since").await;
    approved_is(&obj, "Unknown", "AwaitingApproval");
    assert!(
        w.posts().await.is_empty(),
        "the forged approval issued nothing"
    );
}

/// Hole 4: the audit record of an issuance is the one captured with its intent. During the
/// POST carol changes the spec naming herself with another changeRef, and the resource is
/// deleted; the audit lines of the sending mark and of the outcome still name alice, bob and
/// CHG-20931, although the outcome's write finds no resource.
#[tokio::test(flavor = "multi_thread")]
async fn the_audit_record_survives_a_rewrite_and_a_deletion_during_the_post() {
    let (w, fx) = four_eyes("approval-audit").await;
    let (alice, bob) = (identity(w.cp, "alice"), identity(w.cp, "bob"));
    let name = "alice-to-newco";
    w.admin
        .add_fault(FaultRule::once(
            Call::PostInvitation,
            FaultAction::HangAfter,
        ))
        .await
        .unwrap();
    let out = request(&alice, &w.ns, name, &["--change-ref", "CHG-20931"]).await;
    assert!(out.status.success(), "{}", describe(&out));
    wait_generation(&w, name, 1, "AwaitingApproval").await;
    let approved = decide(&bob, &w.ns, "approve", name, 1).await;
    assert!(approved.status.success(), "{}", describe(&approved));
    let admin = w.admin.clone();
    wait_until("the POST to have taken effect and be held", WAIT, || {
        let admin = admin.clone();
        async move { (admin.held_count().await.ok() == Some(1)).then_some(()) }
    })
    .await;
    let rewrite = json!({
        "metadata": {"annotations": {REQUESTED_BY_ANNOTATION: "carol"}},
        "spec": {"email": "carol@newco.example", "changeRef": "CHG-FAKE"},
    });
    fx.patch(&fx.carol, name, rewrite)
        .await
        .expect("carol's new generation");
    fx.admin
        .grr
        .delete(name, &DeleteParams::default())
        .await
        .expect("the resource is deleted during the POST");
    w.admin.release_held().await.unwrap();

    let line = |kind: &'static str| {
        let w = &w;
        async move {
            wait_until(&format!("the {kind} audit line"), WAIT, || async {
                let logs = w.logs();
                let found = logs
                    .lines()
                    .find(|l| l.contains(&format!("\"audit\":\"{kind}\"")))
                    .map(str::to_owned);
                Ok::<_, String>(found)
            })
            .await
        }
    };
    for audit in [
        line("invitation-sending").await,
        line("invitation-issued").await,
    ] {
        for needle in [
            "\"requested_by\":\"alice\"",
            "\"approved_by\":\"bob\"",
            "\"change_ref\":\"CHG-20931\"",
            "\"generation\":1",
        ] {
            assert!(audit.contains(needle), "{needle} in {audit}");
        }
    }
    assert_eq!(w.posts().await.len(), 1);
}
