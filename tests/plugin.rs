//! `kubectl guestreset` against a real kube-apiserver: the plugin binary runs as a process with
//! `KUBECONFIG` pointing at the test control plane (and once through `kubectl` itself, found on
//! PATH). No controller runs here: where a command needs a status (a plan to approve, a failure
//! to retry, a reset waiting for its next try), the test writes it through the status
//! subresource as the controller would.

#[path = "plugin/world.rs"]
mod world;

use guestreset::plugin::session::Caller;
use guestreset::plugin::{Exit, decide, retry, write};
use guestreset::resource::{
    Approval, Decision, GuestRedemptionReset, REQUESTED_BY_ANNOTATION, RETRY_ANNOTATION,
};
use std::path::{Path, PathBuf};

use guestreset_testsupport::{repo_root, wait_until};
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use world::*;

const UPN: &str = "alice_contoso.com#EXT#@fabrikam.onmicrosoft.com";
const FLUX: &str = "system:serviceaccount:flux-system:kustomize-controller";

fn annotation(obj: &GuestRedemptionReset, key: &str) -> Option<String> {
    obj.metadata.annotations.as_ref()?.get(key).cloned()
}

fn approval_of(obj: &GuestRedemptionReset) -> Option<Approval> {
    obj.status.as_ref()?.approval.clone()
}

fn code(exit: Exit) -> i32 {
    i32::from(exit.code())
}

// ---------------------------------------------------------------------------------------- new

#[tokio::test(flavor = "multi_thread")]
async fn new_prints_manifests_that_kubectl_applies_as_written() {
    let ns = Ns::new("plugin-new").await;
    let mut full = words(
        "new full --email alice@newco.example --change-ref CHG-20931 --dry-run
         --message-language de-CH --cc manager@fabrikam.example --no-invitation-message
         --no-update-mail --redirect-url https://portal.fabrikam.example
         --redeem-url-secret full-url",
    );
    full.extend([
        "--user",
        UPN,
        "--message-body",
        "Your access moves.",
        "--requested-by",
        FLUX,
    ]);
    let mut print = ns.plugin_command(&full);
    // Printing needs no cluster, not even a kubeconfig.
    print.env("KUBECONFIG", "/nonexistent/kubeconfig");
    let (yaml, _) = expect_exit(&run(print).await, 0);
    let minimal = words("new minimal --user alice@contoso.com --email a@newco.example -o json");
    let (json_text, _) = ns.expect(&minimal, 0).await;
    let printed: Value = serde_json::from_str(&json_text).expect("JSON");
    assert_eq!(
        printed["metadata"]["namespace"],
        ns.name.as_str(),
        "-n goes into the manifest"
    );
    assert!(
        printed["metadata"].get("annotations").is_none(),
        "no --requested-by: none"
    );

    for manifest in [&yaml, &json_text] {
        let mut apply = ns.kubectl();
        apply.args(["apply", "-n", &ns.name, "-f", "-"]);
        expect_exit(&run_with_input(apply, manifest.as_bytes()).await, 0);
    }

    let full = ns.get("full").await;
    assert_eq!(
        serde_json::to_value(&full.spec).unwrap(),
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
        Some(FLUX)
    );
    let minimal = ns.get("minimal").await;
    assert_eq!(minimal.spec.user.mail.as_deref(), Some("alice@contoso.com"));
    assert_eq!(minimal.spec.email, "a@newco.example");
    let spec = &minimal.spec;
    assert!(spec.update_mail && spec.send_invitation_message && !spec.dry_run);
}

