//! End-to-end: `guestreset run` as a separate process against a real kube-apiserver and the
//! HTTPS Graph simulator, tokens through azure_identity, the simulator's journal as the ground
//! truth of what reached the directory.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{World, admin_addr, http_get};
use graph_sim::{Call, FaultAction, FaultRule, JournalEntry, SeedUser};
use guestreset::resource::{GuestRedemptionReset, GuestRedemptionResetStatus};
use guestreset_testsupport::{ChildProcess, wait_until};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

const ALICE: &str = "3f0a6c1e-8d2b-4c55-9b0e-2f6a1d9c7e41";
const BOB: &str = "5b7e2a10-4c3d-4e5f-8a9b-0c1d2e3f4a5b";
const CAROL: &str = "6c8f3b21-5d4e-4f60-9bac-1d2e3f4a5b6c";
const MEMBER: &str = "7d904c32-6e5f-4071-acbd-2e3f4a5b6c7d";
const BOB_UPN: &str = "bob_partner.example#EXT#@fabrikam.onmicrosoft.com";
const WAIT: Duration = Duration::from_secs(60);

fn directory() -> Vec<SeedUser> {
    vec![
        SeedUser::guest(
            ALICE,
            "alice_contoso.com#EXT#@fabrikam.onmicrosoft.com",
            "alice@contoso.com",
        ),
        SeedUser::guest(BOB, BOB_UPN, "bob@partner.example"),
        SeedUser::guest(
            CAROL,
            "carol_supplier.example#EXT#@fabrikam.onmicrosoft.com",
            "carol@supplier.example",
        ),
        SeedUser::member(
            MEMBER,
            "mallory@fabrikam.onmicrosoft.com",
            "mallory@fabrikam.example",
        ),
    ]
}

/// The standard directory plus `n` guests `{tag}{i}@x.example` whose ids start with
/// `first_digit`; returns the users and the new guests' ids.
fn directory_with_guests(tag: &str, first_digit: char, n: usize) -> (Vec<SeedUser>, Vec<String>) {
    let (guests, ids) = common::guests(tag, first_digit, n);
    let mut users = directory();
    users.extend(guests);
    (users, ids)
}

impl World {
    async fn new(prefix: &str) -> World {
        Self::with_users(prefix, directory()).await
    }

    /// The Graph writes (mail PATCHes and invitation POSTs) in the simulator's journal.
    async fn graph_writes(&self) -> Vec<JournalEntry> {
        self.journal()
            .await
            .into_iter()
            .filter(|e| matches!(e.call, Call::PatchUser | Call::PostInvitation))
            .collect()
    }
}

/// The passes the operator at `addr` has finished, from its /metrics.
async fn reconciles(addr: &str) -> u64 {
    let (_, text) = http_get(&format!("http://{addr}/metrics"))
        .await
        .unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("guestreset_reconciles_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn reason_of(obj: &GuestRedemptionReset) -> String {
    ready(obj).reason
}

fn ready(obj: &GuestRedemptionReset) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    obj.status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap()
        .clone()
}

fn status(obj: &GuestRedemptionReset) -> &GuestRedemptionResetStatus {
    obj.status.as_ref().unwrap()
}

fn by_id(id: &str, email: &str) -> Value {
    json!({"user": {"id": id}, "email": email})
}

// ---------------------------------------------------------------- the happy path

