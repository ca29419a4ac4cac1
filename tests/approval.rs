//! End-to-end: four eyes with `--require-approval` (docs/resource.md, "Approval"). The
//! controller runs as a separate process against a real kube-apiserver with the chart's
//! admission policy, people are client-certificate identities signed by the control plane's
//! CA, and the kubectl plugin is the approvers' tool. The simulator's journal is the ground
//! truth of what reached Graph.

mod common;

use std::time::Duration;

use common::{World, admin_addr, http_get};
use graph_sim::{Call, SeedUser};
use guestreset_testsupport::wait_until;
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use kube::Api;
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
