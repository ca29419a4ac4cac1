//! The CRD and the manifests, checked by a real kube-apiserver and the kubectl of the
//! same release: installation, defaults, admission of good and bad manifests (on create
//! and on update), printer columns, `kubectl explain`, `kubectl wait` and the status
//! subresource.
//!
//! The offline CEL tests in `src/resource/reset.rs` are the fast, exhaustive half; these tests
//! prove that the API server reads the schema the same way.

use std::process::{Output, Stdio};
use std::time::Duration;

use futures::StreamExt;
use guestreset::resource::{
    Approval, DEFAULT_REDIRECT_URL, Decision, GuestRedemptionReset, GuestRedemptionResetStatus,
    Phase, crd, crd_yaml,
};
use guestreset_testsupport::{
    ControlPlane, describe, path_str as path_arg, repo_root, wait_until, yaml_files,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

const CRD_NAME: &str = "guestredemptionresets.guestreset.io";
const CRD_FILE: &str = "crds/guestredemptionresets.guestreset.io.yaml";
const GUID: &str = "3f0a6c1e-8d2b-4c55-9b0e-2f6a1d9c7e41";
const UPN: &str = "alice_contoso.com#EXT#@fabrikam.onmicrosoft.com";
/// The printer columns of docs/resource.md, as `kubectl get` prints their names.
const COLUMNS: [&str; 7] = [
    "NAME", "USER", "EMAIL", "PHASE", "REASON", "REDEEMED", "AGE",
];
/// `kubectl get -o wide` adds who asked and the approval before the age.
const WIDE_COLUMNS: [&str; 9] = [
    "NAME",
    "USER",
    "EMAIL",
    "PHASE",
    "REASON",
    "REDEEMED",
    "REQUESTED-BY",
    "APPROVED",
    "AGE",
];
/// Bound on anything the API server does asynchronously (establishing the CRD,
/// publishing discovery and OpenAPI).
const SETTLE: Duration = Duration::from_secs(90);
/// Bound on one kubectl invocation; a hung kubectl must fail the test, not stall it.
const KUBECTL_DEADLINE: Duration = Duration::from_secs(120);

// ------------------------------------------------------------------ helpers

/// The control plane of this test binary with the CRD installed and served.
/// The first caller installs it; every later caller (in any test) waits for that.
async fn control_plane_with_crd() -> &'static ControlPlane {
    static INSTALLED: OnceCell<()> = OnceCell::const_new();
    let cp = ControlPlane::shared().await;
    INSTALLED.get_or_init(|| install_crd(cp)).await;
    cp
}

