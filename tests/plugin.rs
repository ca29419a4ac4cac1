//! `kubectl guestreset` against a real kube-apiserver: the plugin binary runs as a process with
//! `KUBECONFIG` pointing at the test control plane (and once through `kubectl` itself, found on
//! PATH). No controller runs here: where a command needs a status (a plan to approve, a failure
//! to retry, a reset waiting for its next try), the test writes it through the status
//! subresource as the controller would.

#[path = "plugin/world.rs"]
mod world;

use guestreset::plugin::{Exit, decide, retry, write};
use guestreset::resource::{
    Decision, GuestRedemptionReset, REQUESTED_BY_ANNOTATION, RETRY_ANNOTATION,
};
use guestreset_testsupport::wait_until;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use world::*;

const UPN: &str = "alice_contoso.com#EXT#@fabrikam.onmicrosoft.com";

fn annotation(obj: &GuestRedemptionReset, key: &str) -> Option<String> {
    obj.metadata.annotations.as_ref()?.get(key).cloned()
}

fn approval_of(obj: &GuestRedemptionReset) -> Option<guestreset::resource::Approval> {
    obj.status.as_ref()?.approval.clone()
}

fn code(exit: Exit) -> i32 {
    i32::from(exit.code())
}

// ---------------------------------------------------------------------------------------- new