#[tokio::test(flavor = "multi_thread")]
async fn new_apply_creates_the_resource_with_the_caller_as_requester() {
    let ns = Ns::new("plugin-apply").await;
    let bob = format!("new bob --apply --user {GUID} --email bob@newco.example --dry-run");
    let (stdout, stderr) = ns.expect(&words(&bob), 0).await;
    let printed: GuestRedemptionReset = serde_yaml::from_str(&stdout).expect("the created object");
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

    let (_, stderr) = ns.expect(&words(&bob), code(Exit::Refused)).await;
    let taken = r#"Error from server (AlreadyExists): guestredemptionresets.guestreset.io "bob" already exists"#;
    assert!(stderr.contains(taken), "{stderr}");

    let carol =
        "new carol --apply --user-mail carol@contoso.com --email carol@newco.example -o json";
    let (stdout, _) = ns.expect(&words(carol), 0).await;
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
    let new = format!("new x --apply --user {GUID} --email a@newco.example");
    let cases = [
        ("new x --apply --email a@newco.example".to_owned(), "--user"),
        (
            format!("{new} --user-mail a@b.co"),
            "'--user <USER>' cannot be used with",
        ),
        (
            "new x --apply --user alice --email a@b.co".into(),
            "invalid value 'alice' for '--user <USER>'",
        ),
        (
            "new x --apply --user-id alice --email a@b.co".into(),
            "must be a GUID",
        ),
        (
            format!("new x --apply --user {GUID} --email al+ice@newco.example"),
            "'--email <EMAIL>': must be an e-mail address",
        ),
        (
            format!("{new} --redirect-url http://x.example"),
            "'--redirect-url <REDIRECT_URL>': must be an https:// URL",
        ),
        (
            format!("{new} --requested-by me"),
            "'--apply' cannot be used with '--requested-by <REQUESTED_BY>'",
        ),
        (
            format!("new X_X --apply --user {GUID} --email a@b.co"),
            "must be a DNS name",
        ),
        ("approve x".into(), "--reason <REASON>"),
        (
            "status -o wide".into(),
            "invalid value 'wide' for '--output <OUTPUT>'",
        ),
    ];
    for (line, words_expected) in &cases {
        let (_, stderr) = ns.expect(&words(line), code(Exit::Usage)).await;
        assert!(stderr.contains(words_expected), "{line}: {stderr}");
    }
    let (_, stderr) = ns
        .expect(&["deny", "x", "--reason", " "], code(Exit::Usage))
        .await;
    assert!(stderr.contains("must not be empty"), "{stderr}");
    let listed = ns.api.list(&Default::default()).await.unwrap();
    assert!(listed.items.is_empty(), "nothing was created");
}

// ---------------------------------------------------------------------- approve and deny

/// `verb` on a resource awaiting approval; returns its output and the stored object.
async fn decide_on_plan(ns: &Ns, verb: &str, reason: &str) -> (String, GuestRedemptionReset) {
    ns.create("alice", "alice@newco.example").await;
    ns.set_status("alice", awaiting_approval(1)).await;
    let before = jiff::Timestamp::now();
    let args = [verb, "alice", "--generation", "1", "--reason", reason];
    let (stdout, _) = ns.expect(&args, 0).await;
    let obj = ns.get("alice").await;
    let approval = approval_of(&obj).expect("a decision was written");
    let elapsed = approval.at.0.duration_since(before).as_secs();
    assert!((-1..60).contains(&elapsed), "at is now: {:?}", approval.at);
    (stdout, obj)
}

fn record(approval: &Approval) -> (i64, Decision, &str, &str) {
    let Approval {
        generation,
        decision,
        by,
        reason,
        ..
    } = approval;
    (*generation, *decision, by, reason)
}