async fn install_crd(cp: &'static ControlPlane) {
    let file = repo_root().join(CRD_FILE);
    let out = kubectl(
        cp,
        &[
            "apply",
            "--server-side",
            "--field-manager=guestreset-admission-test",
            "-f",
            path_arg(&file),
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "installing the CRD failed: {}",
        describe(&out)
    );

    let crds: Api<CustomResourceDefinition> = Api::all(cp.client().await);
    let crds = &crds;
    wait_until(
        "the CRD to become Established",
        SETTLE,
        move || async move {
            let crd = crds.get(CRD_NAME).await?;
            Ok::<_, kube::Error>(has_condition(&crd, "Established").then_some(()))
        },
    )
    .await;

    // Established does not mean discovery lists the resource yet; kubectl needs it
    // to resolve the short name.
    wait_until(
        "kubectl to resolve grr through discovery",
        SETTLE,
        || async {
            let out = kubectl(cp, &["get", "grr", "--all-namespaces"]).await;
            if out.status.success() {
                Ok(Some(()))
            } else {
                Err(describe(&out))
            }
        },
    )
    .await;
}

fn has_condition(crd: &CustomResourceDefinition, type_: &str) -> bool {
    crd.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

/// `kubectl ARGS` against the control plane, with a discovery cache private to
/// this test binary and a per-request timeout.
async fn kubectl(cp: &ControlPlane, args: &[&str]) -> Output {
    let mut all = vec!["--request-timeout=30s"];
    all.extend_from_slice(args);
    kubectl_unbounded(cp, &all).await
}

/// Like [`kubectl`] without the per-request timeout (for `kubectl wait`, whose
/// watch must be allowed to last as long as its own --timeout).
async fn kubectl_unbounded(cp: &ControlPlane, args: &[&str]) -> Output {
    let mut command = tokio::process::Command::from(kubectl_command(cp));
    command.args(args).stdin(Stdio::null()).kill_on_drop(true);
    match tokio::time::timeout(KUBECTL_DEADLINE, command.output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => panic!("run kubectl {args:?}: {e}"),
        Err(_) => panic!("kubectl {args:?} did not finish within {KUBECTL_DEADLINE:?}"),
    }
}

fn kubectl_command(cp: &ControlPlane) -> std::process::Command {
    let mut command = cp.kubectl();
    // Not ~/.kube/cache: each test binary talks to its own server.
    command.arg(format!(
        "--cache-dir={}",
        cp.dir().join("kubectl-cache").display()
    ));
    command
}

/// kubectl wraps long text; compare with all white space runs squashed to one space.
fn squash(text: &[u8]) -> String {
    String::from_utf8_lossy(text)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether an error names `field` as a field path: `spec.user: ...` or
/// `unknown field "spec.emial"`, so that `spec.user` is not satisfied by `spec.user.id: ...`.
fn names_field(error: &str, field: &str) -> bool {
    [':', '"']
        .iter()
        .any(|end| error.contains(&format!("{field}{end}")))
}

/// kubectl's wording for a request the API server answered with an error (as opposed to
/// kubectl failing on its own, e.g. to parse the file or to connect).
fn refused_by_server(error: &str) -> bool {
    error.contains(" is invalid") || error.contains("Error from server")
}

/// `kubectl wait` ran and found the condition unmet (rather than failing to run).
fn not_met(out: &Output) -> bool {
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The first wording is that of --timeout=0s, the second that of a real timeout.
    !out.status.success()
        && (stderr.contains("condition not met") || stderr.contains("timed out waiting"))
}

fn api_resource() -> ApiResource {
    ApiResource::erase::<GuestRedemptionReset>(&())
}

/// The objects exactly as the API server stores them: no client-side serde defaults.
async fn raw_api(cp: &ControlPlane, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(cp.client().await, ns, &api_resource())
}

async fn typed_api(cp: &ControlPlane, ns: &str) -> Api<GuestRedemptionReset> {
    Api::namespaced(cp.client().await, ns)
}

fn resource(name: &str, spec: Value) -> GuestRedemptionReset {
    serde_json::from_value(json!({
        "apiVersion": "guestreset.io/v1alpha1",
        "kind": "GuestRedemptionReset",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("a valid spec")
}

fn dynamic(name: &str, spec: Value) -> DynamicObject {
    DynamicObject::new(name, &api_resource()).data(json!({ "spec": spec }))
}

/// A finished reset as the controller would record it, through the crate's own types.
fn issued_status(generation: i64, target: &str) -> GuestRedemptionResetStatus {
    GuestRedemptionResetStatus {
        observed_generation: Some(generation),
        phase: Some(Phase::Succeeded),
        target: Some(target.to_owned()),
        conditions: vec![Condition {
            type_: "Ready".into(),
            status: "True".into(),
            reason: "Issued".into(),
            message: format!("invitation issued for generation {generation}"),
            observed_generation: Some(generation),
            last_transition_time: Time(k8s_openapi::jiff::Timestamp::now()),
        }],
        ..GuestRedemptionResetStatus::default()
    }
}

async fn write_status(
    api: &Api<GuestRedemptionReset>,
    name: &str,
    status: GuestRedemptionResetStatus,
) -> GuestRedemptionReset {
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await
    .unwrap_or_else(|e| panic!("write the status of {name}: {e}"))
}

fn api_error_message(result: Result<impl std::fmt::Debug, kube::Error>) -> String {
    match result {
        Err(kube::Error::Api(status)) => {
            assert_eq!(
                status.code, 422,
                "refusal should be 422 Invalid: {status:?}"
            );
            status.message
        }
        other => panic!("expected the API server to refuse, got {other:?}"),
    }
}

// -------------------------------------------------------------------- tests

#[tokio::test]
async fn crd_installs_and_becomes_established() {
    let cp = control_plane_with_crd().await;
    let crds: Api<CustomResourceDefinition> = Api::all(cp.client().await);
    let stored = crds.get(CRD_NAME).await.expect("the CRD is stored");

    assert!(has_condition(&stored, "Established"), "{:?}", stored.status);
    assert!(
        has_condition(&stored, "NamesAccepted"),
        "{:?}",
        stored.status
    );
    let accepted = stored
        .status
        .as_ref()
        .and_then(|s| s.accepted_names.as_ref())
        .expect("acceptedNames");
    assert_eq!(accepted.kind, "GuestRedemptionReset");
    assert_eq!(accepted.plural, "guestredemptionresets");
    assert_eq!(
        accepted.short_names.as_deref(),
        Some(&["grr".to_owned()][..])
    );
    assert_eq!(
        accepted.categories.as_deref(),
        Some(&["guestreset".to_owned()][..])
    );

    // The server kept the schema, CEL rules and printer columns as written: nothing
    // was dropped or rewritten on the way in.
    let served = serde_json::to_value(&stored.spec.versions).unwrap();
    let committed = serde_json::to_value(&crd().spec.versions).unwrap();
    assert_eq!(served, committed, "the stored CRD differs from crd()");

    // Installing again (as every test binary and `kubectl apply` in a GitOps loop
    // does) is a no-op.
    let again = kubectl(
        cp,
        &[
            "apply",
            "--server-side",
            "--field-manager=guestreset-admission-test",
            "-f",
            path_arg(&repo_root().join(CRD_FILE)),
        ],
    )
    .await;
    assert!(again.status.success(), "re-apply: {}", describe(&again));
    let after = crds.get(CRD_NAME).await.unwrap();
    assert_eq!(after.metadata.generation, stored.metadata.generation);
}

#[tokio::test]
async fn committed_crd_is_what_the_binary_prints() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_guestreset"))
        .arg("crd")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run guestreset crd");
    assert!(out.status.success(), "guestreset crd: {}", describe(&out));
    let committed = std::fs::read(repo_root().join(CRD_FILE)).expect("read the committed CRD");
    assert!(
        out.stdout == committed,
        "{CRD_FILE} is stale: regenerate it with `cargo run -- crd > {CRD_FILE}`"
    );
    assert_eq!(out.stdout, crd_yaml().into_bytes());
}

#[tokio::test]
async fn examples_apply_and_read_back_with_server_defaults() {
    let cp = control_plane_with_crd().await;
    let ns = cp.namespace("admission-examples").await;
    let raw = raw_api(cp, &ns).await;
    let typed = typed_api(cp, &ns).await;

    let defaults = [
        ("redirectUrl", json!(DEFAULT_REDIRECT_URL)),
        ("sendInvitationMessage", json!(true)),
        ("updateMail", json!(true)),
        ("dryRun", json!(false)),
    ];
    // Which defaults some example leaves to the server; each must be exercised.
    let mut omitted: Vec<&str> = vec![];

    let examples = yaml_files("examples");
    assert!(!examples.is_empty(), "no examples found");
    for file in &examples {
        let text = std::fs::read_to_string(file).unwrap();
        let manifest: Value = serde_yaml::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: not YAML: {e}", file.display()));
        // Not every example is a reset (a non-reset manifest may stand here).
        if manifest["kind"] != "GuestRedemptionReset" {
            continue;
        }
        let name = manifest["metadata"]["name"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: no metadata.name", file.display()));

        let out = kubectl(cp, &["apply", "-n", &ns, "-f", path_arg(file)]).await;
        assert!(
            out.status.success(),
            "{} was refused: {}",
            file.display(),
            describe(&out)
        );

        let mut expected = manifest["spec"].clone();
        let spec = expected.as_object_mut().expect("spec is a mapping");
        for (field, value) in &defaults {
            if !spec.contains_key(*field) {
                omitted.push(*field);
                spec.insert((*field).to_owned(), value.clone());
            }
        }
        if let Some(message) = spec.get_mut("message").and_then(Value::as_object_mut)
            && !message.contains_key("language")
        {
            omitted.push("message.language");
            message.insert("language".into(), json!("en-US"));
        }

        let stored = raw
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("get {name}: {e}"));
        assert_eq!(
            stored.data["spec"],
            expected,
            "{}: the stored spec is not the manifest plus the schema defaults",
            file.display()
        );
        typed
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("{name} does not read back as the Rust type: {e}"));
    }

    for field in [
        "redirectUrl",
        "sendInvitationMessage",
        "updateMail",
        "dryRun",
        "message.language",
    ] {
        assert!(
            omitted.contains(&field),
            "no example leaves {field} to its default, so its default is untested"
        );
    }
}

#[tokio::test]
async fn every_bad_manifest_is_refused_naming_its_field() {
    let cp = control_plane_with_crd().await;
    let ns = cp.namespace("admission-bad").await;
    let corpus = yaml_files("tests/bad-manifests");
    assert!(
        corpus.len() >= 25,
        "the bad-manifest corpus has only {} files",
        corpus.len()
    );

    let ns_ref = ns.as_str();
    let verdicts: Vec<Option<String>> = futures::stream::iter(&corpus)
        .map(|file| async move {
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(file).unwrap();
            let Some(field) = text
                .lines()
                .find_map(|l| l.strip_prefix("# field:"))
                .map(str::trim)
                .filter(|f| !f.is_empty())
            else {
                return Some(format!("{name}: no `# field:` line"));
            };
            let out = kubectl(cp, &["apply", "-n", ns_ref, "-f", path_arg(file)]).await;
            let stderr = String::from_utf8_lossy(&out.stderr);
            if out.status.success() {
                Some(format!("{name}: ACCEPTED ({})", describe(&out)))
            } else if !names_field(&stderr, field) {
                Some(format!(
                    "{name}: refused without naming {field}: {}",
                    stderr.trim()
                ))
            } else if !refused_by_server(&stderr) {
                Some(format!(
                    "{name}: failed, but not as a refusal by the API server: {}",
                    stderr.trim()
                ))
            } else {
                None
            }
        })
        .buffer_unordered(4)
        .collect()
        .await;
    let failures: Vec<String> = verdicts.into_iter().flatten().collect();

    let stored = raw_api(cp, &ns)
        .await
        .list(&ListParams::default())
        .await
        .expect("list the namespace");
    let stored: Vec<String> = stored
        .items
        .iter()
        .filter_map(|o| o.metadata.name.clone())
        .collect();

    assert!(
        failures.is_empty() && stored.is_empty(),
        "{} of {} bad manifests were not refused as expected:\n  {}\nstored in {ns}: {stored:?}",
        failures.len(),
        corpus.len(),
        failures.join("\n  ")
    );
}

#[tokio::test]
async fn kubectl_get_shows_the_printer_columns() {
    let cp = control_plane_with_crd().await;
    let ns = cp.namespace("admission-columns").await;
    let api = typed_api(cp, &ns).await;
    let name = "alice-to-newco";
    let email = "alice@newco.example";
    api.create(
        &PostParams::default(),
        &resource(
            name,
            json!({"user": {"userPrincipalName": UPN}, "email": email}),
        ),
    )
    .await
    .expect("create");
    let mut status = issued_status(1, UPN);
    status.conditions.push(Condition {
        type_: "Redeemed".into(),
        status: "Unknown".into(),
        reason: "PendingAcceptance".into(),
        message: "issued 1m ago; the guest has not redeemed the invitation yet".into(),
        observed_generation: Some(1),
        last_transition_time: Time(k8s_openapi::jiff::Timestamp::now()),
    });
    status.conditions.push(Condition {
        type_: "Approved".into(),
        status: "True".into(),
        reason: "Approved".into(),
        message: "approved by bob@fabrikam.example".into(),
        observed_generation: Some(1),
        last_transition_time: Time(k8s_openapi::jiff::Timestamp::now()),
    });
    status.requested_by = Some("alice@fabrikam.example".into());
    status.approval = Some(Approval {
        generation: 1,
        decision: Decision::Approved,
        by: "bob@fabrikam.example".into(),
        groups: vec![],
        at: Time(k8s_openapi::jiff::Timestamp::now()),
        reason: "CHG-1 reviewed".into(),
        retry: None,
        digest: None,
        admitted_under: None,
    });
    write_status(&api, name, status).await;

    for args in [
        vec!["get", "grr", "-n", &ns],
        vec!["get", "guestreset", "-n", &ns],
        vec![
            "get",
            "guestredemptionresets.guestreset.io",
            "-n",
            &ns,
            "-o",
            "wide",
        ],
        vec!["get", "grr", name, "-n", &ns, "-o", "wide"],
    ] {
        let out = kubectl(cp, &args).await;
        assert!(out.status.success(), "kubectl {args:?}: {}", describe(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let mut lines = stdout.lines();
        let header: Vec<&str> = lines
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        let wide = args.contains(&"wide");
        let expected: &[&str] = if wide { &WIDE_COLUMNS } else { &COLUMNS };
        assert_eq!(header, expected, "kubectl {args:?} header:\n{stdout}");
        let row: Vec<&str> = lines
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("kubectl {args:?} shows no row for {name}:\n{stdout}"))
            .split_whitespace()
            .collect();
        assert_eq!(
            row[..6],
            [name, UPN, email, "Succeeded", "Issued", "PendingAcceptance"],
            "kubectl {args:?} row:\n{stdout}"
        );
        if wide {
            assert_eq!(
                row[6..8],
                ["alice@fabrikam.example", "Approved"],
                "kubectl {args:?} row:\n{stdout}"
            );
        }
        assert_eq!(row.len(), expected.len(), "kubectl {args:?} row:\n{stdout}");
    }
}

#[tokio::test]
async fn kubectl_explain_shows_the_doc_comments() {
    let cp = control_plane_with_crd().await;
    let cases = [
        (
            "grr.spec.user",
            vec![
                "The guest whose redemption is reset: exactly one of id, userPrincipalName or mail.",
                "id <string> The user's object id (a GUID).",
                "mail <string> The guest's current mail; must match exactly one user in the directory.",
            ],
        ),
        (
            "grr.spec.email",
            vec!["The new sign-in e-mail (Graph's invitedUserEmailAddress)."],
        ),
        (
            "grr.spec",
            vec!["email <string> -required-", "user <Object> -required-"],
        ),
    ];
    for (path, phrases) in cases {
        // The CRD's OpenAPI document is published a little after it is established.
        wait_until(
            &format!("kubectl explain {path} to show its docs"),
            SETTLE,
            || {
                let phrases = &phrases;
                async move {
                    let out = kubectl(cp, &["explain", path]).await;
                    let text = squash(&out.stdout);
                    let missing: Vec<&&str> =
                        phrases.iter().filter(|p| !text.contains(**p)).collect();
                    if out.status.success() && missing.is_empty() {
                        Ok(Some(()))
                    } else {
                        Err(format!("missing {missing:?} in: {}", describe(&out)))
                    }
                }
            },
        )
        .await;
    }
}

#[tokio::test]
async fn kubectl_wait_follows_ready_and_observed_generation() {
    let cp = control_plane_with_crd().await;
    let ns = cp.namespace("admission-wait").await;
    let api = typed_api(cp, &ns).await;
    let name = "wait-for-me";
    let target = format!("grr/{name}");
    let created = api
        .create(
            &PostParams::default(),
            &resource(
                name,
                json!({"user": {"id": GUID}, "email": "erin@newco.example"}),
            ),
        )
        .await
        .expect("create");
    assert_eq!(created.metadata.generation, Some(1));

    // --timeout=0s checks once without waiting.
    let check_once = [
        "wait",
        "--for=condition=Ready",
        &target,
        "-n",
        &ns,
        "--timeout=0s",
    ];
    let wait_for_ready = [
        "wait",
        "--for=condition=Ready",
        &target,
        "-n",
        &ns,
        "--timeout=90s",
    ];
    let out = kubectl(cp, &check_once).await;
    assert!(
        not_met(&out),
        "Ready without any status: {}",
        describe(&out)
    );

    // A waiting kubectl returns once the status says Ready for this generation.
    let waiting = kubectl_unbounded(cp, &wait_for_ready);
    let (out, written) = tokio::join!(waiting, write_status(&api, name, issued_status(1, UPN)));
    assert!(out.status.success(), "kubectl wait: {}", describe(&out));
    assert_eq!(
        written.metadata.generation,
        Some(1),
        "a status write must not bump the generation"
    );

    // A spec edit is a new generation; the old Ready no longer counts.
    let edited = api
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"email": "erin@otherco.example"}})),
        )
        .await
        .expect("edit the spec");
    assert_eq!(
        edited.metadata.generation,
        Some(2),
        "a spec edit must bump the generation"
    );
    assert_eq!(
        edited.status.as_ref().and_then(|s| s.observed_generation),
        Some(1),
        "a spec edit must leave the status alone"
    );
    let out = kubectl(cp, &check_once).await;
    assert!(
        not_met(&out),
        "kubectl wait accepted a Ready condition of an older generation: {}",
        describe(&out)
    );

    let waiting = kubectl_unbounded(cp, &wait_for_ready);
    let (out, _) = tokio::join!(waiting, write_status(&api, name, issued_status(2, UPN)));
    assert!(
        out.status.success(),
        "kubectl wait after the edit: {}",
        describe(&out)
    );

    // Status and spec are written through separate endpoints: each ignores the other half.
    let via_main = api
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Failed"}})),
        )
        .await
        .expect("patch the main resource");
    assert_eq!(
        via_main.status.as_ref().and_then(|s| s.phase),
        Some(Phase::Succeeded)
    );
    assert_eq!(via_main.metadata.generation, Some(2));
    let via_status = api
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"email": "mallory@evil.example"}})),
        )
        .await
        .expect("patch the status subresource");
    assert_eq!(via_status.spec.email, "erin@otherco.example");
    assert_eq!(via_status.metadata.generation, Some(2));
}