#[tokio::test(flavor = "multi_thread")]
async fn happy_path_for_each_user_key() {
    let mut w = World::new("happy").await;
    w.start_operator(&[]);
    w.create(
        "by-id",
        json!({"user": {"id": ALICE}, "email": "alice@newco.example", "changeRef": "CHG-1"}),
    )
    .await;
    w.create(
        "by-upn",
        json!({"user": {"userPrincipalName": BOB_UPN}, "email": "bob@partner.example"}),
    )
    .await;
    w.create(
        "by-mail",
        json!({"user": {"mail": "carol@supplier.example"}, "email": "dave@supplier.example"}),
    )
    .await;

    for name in ["by-id", "by-upn", "by-mail"] {
        let out =
            w.cp.kubectl()
                .args([
                    "wait",
                    "--for=condition=Ready",
                    "--timeout=60s",
                    "-n",
                    &w.ns,
                    &format!("grr/{name}"),
                ])
                .output()
                .unwrap();
        assert!(
            out.status.success(),
            "kubectl wait {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let obj = w.get(name).await;
        assert_eq!(reason_of(&obj), "Issued");
        let s = status(&obj);
        assert_eq!(s.phase, Some(guestreset::resource::Phase::Succeeded));
        assert_eq!(s.observed_generation, obj.metadata.generation);
        assert_eq!(s.attempt, None);
        let inv = s.invitation.as_ref().unwrap();
        assert!(!inv.id.is_empty() && !inv.recovered);
        assert_eq!(inv.redeem_status.as_deref(), Some("PendingAcceptance"));
        assert_eq!(s.history.len(), 1);
    }
    let alice = w.get("by-id").await;
    assert_eq!(
        status(&alice)
            .user
            .as_ref()
            .unwrap()
            .previous_mail
            .as_deref(),
        Some("alice@contoso.com")
    );
    assert_eq!(
        status(&alice).target.as_deref(),
        Some("alice_contoso.com#EXT#@fabrikam.onmicrosoft.com")
    );

    let posts = w.posts().await;
    assert_eq!(posts.len(), 3, "one POST per resource: {posts:?}");
    assert!(posts.iter().all(|p| p.status == 201));
    let patches: Vec<_> = w
        .journal()
        .await
        .into_iter()
        .filter(|e| e.call == Call::PatchUser)
        .collect();
    assert_eq!(
        patches.len(),
        2,
        "mail set for alice and carol, not for bob who already has it"
    );
    let sim_alice = w.admin.user(ALICE).await.unwrap().unwrap();
    assert_eq!(sim_alice.mail.as_deref(), Some("alice@newco.example"));
    assert_eq!(
        sim_alice.external_user_state.as_deref(),
        Some("PendingAcceptance")
    );
    assert!(w.admin.hazards().await.unwrap().is_empty());

    // Every request carried its own client-request-id.
    let journal = w.journal().await;
    let graph: Vec<_> = journal.iter().filter(|e| e.call != Call::Token).collect();
    let ids: std::collections::HashSet<_> = graph
        .iter()
        .filter_map(|e| e.client_request_id.clone())
        .collect();
    assert_eq!(
        ids.len(),
        graph.len(),
        "a fresh client-request-id per request"
    );

    // The Events tell the story, with the changeRef.
    let events = w.events("by-id").await;
    let issued = events
        .iter()
        .find(|e| e.reason.as_deref() == Some("Issued"))
        .expect("an Issued event");
    assert_eq!(issued.type_.as_deref(), Some("Normal"));
    assert!(issued.note.as_deref().unwrap_or("").contains("CHG-1"));
    w.assert_no_secrets_in_logs().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn spec_edit_posts_once_more_and_reapply_posts_nothing() {
    let mut w = World::new("generations").await;
    let op = w.start_operator(&[]);
    w.create("alice", by_id(ALICE, "alice@newco.example")).await;
    w.wait_reason("alice", "Issued").await;
    assert_eq!(w.posts().await.len(), 1);

    // An unchanged re-apply (kubectl apply of the same manifest) changes nothing.
    let manifest = json!({
        "apiVersion": "guestreset.io/v1alpha1", "kind": "GuestRedemptionReset",
        "metadata": {"name": "alice", "namespace": w.ns},
        "spec": by_id(ALICE, "alice@newco.example"),
    });
    let path = w._state.path().join("alice.json");
    std::fs::write(&path, manifest.to_string()).unwrap();
    for _ in 0..2 {
        let out =
            w.cp.kubectl()
                .args(["apply", "-f"])
                .arg(&path)
                .output()
                .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let generation = w.get("alice").await.metadata.generation;
    assert_eq!(generation, Some(1), "a re-apply is no new generation");

    // A spec edit is a new generation: exactly one more POST.
    w.patch_spec("alice", json!({"email": "alice@other.example"}))
        .await;
    let obj = w.wait_reason("alice", "Issued").await;
    assert_eq!(obj.metadata.generation, Some(2));
    let s = status(&obj);
    assert_eq!(s.invitation.as_ref().unwrap().generation, 2);
    assert_eq!(
        s.history.iter().map(|h| h.generation).collect::<Vec<_>>(),
        [2, 1]
    );
    // Give the controller every chance to post again: a metadata-only change (not the retry
    // annotation: any new value of it, even empty, runs an issued generation once more, see
    // docs/resource.md) and another pass, which has run once the pass counter moved.
    let addr = admin_addr(&w.operators[op]).await;
    let before = reconciles(&addr).await;
    let note = json!({"metadata": {"annotations": {"example.com/note": "looked at"}}});
    w.api
        .patch("alice", &PatchParams::default(), &Patch::Merge(note))
        .await
        .unwrap();
    wait_until("a pass after the annotation", WAIT, || {
        let addr = addr.clone();
        async move { (reconciles(&addr).await > before).then_some(()) }
    })
    .await;
    let posts = w.posts().await;
    assert_eq!(posts.len(), 2, "{posts:?}");
    // kubectl wait right after an edit waits for the new generation.
    w.patch_spec("alice", json!({"email": "alice@third.example"}))
        .await;
    let out =
        w.cp.kubectl()
            .args([
                "wait",
                "--for=condition=Ready",
                "--timeout=60s",
                "-n",
                &w.ns,
                "grr/alice",
            ])
            .output()
            .unwrap();
    assert!(out.status.success());
    let obj = w.get("alice").await;
    assert_eq!(
        ready(&obj).observed_generation,
        Some(3),
        "kubectl wait returned for the new generation"
    );
    assert_eq!(w.posts().await.len(), 3);
}

// ---------------------------------------------------------------- failures with no POST

#[tokio::test(flavor = "multi_thread")]
async fn stops_before_any_post() {
    let mut users = directory();
    users.push(SeedUser::guest(
        "8e0a5d43-7f60-4182-bdce-3f4a5b6c7d8e",
        "carol2_supplier.example#EXT#@fabrikam.onmicrosoft.com",
        "carol@supplier.example",
    ));
    users.push(SeedUser::guest(
        "9f1b6e54-8071-4293-8edf-4a5b6c7d8e9f",
        "taken_x.example#EXT#@fabrikam.onmicrosoft.com",
        "taken@newco.example",
    ));
    let mut w = World::with_users("stops", users).await;
    w.start_operator(&["--allowed-email-domains", "newco.example,partner.example"]);
    w.create("member", by_id(MEMBER, "mallory@newco.example"))
        .await;
    w.create(
        "ghost",
        by_id(
            "00000000-1111-4222-8333-444444444444",
            "ghost@newco.example",
        ),
    )
    .await;
    w.create(
        "two-carols",
        json!({"user": {"mail": "carol@supplier.example"}, "email": "dave@newco.example"}),
    )
    .await;
    w.create(
        "no-update",
        json!({"user": {"id": ALICE}, "email": "alice@newco.example", "updateMail": false}),
    )
    .await;
    w.create("in-use", by_id(ALICE, "taken@newco.example"))
        .await;
    w.create("outside", by_id(BOB, "bob@elsewhere.example"))
        .await;

    for (name, reason, says) in [
        ("member", "NotAGuest", "not Guest"),
        (
            "ghost",
            "UserNotFound",
            "no user with id 00000000-1111-4222-8333-444444444444",
        ),
        (
            "two-carols",
            "AmbiguousUser",
            "2 users have mail carol@supplier.example",
        ),
        ("no-update", "EmailNotOnUser", "updateMail is false"),
        (
            "in-use",
            "EmailInUse",
            "taken_x.example#EXT#@fabrikam.onmicrosoft.com",
        ),
        (
            "outside",
            "PolicyDenied",
            "outside the allowed e-mail domains",
        ),
    ] {
        let obj = w
            .wait_reason_for(name, reason, Duration::from_secs(90))
            .await;
        let condition = ready(&obj);
        assert_eq!(condition.status, "False", "{name}");
        assert!(
            condition.message.contains(says),
            "{name}: {}",
            condition.message
        );
        assert_eq!(
            status(&obj).phase,
            Some(guestreset::resource::Phase::Failed)
        );
        // The Event follows the status write that the wait above saw.
        let what = format!("{name}: a Warning event {reason}");
        wait_until(&what, WAIT, || async {
            w.events(name)
                .await
                .iter()
                .any(|e| {
                    e.reason.as_deref() == Some(reason) && e.type_.as_deref() == Some("Warning")
                })
                .then_some(())
        })
        .await;
    }
    let journal = w.journal().await;
    assert!(
        journal.iter().all(|e| e.call != Call::PostInvitation),
        "no invitation POST at all"
    );
    assert!(
        journal.iter().all(|e| e.call != Call::PatchUser),
        "no mail PATCH either"
    );
    assert!(
        w.admin.hazards().await.unwrap().is_empty(),
        "the member was not converted"
    );
    assert_eq!(
        w.admin.user(MEMBER).await.unwrap().unwrap().user_type,
        "Member"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_writes_nothing_then_issues_for_real() {
    let mut w = World::new("dryrun").await;
    w.start_operator(&[]);
    w.create(
        "plan",
        json!({"user": {"id": ALICE}, "email": "alice@newco.example", "dryRun": true}),
    )
    .await;
    let obj = w.wait_reason("plan", "DryRunComplete").await;
    let condition = ready(&obj);
    assert_eq!(condition.status, "True");
    assert!(
        condition.message.contains("Would set mail of"),
        "{}",
        condition.message
    );
    assert!(
        w.journal()
            .await
            .iter()
            .all(|e| !matches!(e.call, Call::PatchUser | Call::PostInvitation))
    );
    w.patch_spec("plan", json!({"dryRun": false})).await;
    w.wait_reason("plan", "Issued").await;
    assert_eq!(w.posts().await.len(), 1);
}

// ---------------------------------------------------------------- Graph answers

#[tokio::test(flavor = "multi_thread")]
async fn forbidden_and_throttled_and_transient() {
    let mut w = World::new("answers").await;
    // A privileged target: app-only calls get 403.
    let mut admin_guest = SeedUser::guest(
        "a1b2c3d4-e5f6-4789-8abc-def012345678",
        "root_x.example#EXT#@fabrikam.onmicrosoft.com",
        "root@x.example",
    );
    admin_guest.privileged = true;
    w.admin.put_user(&admin_guest).await.unwrap();
    w.start_operator(&[]);
    w.create(
        "privileged",
        by_id("a1b2c3d4-e5f6-4789-8abc-def012345678", "root@x.example"),
    )
    .await;
    let obj = w.wait_reason("privileged", "Forbidden").await;
    assert!(
        ready(&obj).message.contains("User.ReadWrite.All"),
        "{}",
        ready(&obj).message
    );

    // A Retry-After longer than the client waits by itself reaches the controller as Throttled.
    w.admin
        .add_fault(FaultRule::once(
            Call::PostInvitation,
            FaultAction::Throttle {
                retry_after_seconds: Some(12),
                retry_after_http_date: false,
            },
        ))
        .await
        .unwrap();
    w.create("throttled", by_id(ALICE, "alice@newco.example"))
        .await;
    w.wait_reason("throttled", "Issued").await;
    let posts: Vec<_> = w
        .posts()
        .await
        .into_iter()
        .filter(|p| p.path.contains("invitations"))
        .collect();
    let to_alice: Vec<_> = posts
        .iter()
        .filter(|p| p.status == 429 || p.status == 201)
        .collect();
    assert!(to_alice.iter().any(|p| p.status == 429));
    let events = w.events("throttled").await;
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("Throttled")),
        "a Throttled event"
    );
    // Retry-After was honoured: the accepted POST came at least 12 s after the 429.
    let at = |e: &&JournalEntry| e.at.parse::<jiff::Timestamp>().unwrap();
    let throttled_at = to_alice
        .iter()
        .filter(|p| p.status == 429)
        .map(at)
        .max()
        .unwrap();
    let issued_at = to_alice
        .iter()
        .filter(|p| p.status == 201)
        .map(at)
        .max()
        .unwrap();
    assert!(
        issued_at.duration_since(throttled_at) >= jiff::SignedDuration::from_millis(11_900),
        "{throttled_at} -> {issued_at}: {:#?}\n{}",
        w.journal().await,
        w.logs()
    );

    // Reads that keep failing with 503 before taking effect: TransientError, then success.
    w.admin
        .add_fault(FaultRule::times(
            Call::GetUser,
            8,
            FaultAction::ServerErrorBefore { status: 503 },
        ))
        .await
        .unwrap();
    w.create("transient", by_id(BOB, "bob@partner.example"))
        .await;
    w.wait_reason("transient", "Issued").await;
    let events = w.events("transient").await;
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("TransientError")
                && e.type_.as_deref() == Some("Warning"))
    );
}

// ---------------------------------------------------------------- crashes

#[tokio::test(flavor = "multi_thread")]
async fn killed_while_the_post_is_in_flight_recovers_without_a_second_post() {
    let mut w = World::new("crash-post").await;
    w.admin
        .add_fault(FaultRule::once(
            Call::PostInvitation,
            FaultAction::HangAfter,
        ))
        .await
        .unwrap();
    let first = w.start_operator(&[]);
    w.create("alice", by_id(ALICE, "alice@newco.example")).await;
    let admin = w.admin.clone();
    wait_until("the POST to have taken effect and be held", WAIT, || {
        let admin = admin.clone();
        async move { (admin.held_count().await.ok() == Some(1)).then_some(()) }
    })
    .await;
    w.operators[first].kill();
    w.admin.release_held().await.unwrap();
    assert!(
        status(&w.get("alice").await)
            .attempt
            .as_ref()
            .unwrap()
            .post_started_at
            .is_some()
    );

    w.start_operator(&[]);
    let obj = w.wait_reason("alice", "Issued").await;
    let inv = status(&obj).invitation.clone().unwrap();
    assert!(inv.recovered, "the outcome was inferred from the directory");
    assert_eq!(inv.id, "");
    assert_eq!(status(&obj).attempt, None);
    assert_eq!(w.posts().await.len(), 1, "exactly one POST in the journal");
}

/// The directory shows a reset's effect late (it replicates). A POST whose answer was lost,
/// with evidence visible partway through the replication window, ends `Issued (recovered)`;
/// with evidence only after it, `OutcomeUnknown`. The controller re-reads until
/// `postStartedAt` + the Graph timeout + the window, every 10 s: with the defaults (30 s, 2
/// minutes) evidence at +90 s recovers and at +200 s comes too late. Scaled down: a timeout of
/// 5 s and a window of 20 s (the last read by +35 s), evidence at +15 s and at +45 s.
#[tokio::test(flavor = "multi_thread")]
async fn evidence_that_replicates_late_is_waited_for_until_the_window_ends() {
    let mut w = World::new("late-evidence").await;
    w.start_operator(&["--replication-window", "20s", "--graph-timeout", "5s"]);
    let lost = || {
        FaultRule::once(
            Call::PostInvitation,
            FaultAction::ServerErrorAfter { status: 500 },
        )
    };

    w.admin
        .set_evidence_delay(Duration::from_secs(15))
        .await
        .unwrap();
    w.admin.add_fault(lost()).await.unwrap();
    w.create("alice", by_id(ALICE, "alice@newco.example")).await;
    let obj = w.wait_reason("alice", "Issued").await;
    let inv = status(&obj).invitation.clone().unwrap();
    assert!(inv.recovered, "recovered from the evidence at +15 s");
    assert_eq!(w.posts().await.len(), 1, "no second POST while waiting");

    w.admin
        .set_evidence_delay(Duration::from_secs(45))
        .await
        .unwrap();
    w.admin.add_fault(lost()).await.unwrap();
    w.create("bob", by_id(BOB, "bob@partner.example")).await;
    let obj = w.wait_reason("bob", "OutcomeUnknown").await;
    assert_eq!(status(&obj).invitation, None, "{obj:#?}");
    let posts = w.posts().await;
    assert_eq!(
        posts.len(),
        2,
        "bob's one POST, and no blind second one: {posts:#?}"
    );
}

/// Needs the `failpoints` feature (scripts/test.sh builds the tests with it).
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread")]
async fn killed_after_the_intent_before_the_post_posts_once_after_restart() {
    let mut w = World::new("crash-intent").await;
    let mut cmd = w.operator_command(&[]);
    cmd.env("GUESTRESET_FAILPOINT", "hang-after-intent");
    let first = w.start_operator_with(cmd);
    w.create("alice", by_id(ALICE, "alice@newco.example")).await;
    let api = w.api.clone();
    wait_until("the intent to be recorded", WAIT, || {
        let api = api.clone();
        async move {
            api.get("alice")
                .await
                .ok()
                .and_then(|o| o.status)
                .and_then(|s| s.attempt)
        }
    })
    .await;
    w.operators[first].kill();
    assert!(w.posts().await.is_empty());

    w.start_operator(&[]);
    let obj = w.wait_reason("alice", "Issued").await;
    assert!(!status(&obj).invitation.as_ref().unwrap().recovered);
    assert_eq!(w.posts().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn connection_lost_with_no_effect_ends_outcome_unknown_until_a_human_retries() {
    let mut w = World::new("unknown").await;
    w.admin
        .add_fault(FaultRule::once(
            Call::PostInvitation,
            FaultAction::DropConnectionBefore,
        ))
        .await
        .unwrap();
    w.start_operator(&[]);
    w.create("alice", by_id(ALICE, "alice@newco.example")).await;
    let obj = w.wait_reason("alice", "OutcomeUnknown").await;
    assert!(ready(&obj).message.contains("guestreset.io/retry"));
    assert_eq!(
        w.posts().await.len(),
        1,
        "the dropped POST, and no blind second one"
    );
    w.annotate_retry("alice", "accept-risk-1").await;
    let obj = w.wait_reason("alice", "Issued").await;
    assert_eq!(status(&obj).retry_token.as_deref(), Some("accept-risk-1"));
    assert_eq!(w.posts().await.len(), 2);
}

/// Defect: Graph's change time carries milliseconds, the status kept whole seconds, and the
/// change read right before the POST, read again, looked strictly later than itself: a POST
/// refused with a 503 before it took effect ended `Issued` (recovered), no invitation sent.
#[tokio::test(flavor = "multi_thread")]
async fn an_invitation_by_someone_else_seconds_before_with_milliseconds_is_not_evidence() {
    let mut w = World::new("precision").await;
    let mut alice = directory().remove(0);
    let invited = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(3);
    let changed = format!("{}.408Z", invited.strftime("%Y-%m-%dT%H:%M:%S"));
    alice.external_user_state = Some("PendingAcceptance".into());
    alice.external_user_state_change_date_time = Some(changed.clone());
    w.admin.put_user(&alice).await.unwrap();
    w.admin
        .add_fault(FaultRule::once(
            Call::PostInvitation,
            FaultAction::ServerErrorBefore { status: 503 },
        ))
        .await
        .unwrap();
    // The absence of evidence is concluded 5 s + the harness's 6 s window after the POST.
    w.start_operator(&["--graph-timeout", "5s"]);
    w.create("alice", by_id(ALICE, "alice@newco.example")).await;
    let api = w.api.clone();
    // While recovery re-reads (11 s), the API server holds the change time with its fraction.
    let recorded = wait_until("the refused POST's attempt", WAIT, || {
        let api = api.clone();
        async move {
            let obj = api.get("alice").await.ok()?;
            let attempt = obj.status?.attempt?;
            attempt.post_started_at?;
            attempt.user_state_before?.changed_at
        }
    })
    .await;
    assert_eq!(recorded.0, changed.parse::<jiff::Timestamp>().unwrap());
    let settled = wait_until("alice to settle", WAIT, || {
        let api = api.clone();
        async move {
            let obj = api.get("alice").await.ok()?;
            let conditions = &obj.status.as_ref()?.conditions;
            let reason = &conditions.iter().find(|c| c.type_ == "Ready")?.reason;
            ["Issued", "OutcomeUnknown"]
                .contains(&reason.as_str())
                .then_some(obj)
        }
    })
    .await;
    assert_eq!(
        reason_of(&settled),
        "OutcomeUnknown",
        "{:?}",
        ready(&settled)
    );
    assert_eq!(
        status(&settled).invitation,
        None,
        "nothing recorded as issued"
    );
    assert_eq!(
        w.posts().await.len(),
        1,
        "the refused POST, and no blind second one"
    );
    assert!(w.admin.invitations().await.unwrap().is_empty());
    let read = w.admin.user(ALICE).await.unwrap().unwrap();
    assert_eq!(read.external_user_state_change_date_time, Some(changed));
}

// ---------------------------------------------------------------- two controllers

#[tokio::test(flavor = "multi_thread")]
async fn two_controllers_without_leader_election_post_once_per_generation() {
    let (users, ids) = directory_with_guests("g", '0', 8);
    let mut w = World::with_users("two", users).await;
    w.admin
        .set_latency(Duration::from_millis(50))
        .await
        .unwrap();
    w.start_operator(&[]);
    w.start_operator(&[]);
    for (i, id) in ids.iter().enumerate() {
        w.create(&format!("g{i}"), by_id(id, &format!("g{i}@y.example")))
            .await;
    }
    for i in 0..ids.len() {
        w.wait_reason(&format!("g{i}"), "Issued").await;
    }
    let posts = w.posts().await;
    assert_eq!(
        posts.len(),
        ids.len(),
        "one POST per resource with two controllers: {posts:#?}"
    );
    // The two really raced: at least one guarded write lost to the other controller's.
    let logs: Vec<String> = w.operators.iter().map(|o| o.read_log()).collect();
    let conflicts: usize = logs
        .iter()
        .map(|l| {
            l.matches("another writer changed the resource first")
                .count()
        })
        .sum();
    println!("two controllers: {conflicts} guarded status writes lost the race and started over");
    assert!(
        conflicts > 0,
        "no contention was observed, so the test proved nothing"
    );
}

// ---------------------------------------------------------------- tenant protection

#[tokio::test(flavor = "multi_thread")]
async fn abuse_block_pauses_every_resource_until_the_cooldown() {
    let mut w = World::new("abuse").await;
    w.admin
        .add_fault(FaultRule::always(
            Call::PostInvitation,
            FaultAction::AbuseBlock,
        ))
        .await
        .unwrap();
    w.start_operator(&["--tenant-block-cooldown", "8s"]);
    w.create("alice", by_id(ALICE, "alice@newco.example")).await;
    w.wait_reason("alice", "TenantBlocked").await;
    w.create("bob", by_id(BOB, "bob@partner.example")).await;
    w.create(
        "carol",
        json!({"user": {"mail": "carol@supplier.example"}, "email": "dave@supplier.example"}),
    )
    .await;
    w.wait_reason("bob", "TenantBlocked").await;
    w.wait_reason("carol", "TenantBlocked").await;
    assert_eq!(w.posts().await.len(), 1, "no further POST while paused");
    let blocked_at = w.posts().await[0].at.parse::<jiff::Timestamp>().unwrap();

    // The block lifts: after the cool-down one probe goes out, then everyone else.
    w.admin.clear_faults().await.unwrap();
    for name in ["alice", "bob", "carol"] {
        w.wait_reason(name, "Issued").await;
    }
    let posts = w.posts().await;
    assert_eq!(posts.len(), 4, "{posts:#?}");
    let second = posts[1].at.parse::<jiff::Timestamp>().unwrap();
    assert!(
        second.duration_since(blocked_at) >= jiff::SignedDuration::from_secs(7),
        "the probe waited for the cool-down"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_are_rate_limited() {
    let (users, ids) = directory_with_guests("r", '1', 5);
    let mut w = World::with_users("limit", users).await;
    // 30 writes per minute (one every 2 s), burst 2; each reset needs one PATCH and one POST.
    w.start_operator(&["--max-writes-per-minute", "30", "--write-burst", "2"]);
    for (i, id) in ids.iter().enumerate() {
        w.create(&format!("r{i}"), by_id(id, &format!("r{i}@new.example")))
            .await;
    }
    for i in 0..ids.len() {
        w.wait_reason(&format!("r{i}"), "Issued").await;
    }
    let writes: Vec<jiff::Timestamp> = w
        .graph_writes()
        .await
        .iter()
        .map(|e| e.at.parse().unwrap())
        .collect();
    assert_eq!(writes.len(), 10);
    let span = writes.last().unwrap().duration_since(writes[0]);
    // 10 writes at 2 s each after a burst of 2: at least 8 intervals of 2 s.
    assert!(
        span >= jiff::SignedDuration::from_millis(15_500),
        "10 writes took only {span}"
    );
    // Never more than burst + rate in any 2-second window.
    for (i, start) in writes.iter().enumerate() {
        let in_window = writes[i..]
            .iter()
            .filter(|t| t.duration_since(*start) < jiff::SignedDuration::from_secs(2))
            .count();
        assert!(in_window <= 3, "{in_window} writes within 2 s of {start}");
    }
    println!("rate limit: 10 writes in {span} at 30/min burst 2");
}

// ---------------------------------------------------------------- the redeem URL

#[tokio::test(flavor = "multi_thread")]
async fn redeem_url_goes_to_the_secret_and_nowhere_else() {
    let mut w = World::new("redeem").await;
    w.start_operator(&[]);
    w.create(
        "silent",
        json!({"user": {"id": ALICE}, "email": "alice@newco.example", "sendInvitationMessage": false,
               "redeemUrlSecret": {"name": "alice-redeem-url"}, "changeRef": "CHG-7"}),
    )
    .await;
    let obj = w.wait_reason("silent", "Issued").await;
    let secrets: Api<Secret> = Api::namespaced(w.client.clone(), &w.ns);
    let secret = secrets.get("alice-redeem-url").await.unwrap();
    let url = String::from_utf8(secret.data.unwrap()["redeemUrl"].0.clone()).unwrap();
    let issued = w.admin.issued_tokens_and_redeem_urls().await.unwrap();
    assert_eq!(
        issued.redeem_urls,
        vec![url.clone()],
        "the Secret holds the URL Graph issued"
    );
    let owner = &secret.metadata.owner_references.unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("GuestRedemptionReset", "silent")
    );
    assert_eq!(owner.uid, obj.metadata.uid.clone().unwrap());

    // Not in status, not in events, not in logs.
    let status_json = serde_json::to_string(&obj.status).unwrap();
    assert!(!status_json.contains(&url));
    let events_json = serde_json::to_string(&w.events("silent").await).unwrap();
    assert!(!events_json.contains(&url));
    assert!(
        ready(&obj)
            .message
            .contains("redeem URL stored in Secret alice-redeem-url")
    );
    w.assert_no_secrets_in_logs().await;
    // Logs carry the resource, the changeRef and Graph's client-request-id.
    let logs = w.logs();
    let issued_line = logs
        .lines()
        .find(|l| l.contains("invitation issued"))
        .expect("an 'invitation issued' log line");
    assert!(
        issued_line.contains("CHG-7") && issued_line.contains(&format!("{}/silent", w.ns)),
        "{issued_line}"
    );
    let post = &w.posts().await[0];
    assert!(
        issued_line.contains(post.client_request_id.as_deref().unwrap()),
        "{issued_line}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_the_operator_cleanly() {
    let mut w = World::new("sigterm").await;
    let op = w.start_operator(&[]);
    w.create("alice", by_id(ALICE, "alice@newco.example")).await;
    w.wait_reason("alice", "Issued").await;
    let status = w.operators[op].terminate();
    assert!(status.success(), "exit status {status:?}");
    assert!(w.operators[op].read_log().contains("shutting down"));
}

// ---------------------------------------------------------------- operations

#[tokio::test(flavor = "multi_thread")]
async fn health_readiness_and_metrics() {
    let mut w = World::new("metrics").await;
    let op = w.start_operator(&[]);
    let addr = admin_addr(&w.operators[op]).await;
    assert_eq!(
        http_get(&format!("http://{addr}/healthz"))
            .await
            .map(|r| r.0),
        Some(200)
    );
    wait_until("/readyz to say ready", WAIT, || {
        let url = format!("http://{addr}/readyz");
        async move { http_get(&url).await.filter(|(status, _)| *status == 200) }
    })
    .await;
    w.create("alice", by_id(ALICE, "alice@newco.example")).await;
    w.wait_reason("alice", "Issued").await;
    // The pass that wrote Issued may still be finishing (its Event, its metrics): poll.
    let needles = [
        r#"guestreset_graph_requests_total{call="POST /invitations",status="201"} 1"#,
        r#"guestreset_graph_requests_total{call="PATCH /users/{id}",status="204"} 1"#,
        r#"guestreset_outcomes_total{reason="Issued"} 1"#,
        r#"guestreset_reconciles_total{result="ok",step=""}"#,
        "guestreset_graph_request_duration_seconds_bucket",
        "guestreset_write_limiter_wait_seconds_count 2",
        "guestreset_tenant_paused 0",
        "guestreset_leader 1",
    ];
    wait_until("/metrics to show the reset", WAIT, || {
        let url = format!("http://{addr}/metrics");
        async move {
            let (status, text) = http_get(&url).await.ok_or("no answer")?;
            match needles
                .iter()
                .find(|n| status != 200 || !text.contains(**n))
            {
                None => Ok(Some(())),
                Some(missing) => Err(format!(
                    "{missing} missing from /metrics (HTTP {status}):\n{text}"
                )),
            }
        }
    })
    .await;
}

/// The Lease has no holder: `when` says at which moment it should have been released.
async fn assert_lease_released(client: &kube::Client, ns: &str, when: &str) {
    let holder = lease_holder(client, ns).await;
    assert!(
        holder.as_deref().is_none_or(str::is_empty),
        "{when}, holder {holder:?}"
    );
}

async fn lease_holder(client: &kube::Client, ns: &str) -> Option<String> {
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), ns);
    leases.get("guestreset").await.ok()?.spec?.holder_identity
}

#[tokio::test(flavor = "multi_thread")]
async fn leader_election_one_leads_and_the_other_takes_over() {
    let mut w = World::new("leader").await;
    let lease_args = [
        "--leader-elect",
        "--leader-election-namespace",
        "",
        "--leader-election-lease-duration",
        "4s",
    ];
    let start = |w: &mut World, identity: &str| {
        let mut args: Vec<String> = lease_args.iter().map(|s| s.to_string()).collect();
        args[2] = w.ns.clone();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut cmd = w.operator_command(&args);
        cmd.env("POD_NAME", identity);
        w.start_operator_with(cmd)
    };
    let a = start(&mut w, "op-a");
    let b = start(&mut w, "op-b");
    let client = w.client.clone();
    let ns = w.ns.clone();
    let leader = wait_until("one operator to hold the lease", WAIT, || {
        let (client, ns) = (client.clone(), ns.clone());
        async move { lease_holder(&client, &ns).await }
    })
    .await;
    let (leader_idx, standby_idx, standby) = if leader == "op-a" {
        (a, b, "op-b")
    } else {
        (b, a, "op-a")
    };
    w.create("first", by_id(ALICE, "alice@newco.example")).await;
    w.wait_reason("first", "Issued").await;
    assert!(
        w.operators[leader_idx]
            .read_log()
            .contains("intent recorded")
    );
    assert!(
        !w.operators[standby_idx]
            .read_log()
            .contains("intent recorded"),
        "the standby did not reconcile"
    );

    // The leader dies without releasing the lease; the standby takes over once it expires.
    w.operators[leader_idx].kill();
    let killed = std::time::Instant::now();
    let new_leader = wait_until("the standby to take the lease", WAIT, || {
        let (client, ns) = (client.clone(), ns.clone());
        async move { lease_holder(&client, &ns).await.filter(|h| h == standby) }
    })
    .await;
    let takeover = killed.elapsed();
    assert_eq!(new_leader, standby);
    // How soon is a figure, not a bound a loaded machine must meet: the wait above has its
    // generous deadline, and the time is printed (about 4 to 6 s on a quiet machine).
    println!(
        "leader election: the standby took over {takeover:?} after the leader was killed (lease 4 s)"
    );
    w.create("second", by_id(BOB, "bob@partner.example")).await;
    w.wait_reason("second", "Issued").await;
    let posts = w.posts().await;
    assert_eq!(
        posts.len(),
        2,
        "one POST per generation across the takeover: {posts:#?}"
    );

    // A graceful stop releases the lease at once.
    let status = w.operators[standby_idx].terminate();
    assert!(status.success(), "{status:?}");
    assert_lease_released(&client, &ns, "released on SIGTERM").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pass_that_takes_the_probe_without_posting_does_not_keep_the_pause() {
    let mut w = World::new("probe").await;
    w.admin
        .add_fault(FaultRule::once(
            Call::PostInvitation,
            FaultAction::AbuseBlock,
        ))
        .await
        .unwrap();
    w.start_operator(&["--tenant-block-cooldown", "5s"]);
    w.create("alice", by_id(ALICE, "alice@newco.example")).await;
    w.wait_reason("alice", "TenantBlocked").await;
    // Nobody else is waiting to probe.
    w.api.delete("alice", &Default::default()).await.unwrap();
    let cooled = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(5);
    wait_until("the cool-down to pass", WAIT, || async {
        (jiff::Timestamp::now() > cooled).then_some(())
    })
    .await;
    // A dry run is the first pass after the cool-down: it takes the probe and never posts.
    w.create(
        "plan",
        json!({"user": {"id": BOB}, "email": "bob@partner.example", "dryRun": true}),
    )
    .await;
    w.wait_reason("plan", "DryRunComplete").await;
    // The next real reset must still be able to probe, and goes through.
    w.create(
        "carol",
        json!({"user": {"mail": "carol@supplier.example"}, "email": "dave@supplier.example"}),
    )
    .await;
    w.wait_reason("carol", "Issued").await;
    assert_eq!(w.posts().await.len(), 2, "the blocked POST and carol's");
}

// ---------------------------------------------------------------- stopping (docs/operations.md)
//
// SIGTERM at any moment: no new passes, a POST marked as sending finishes and its outcome
// lands, everything else is abandoned; the process exits within 5 s, or within the Graph
// timeout plus 5 s when a POST is in flight, and a leader keeps its Lease until then.

/// The bound of a stop with no POST in flight.
const STOP_WITHOUT_POST: Duration = Duration::from_secs(5);

/// Sends SIGTERM to operator `op`; returns when it was sent.
fn send_sigterm(w: &World, op: usize) -> std::time::Instant {
    let pid = w.operators[op].pid().to_string();
    let kill = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(kill.success(), "kill -TERM {pid}: {kill:?}");
    std::time::Instant::now()
}

/// Waits for operator `op` to exit, failing once `limit` has passed since `signalled`; returns
/// its exit status and how long after `signalled` it was seen gone. Checks every 10 ms rather
/// than wait_until's 200 ms, which would blur the measured times.
async fn exit_within(
    w: &mut World,
    op: usize,
    signalled: std::time::Instant,
    limit: Duration,
) -> (std::process::ExitStatus, Duration) {
    loop {
        if let Some(status) = w.operators[op].try_wait() {
            return (status, signalled.elapsed());
        }
        assert!(
            signalled.elapsed() < limit,
            "operator {op} still running {limit:?} after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `guestreset run --leader-elect` in the world's namespace as `identity`.
fn leader_command(w: &World, identity: &str, extra: &[&str]) -> Command {
    let mut args = vec![
        "--leader-elect",
        "--leader-election-namespace",
        &w.ns,
        "--leader-election-lease-duration",
        "4s",
    ];
    args.extend_from_slice(extra);
    let mut cmd = w.operator_command(&args);
    cmd.env("POD_NAME", identity);
    cmd
}

/// Waits until the simulator holds `n` responses (`HangAfter`).
async fn wait_held(w: &World, n: u64) {
    let admin = w.admin.clone();
    wait_until(&format!("{n} held response(s)"), WAIT, || {
        let admin = admin.clone();
        async move { (admin.held_count().await.ok()? >= n).then_some(()) }
    })
    .await;
}

/// Whether SIGTERM ended the process before it could install its handler. The handler comes
/// right after the async runtime at the top of `main`, but the dynamic loader runs before main
/// (about 2 ms for the debug binary) and the kernel's default action applies meanwhile: no
/// program can do otherwise. Such a process has logged nothing; one that logged and still died of SIGTERM
/// did not install its handler in time.
fn before_its_handler(exit: &std::process::ExitStatus, op: &ChildProcess) -> bool {
    use std::os::unix::process::ExitStatusExt;
    exit.signal() == Some(15) && op.read_log().is_empty()
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_at_any_moment_of_start_up_exits_within_5_s_with_status_0() {
    use rand::{Rng, SeedableRng};
    let mut w = World::new("stop-start").await;
    let seed = std::env::var("SIGTERM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    println!("SIGTERM moments seeded with {seed} (SIGTERM_SEED={seed} repeats them)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut longest = (Duration::ZERO, Duration::ZERO);
    for round in 0..10 {
        // Every other round with leader election: its start-up joins a Lease, too.
        let cmd = if round % 2 == 0 {
            w.operator_command(&[])
        } else {
            leader_command(&w, &format!("op-{round}"), &[])
        };
        let moment = Duration::from_millis(rng.random_range(0..=200));
        let op = w.start_operator_with(cmd);
        // The moment of the signal is this test's input, not a synchronisation.
        tokio::time::sleep(moment).await;
        let signalled = send_sigterm(&w, op);
        let (exit, took) = exit_within(&mut w, op, signalled, STOP_WITHOUT_POST).await;
        println!("round {round}: SIGTERM {moment:?} after spawn, exit {exit:?} after {took:?}");
        if before_its_handler(&exit, &w.operators[op]) {
            println!("round {round}: the signal came while the binary was still being loaded");
            continue;
        }
        assert!(
            exit.success(),
            "round {round}: SIGTERM {moment:?} after spawn ended in {exit:?}"
        );
        if took > Duration::from_secs(1) {
            // Slow, though within the bound: something held the stop until its deadline.
            println!("{}", w.operators[op].read_log());
        }
        longest = longest.max((took, moment));
    }
    println!(
        "SIGTERM during start-up: longest exit {:?} (signal {:?} after spawn), bound {STOP_WITHOUT_POST:?}",
        longest.0, longest.1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_a_graph_outage_exits_within_5_s_and_nothing_is_written_after() {
    let mut w = World::new("stop-outage").await;
    // The outage: reads of a user fail with 503, lookups by mail hang.
    let unavailable = FaultAction::ServerErrorBefore { status: 503 };
    w.admin
        .add_fault(FaultRule::always(Call::GetUser, unavailable))
        .await
        .unwrap();
    w.admin
        .add_fault(FaultRule::always(Call::ListUsers, FaultAction::HangAfter))
        .await
        .unwrap();
    let op = w.start_operator(&[]);
    w.create("by-id", by_id(ALICE, "alice@newco.example")).await;
    w.create(
        "by-mail",
        json!({"user": {"mail": "carol@supplier.example"}, "email": "dave@supplier.example"}),
    )
    .await;
    // Both resources in flight: one retrying a failing read, one waiting on a hanging one.
    let admin = w.admin.clone();
    wait_until("a read failing again and a read hanging", WAIT, || {
        let admin = admin.clone();
        async move {
            let journal = admin.journal().await.ok()?;
            let failed = journal
                .iter()
                .filter(|e| e.call == Call::GetUser && e.status == 503)
                .count();
            (failed >= 2 && admin.held_count().await.ok()? >= 1).then_some(())
        }
    })
    .await;

    let signalled = send_sigterm(&w, op);
    // The outage ends right away: a pass that was not abandoned would now go on to write.
    w.admin.clear_faults().await.unwrap();
    w.admin.release_held().await.unwrap();
    let (exit, took) = exit_within(&mut w, op, signalled, STOP_WITHOUT_POST).await;
    println!("SIGTERM during a Graph outage: exit {exit:?} after {took:?}");
    assert!(exit.success(), "{exit:?}");
    let writes: Vec<_> = w.graph_writes().await;
    assert!(
        writes.is_empty(),
        "nothing reached the directory after SIGTERM: {writes:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_while_a_post_is_held_keeps_the_lease_until_the_outcome_is_written() {
    let mut w = World::new("stop-held").await;
    w.admin
        .add_fault(FaultRule::once(
            Call::PostInvitation,
            FaultAction::HangAfter,
        ))
        .await
        .unwrap();
    let graph_timeout = Duration::from_secs(10);
    let cmd = leader_command(&w, "op-held", &["--graph-timeout", "10s"]);
    let op = w.start_operator_with(cmd);
    let (client, ns) = (w.client.clone(), w.ns.clone());
    wait_until("the operator to hold the Lease", WAIT, || {
        let (client, ns) = (client.clone(), ns.clone());
        async move { lease_holder(&client, &ns).await.filter(|h| h == "op-held") }
    })
    .await;
    w.create("alice", by_id(ALICE, "alice@newco.example")).await;
    wait_held(&w, 1).await;

    let signalled = send_sigterm(&w, op);
    // Longer than a stop without a POST may take, the process waits for the POST and keeps
    // the Lease, so that no standby works on alice meanwhile.
    while signalled.elapsed() < STOP_WITHOUT_POST + Duration::from_secs(1) {
        assert!(w.operators[op].is_running(), "exited with the POST held");
        let holder = lease_holder(&client, &ns).await;
        assert_eq!(holder.as_deref(), Some("op-held"), "Lease released early");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    w.admin.release_held().await.unwrap();
    let bound = graph_timeout + STOP_WITHOUT_POST;
    let (exit, took) = exit_within(&mut w, op, signalled, bound).await;
    println!("SIGTERM with a POST held (released after 6 s): exit {exit:?} after {took:?}");
    assert!(exit.success(), "{exit:?}");

    let alice = w.get("alice").await;
    assert_eq!(reason_of(&alice), "Issued", "{:?}", ready(&alice));
    assert_eq!(status(&alice).attempt, None);
    assert_eq!(w.posts().await.len(), 1);
    assert_lease_released(&client, &ns, "released once the outcome was written").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_while_a_post_never_answers_exits_after_the_graph_timeout_with_the_outcome() {
    let mut w = World::new("stop-timeout").await;
    w.admin
        .add_fault(FaultRule::once(
            Call::PostInvitation,
            FaultAction::HangAfter,
        ))
        .await
        .unwrap();
    let graph_timeout = Duration::from_secs(6);
    let op = w.start_operator(&["--graph-timeout", "6s"]);
    w.create("alice", by_id(ALICE, "alice@newco.example")).await;
    wait_held(&w, 1).await;
    let signalled = send_sigterm(&w, op);
    let (exit, took) = exit_within(&mut w, op, signalled, graph_timeout + STOP_WITHOUT_POST).await;
    println!("SIGTERM with a POST that never answers (timeout 6 s): exit {exit:?} after {took:?}");
    assert!(exit.success(), "{exit:?}");
    // The timed-out POST is recorded as what it is: maybe issued, to be resolved from the
    // directory; the attempt stays so that no second POST goes out blindly.
    let alice = w.get("alice").await;
    let condition = ready(&alice);
    assert!(
        condition
            .message
            .contains("may or may not have taken effect"),
        "{condition:?}"
    );
    let attempt = status(&alice).attempt.clone().expect("the attempt stays");
    assert!(attempt.post_started_at.is_some());
    assert_eq!(w.posts().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_lease_begins_the_stop_and_exits_with_an_error() {
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    let mut w = World::new("stop-lost").await;
    let cmd = leader_command(&w, "op-lost", &[]);
    let op = w.start_operator_with(cmd);
    let (client, ns) = (w.client.clone(), w.ns.clone());
    wait_until("the operator to hold the Lease", WAIT, || {
        let (client, ns) = (client.clone(), ns.clone());
        async move { lease_holder(&client, &ns).await.filter(|h| h == "op-lost") }
    })
    .await;
    // Another holder takes the Lease over, as after a network partition.
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let theft = json!({"spec": {
        "holderIdentity": "thief",
        "leaseDurationSeconds": 60,
        "renewTime": MicroTime(jiff::Timestamp::now()),
    }});
    let stolen = std::time::Instant::now();
    leases
        .patch("guestreset", &PatchParams::default(), &Patch::Merge(theft))
        .await
        .unwrap();
    // The renewal notices within a Lease duration (4 s); then the stop's own bound applies.
    let limit = Duration::from_secs(4) + STOP_WITHOUT_POST;
    let (exit, took) = exit_within(&mut w, op, stolen, limit).await;
    println!("Lease taken over: exit {exit:?} after {took:?}");
    assert_eq!(exit.code(), Some(1), "a lost Lease is an error");
    let log = w.operators[op].read_log();
    assert!(log.contains("lost the leader lease; stopping"), "{log}");
    assert_eq!(lease_holder(&client, &ns).await.as_deref(), Some("thief"));
}

// ------------------------------------------------- the Secret, the persisted pause, failed steps

/// Defect: the controller force-applied the redeem URL into any Secret the spec named and made
/// the reset its owner. A Secret it does not own is refused before any Graph write and left
/// exactly as it was; one it created is updated for the next generation.
#[tokio::test(flavor = "multi_thread")]
async fn a_foreign_secret_is_refused_before_any_graph_write_and_left_alone() {
    use k8s_openapi::ByteString;
    let mut w = World::new("secret-owner").await;
    let secrets: Api<Secret> = Api::namespaced(w.client.clone(), &w.ns);
    let foreign: Secret = serde_json::from_value(json!({
        "metadata": {"name": "app-creds"},
        "data": {"password": "aHVudGVyMg=="},
    }))
    .unwrap();
    let foreign = secrets.create(&Default::default(), &foreign).await.unwrap();
    w.start_operator(&[]);
    w.create(
        "alice",
        json!({"user": {"id": ALICE}, "email": "alice@newco.example", "redeemUrlSecret": {"name": "app-creds"}}),
    )
    .await;
    let denied = w.wait_reason("alice", "PolicyDenied").await;
    assert!(ready(&denied).message.contains("app-creds"));
    let writes: Vec<_> = w.graph_writes().await;
    assert!(writes.is_empty(), "nothing written to Graph: {writes:#?}");
    let after = secrets.get("app-creds").await.unwrap();
    assert_eq!(
        after.data, foreign.data,
        "the foreign Secret's data is untouched"
    );
    assert_eq!(
        after.metadata.owner_references, None,
        "and it was not adopted"
    );
    assert_eq!(
        after.metadata.resource_version,
        foreign.metadata.resource_version
    );

    // A Secret the reset creates is its own: the next generation's URL replaces the first.
    w.create(
        "bob",
        json!({"user": {"id": BOB}, "email": "bob@newco.example", "redeemUrlSecret": {"name": "bob-url"}}),
    )
    .await;
    w.wait_reason("bob", "Issued").await;
    let first: Option<ByteString> = secrets
        .get("bob-url")
        .await
        .unwrap()
        .data
        .unwrap()
        .remove("redeemUrl");
    w.patch_spec("bob", json!({"email": "bob@other.example"}))
        .await;
    w.wait_reason("bob", "Issued").await;
    let owned = secrets.get("bob-url").await.unwrap();
    let second = owned.data.clone().unwrap().remove("redeemUrl");
    assert_ne!(
        first, second,
        "the owned Secret carries the new invitation's URL"
    );
    let urls = w
        .admin
        .issued_tokens_and_redeem_urls()
        .await
        .unwrap()
        .redeem_urls;
    let second = String::from_utf8(second.unwrap().0).unwrap();
    assert_eq!(urls.last(), Some(&second));
    let owner = &owned.metadata.owner_references.unwrap()[0];
    assert_eq!(owner.uid, w.get("bob").await.metadata.uid.unwrap());
}

/// Defect: the tenant pause lived in memory and was re-armed from a resource's condition. Now
/// its time is persisted: a restarted controller, and a second one, write nothing to Graph
/// before the cool-down ends.
#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_block_survives_a_restart_and_holds_for_every_replica() {
    use k8s_openapi::api::core::v1::ConfigMap;
    let mut w = World::new("pause-restart").await;
    w.admin
        .add_fault(FaultRule::times(
            Call::PostInvitation,
            1,
            FaultAction::AbuseBlock,
        ))
        .await
        .unwrap();
    let first = w.start_operator(&["--tenant-block-cooldown", "1h"]);
    w.create("alice", by_id(ALICE, "alice@newco.example")).await;
    w.wait_reason("alice", "TenantBlocked").await;
    let maps: Api<ConfigMap> = Api::namespaced(w.client.clone(), &w.ns);
    let record = maps.get("guestreset-tenant").await.unwrap();
    assert!(record.data.unwrap().contains_key("blockedAt"));
    w.operators[first].kill();
    let before_restart = w.journal().await.last().map_or(0, |e| e.seq);

    // A fresh process (and a second replica beside it) with nothing in memory.
    w.start_operator(&["--tenant-block-cooldown", "1h"]);
    w.start_operator(&["--tenant-block-cooldown", "1h"]);
    w.create("bob", by_id(BOB, "bob@newco.example")).await;
    w.create(
        "carol",
        json!({"user": {"mail": "carol@supplier.example"}, "email": "dave@supplier.example"}),
    )
    .await;
    w.wait_reason("bob", "TenantBlocked").await;
    w.wait_reason("carol", "TenantBlocked").await;
    let writes: Vec<_> = w
        .graph_writes()
        .await
        .into_iter()
        .filter(|e| e.seq > before_restart)
        .collect();
    assert!(
        writes.is_empty(),
        "no Graph write after the restart: {writes:#?}"
    );

    // An operator with a short cool-down reads the same record as over; asked to try now (each
    // resource keeps its own wait, written when it was blocked), it probes and the tenant opens.
    for op in w.operators.iter_mut() {
        op.kill();
    }
    w.start_operator(&["--tenant-block-cooldown", "1s"]);
    w.annotate_retry("alice", "probe").await;
    w.wait_reason("alice", "Issued").await;
    assert!(
        maps.get_opt("guestreset-tenant").await.unwrap().is_none(),
        "a successful probe clears the record"
    );
}

/// A failed effect names its step in the log line, the metric and a Warning Event. Provoked by
/// running the controller as a user that may read resources but not write their status.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_step_is_named_in_the_log_the_metric_and_an_event() {
    let mut w = World::new("step-error").await;
    let op = start_operator_as(
        &mut w,
        "guestreset-without-status",
        json!([
            {"apiGroups": ["guestreset.io"], "resources": ["guestredemptionresets"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create", "update", "delete"]},
        ]),
    )
    .await;
    w.create("alice", by_id(ALICE, "alice@newco.example")).await;

    let events = wait_until("a Warning Event naming the failed step", WAIT, || async {
        let found: Vec<_> = w
            .events("alice")
            .await
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("ReconcileFailed"))
            .collect();
        (!found.is_empty()).then_some(found)
    })
    .await;
    let note = events[0].note.clone().unwrap_or_default();
    // The first status write of a new generation is its intent (docs/design.md, "One pass").
    assert!(note.contains("RecordIntent"), "{note}");
    assert_eq!(events[0].type_.as_deref(), Some("Warning"));
    let addr = admin_addr(&w.operators[op]).await;
    wait_until("the metric to count the failed step", WAIT, || {
        let url = format!("http://{addr}/metrics");
        async move {
            let (_, text) = http_get(&url).await?;
            text.contains(r#"guestreset_reconciles_total{result="error",step="RecordIntent"}"#)
                .then_some(())
        }
    })
    .await;
    let logged = w.operators[op].read_log().lines().any(|line| {
        serde_json::from_str::<Value>(line)
            .is_ok_and(|v| v["fields"]["step"] == "RecordIntent" && v["level"] == "WARN")
    });
    assert!(logged, "a log line with step=RecordIntent");
    assert!(
        w.posts().await.is_empty(),
        "nothing was posted without a recorded intent"
    );
}

/// Starts an operator as `user`, who holds exactly `rules` in the test's namespace: the test's
/// admin kubeconfig, impersonating that user. Returns the operator's index.
async fn start_operator_as(w: &mut World, user: &str, rules: Value) -> usize {
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": user},
        "rules": rules,
    }))
    .unwrap();
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": user},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": user},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }))
    .unwrap();
    Api::<Role>::namespaced(w.client.clone(), &w.ns)
        .create(&Default::default(), &role)
        .await
        .unwrap();
    Api::<RoleBinding>::namespaced(w.client.clone(), &w.ns)
        .create(&Default::default(), &binding)
        .await
        .unwrap();
    let mut kubeconfig: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(w.cp.kubeconfig_path()).unwrap()).unwrap();
    for entry in kubeconfig["users"].as_sequence_mut().unwrap() {
        entry["user"]["as"] = user.into();
    }
    let path = w._state.path().join(format!("{user}.kubeconfig"));
    std::fs::write(&path, serde_yaml::to_string(&kubeconfig).unwrap()).unwrap();
    let mut cmd = w.operator_command(&[]);
    cmd.env("KUBECONFIG", &path);
    w.start_operator_with(cmd)
}

/// The controller's rights in its namespace as the chart grants them, for the tenant-pause
/// record either as the chart has it (list and watch limited to the record's name) or, with
/// `watch_record` false, without list and watch.
fn controller_rules(watch_record: bool) -> Value {
    let record_verbs: &[&str] = if watch_record {
        &["get", "list", "watch", "update", "delete"]
    } else {
        &["get", "update", "delete"]
    };
    json!([
        {"apiGroups": ["guestreset.io"], "resources": ["guestredemptionresets"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["guestreset.io"], "resources": ["guestredemptionresets/status"], "verbs": ["get", "update", "patch"]},
        {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "patch"]},
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]},
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["guestreset-tenant"], "verbs": record_verbs},
    ])
}

/// The value of an unlabelled metric on an operator's `/metrics`, once it is served.
async fn metric(w: &World, op: usize, name: &str) -> f64 {
    let url = format!("http://{}/metrics", admin_addr(&w.operators[op]).await);
    let text = wait_until("the operator's /metrics", WAIT, || {
        let url = url.clone();
        async move { http_get(&url).await.map(|(_, text)| text) }
    })
    .await;
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics"))
}

/// Records a tenant block now, the way another replica does, in the record every replica
/// follows; then a reset for bob must stop at `TenantBlocked` without any Graph write.
async fn bob_is_stopped_by_a_block_recorded_elsewhere(w: &World) {
    use k8s_openapi::api::core::v1::ConfigMap;
    let seq = w.journal().await.last().map_or(0, |e| e.seq);
    let record: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "guestreset-tenant"},
        "data": {"blockedAt": jiff::Timestamp::now().to_string()},
    }))
    .unwrap();
    Api::<ConfigMap>::namespaced(w.client.clone(), &w.ns)
        .create(&Default::default(), &record)
        .await
        .unwrap();
    w.create("bob", by_id(BOB, "bob@newco.example")).await;
    w.wait_reason("bob", "TenantBlocked").await;
    let writes: Vec<JournalEntry> = w
        .graph_writes()
        .await
        .into_iter()
        .filter(|e| e.seq > seq)
        .collect();
    assert!(
        writes.is_empty(),
        "no Graph write after the block: {writes:#?}"
    );
}

/// The check of the tenant pause before each Graph write reads a watch of its record: with
/// the chart's rights (list and watch of that one name) a block recorded by another replica
/// stops this one's writes, and the checks read nothing from the API server.
#[tokio::test(flavor = "multi_thread")]
async fn a_block_recorded_by_another_replica_is_seen_through_the_watch_of_the_record() {
    let mut w = World::new("pause-watch").await;
    let op = start_operator_as(&mut w, "guestreset-chart-rights", controller_rules(true)).await;
    wait_until("the watch to follow the record", WAIT, || async {
        (metric(&w, op, "guestreset_tenant_record_followed").await == 1.0).then_some(())
    })
    .await;
    w.create("alice", by_id(ALICE, "alice@newco.example")).await;
    w.wait_reason("alice", "Issued").await;
    assert_eq!(
        metric(&w, op, "guestreset_tenant_record_reads_total").await,
        0.0,
        "the checks before alice's PATCH and POST read the watch, not the API server"
    );

    bob_is_stopped_by_a_block_recorded_elsewhere(&w).await;
    assert_eq!(
        metric(&w, op, "guestreset_tenant_record_reads_total").await,
        0.0
    );
}

/// Without the right to watch the record the check reads it before the Graph writes, as
/// before: slower, and a read is trusted for 10 s, shared by the checks within.
#[tokio::test(flavor = "multi_thread")]
async fn without_the_watch_the_record_is_read_before_each_write() {
    let mut w = World::new("pause-read").await;
    let op = start_operator_as(&mut w, "guestreset-no-watch", controller_rules(false)).await;
    w.create("alice", by_id(ALICE, "alice@newco.example")).await;
    w.wait_reason("alice", "Issued").await;
    // After alice's checks, and so after its read of the record.
    let alice_read = tokio::time::Instant::now();
    assert_eq!(
        metric(&w, op, "guestreset_tenant_record_followed").await,
        0.0
    );
    assert_eq!(
        metric(&w, op, "guestreset_tenant_record_reads_total").await,
        1.0,
        "one read before the PATCH of the mail serves the POST's check seconds later"
    );
    // A read is trusted for 10 s (the contract's bound): a block recorded within them may
    // not be seen. Past them, the next check reads again.
    tokio::time::sleep_until(alice_read + Duration::from_secs(10)).await;
    bob_is_stopped_by_a_block_recorded_elsewhere(&w).await;
}

/// Defect: a successful probe deleted whatever block the record held, even one that Graph gave
/// another replica after the probe went through (and every replica following the record would
/// then end its pause). The deletion now keeps a block later than the one it answered.
#[tokio::test(flavor = "multi_thread")]
async fn a_success_deletes_only_the_block_it_answered() {
    use guestreset::controller::tenant::record::Record;
    use k8s_openapi::api::core::v1::ConfigMap;
    let w = World::new("pause-clear").await;
    let record = Record::new(
        w.client.clone(),
        &w.ns,
        "guestreset-tenant",
        Default::default(),
    );
    let answered = jiff::Timestamp::now();
    let later = answered + jiff::SignedDuration::from_secs(10);
    record.record_block(later).await.unwrap();
    record.clear(answered).await.unwrap();
    let maps: Api<ConfigMap> = Api::namespaced(w.client.clone(), &w.ns);
    let kept = maps.get("guestreset-tenant").await.unwrap();
    assert_eq!(kept.data.unwrap()["blockedAt"], later.to_string());
    record.clear(later).await.unwrap();
    assert!(maps.get_opt("guestreset-tenant").await.unwrap().is_none());
}

/// Defect: Graph refuses an app-only reset of a user who holds a directory role (403), but the
/// mail PATCH before it had succeeded: the guest was left with a changed mail and no reset, and
/// the refusal was retried every 10 minutes. Now the mail is put back, and the refusal is final
/// (Forbidden, Stalled, no next attempt).
#[tokio::test(flavor = "multi_thread")]
async fn a_role_holding_guest_keeps_its_mail_and_is_refused_once() {
    let mut w = World::new("role-holder").await;
    let id = "b1b2c3d4-e5f6-4789-8abc-def012345678";
    let mut holder = SeedUser::guest(
        id,
        "ops_x.example#EXT#@fabrikam.onmicrosoft.com",
        "ops@x.example",
    );
    holder.privileged = true;
    w.admin.put_user(&holder).await.unwrap();
    w.start_operator(&[]);
    w.create("role-holder", by_id(id, "ops@newco.example"))
        .await;
    let obj = w.wait_reason("role-holder", "Forbidden").await;

    let user = w.admin.user(id).await.unwrap().unwrap();
    assert_eq!(
        user.mail.as_deref(),
        Some("ops@x.example"),
        "the mail is put back"
    );
    let status = obj.status.clone().unwrap();
    assert!(status.next_attempt_at.is_none(), "not retried: {status:?}");
    let stalled = status.conditions.iter().find(|c| c.type_ == "Stalled");
    assert_eq!(
        stalled.map(|c| c.status.as_str()),
        Some("True"),
        "{status:?}"
    );
    assert!(
        ready(&obj).message.contains("put back to ops@x.example"),
        "{}",
        ready(&obj).message
    );
    let writes = w.graph_writes().await;
    let calls: Vec<Call> = writes.iter().map(|e| e.call).collect();
    assert_eq!(
        calls,
        [Call::PatchUser, Call::PostInvitation, Call::PatchUser],
        "{writes:?}"
    );

    // A later pass of the resource (a label change) and another reset: still one POST for it.
    let labels = json!({"metadata": {"labels": {"touched": "yes"}}});
    w.api
        .patch(
            "role-holder",
            &PatchParams::default(),
            &Patch::Merge(&labels),
        )
        .await
        .unwrap();
    w.create("after", by_id(ALICE, "alice@newco.example")).await;
    w.wait_reason("after", "Issued").await;
    let posts = w.posts().await;
    let refused = posts
        .iter()
        .filter(|e| e.invited_user_id.as_deref() == Some(id));
    assert_eq!(refused.count(), 1, "{posts:?}");
    assert_eq!(posts.len(), 2, "{posts:?}");
}