#[tokio::test(flavor = "multi_thread")]
async fn approve_shows_the_plan_and_records_the_decision_for_the_current_generation() {
    let ns = Ns::new("plugin-approve").await;
    let (stdout, obj) = decide_on_plan(&ns, "approve", "CHG-20931 reviewed").await;
    let heading = format!(
        "Plan for generation 1 of {}/alice, requested by {REQUESTER}:\n",
        ns.name
    );
    assert!(stdout.starts_with(&heading), "{stdout}");
    assert!(
        stdout.contains("  set mail to alice@newco.example\n"),
        "{stdout}"
    );
    assert!(stdout.contains("Approved generation 1"), "{stdout}");
    let approval = approval_of(&obj).unwrap();
    let expected = (1, Decision::Approved, ADMIN, "CHG-20931 reviewed");
    assert_eq!(record(&approval), expected);
    // The groups the API server authenticated the approver with, for the controller's check.
    for group in ["system:masters", "system:authenticated"] {
        assert!(
            approval.groups.iter().any(|g| g == group),
            "{:?}",
            approval.groups
        );
    }
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
    let expected = (1, Decision::Denied, ADMIN, "not the guest's address");
    assert_eq!(record(&approval_of(&obj).unwrap()), expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn decisions_need_a_plan_for_the_current_generation() {
    let ns = Ns::new("plugin-noplan").await;
    ns.create("alice", "alice@newco.example").await;
    for verb in ["approve", "deny"] {
        let args = [verb, "alice", "--reason", "r"];
        let (_, stderr) = ns.expect(&args, code(Exit::NotNow)).await;
        assert!(stderr.contains("not planned yet"), "{stderr}");
    }
    ns.set_status("alice", awaiting_approval(1)).await;
    let edited = ns.edit_email("alice", "alice@other.example").await;
    assert_eq!(edited.metadata.generation, Some(2));
    let approve = words("approve alice --reason r");
    let (stdout, stderr) = ns.expect(&approve, code(Exit::NotNow)).await;
    let why = "generation 2 (the status is for generation 1)";
    assert!(stderr.contains(why), "{stderr}");
    assert!(
        !stdout.contains("Plan for"),
        "no old plan shown as current: {stdout}"
    );
    assert_eq!(approval_of(&ns.get("alice").await), None, "nothing written");

    // --without-plan only with a name for what was reviewed.
    let blind = words("approve alice --reason r --without-plan");
    let (_, stderr) = ns.expect(&blind, code(Exit::NotNow)).await;
    assert!(
        stderr.contains("needs --generation or --digest"),
        "{stderr}"
    );
    let without = words("approve alice --reason r --without-plan --generation 2");
    let (_, stderr) = ns.expect(&without, 0).await;
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
    let conflict = |result: Result<GuestRedemptionReset, kube::Error>| {
        let err = guestreset::plugin::Error::from(result.expect_err("a stale write is refused"));
        assert_eq!(err.exit(), Exit::Conflict, "{err}");
    };

    let now = jiff::Timestamp::now();
    let approval = decide::record(&read, Decision::Approved, &Caller::named(ADMIN), now, "r");
    let patch = Patch::Merge(decide::patch(&read, &approval));
    conflict(
        ns.api
            .patch_status("alice", &PatchParams::default(), &patch)
            .await,
    );
    let patch = Patch::Merge(retry::patch(&read, "x", ADMIN));
    conflict(ns.api.patch("alice", &PatchParams::default(), &patch).await);

    let obj = ns.get("alice").await;
    assert_eq!(approval_of(&obj), None);
    assert_eq!(annotation(&obj, RETRY_ANNOTATION), None);
}

/// The plugin itself, stopped between its read and its write while the spec changes.
/// Needs the `failpoints` feature (scripts/test.sh builds the tests with it).
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread")]
async fn a_spec_change_between_read_and_write_fails_the_command_with_a_conflict() {
    use std::process::Stdio;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let ns = Ns::new("plugin-race").await;
    ns.create("alice", "alice@newco.example").await;
    for (i, line) in ["approve alice --generation 1 --reason r", "retry alice"]
        .into_iter()
        .enumerate()
    {
        // A plan to approve and a failure to retry, both of the current generation.
        let generation = ns.get("alice").await.metadata.generation.unwrap();
        let failed = ready("False", "GraphRejected", "m", generation);
        let status =
            json!({"observedGeneration": generation, "plan": PLAN, "conditions": [failed]});
        ns.set_status("alice", status).await;
        let mut args = vec!["-n", ns.name.as_str()];
        args.extend(words(line));
        let mut command = ns.plugin_command(&args);
        command
            .env("GUESTRESET_FAILPOINT", "pause-before-write")
            .stdin(Stdio::piped())
            .stderr(Stdio::piped());
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
            "{line}"
        );
        ns.edit_email("alice", &format!("alice{i}@other.example"))
            .await;
        child.stdin.take().unwrap().write_all(b"\n").await.unwrap();
        let status = tokio::time::timeout(SETTLE, child.wait())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status.code(), Some(code(Exit::Conflict)), "{line}");
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
        let (stdout, _) = ns.expect(&["retry", "alice"], 0).await;
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
    let retry = ["retry", "alice"];
    let (_, stderr) = ns.expect(&retry, code(Exit::NotNow)).await;
    assert!(
        stderr.contains("has not reported on generation 1"),
        "{stderr}"
    );
    let unfailed = [
        ("True", "Issued"),
        ("Unknown", "Throttled"),
        ("Unknown", "AwaitingApproval"),
    ];
    for (status, reason) in unfailed {
        ns.set_status("alice", outcome(status, reason, "m", 1))
            .await;
        let (_, stderr) = ns.expect(&retry, code(Exit::NotNow)).await;
        let why = format!("nothing to retry: generation 1 is {reason}");
        assert!(stderr.contains(&why), "{stderr}");
    }
    ns.set_status("alice", outcome("False", "GraphRejected", "m", 1))
        .await;
    ns.edit_email("alice", "alice@other.example").await;
    let (_, stderr) = ns.expect(&retry, code(Exit::NotNow)).await;
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
    let unknown = outcome("False", "OutcomeUnknown", "no evidence either way", 1);
    ns.set_status("alice", unknown).await;
    let (_, stderr) = ns
        .expect(&["retry", "alice"], code(Exit::Unconfirmed))
        .await;
    assert!(
        stderr.contains("a second invitation may follow"),
        "{stderr}"
    );
    assert!(stderr.contains("--yes"), "{stderr}");
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
        let (terminal, _) = expect_exit(&run_with_input(pty, answer.as_bytes()).await, exit);
        assert!(
            terminal.contains("a second invitation may follow"),
            "{terminal}"
        );
        assert!(terminal.contains("[y/N]"), "{terminal}");
        let value = annotation(&ns.get("alice").await, RETRY_ANNOTATION);
        assert_eq!(value.is_some(), retried, "{answer:?}: {value:?}");
    }
    let before = annotation(&ns.get("alice").await, RETRY_ANNOTATION);
    ns.expect(&["retry", "alice", "--yes"], 0).await;
    let after = annotation(&ns.get("alice").await, RETRY_ANNOTATION);
    assert!(after.is_some() && after != before, "{before:?} {after:?}");
}