#[tokio::test]
async fn an_update_to_two_user_keys_is_refused() {
    let cp = control_plane_with_crd().await;
    let ns = cp.namespace("admission-update").await;
    let api = typed_api(cp, &ns).await;
    let name = "one-key-only";
    let dir = tempfile::tempdir().expect("temp dir");
    let manifest = |user: &str| {
        format!(
            "apiVersion: guestreset.io/v1alpha1\nkind: GuestRedemptionReset\nmetadata:\n  name: {name}\nspec:\n  user:\n{user}  email: alice@newco.example\n"
        )
    };
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, manifest(&format!("    id: {GUID}\n"))).unwrap();
    let two_keys = dir.path().join("two-keys.yaml");
    std::fs::write(
        &two_keys,
        manifest(&format!("    id: {GUID}\n    mail: alice@contoso.com\n")),
    )
    .unwrap();

    let out = kubectl(cp, &["apply", "-n", &ns, "-f", path_arg(&good)]).await;
    assert!(out.status.success(), "create: {}", describe(&out));

    // kubectl apply of the edited manifest (a patch).
    let out = kubectl(cp, &["apply", "-n", &ns, "-f", path_arg(&two_keys)]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("spec.user") && stderr.contains("exactly one of"),
        "kubectl apply with two user keys: {}",
        describe(&out)
    );

    // A merge patch and a full replace through the API.
    let message = api_error_message(
        api.patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"user": {"mail": "alice@contoso.com"}}})),
        )
        .await,
    );
    assert!(message.contains("spec.user"), "{message}");
    let mut current = api.get(name).await.expect("get");
    current.spec.user.user_principal_name = Some(UPN.into());
    let message = api_error_message(api.replace(name, &PostParams::default(), &current).await);
    assert!(message.contains("spec.user"), "{message}");

    let stored = api.get(name).await.expect("get");
    assert_eq!(stored.spec.user.id.as_deref(), Some(GUID));
    assert_eq!(stored.spec.user.mail, None);
    assert_eq!(stored.spec.user.user_principal_name, None);
    assert_eq!(stored.metadata.generation, Some(1));
}