#[tokio::test(flavor = "multi_thread")]
async fn new_prints_manifests_that_kubectl_applies_as_written() {
    let ns = Ns::new("plugin-new").await;
    // Printing needs no cluster: no kubeconfig at all.
    let mut print = ns.plugin_command(&[
        "new",
        "full",
        "--user",
        UPN,
        "--email",
        "alice@newco.example",
        "--change-ref",
        "CHG-20931",
        "--dry-run",
        "--message-body",
        "Your access moves.",
        "--message-language",
        "de-CH",
        "--cc",
        "manager@fabrikam.example",
        "--no-invitation-message",
        "--no-update-mail",
        "--redirect-url",
        "https://portal.fabrikam.example",
        "--redeem-url-secret",
        "full-url",
        "--requested-by",
        "system:serviceaccount:flux-system:kustomize-controller",
    ]);
    print.env("KUBECONFIG", "/nonexistent/kubeconfig");
    let (yaml, _) = expect_exit(&run(print).await, 0);
    let (json_text, _) = expect_exit(
        &ns.plugin(&[
            "new",
            "minimal",
            "--user",
            "alice@contoso.com",
            "--email",
            "a@newco.example",
            "-o",
            "json",
        ])
        .await,
        0,
    );
    let minimal: Value = serde_json::from_str(&json_text).expect("JSON");
    assert_eq!(
        minimal["metadata"]["namespace"],
        ns.name.as_str(),
        "-n goes into the manifest"
    );
    assert!(
        minimal["metadata"].get("annotations").is_none(),
        "no --requested-by, no annotation"
    );

    for manifest in [yaml.as_str(), json_text.as_str()] {
        let mut apply = ns.kubectl();
        apply.args(["apply", "-n", &ns.name, "-f", "-"]);
        let out = run_with_input(apply, manifest.as_bytes()).await;
        expect_exit(&out, 0);
    }

    let full = ns.get("full").await;
    let spec = serde_json::to_value(&full.spec).unwrap();
    assert_eq!(
        spec,
        json!({
            "user": {"userPrincipalName": UPN},
            "email": "alice@newco.example",
            "redirectUrl": "https://portal.fabrikam.example",
            "sendInvitationMessage": false,
            "message": {"language": "de-CH", "body": "Your access moves.", "ccRecipient": "manager@fabrikam.example"},
            "updateMail": false,
            "redeemUrlSecret": {"name": "full-url"},
            "changeRef": "CHG-20931",
            "dryRun": true,
        })
    );
    assert_eq!(
        annotation(&full, REQUESTED_BY_ANNOTATION).as_deref(),
        Some("system:serviceaccount:flux-system:kustomize-controller")
    );
    let minimal = ns.get("minimal").await;
    assert_eq!(minimal.spec.user.mail.as_deref(), Some("alice@contoso.com"));
    assert_eq!(minimal.spec.email, "a@newco.example");
    assert!(
        minimal.spec.update_mail && minimal.spec.send_invitation_message && !minimal.spec.dry_run
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn new_apply_creates_the_resource_with_the_caller_as_requester() {
    let ns = Ns::new("plugin-apply").await;
    let args = [
        "new",
        "bob",
        "--apply",
        "--user",
        GUID,
        "--email",
        "bob@newco.example",
        "--dry-run",
    ];
    let (stdout, stderr) = expect_exit(&ns.plugin(&args).await, 0);
    let printed: GuestRedemptionReset =
        serde_yaml::from_str(&stdout).expect("the created object as YAML");
    let stored = ns.get("bob").await;
    assert_eq!(
        printed.metadata.uid, stored.metadata.uid,
        "prints what was created"
    );
    assert_eq!(printed.metadata.managed_fields, None);
    assert_eq!(
        annotation(&stored, REQUESTED_BY_ANNOTATION).as_deref(),
        Some(ADMIN)
    );
    assert_eq!(stored.spec.user.id.as_deref(), Some(GUID));
    assert!(stored.spec.dry_run);
    assert!(stderr.contains("requested by guestreset-admin"), "{stderr}");
    let manager = &stored.metadata.managed_fields.as_ref().unwrap()[0];
    assert_eq!(manager.manager.as_deref(), Some(write::FIELD_MANAGER));

    let (_, stderr) = expect_exit(&ns.plugin(&args).await, code(Exit::Refused));
    assert!(
        stderr.contains(r#"guestredemptionresets.guestreset.io "bob" already exists"#),
        "{stderr}"
    );

    let (stdout, _) = expect_exit(
        &ns.plugin(&[
            "new",
            "carol",
            "--apply",
            "--user-mail",
            "carol@contoso.com",
            "--email",
            "carol@newco.example",
            "-o",
            "json",
        ])
        .await,
        0,
    );
    let printed: Value = serde_json::from_str(&stdout).expect("the created object as JSON");
    assert_eq!(
        printed["metadata"]["annotations"][REQUESTED_BY_ANNOTATION],
        ADMIN
    );
    assert_eq!(printed["metadata"]["namespace"], ns.name.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_flags_exit_2_naming_the_flag_and_create_nothing() {
    let ns = Ns::new("plugin-usage").await;
    let cases: [(&[&str], &str); 10] = [
        (&["new", "x", "--email", "a@newco.example"], "--user"),
        (
            &[
                "new",
                "x",
                "--user",
                GUID,
                "--user-mail",
                "a@b.co",
                "--email",
                "a@newco.example",
            ],
            "cannot be used with",
        ),
        (
            &["new", "x", "--user", "alice", "--email", "a@newco.example"],
            "'--user <USER>'",
        ),
        (
            &[
                "new",
                "x",
                "--user-id",
                "alice",
                "--email",
                "a@newco.example",
            ],
            "must be a GUID",
        ),
        (
            &[
                "new",
                "x",
                "--user",
                GUID,
                "--email",
                "al+ice@newco.example",
            ],
            "'--email <EMAIL>': must be an e-mail address",
        ),
        (
            &[
                "new",
                "x",
                "--user",
                GUID,
                "--email",
                "a@newco.example",
                "--redirect-url",
                "http://x.example",
            ],
            "'--redirect-url <REDIRECT_URL>': must be an https:// URL",
        ),
        (
            &[
                "new",
                "x",
                "--user",
                GUID,
                "--email",
                "a@newco.example",
                "--requested-by",
                "me",
            ],
            "'--requested-by <REQUESTED_BY>' cannot be used with '--apply'",
        ),
        (
            &["new", "X_X", "--user", GUID, "--email", "a@newco.example"],
            "must be a DNS name",
        ),
        (&["approve", "x"], "--reason"),
        (&["deny", "x", "--reason", " "], "must not be empty"),
    ];
    for (args, words) in cases {
        let mut all = args.to_vec();
        // Would create something if a check were missing.
        if args[0] == "new" {
            all.push("--apply");
        }
        let (_, stderr) = expect_exit(&ns.plugin(&all).await, code(Exit::Usage));
        assert!(stderr.contains(words), "{args:?}: {stderr}");
    }
    let listed = ns.api.list(&Default::default()).await.unwrap();
    assert!(listed.items.is_empty(), "nothing was created");
}

// ---------------------------------------------------------------------- approve and deny

/// `verb` on a resource awaiting approval; returns its output and the stored object.
async fn decide_on_plan(ns: &Ns, verb: &str, reason: &str) -> (String, GuestRedemptionReset) {
    ns.create("alice", "alice@newco.example").await;
    ns.set_status("alice", awaiting_approval(1)).await;
    let before = jiff::Timestamp::now();
    let (stdout, _) = expect_exit(&ns.plugin(&[verb, "alice", "--reason", reason]).await, 0);
    let obj = ns.get("alice").await;
    let approval = approval_of(&obj).expect("a decision was written");
    let elapsed = approval.at.0.duration_since(before).as_secs();
    assert!((-1..60).contains(&elapsed), "at is now: {:?}", approval.at);
    (stdout, obj)
}

#[tokio::test(flavor = "multi_thread")]
async fn approve_shows_the_plan_and_records_the_decision_for_the_current_generation() {
    let ns = Ns::new("plugin-approve").await;
    let (stdout, obj) = decide_on_plan(&ns, "approve", "CHG-20931 reviewed").await;
    assert!(
        stdout.contains(&format!(
            "Plan for generation 1 of {}/alice, requested by {REQUESTER}",
            ns.name
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("  set mail to alice@newco.example\n"),
        "{stdout}"
    );
    assert!(stdout.contains("Approved generation 1"), "{stdout}");
    let approval = approval_of(&obj).unwrap();
    assert_eq!(
        (
            approval.generation,
            approval.decision,
            approval.by.as_str(),
            approval.reason.as_str()
        ),
        (1, Decision::Approved, ADMIN, "CHG-20931 reviewed")
    );
    let status = obj.status.unwrap();
    assert_eq!(
        status.plan.as_deref(),
        Some(PLAN),
        "the rest of the status stays"
    );
    assert_eq!(status.conditions.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn deny_records_a_denial() {
    let ns = Ns::new("plugin-deny").await;
    let (stdout, obj) = decide_on_plan(&ns, "deny", "not the guest's address").await;
    assert!(stdout.contains("Denied generation 1"), "{stdout}");
    let approval = approval_of(&obj).unwrap();
    assert_eq!(
        (
            approval.generation,
            approval.decision,
            approval.by.as_str(),
            approval.reason.as_str()
        ),
        (1, Decision::Denied, ADMIN, "not the guest's address")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn decisions_need_a_plan_for_the_current_generation() {
    let ns = Ns::new("plugin-noplan").await;
    ns.create("alice", "alice@newco.example").await;
    for verb in ["approve", "deny"] {
        let (_, stderr) = expect_exit(
            &ns.plugin(&[verb, "alice", "--reason", "r"]).await,
            code(Exit::NotNow),
        );
        assert!(stderr.contains("not planned yet"), "{stderr}");
    }
    ns.set_status("alice", awaiting_approval(1)).await;
    let edited = ns.edit_email("alice", "alice@other.example").await;
    assert_eq!(edited.metadata.generation, Some(2));
    let (stdout, stderr) = expect_exit(
        &ns.plugin(&["approve", "alice", "--reason", "r"]).await,
        code(Exit::NotNow),
    );
    assert!(
        stderr.contains("generation 2") && stderr.contains("the status is for generation 1"),
        "{stderr}"
    );
    assert!(
        !stdout.contains("Plan for"),
        "the old plan is not shown as current: {stdout}"
    );
    assert_eq!(approval_of(&ns.get("alice").await), None, "nothing written");

    let (_, stderr) = expect_exit(
        &ns.plugin(&["approve", "alice", "--reason", "r", "--without-plan"])
            .await,
        0,
    );
    assert!(stderr.contains("deciding without a plan"), "{stderr}");
    let approval = approval_of(&ns.get("alice").await).unwrap();
    assert_eq!(
        (approval.generation, approval.decision),
        (2, Decision::Approved)
    );
}

/// The merge patches approve, deny and retry send carry the resource version they were built
/// from: after a spec change the API server refuses them, and the refusal is the conflict exit
/// code. (The failpoint test below does the same with the plugin process itself.)
#[tokio::test(flavor = "multi_thread")]
async fn a_write_built_on_an_older_version_is_refused() {
    let ns = Ns::new("plugin-stale").await;
    ns.create("alice", "alice@newco.example").await;
    let read = ns.set_status("alice", awaiting_approval(1)).await;
    ns.edit_email("alice", "alice@other.example").await;

    let approval = decide::record(
        &read,
        Decision::Approved,
        ADMIN,
        jiff::Timestamp::now(),
        "r",
    );
    let patch = decide::patch(&read, &approval);
    let refused = ns
        .api
        .patch_status("alice", &PatchParams::default(), &Patch::Merge(&patch))
        .await;
    let err = guestreset::plugin::Error::from(refused.expect_err("a stale approval is refused"));
    assert_eq!(err.exit(), Exit::Conflict, "{err}");

    let patch = retry::patch(&read, "x");
    let refused = ns
        .api
        .patch("alice", &PatchParams::default(), &Patch::Merge(&patch))
        .await;
    assert_eq!(
        guestreset::plugin::Error::from(refused.unwrap_err()).exit(),
        Exit::Conflict
    );

    let obj = ns.get("alice").await;
    assert_eq!(approval_of(&obj), None);
    assert_eq!(annotation(&obj, RETRY_ANNOTATION), None);
}

/// The plugin itself, stopped between its read and its write while the spec changes.
/// Needs the `failpoints` feature (scripts/test.sh builds the tests with it).
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread")]
async fn a_spec_change_between_read_and_write_fails_the_command_with_a_conflict() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let ns = Ns::new("plugin-race").await;
    ns.create("alice", "alice@newco.example").await;
    let commands: [&[&str]; 2] = [&["approve", "alice", "--reason", "r"], &["retry", "alice"]];
    for (i, args) in commands.into_iter().enumerate() {
        // A plan to approve and a failure to retry, both of the current generation.
        let generation = ns.get("alice").await.metadata.generation.unwrap();
        ns.set_status(
            "alice",
            json!({"observedGeneration": generation, "plan": PLAN,
            "conditions": [ready("False", "GraphRejected", "m", generation)]}),
        )
        .await;
        let mut all = vec!["-n", ns.name.as_str()];
        all.extend_from_slice(args);
        let mut command = ns.plugin_command(&all);
        command
            .env("GUESTRESET_FAILPOINT", "pause-before-write")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = command.spawn().expect("spawn the plugin");
        let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        let reached = tokio::time::timeout(SETTLE, async {
            while let Some(line) = stderr.next_line().await.unwrap() {
                if line.contains("failpoint pause-before-write reached") {
                    return true;
                }
            }
            false
        });
        assert!(
            reached.await.expect("the failpoint within the deadline"),
            "{args:?}"
        );
        ns.edit_email("alice", &format!("alice{i}@other.example"))
            .await;
        child.stdin.take().unwrap().write_all(b"\n").await.unwrap();
        let status = tokio::time::timeout(SETTLE, child.wait())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status.code(), Some(code(Exit::Conflict)), "{args:?}");
    }
    let obj = ns.get("alice").await;
    assert_eq!(approval_of(&obj), None);
    assert_eq!(annotation(&obj, RETRY_ANNOTATION), None);
}

// ------------------------------------------------------------------------------------ retry

#[tokio::test(flavor = "multi_thread")]
async fn retry_sets_a_fresh_value_each_time() {
    let ns = Ns::new("plugin-retry").await;
    ns.create("alice", "alice@newco.example").await;
    ns.set_status(
        "alice",
        outcome("False", "GraphRejected", "Graph said no", 1),
    )
    .await;
    let mut seen = vec![];
    for _ in 0..2 {
        let (stdout, _) = expect_exit(&ns.plugin(&["retry", "alice"]).await, 0);
        let obj = ns.get("alice").await;
        let value = annotation(&obj, RETRY_ANNOTATION).expect("the annotation is set");
        assert!(
            stdout.contains(&format!("{RETRY_ANNOTATION}={value}")),
            "{stdout}"
        );
        assert_eq!(
            obj.metadata.generation,
            Some(1),
            "an annotation is no new generation"
        );
        assert!(!seen.contains(&value), "{value} was used before: {seen:?}");
        seen.push(value);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_refuses_when_nothing_failed() {
    let ns = Ns::new("plugin-noretry").await;
    ns.create("alice", "alice@newco.example").await;
    let (_, stderr) = expect_exit(&ns.plugin(&["retry", "alice"]).await, code(Exit::NotNow));
    assert!(
        stderr.contains("has not reported on generation 1"),
        "{stderr}"
    );
    for (status, reason) in [
        ("True", "Issued"),
        ("Unknown", "Throttled"),
        ("Unknown", "AwaitingApproval"),
    ] {
        ns.set_status("alice", outcome(status, reason, "m", 1))
            .await;
        let (_, stderr) = expect_exit(&ns.plugin(&["retry", "alice"]).await, code(Exit::NotNow));
        assert!(
            stderr.contains(&format!("nothing to retry: generation 1 is {reason}")),
            "{stderr}"
        );
    }
    ns.set_status("alice", outcome("False", "GraphRejected", "m", 1))
        .await;
    ns.edit_email("alice", "alice@other.example").await;
    let (_, stderr) = expect_exit(&ns.plugin(&["retry", "alice"]).await, code(Exit::NotNow));
    assert!(
        stderr.contains("generation 2 has not been tried yet"),
        "{stderr}"
    );
    assert_eq!(annotation(&ns.get("alice").await, RETRY_ANNOTATION), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_after_an_unknown_outcome_needs_a_yes() {
    let ns = Ns::new("plugin-unknown").await;
    ns.create("alice", "alice@newco.example").await;
    ns.set_status(
        "alice",
        outcome("False", "OutcomeUnknown", "no evidence either way", 1),
    )
    .await;
    let (_, stderr) = expect_exit(
        &ns.plugin(&["retry", "alice"]).await,
        code(Exit::Unconfirmed),
    );
    assert!(
        stderr.contains("a second invitation may follow") && stderr.contains("--yes"),
        "{stderr}"
    );
    assert_eq!(annotation(&ns.get("alice").await, RETRY_ANNOTATION), None);

    // On a terminal (script(1) gives the plugin one) it asks; only a yes retries.
    for (answer, exit, retried) in [("n\n", code(Exit::Unconfirmed), false), ("y\n", 0, true)] {
        let line = format!("{PLUGIN} -n {} retry alice", ns.name);
        let mut pty = tokio::process::Command::new("script");
        pty.args(["--quiet", "--return", "--command", &line, "/dev/null"])
            .env("KUBECONFIG", ns.cp.kubeconfig_path())
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .kill_on_drop(true);
        let out = run_with_input(pty, answer.as_bytes()).await;
        let (stdout, _) = expect_exit(&out, exit);
        assert!(
            stdout.contains("a second invitation may follow") && stdout.contains("[y/N]"),
            "{stdout}"
        );
        let value = annotation(&ns.get("alice").await, RETRY_ANNOTATION);
        assert_eq!(value.is_some(), retried, "{answer:?}: {value:?}");
    }
    let before = annotation(&ns.get("alice").await, RETRY_ANNOTATION);
    expect_exit(&ns.plugin(&["retry", "alice", "--yes"]).await, 0);
    let after = annotation(&ns.get("alice").await, RETRY_ANNOTATION);
    assert!(after.is_some() && after != before, "{before:?} {after:?}");
}

// --------------------------------------------------------------------------- status and plan

async fn three_resets(ns: &Ns) -> jiff::Timestamp {
    ns.create("awaiting", "a@newco.example").await;
    ns.set_status("awaiting", awaiting_approval(1)).await;

    let next = jiff::Timestamp::now() + jiff::SignedDuration::from_mins(2);
    ns.create("throttled", "t@newco.example").await;
    let mut throttled = outcome(
        "Unknown",
        "Throttled",
        "Graph answered 429; retrying after Retry-After",
        1,
    );
    throttled["nextAttemptAt"] = next.strftime("%Y-%m-%dT%H:%M:%SZ").to_string().into();
    throttled["requestedBy"] = REQUESTER.into();
    ns.set_status("throttled", throttled).await;

    ns.create("issued", "i@newco.example").await;
    let mut issued = outcome("True", "Issued", "invitation issued", 1);
    issued["conditions"].as_array_mut().unwrap().push(condition(
        "Redeemed",
        "Unknown",
        "PendingAcceptance",
        "issued 1m ago",
        1,
    ));
    issued["approval"] = json!({"generation": 1, "decision": "Approved", "by": "bob@fabrikam.example", "at": "2026-12-02T13:58:00Z", "reason": "ok"});
    ns.set_status("issued", issued).await;
    ns.edit_email("issued", "i2@newco.example").await;
    next
}

fn row<'a>(table: &'a str, name: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.split_whitespace().any(|w| w == name))
        .unwrap_or_else(|| panic!("no row {name} in\n{table}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn status_shows_reason_requester_approval_redemption_and_next_try() {
    let ns = Ns::new("plugin-status").await;
    let next = three_resets(&ns).await;
    let (table, _) = expect_exit(&ns.plugin(&["status"]).await, 0);
    assert!(table.starts_with("NAME "), "{table}");
    let awaiting = row(&table, "awaiting");
    assert!(
        awaiting.contains("AwaitingApproval") && awaiting.contains(REQUESTER),
        "{awaiting}"
    );
    let throttled = row(&table, "throttled");
    let clock = next.strftime("%H:%M:%SZ").to_string();
    assert!(
        throttled.contains("Throttled") && throttled.contains(&format!("{clock}, in ")),
        "{throttled}"
    );
    let issued = row(&table, "issued");
    assert!(
        issued.contains("Issued (gen 1)"),
        "the outcome is of an older generation: {issued}"
    );
    assert!(
        issued.contains("Approved by bob@fabrikam.example (gen 1, stale)"),
        "{issued}"
    );
    assert!(issued.contains("PendingAcceptance"), "{issued}");

    let (detail, _) = expect_exit(&ns.plugin(&["status", "throttled"]).await, 0);
    assert!(
        detail.contains("Message:      Graph answered 429; retrying after Retry-After\n"),
        "{detail}"
    );
    assert!(
        detail.contains(&format!("Next try:     {clock}, in ")),
        "{detail}"
    );

    let (json_text, _) = expect_exit(&ns.plugin(&["status", "-o", "json"]).await, 0);
    let listed: Value = serde_json::from_str(&json_text).expect("JSON");
    let names: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["awaiting", "issued", "throttled"]);
    assert_eq!(listed["items"][1]["generation"], 2);
    assert_eq!(listed["items"][1]["status"]["approval"]["generation"], 1);
    let (yaml, _) = expect_exit(&ns.plugin(&["status", "throttled", "-o", "yaml"]).await, 0);
    let one: Value = serde_yaml::from_str(&yaml).expect("YAML");
    assert_eq!(one["status"]["conditions"][0]["reason"], "Throttled");
    assert_eq!(one["namespace"], ns.name.as_str());

    let (wide, _) = expect_exit(&ns.plugin(&["status", "-A"]).await, 0);
    assert!(wide.starts_with("NAMESPACE "), "{wide}");
    let ours: Vec<&str> = wide
        .lines()
        .filter(|l| l.split_whitespace().next() == Some(ns.name.as_str()))
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(ours, ["awaiting", "issued", "throttled"], "{wide}");
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_prints_the_plan_or_says_why_there_is_none() {
    let ns = Ns::new("plugin-plan").await;
    ns.create("alice", "alice@newco.example").await;
    let (_, stderr) = expect_exit(&ns.plugin(&["plan", "alice"]).await, code(Exit::NotNow));
    assert!(stderr.contains("not planned yet"), "{stderr}");

    ns.set_status("alice", awaiting_approval(1)).await;
    let (text, _) = expect_exit(&ns.plugin(&["plan", "alice"]).await, 0);
    assert!(
        text.starts_with(&format!(
            "Plan for generation 1 of {}/alice, requested by {REQUESTER}:\n",
            ns.name
        )),
        "{text}"
    );
    assert!(
        text.contains("  invite alice@newco.example with resetRedemption\n"),
        "{text}"
    );
    for format in ["json", "yaml"] {
        let (out, _) = expect_exit(&ns.plugin(&["plan", "alice", "-o", format]).await, 0);
        let view: Value = serde_yaml::from_str(&out).expect("JSON and YAML both parse as YAML");
        assert_eq!(
            (view["plan"].as_str(), view["generation"].as_i64()),
            (Some(PLAN), Some(1)),
            "{format}"
        );
        assert_eq!(view["requestedBy"], REQUESTER, "{format}");
    }

    ns.set_status(
        "alice",
        json!({"plan": null, "conditions": [ready("True", "Issued", "issued", 1)]}),
    )
    .await;
    let (_, stderr) = expect_exit(&ns.plugin(&["plan", "alice"]).await, code(Exit::NotNow));
    assert!(stderr.contains("approval is not required"), "{stderr}");
}

// ------------------------------------------------------------------------ kubectl conventions

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_resource_is_not_found_for_every_command() {
    let ns = Ns::new("plugin-missing").await;
    let commands: [&[&str]; 5] = [
        &["status", "ghost"],
        &["plan", "ghost"],
        &["approve", "ghost", "--reason", "r"],
        &["deny", "ghost", "--reason", "r"],
        &["retry", "ghost", "--yes"],
    ];
    for args in commands {
        let (_, stderr) = expect_exit(&ns.plugin(args).await, code(Exit::NotFound));
        assert!(
            stderr.contains(r#"guestredemptionresets.guestreset.io "ghost" not found"#),
            "{args:?}: {stderr}"
        );
    }
    let args = [
        "-n",
        "no-such-namespace-here",
        "new",
        "x",
        "--apply",
        "--user",
        GUID,
        "--email",
        "a@newco.example",
    ];
    let (_, stderr) = expect_exit(&run(ns.plugin_command(&args)).await, code(Exit::NotFound));
    assert!(
        stderr.contains(r#"namespaces "no-such-namespace-here" not found"#),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn namespace_context_and_kubeconfig_choose_where_to_look() {
    let here = Ns::new("plugin-here").await;
    let there = Ns::new("plugin-there").await;
    there.create("alice", "alice@newco.example").await;
    let dir = tempfile::tempdir().unwrap();
    let contexts = [
        Context {
            name: "here",
            namespace: &here.name,
            impersonate: None,
        },
        Context {
            name: "there",
            namespace: &there.name,
            impersonate: None,
        },
    ];
    let file = kubeconfig(here.cp, dir.path(), &contexts);
    let with = |args: &[&str]| {
        let mut command = here.plugin_command(args);
        command.env("KUBECONFIG", &file);
        command
    };
    expect_exit(&run(with(&["status", "alice"])).await, code(Exit::NotFound));
    expect_exit(
        &run(with(&["status", "alice", "--context", "there"])).await,
        0,
    );
    expect_exit(&run(with(&["status", "alice", "-n", &there.name])).await, 0);
    let mut flag = with(&[
        "--kubeconfig",
        file.to_str().unwrap(),
        "--context",
        "there",
        "plan",
        "alice",
    ]);
    flag.env("KUBECONFIG", "/nonexistent/kubeconfig");
    let (_, stderr) = expect_exit(&run(flag).await, code(Exit::NotNow));
    assert!(
        stderr.contains("not planned yet"),
        "found it through --kubeconfig: {stderr}"
    );

    let create = [
        "--context",
        "there",
        "new",
        "bob",
        "--apply",
        "--user",
        GUID,
        "--email",
        "b@newco.example",
    ];
    expect_exit(&run(with(&create)).await, 0);
    there.get("bob").await;
    let (_, stderr) = expect_exit(
        &run(with(&["status", "--context", "nowhere"])).await,
        code(Exit::Failure),
    );
    assert!(stderr.contains("nowhere"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_finds_the_plugin_on_path() {
    let ns = Ns::new("plugin-kubectl").await;
    ns.create("alice", "alice@newco.example").await;
    // Installed as a user would: a directory on PATH holding the binary (cargo's own has
    // kubectl-guestreset.d too, which kubectl would take for a broken plugin).
    let installed = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(PLUGIN, installed.path().join("kubectl-guestreset")).unwrap();
    let path = std::env::join_paths([installed.path(), ns.cp.bin_dir()]).unwrap();
    // Without kubectl's own flags: it refuses flags before a plugin's name.
    let kubectl = |args: &[&str]| {
        let mut command = tokio::process::Command::from(ns.cp.kubectl());
        command.env("PATH", &path).args(args).kill_on_drop(true);
        command
    };
    let (list, _) = expect_exit(&run(kubectl(&["plugin", "list"])).await, 0);
    assert!(list.contains("kubectl-guestreset"), "{list}");
    let (help, _) = expect_exit(&run(kubectl(&["guestreset", "--help"])).await, 0);
    assert!(
        help.contains("Usage: kubectl guestreset") && help.contains("Exit codes:"),
        "{help}"
    );
    let (table, _) = expect_exit(
        &run(kubectl(&["guestreset", "status", "-n", &ns.name])).await,
        0,
    );
    assert!(row(&table, "alice").starts_with("alice "), "{table}");
    let out = run(kubectl(&["guestreset", "retry", "ghost", "-n", &ns.name])).await;
    expect_exit(&out, code(Exit::NotFound));
}

// ------------------------------------------------------------ the API server is the authority

#[tokio::test(flavor = "multi_thread")]
async fn rbac_decides_who_may_approve_and_the_approver_is_who_the_server_says() {
    let ns = Ns::new("plugin-rbac").await;
    ns.create("alice", "alice@newco.example").await;
    ns.set_status("alice", awaiting_approval(1)).await;
    let (viewer, approver) = (
        format!("viewer-{}", ns.name),
        format!("approver-{}", ns.name),
    );
    grant(&ns, &viewer, &[]).await;
    grant(&ns, &approver, &["guestredemptionresets/status"]).await;
    let dir = tempfile::tempdir().unwrap();
    let as_user = |user: &str, args: &[&str]| {
        let contexts = [Context {
            name: "me",
            namespace: &ns.name,
            impersonate: Some(user),
        }];
        let file = kubeconfig(ns.cp, &dir.path().join(user), &contexts);
        let mut command = ns.plugin_command(args);
        command.env("KUBECONFIG", file);
        command
    };

    let (_, stderr) = expect_exit(
        &run(as_user(&viewer, &["approve", "alice", "--reason", "r"])).await,
        code(Exit::Refused),
    );
    let refusal = format!(
        r#"User "{viewer}" cannot patch resource "guestredemptionresets/status" in API group "guestreset.io""#
    );
    assert!(
        stderr.contains(&refusal) && stderr.starts_with("Error from server (Forbidden): "),
        "{stderr}"
    );
    assert_eq!(approval_of(&ns.get("alice").await), None);

    expect_exit(
        &run(as_user(&approver, &["approve", "alice", "--reason", "r"])).await,
        0,
    );
    let approval = approval_of(&ns.get("alice").await).unwrap();
    assert_eq!(
        approval.by, approver,
        "the approver as the API server authenticated them"
    );
}

/// A Role in the test namespace: read the resets, patch `patchable` subresources.
async fn grant(ns: &Ns, user: &str, patchable: &[&str]) {
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    let client = ns.cp.client().await;
    let mut rules = vec![
        json!({"apiGroups": ["guestreset.io"], "resources": ["guestredemptionresets"], "verbs": ["get", "list"]}),
    ];
    if !patchable.is_empty() {
        rules.push(
            json!({"apiGroups": ["guestreset.io"], "resources": patchable, "verbs": ["patch"]}),
        );
    }
    let role: Role =
        serde_json::from_value(json!({"metadata": {"name": user}, "rules": rules})).unwrap();
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": user},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": user},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }))
    .unwrap();
    let pp = Default::default();
    kube::Api::<Role>::namespaced(client.clone(), &ns.name)
        .create(&pp, &role)
        .await
        .unwrap();
    kube::Api::<RoleBinding>::namespaced(client, &ns.name)
        .create(&pp, &binding)
        .await
        .unwrap();
}

/// A stand-in for the chart's admission policy (its requester rule only), bound to this test's
/// namespace: its refusal reaches the user word for word, with the refusal's exit code.
#[tokio::test(flavor = "multi_thread")]
async fn an_admission_refusal_is_shown_verbatim() {
    let ns = Ns::new("plugin-policy").await;
    let message = "the requester of a generation cannot approve it";
    install_requester_policy(&ns, message).await;
    let args = [
        "new",
        "alice",
        "--apply",
        "--user",
        GUID,
        "--email",
        "alice@newco.example",
    ];
    expect_exit(&ns.plugin(&args).await, 0);
    ns.set_status(
        "alice",
        json!({"observedGeneration": 1, "plan": PLAN, "requestedBy": ADMIN,
        "conditions": [ready("Unknown", "AwaitingApproval", "waiting", 1)]}),
    )
    .await;
    let (_, stderr) = expect_exit(
        &ns.plugin(&["approve", "alice", "--reason", "mine"]).await,
        code(Exit::Refused),
    );
    let name = format!("plugin-test-requester-{}", ns.name);
    let expected = format!(
        "Error from server (Invalid): guestredemptionresets.guestreset.io \"alice\" is forbidden: ValidatingAdmissionPolicy '{name}' with binding '{name}' denied request: {message}\n"
    );
    assert!(stderr.ends_with(&expected), "{stderr}");
    assert_eq!(approval_of(&ns.get("alice").await), None);
}

async fn install_requester_policy(ns: &Ns, message: &str) {
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    let name = format!("plugin-test-requester-{}", ns.name);
    let client = ns.cp.client().await;
    let policy: ValidatingAdmissionPolicy = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": ["guestreset.io"], "apiVersions": ["*"],
                "operations": ["UPDATE"], "resources": ["guestredemptionresets/status"],
            }]},
            "validations": [{
                "expression": "!has(object.status.approval) || object.status.approval.by != object.metadata.annotations['guestreset.io/requested-by']",
                "message": message,
            }],
        },
    }))
    .unwrap();
    let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns.name}}},
        },
    }))
    .unwrap();
    let pp = Default::default();
    kube::Api::<ValidatingAdmissionPolicy>::all(client.clone())
        .create(&pp, &policy)
        .await
        .unwrap();
    kube::Api::<ValidatingAdmissionPolicyBinding>::all(client)
        .create(&pp, &binding)
        .await
        .unwrap();
    // A policy takes effect asynchronously: probe with a server-side dry run until it refuses.
    ns.create("probe", "p@newco.example").await;
    let api = &ns.api;
    let probe = json!({"status": {"approval": {"generation": 1, "decision": "Approved", "by": ADMIN,
        "at": "2026-12-02T14:00:00Z", "reason": "probe"}}});
    wait_until("the admission policy to be in force", SETTLE, || async {
        let dry = PatchParams {
            dry_run: true,
            ..PatchParams::default()
        };
        match api.patch_status("probe", &dry, &Patch::Merge(&probe)).await {
            Err(kube::Error::Api(s)) if s.message.contains(message) => Ok(Some(())),
            other => Err(format!("not yet refused: {other:?}")),
        }
    })
    .await;
}