// --------------------------------------------------------------------------- status and plan

/// One reset awaiting approval, one throttled until about two minutes from now (returned),
/// one issued whose spec changed since (its approval is stale) and that awaits the redemption.
async fn three_resets(ns: &Ns) -> jiff::Timestamp {
    ns.create("awaiting", "a@newco.example").await;
    ns.set_status("awaiting", awaiting_approval(1)).await;

    let next = jiff::Timestamp::now() + jiff::SignedDuration::from_mins(2);
    ns.create("throttled", "t@newco.example").await;
    let message = "Graph answered 429; retrying after Retry-After";
    let mut throttled = outcome("Unknown", "Throttled", message, 1);
    throttled["nextAttemptAt"] = next.strftime("%Y-%m-%dT%H:%M:%SZ").to_string().into();
    throttled["requestedBy"] = REQUESTER.into();
    ns.set_status("throttled", throttled).await;

    ns.create("issued", "i@newco.example").await;
    let mut issued = outcome("True", "Issued", "invitation issued", 1);
    let pending = condition(
        "Redeemed",
        "Unknown",
        "PendingAcceptance",
        "issued 1m ago",
        1,
    );
    issued["conditions"].as_array_mut().unwrap().push(pending);
    issued["approval"] = json!({"generation": 1, "decision": "Approved",
        "by": "bob@fabrikam.example", "at": "2026-12-02T13:58:00Z", "reason": "ok"});
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
    let (table, _) = ns.expect(&["status"], 0).await;
    assert!(table.starts_with("NAME "), "{table}");
    let awaiting = row(&table, "awaiting");
    assert!(
        awaiting.contains("AwaitingApproval") && awaiting.contains(REQUESTER),
        "{awaiting}"
    );
    let throttled = row(&table, "throttled");
    let due = format!("{}, in ", next.strftime("%H:%M:%SZ"));
    assert!(
        throttled.contains("Throttled") && throttled.contains(&due),
        "{throttled}"
    );
    let issued = row(&table, "issued");
    assert!(
        issued.contains("Issued (gen 1)"),
        "an outcome of an older generation: {issued}"
    );
    let stale = "Approved by bob@fabrikam.example (gen 1, stale)";
    assert!(
        issued.contains(stale) && issued.contains("PendingAcceptance"),
        "{issued}"
    );

    let (detail, _) = ns.expect(&["status", "throttled"], 0).await;
    let message = "Message:      Graph answered 429; retrying after Retry-After\n";
    assert!(detail.contains(message), "{detail}");
    assert!(detail.contains(&format!("Next try:     {due}")), "{detail}");

    let (json_text, _) = ns.expect(&words("status -o json"), 0).await;
    let listed: Value = serde_json::from_str(&json_text).expect("JSON");
    let items = listed["items"].as_array().unwrap();
    let names: Vec<&str> = items.iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["awaiting", "issued", "throttled"]);
    assert_eq!(items[1]["generation"], 2);
    assert_eq!(items[1]["status"]["approval"]["generation"], 1);
    let (yaml, _) = ns.expect(&words("status throttled -o yaml"), 0).await;
    let one: Value = serde_yaml::from_str(&yaml).expect("YAML");
    assert_eq!(one["status"]["conditions"][0]["reason"], "Throttled");
    assert_eq!(one["namespace"], ns.name.as_str());

    let (wide, _) = ns.expect(&["status", "-A"], 0).await;
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
    let (_, stderr) = ns.expect(&["plan", "alice"], code(Exit::NotNow)).await;
    assert!(stderr.contains("not planned yet"), "{stderr}");

    ns.set_status("alice", awaiting_approval(1)).await;
    let (text, _) = ns.expect(&["plan", "alice"], 0).await;
    let heading = format!(
        "Plan for generation 1 of {}/alice, requested by {REQUESTER}:\n",
        ns.name
    );
    assert!(text.starts_with(&heading), "{text}");
    assert!(
        text.contains("  invite alice@newco.example with resetRedemption\n"),
        "{text}"
    );
    for format in ["json", "yaml"] {
        let (out, _) = ns.expect(&["plan", "alice", "-o", format], 0).await;
        let view: Value = serde_yaml::from_str(&out).expect("JSON and YAML both read as YAML");
        assert_eq!(view["plan"], PLAN, "{format}");
        assert_eq!(view["generation"], 1, "{format}");
        assert_eq!(view["requestedBy"], REQUESTER, "{format}");
    }

    let issued = json!({"plan": null, "conditions": [ready("True", "Issued", "issued", 1)]});
    ns.set_status("alice", issued).await;
    let (_, stderr) = ns.expect(&["plan", "alice"], code(Exit::NotNow)).await;
    assert!(stderr.contains("approval is not required"), "{stderr}");
}