/// The verdicts of the offline CEL tests in src/resource/reset.rs, asked of the real server
/// (server-side dry run: validated and admitted, never stored).
#[tokio::test]
async fn the_server_agrees_with_the_offline_cel_verdicts() {
    let cp = control_plane_with_crd().await;
    let ns = cp.namespace("admission-parity").await;
    let raw = raw_api(cp, &ns).await;
    let with_email = |email: &str| json!({"user": {"id": GUID}, "email": email});

    // (spec, None when valid or Some(field the refusal must name))
    let mut cases: Vec<(Value, Option<&str>)> = vec![];
    let emails: Value = serde_json::from_str(include_str!("fixtures/emails.json"))
        .expect("tests/fixtures/emails.json");
    for email in emails["valid"].as_array().unwrap() {
        cases.push((with_email(email.as_str().unwrap()), None));
    }
    for email in emails["invalid"].as_array().unwrap() {
        cases.push((with_email(email.as_str().unwrap()), Some("spec.email")));
    }
    for user in [
        json!({"id": GUID}),
        json!({"userPrincipalName": UPN}),
        json!({"mail": "alice@contoso.com"}),
    ] {
        cases.push((json!({"user": user, "email": "a@b.co"}), None));
    }
    for user in [
        json!({}),
        json!({"id": GUID, "userPrincipalName": UPN}),
        json!({"id": GUID, "mail": "alice@contoso.com"}),
        json!({"id": GUID, "userPrincipalName": UPN, "mail": "alice@contoso.com"}),
    ] {
        cases.push((json!({"user": user, "email": "a@b.co"}), Some("spec.user")));
    }
    // The CRD leaves out `nullable` so that an explicit null is dropped before the
    // rules run, and `has()` means a real value.
    cases.push((
        json!({"user": {"id": GUID, "mail": null}, "email": "a@b.co"}),
        None,
    ));
    cases.push((
        json!({"user": {"mail": "bob@contoso"}, "email": "a@b.co"}),
        Some("spec.user.mail"),
    ));
    cases.push((
        json!({"user": {"userPrincipalName": "no spaces@x.example"}, "email": "a@b.co"}),
        Some("spec.user.userPrincipalName"),
    ));
    cases.push((
        json!({"user": {"id": GUID}, "email": "a@b.co", "message": {"ccRecipient": "boss;x@fabrikam.example"}}),
        Some("spec.message.ccRecipient"),
    ));
    cases.push((
        json!({"user": {"id": GUID}, "email": "a@b.co", "message": {"ccRecipient": "boss@fabrikam.example"}}),
        None,
    ));
    for url in [
        "https://myapps.microsoft.com",
        "https://myapps.microsoft.com/?tenantid=x",
    ] {
        cases.push((
            json!({"user": {"id": GUID}, "email": "a@b.co", "redirectUrl": url}),
            None,
        ));
    }
    for url in [
        "http://myapps.microsoft.com",
        "https://",
        "ftp://x",
        "https://a b.example",
        "myapps.microsoft.com",
    ] {
        cases.push((
            json!({"user": {"id": GUID}, "email": "a@b.co", "redirectUrl": url}),
            Some("spec.redirectUrl"),
        ));
    }

    let disagreements = dry_run_disagreements(&raw, &cases).await;
    assert!(
        disagreements.is_empty(),
        "the real API server disagrees with the offline CEL tests in {} of {} cases:\n  {}",
        disagreements.len(),
        cases.len(),
        disagreements.join("\n  ")
    );
    let stored = raw.list(&ListParams::default()).await.expect("list");
    assert!(stored.items.is_empty(), "a dry run stored something");
}

