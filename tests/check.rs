//! End-to-end: `guestreset check` against the Graph simulator and the real API server, with
//! the admin kubeconfig (every right), and with one thing wrong at a time: the app's Graph
//! permission, the watched namespace, the tenant.

mod common;

use std::process::{Command, Output};

use common::World;

/// `guestreset check` with the flags and environment of the world's `guestreset run`.
fn check_command(w: &World, namespace: &str) -> Command {
    let run = w.operator_command(&[]);
    let mut cmd = Command::new(run.get_program());
    cmd.args(["check", "--namespace", namespace]);
    for (name, value) in run.get_envs() {
        match value {
            Some(value) => cmd.env(name, value),
            None => cmd.env_remove(name),
        };
    }
    cmd
}

async fn check(cmd: Command) -> (Output, String) {
    let out = tokio::process::Command::from(cmd).output().await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out, text)
}

fn line<'a>(report: &'a str, check: &str) -> &'a str {
    report
        .lines()
        .find(|l| {
            l.split_once(": ")
                .is_some_and(|(head, _)| head.ends_with(check))
        })
        .unwrap_or_else(|| panic!("no line for {check} in:\n{report}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn all_checks_pass_with_every_right() {
    let w = World::with_users("check-ok", vec![]).await;
    let (out, report) = check(check_command(&w, &w.ns)).await;
    assert!(out.status.success(), "{report}");
    for name in [
        "token",
        "permission",
        "graph",
        "rbac guestredemptionresets",
        "rbac guestredemptionresets/status",
        "rbac events",
        "rbac secrets",
        "rbac configmaps",
        "namespace",
        "pause record",
    ] {
        assert!(line(&report, name).starts_with("ok "), "{report}");
    }
    assert!(line(&report, "pause record").contains("absent"), "{report}");
    let tokens = w.admin.issued_tokens_and_redeem_urls().await.unwrap();
    assert!(!tokens.access_tokens.is_empty());
    let printed = format!("{report}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        tokens
            .access_tokens
            .iter()
            .all(|t| !printed.contains(t.as_str()))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn leader_election_adds_the_lease() {
    let w = World::with_users("check-lease", vec![]).await;
    let mut cmd = check_command(&w, &w.ns);
    cmd.arg("--leader-elect");
    let (out, report) = check(cmd).await;
    assert!(out.status.success(), "{report}");
    assert!(
        line(&report, "rbac leases").starts_with("ok rbac leases: create, get, patch"),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_without_the_permission_fails_the_permission_check() {
    let w = World::with_users("check-role", vec![]).await;
    w.admin.set_tokens_without_roles(true).await.unwrap();
    let (out, report) = check(check_command(&w, &w.ns)).await;
    assert!(!out.status.success(), "{report}");
    assert!(line(&report, "token").starts_with("ok "), "{report}");
    let permission = line(&report, "permission");
    assert!(
        permission.starts_with("FAIL permission: the token has no roles claim"),
        "{report}"
    );
    assert!(permission.contains("fix: add the application permission User.ReadWrite.All"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_namespace_fails_the_namespace_check() {
    let w = World::with_users("check-ns", vec![]).await;
    let missing = format!("{}-missing", w.ns);
    let (out, report) = check(check_command(&w, &missing)).await;
    assert!(!out.status.success(), "{report}");
    let namespace = line(&report, "namespace");
    assert!(
        namespace.starts_with(&format!(
            "FAIL namespace: namespace {missing} does not exist"
        )),
        "{report}"
    );
    assert!(namespace.contains("fix: create it"), "{report}");
    assert!(line(&report, "permission").starts_with("ok "), "{report}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_tenant_fails_the_token_check() {
    let w = World::with_users("check-tenant", vec![]).await;
    let mut cmd = check_command(&w, &w.ns);
    cmd.env("AZURE_TENANT_ID", "00000000-0000-4000-8000-000000000bad");
    let (out, report) = check(cmd).await;
    assert!(!out.status.success(), "{report}");
    let token = line(&report, "token");
    assert!(token.starts_with("FAIL token: "), "{report}");
    assert!(
        token.contains("fix: set AZURE_TENANT_ID to the guests' tenant id"),
        "{report}"
    );
    // Without a token, no Graph check can pass; the API server's still run.
    assert!(
        report.lines().all(|l| !l.starts_with("ok graph")),
        "{report}"
    );
    assert!(line(&report, "namespace").starts_with("ok "), "{report}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_api_server_right_fails_its_resource() {
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    use kube::api::{Api, PostParams};
    let w = World::with_users("check-rbac", vec![]).await;
    // Only reading the resources: no status, no Events, no Secrets, no pause record.
    let role: Role = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "reader"},
        "rules": [{"apiGroups": ["guestreset.io"], "resources": ["guestredemptionresets"],
                   "verbs": ["get", "list", "watch"]}],
    }))
    .unwrap();
    let binding: RoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "check-reader"}],
    }))
    .unwrap();
    let pp = PostParams::default();
    Api::<Role>::namespaced(w.client.clone(), &w.ns)
        .create(&pp, &role)
        .await
        .unwrap();
    Api::<RoleBinding>::namespaced(w.client.clone(), &w.ns)
        .create(&pp, &binding)
        .await
        .unwrap();
    let reader = w.cp.user("check-reader", &[]);
    let mut cmd = check_command(&w, &w.ns);
    cmd.env("KUBECONFIG", &reader.kubeconfig);
    let (out, report) = check(cmd).await;
    assert!(!out.status.success(), "{report}");
    assert!(
        line(&report, "rbac guestredemptionresets").starts_with("ok "),
        "{report}"
    );
    let status = line(&report, "rbac guestredemptionresets/status");
    assert!(
        status.starts_with("FAIL rbac guestredemptionresets/status: cannot patch"),
        "{report}"
    );
    assert!(status.contains("fix: install the chart's RBAC"), "{report}");
    assert!(
        line(&report, "rbac secrets").starts_with("FAIL "),
        "{report}"
    );
    assert!(
        line(&report, "pause record").starts_with("FAIL "),
        "{report}"
    );
}

/// The controller holds no `get` on namespaces: the check asks the namespace's admission with
/// a dry-run Event (a right the controller has) and tells a missing namespace from a present
/// one; without that right either, it fails rather than passing unverified.
#[tokio::test(flavor = "multi_thread")]
async fn a_namespace_is_verified_without_the_right_to_read_namespaces() {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    use kube::api::{Api, DeleteParams, PostParams};
    let w = World::with_users("check-ns-dry", vec![]).await;
    let user = format!("{}-eventer", w.ns);
    let role: ClusterRole = serde_json::from_value(serde_json::json!({
        "metadata": {"name": user},
        "rules": [{"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create"]}],
    }))
    .unwrap();
    let binding: ClusterRoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": user},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": user},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }))
    .unwrap();
    let pp = PostParams::default();
    let roles = Api::<ClusterRole>::all(w.client.clone());
    let bindings = Api::<ClusterRoleBinding>::all(w.client.clone());
    roles.create(&pp, &role).await.unwrap();
    bindings.create(&pp, &binding).await.unwrap();

    let eventer = w.cp.user(&user, &[]);
    let namespace_line = |namespace: String, kubeconfig| {
        let mut cmd = check_command(&w, &namespace);
        cmd.env("KUBECONFIG", kubeconfig);
        async move {
            let (_, report) = check(cmd).await;
            (line(&report, "namespace").to_owned(), report)
        }
    };
    let (present, report) = namespace_line(w.ns.clone(), &eventer.kubeconfig).await;
    assert_eq!(
        present,
        format!(
            "ok namespace: {} exists (a dry-run Event was admitted there)",
            w.ns
        ),
        "{report}"
    );
    let missing = format!("{}-missing", w.ns);
    let (absent, report) = namespace_line(missing.clone(), &eventer.kubeconfig).await;
    assert!(
        absent.starts_with(&format!(
            "FAIL namespace: namespace {missing} does not exist"
        )),
        "{report}"
    );
    // A dry run stores nothing.
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(w.client.clone(), &w.ns);
    let stored = events.list(&Default::default()).await.unwrap();
    assert!(
        stored
            .items
            .iter()
            .all(|e| e.reason.as_deref() != Some("Check")),
        "a check Event was stored"
    );
    // Without the right to create Events there either: not verifiable is a failure.
    let nobody = w.cp.user(&format!("{}-nobody", w.ns), &[]);
    let (unverified, report) = namespace_line(w.ns.clone(), &nobody.kubeconfig).await;
    assert!(
        unverified.starts_with(&format!("FAIL namespace: {} not verifiable", w.ns)),
        "{report}"
    );
    assert!(
        unverified.contains("fix: install the chart's RBAC"),
        "{report}"
    );
    bindings
        .delete(&user, &DeleteParams::default())
        .await
        .unwrap();
    roles.delete(&user, &DeleteParams::default()).await.unwrap();
}