// ------------------------------------------------------------------------ kubectl conventions

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_resource_is_not_found_for_every_command() {
    let ns = Ns::new("plugin-missing").await;
    let commands = [
        "status ghost",
        "plan ghost",
        "approve ghost --reason r",
        "deny ghost --reason r",
        "retry ghost --yes",
    ];
    for line in commands {
        let (_, stderr) = ns.expect(&words(line), code(Exit::NotFound)).await;
        let missing = r#"guestredemptionresets.guestreset.io "ghost" not found"#;
        assert!(stderr.contains(missing), "{line}: {stderr}");
    }
    let line = format!("-n no-such-namespace new x --apply --user {GUID} --email a@b.co");
    let out = run(ns.plugin_command(&words(&line))).await;
    let (_, stderr) = expect_exit(&out, code(Exit::NotFound));
    assert!(
        stderr.contains(r#"namespaces "no-such-namespace" not found"#),
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
    let with = |line: &str| {
        let mut command = here.plugin_command(&words(line));
        command.env("KUBECONFIG", &file);
        command
    };
    expect_exit(&run(with("status alice")).await, code(Exit::NotFound));
    expect_exit(&run(with("status alice --context there")).await, 0);
    expect_exit(
        &run(with(&format!("status alice -n {}", there.name))).await,
        0,
    );
    let mut flag = with(&format!(
        "--kubeconfig {} --context there plan alice",
        file.display()
    ));
    flag.env("KUBECONFIG", "/nonexistent/kubeconfig");
    let (_, stderr) = expect_exit(&run(flag).await, code(Exit::NotNow));
    assert!(
        stderr.contains("not planned yet"),
        "found through --kubeconfig: {stderr}"
    );

    let create = format!("--context there new bob --apply --user {GUID} --email b@newco.example");
    expect_exit(&run(with(&create)).await, 0);
    there.get("bob").await;
    let nowhere = run(with("status --context nowhere")).await;
    let (_, stderr) = expect_exit(&nowhere, code(Exit::Failure));
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
    let kubectl = |line: &str| {
        let mut command = tokio::process::Command::from(ns.cp.kubectl());
        command
            .env("PATH", &path)
            .args(words(line))
            .kill_on_drop(true);
        command
    };
    let (list, _) = expect_exit(&run(kubectl("plugin list")).await, 0);
    assert!(list.contains("kubectl-guestreset"), "{list}");
    let (help, _) = expect_exit(&run(kubectl("guestreset --help")).await, 0);
    assert!(help.contains("Usage: kubectl guestreset"), "{help}");
    assert!(help.contains("Exit codes:"), "{help}");
    let status = format!("guestreset status -n {}", ns.name);
    let (table, _) = expect_exit(&run(kubectl(&status)).await, 0);
    assert!(row(&table, "alice").starts_with("alice "), "{table}");
    let missing = format!("guestreset retry ghost -n {}", ns.name);
    expect_exit(&run(kubectl(&missing)).await, code(Exit::NotFound));

    // kubectl's completion of the plugin's words, through the binary's second name.
    let complete = installed.path().join("kubectl_complete-guestreset");
    std::os::unix::fs::symlink(PLUGIN, complete).unwrap();
    let (offered, _) = expect_exit(&run(kubectl("__complete guestreset st")).await, 0);
    assert_eq!(offered.lines().next(), Some("status"), "{offered}");
    assert!(offered.contains("\n:4\n"), "no file names: {offered}");
    let (offered, _) = expect_exit(
        &run(kubectl("__complete guestreset retry a --as-")).await,
        0,
    );
    assert_eq!(offered.lines().next(), Some("--as-group"), "{offered}");
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
    let approve_as = |user: &str| {
        let me = [Context {
            name: "me",
            namespace: &ns.name,
            impersonate: Some(user),
        }];
        let file = kubeconfig(ns.cp, &dir.path().join(user), &me);
        let mut command = ns.plugin_command(&words("approve alice --generation 1 --reason r"));
        command.env("KUBECONFIG", file);
        command
    };

    let (_, stderr) = expect_exit(&run(approve_as(&viewer)).await, code(Exit::Refused));
    let refusal = format!(
        r#"User "{viewer}" cannot patch resource "guestredemptionresets/status" in API group "guestreset.io""#
    );
    assert!(
        stderr.starts_with("Error from server (Forbidden): "),
        "{stderr}"
    );
    assert!(stderr.contains(&refusal), "{stderr}");
    assert_eq!(approval_of(&ns.get("alice").await), None);

    expect_exit(&run(approve_as(&approver)).await, 0);
    let approval = approval_of(&ns.get("alice").await).unwrap();
    assert_eq!(
        approval.by, approver,
        "the approver as the API server authenticated them"
    );
}

/// kubectl's `--as` and `--as-group`: every command that talks to the API server does so as
/// the impersonated user, so a user without rights is refused each of them by name; an
/// approval records the approver (and groups) as the API server authenticated the
/// impersonation, and a group given with `--as-group` is what grants the right.
#[tokio::test(flavor = "multi_thread")]
async fn as_and_as_group_act_as_the_impersonated_user() {
    let ns = Ns::new("plugin-as").await;
    ns.create("alice", "alice@newco.example").await;
    ns.set_status("alice", awaiting_approval(1)).await;
    let nobody = format!("nobody-{}", ns.name);
    let commands = [
        "status".to_owned(),
        "status alice".into(),
        "plan alice".into(),
        "approve alice --reason r --generation 1".into(),
        "deny alice --reason r --generation 1".into(),
        "retry alice --yes".into(),
        format!("new x --apply --user {GUID} --email x@newco.example"),
    ];
    for line in &commands {
        let args = words(line).into_iter().chain(["--as", &nobody]);
        let (_, stderr) = ns
            .expect(&args.collect::<Vec<_>>(), code(Exit::Refused))
            .await;
        let refusal = format!(r#"User "{nobody}" cannot"#);
        assert!(stderr.contains(&refusal), "{line}: {stderr}");
    }
    assert_eq!(approval_of(&ns.get("alice").await), None);

    let (bob, approvers) = (format!("bob-{}", ns.name), format!("approvers-{}", ns.name));
    grant(&ns, &bob, &["guestredemptionresets/status"]).await;
    grant_to(&ns, "Group", &approvers, &["guestredemptionresets/status"]).await;
    ns.expect(
        &words(&format!(
            "approve alice --reason r --generation 1 --as {bob}"
        )),
        0,
    )
    .await;
    let approval = approval_of(&ns.get("alice").await).unwrap();
    assert_eq!(approval.by, bob, "the impersonated approver");
    assert!(
        !approval.groups.iter().any(|g| g == "system:masters"),
        "not the admin's groups: {:?}",
        approval.groups
    );

    ns.create("carol", "carol@newco.example").await;
    ns.set_status("carol", awaiting_approval(1)).await;
    let carol = format!("carol-{}", ns.name);
    let approve = format!("approve carol --reason r --generation 1 --as {carol}");
    ns.expect(&words(&approve), code(Exit::Refused)).await;
    let in_group = format!("{approve} --as-group {approvers} --as-group system:authenticated");
    ns.expect(&words(&in_group), 0).await;
    let approval = approval_of(&ns.get("carol").await).unwrap();
    assert_eq!(approval.by, carol);
    assert!(
        approval.groups.contains(&approvers),
        "{:?}",
        approval.groups
    );
}

/// A Role in the test namespace for `user`: read the resets, patch `patchable` subresources.
async fn grant(ns: &Ns, user: &str, patchable: &[&str]) {
    grant_to(ns, "User", user, patchable).await
}

/// [`grant`] for a subject of `kind` (User or Group).
async fn grant_to(ns: &Ns, kind: &str, user: &str, patchable: &[&str]) {
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    let client = ns.cp.client().await;
    let read = json!({"apiGroups": ["guestreset.io"], "resources": ["guestredemptionresets"],
        "verbs": ["get", "list"]});
    let mut rules = vec![read];
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
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": user}],
    }))
    .unwrap();
    let pp = Default::default();
    let roles = kube::Api::<Role>::namespaced(client.clone(), &ns.name);
    roles.create(&pp, &role).await.unwrap();
    let bindings = kube::Api::<RoleBinding>::namespaced(client, &ns.name);
    bindings.create(&pp, &binding).await.unwrap();
}