/// docs/resource.md says addresses contain no spaces. In the API server's RE2 `\s` is ASCII
/// `[\t\n\f\r ]` only, so the rules name white space as `\p{Z}\p{Cc}`: a no-break space, an
/// em space, an ideographic space or a vertical tab must be refused too.
#[tokio::test]
async fn non_ascii_white_space_in_addresses_is_refused() {
    let cp = control_plane_with_crd().await;
    let ns = cp.namespace("admission-white-space").await;
    let raw = raw_api(cp, &ns).await;
    let mut cases: Vec<(Value, Option<&str>)> = vec![];
    for space in ['\u{a0}', '\u{2003}', '\u{3000}', '\u{b}'] {
        let address = format!("al{space}ice@newco.example");
        cases.push((
            json!({"user": {"id": GUID}, "email": address}),
            Some("spec.email"),
        ));
        cases.push((
            json!({"user": {"mail": address}, "email": "a@b.co"}),
            Some("spec.user.mail"),
        ));
        cases.push((
            json!({"user": {"userPrincipalName": address}, "email": "a@b.co"}),
            Some("spec.user.userPrincipalName"),
        ));
        cases.push((
            json!({"user": {"id": GUID}, "email": "a@b.co", "message": {"ccRecipient": address}}),
            Some("spec.message.ccRecipient"),
        ));
    }
    let disagreements = dry_run_disagreements(&raw, &cases).await;
    assert!(
        disagreements.is_empty(),
        "{} of {} addresses with white space were admitted:\n  {}",
        disagreements.len(),
        cases.len(),
        disagreements.join("\n  ")
    );
}

/// Asks the server (server-side dry run: validated and admitted, never stored) about
/// each spec, and describes every verdict that differs from the expected one:
/// `None` means accepted, `Some(field)` refused naming that field.
async fn dry_run_disagreements(
    raw: &Api<DynamicObject>,
    cases: &[(Value, Option<&str>)],
) -> Vec<String> {
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let mut disagreements = vec![];
    for (spec, refused_at) in cases {
        let verdict = raw
            .create(&dry_run, &dynamic("dry-run", spec.clone()))
            .await;
        match (refused_at, verdict) {
            (None, Ok(_)) => {}
            (Some(field), Err(kube::Error::Api(status)))
                if status.code == 422 && names_field(&status.message, field) => {}
            (expected, got) => disagreements.push(format!(
                "{spec}: expected {}, got {}",
                expected.map_or("accepted".to_owned(), |f| format!("refused at {f}")),
                match got {
                    Ok(_) => "accepted".to_owned(),
                    Err(e) => e.to_string(),
                }
            )),
        }
    }
    disagreements
}