/// A stand-in for the chart's admission policy (its requester rule only), bound to this test's
/// namespace: its refusal reaches the user word for word, with the refusal's exit code.
#[tokio::test(flavor = "multi_thread")]
async fn an_admission_refusal_is_shown_verbatim() {
    let ns = Ns::new("plugin-policy").await;
    let message = "the requester of a generation cannot approve it";
    let policy = install_requester_policy(&ns, message).await;
    let new = format!("new alice --apply --user {GUID} --email alice@newco.example");
    ns.expect(&words(&new), 0).await;
    let waiting = ready("Unknown", "AwaitingApproval", "waiting", 1);
    let status = json!({"observedGeneration": 1, "plan": PLAN, "requestedBy": ADMIN,
        "conditions": [waiting]});
    ns.set_status("alice", status).await;
    let mine = words("approve alice --generation 1 --reason mine");
    let (_, stderr) = ns.expect(&mine, code(Exit::Refused)).await;
    let expected = format!(
        "Error from server (Invalid): guestredemptionresets.guestreset.io \"alice\" is forbidden: \
         ValidatingAdmissionPolicy '{policy}' with binding '{policy}' denied request: {message}\n"
    );
    assert!(stderr.ends_with(&expected), "{stderr}");
    assert_eq!(approval_of(&ns.get("alice").await), None);
}

/// Installs the policy and waits until it is in force; returns its name.
async fn install_requester_policy(ns: &Ns, message: &str) -> String {
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy as Policy, ValidatingAdmissionPolicyBinding as Binding,
    };
    let name = format!("plugin-test-requester-{}", ns.name);
    let client = ns.cp.client().await;
    let rule = "!has(object.status.approval) || \
        object.status.approval.by != object.metadata.annotations['guestreset.io/requested-by']";
    let policy: Policy = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": ["guestreset.io"], "apiVersions": ["*"],
                "operations": ["UPDATE"], "resources": ["guestredemptionresets/status"],
            }]},
            "validations": [{"expression": rule, "message": message}],
        },
    }))
    .unwrap();
    let only_here = json!({"matchLabels": {"kubernetes.io/metadata.name": ns.name}});
    let binding: Binding = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": only_here},
        },
    }))
    .unwrap();
    let pp = Default::default();
    kube::Api::<Policy>::all(client.clone())
        .create(&pp, &policy)
        .await
        .unwrap();
    kube::Api::<Binding>::all(client)
        .create(&pp, &binding)
        .await
        .unwrap();

    // A policy takes effect asynchronously: probe with a server-side dry run until it refuses.
    ns.create("probe", "p@newco.example").await;
    let api = &ns.api;
    let probe = Patch::Merge(json!({"status": {"approval": {"generation": 1,
        "decision": "Approved", "by": ADMIN, "at": "2026-12-02T14:00:00Z", "reason": "probe"}}}));
    let dry = PatchParams {
        dry_run: true,
        ..PatchParams::default()
    };
    wait_until("the admission policy to be in force", SETTLE, || async {
        match api.patch_status("probe", &dry, &probe).await {
            Err(kube::Error::Api(s)) if s.message.contains(message) => Ok(Some(())),
            other => Err(format!("not yet refused: {other:?}")),
        }
    })
    .await;
    name
}

// ------------------------------------------------------------------------ installing

/// `scripts/plugin-archive.sh` packs a binary with LICENSE and README.md, reproducibly, and
/// `scripts/krew-manifest.sh` describes the archives as krew's Plugin: one platform per
/// archive, selected by os and arch, downloaded from the release URL, with the sha256 of
/// the very file and the binary's name inside it.
#[tokio::test]
async fn release_archives_and_their_krew_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let binary = dir.path().join("kubectl-guestreset");
    std::fs::write(&binary, "#!/bin/sh\necho guestreset\n").unwrap();
    let script = |name: &str| repo_root().join("scripts").join(name);
    let archive = |os: &str, arch: &str, out: &Path| {
        let mut command = tokio::process::Command::new(script("plugin-archive.sh"));
        command
            .arg("--binary")
            .arg(&binary)
            .args([os, arch])
            .arg(out);
        command
    };
    let dist = dir.path().join("dist");
    let platforms = [
        ("linux", "amd64"),
        ("darwin", "arm64"),
        ("windows", "amd64"),
    ];
    let mut archives = vec![];
    for (os, arch) in platforms {
        let (stdout, _) = expect_exit(&run(archive(os, arch, &dist)).await, 0);
        archives.push(PathBuf::from(stdout.trim()));
    }
    let version = format!("v{}", env!("CARGO_PKG_VERSION"));
    let linux = &archives[0];
    let name = format!("kubectl-guestreset_{version}_linux_amd64.tar.gz");
    assert_eq!(linux.file_name().unwrap().to_str(), Some(name.as_str()));
    let mut list = tokio::process::Command::new("tar");
    list.arg("-tvzf").arg(linux);
    let (listing, _) = expect_exit(&run(list).await, 0);
    let entries: Vec<(&str, &str)> = listing
        .lines()
        .map(|l| {
            (
                l.split_whitespace().next().unwrap(),
                l.rsplit(' ').next().unwrap(),
            )
        })
        .collect();
    let expected = [
        ("-rwxr-xr-x", "kubectl-guestreset"),
        ("-rw-r--r--", "LICENSE"),
        ("-rw-r--r--", "README.md"),
    ];
    assert_eq!(entries, expected, "{listing}");
    let again = dir.path().join("again");
    let (stdout, _) = expect_exit(&run(archive("linux", "amd64", &again)).await, 0);
    let same = std::fs::read(stdout.trim()).unwrap() == std::fs::read(linux).unwrap();
    assert!(same, "the same binary gives the same archive");

    let mut manifest = tokio::process::Command::new(script("krew-manifest.sh"));
    manifest
        .args(&archives)
        .env("RELEASE_URL", "https://downloads.example/guestreset");
    let (yaml, _) = expect_exit(&run(manifest).await, 0);
    let plugin: Value = serde_yaml::from_str(&yaml).expect("YAML");
    assert_eq!(
        plugin["apiVersion"],
        "krew.googlecontainertools.github.com/v1alpha2"
    );
    assert_eq!(plugin["kind"], "Plugin");
    assert_eq!(plugin["metadata"]["name"], "guestreset");
    assert_eq!(plugin["spec"]["version"], version.as_str());
    let short = plugin["spec"]["shortDescription"].as_str().unwrap();
    assert!(short.len() <= 50, "krew-index asks for at most 50: {short}");
    let listed = plugin["spec"]["platforms"].as_array().unwrap();
    assert_eq!(listed.len(), platforms.len(), "{yaml}");
    for ((os, arch), (platform, file)) in platforms.iter().zip(listed.iter().zip(&archives)) {
        let labels = json!({"matchLabels": {"os": os, "arch": arch}});
        assert_eq!(platform["selector"], labels, "{yaml}");
        let file_name = file.file_name().unwrap().to_str().unwrap();
        let uri = format!("https://downloads.example/guestreset/{file_name}");
        assert_eq!(platform["uri"], uri);
        assert_eq!(platform["sha256"], sha256(file).await, "{file_name}");
        let bin = if *os == "windows" {
            "kubectl-guestreset.exe"
        } else {
            "kubectl-guestreset"
        };
        assert_eq!(platform["bin"], bin);
    }
}

/// The sha256 of `file`, by coreutils.
async fn sha256(file: &Path) -> String {
    let mut command = tokio::process::Command::new("sha256sum");
    command.arg(file);
    let (out, _) = expect_exit(&run(command).await, 0);
    out.split_whitespace().next().unwrap().to_owned()
}
