//! The Graph client against the Graph simulator, over real TLS with tokens from
//! azure_identity's ClientSecretCredential.

use graph_sim::{Call, FaultAction, FaultRule, JournalEntry, SeedUser, SimConfig, Simulator};
use guestreset::graph::{
    ErrorClass, FailureKind, GraphClient, GraphError, GraphSettings, InvitationMessage,
    ResetRedemptionRequest, RetryPolicy, WriteLimiter, credential, http,
};
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const ALICE_ID: &str = "3f0a6c1e-8d2b-4c55-9b0e-2f6a1d9c7e41";
const ALICE_UPN: &str = "alice_contoso.com#EXT#@fabrikam.onmicrosoft.com";
const ALICE_MAIL: &str = "alice@contoso.com";
const BOB_ID: &str = "6b1d7f0a-1111-4c55-9b0e-2f6a1d9c7e42";
const CAROL_ID: &str = "7c2e8a1b-2222-4c55-9b0e-2f6a1d9c7e43";
const OREILLY_ID: &str = "8d3f9b2c-3333-4c55-9b0e-2f6a1d9c7e44";
const MEMBER_ID: &str = "9e4a0c3d-4444-4c55-9b0e-2f6a1d9c7e45";

fn seed_users() -> Vec<SeedUser> {
    let mut alice = SeedUser::guest(ALICE_ID, ALICE_UPN, ALICE_MAIL);
    alice.other_mails = vec!["alice@newco.example".into()];
    let mut bob = SeedUser::external_guest(BOB_ID, "bob@contoso.com");
    bob.other_mails = vec!["shared@partner.example".into()];
    let mut carol = SeedUser::external_guest(CAROL_ID, "carol@contoso.com");
    carol.proxy_addresses = vec![
        "SMTP:carol@contoso.com".into(),
        "smtp:carol.alias@contoso.com".into(),
    ];
    let oreilly = SeedUser::external_guest(OREILLY_ID, "o'reilly@contoso.com");
    let member = SeedUser::tenant_member(MEMBER_ID, "dave@fabrikam.example");
    vec![alice, bob, carol, oreilly, member]
}

struct Harness {
    sim: Simulator,
    client: GraphClient,
    _dir: tempfile::TempDir,
}

/// Fast retries so failing paths finish quickly; the shape of the policy is the default's.
fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(100),
        ..RetryPolicy::default()
    }
}

fn env_for(sim: &Simulator, secret: &str) -> impl Fn(&str) -> Option<String> + use<> {
    let vars: HashMap<&'static str, String> = HashMap::from([
        (credential::AZURE_TENANT_ID, sim.tenant_id().to_owned()),
        (credential::AZURE_CLIENT_ID, sim.client_id().to_owned()),
        (credential::AZURE_CLIENT_SECRET, secret.to_owned()),
        (credential::AZURE_AUTHORITY_HOST, sim.base_url()),
    ]);
    move |name| vars.get(name).cloned()
}

async fn start_sim(dir: &tempfile::TempDir) -> Simulator {
    graph_sim::start(SimConfig::new(dir.path().join("sim")).with_users(seed_users()))
        .await
        .expect("simulator starts")
}

fn client_for(sim: &Simulator, settings: GraphSettings, limiter: WriteLimiter) -> GraphClient {
    let http = http::build_client_with_ca_file(settings.timeout, Some(&sim.ca_pem_path()))
        .expect("HTTP client");
    let cred = credential::from_env(&env_for(sim, sim.client_secret()), &http).expect("credential");
    GraphClient::new(settings, http, cred, limiter)
}

async fn harness_with(settings: impl FnOnce(GraphSettings) -> GraphSettings) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(&dir).await;
    let settings = settings(GraphSettings::new(sim.base_url()).with_retry(fast_retry()));
    // A generous limiter: these tests are about calls, not pacing.
    let client = client_for(&sim, settings, WriteLimiter::new(6000, 100));
    Harness {
        sim,
        client,
        _dir: dir,
    }
}

async fn harness() -> Harness {
    harness_with(|s| s).await
}

impl Harness {
    async fn journal(&self, call: Call) -> Vec<JournalEntry> {
        self.sim
            .admin()
            .journal()
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.call == call)
            .collect()
    }

    async fn fault(&self, rule: FaultRule) {
        self.sim.admin().add_fault(rule).await.unwrap();
    }
}

fn reset_request(user_id: &str, email: &str) -> ResetRedemptionRequest {
    ResetRedemptionRequest {
        user_id: user_id.into(),
        email: email.into(),
        redirect_url: "https://myapps.microsoft.com".into(),
        send_invitation_message: true,
        message: Some(InvitationMessage {
            language: Some("en-US".into()),
            body: Some("Your access moves to your new address.".into()),
            cc_recipient: Some("manager@fabrikam.example".into()),
        }),
    }
}

fn at(entry: &JournalEntry) -> jiff::Timestamp {
    entry.at.parse().expect("journal time is RFC 3339")
}

fn secs_between(a: &JournalEntry, b: &JournalEntry) -> f64 {
    (at(b) - at(a))
        .total(jiff::Unit::Second)
        .expect("span of times")
}

#[tokio::test]
async fn get_user_by_id_and_by_guest_upn() {
    let h = harness().await;
    let by_id = h.client.get_user(ALICE_ID).await.unwrap().expect("alice");
    assert_eq!(by_id.id, ALICE_ID);
    assert!(by_id.is_guest());
    assert_eq!(by_id.user_principal_name.as_deref(), Some(ALICE_UPN));
    assert_eq!(by_id.mail.as_deref(), Some(ALICE_MAIL));
    assert!(by_id.carries_email("ALICE@newco.example"));

    let by_upn = h
        .client
        .get_user(ALICE_UPN)
        .await
        .unwrap()
        .expect("alice by UPN");
    assert_eq!(by_upn, by_id);

    let member = h.client.get_user(MEMBER_ID).await.unwrap().expect("member");
    assert!(!member.is_guest());

    let missing = h
        .client
        .get_user("00000000-0000-0000-0000-00000000dead")
        .await
        .unwrap();
    assert!(missing.is_none(), "404 is None");

    let gets = h.journal(Call::GetUser).await;
    assert_eq!(gets.len(), 4, "one request per call, no retries: {gets:#?}");
    assert!(
        gets[1].path.contains("%23EXT%23"),
        "UPN percent-encoded: {}",
        gets[1].path
    );
    let query = gets[0].query.as_deref().unwrap_or_default();
    assert!(query.contains("externalUserStateChangeDateTime"), "{query}");
    let ids: HashSet<_> = gets
        .iter()
        .map(|e| {
            let id = e.client_request_id.clone().expect("client-request-id sent");
            uuid::Uuid::parse_str(&id).expect("client-request-id is a UUID");
            id
        })
        .collect();
    assert_eq!(ids.len(), 4, "a fresh client-request-id per attempt");
}

#[tokio::test]
async fn user_lookups_by_mail_and_by_any_held_email() {
    let h = harness().await;
    let found = h
        .client
        .find_users_by_mail("ALICE@contoso.com")
        .await
        .unwrap();
    assert_eq!(
        found.iter().map(|u| u.id.as_str()).collect::<Vec<_>>(),
        [ALICE_ID]
    );
    assert!(
        h.client
            .find_users_by_mail("nobody@contoso.com")
            .await
            .unwrap()
            .is_empty()
    );

    // A quote in the address is escaped, not a syntax error.
    let quoted = h
        .client
        .find_users_by_mail("o'reilly@contoso.com")
        .await
        .unwrap();
    assert_eq!(quoted.len(), 1);
    assert_eq!(quoted[0].id, OREILLY_ID);

    let holding = |email: &'static str| {
        let client = h.client.clone();
        async move {
            let mut ids: Vec<String> = client
                .find_users_holding_email(email)
                .await
                .unwrap()
                .into_iter()
                .map(|u| u.id)
                .collect();
            ids.sort();
            ids
        }
    };
    assert_eq!(
        holding("shared@partner.example").await,
        [BOB_ID],
        "otherMails"
    );
    assert_eq!(
        holding("carol.alias@contoso.com").await,
        [CAROL_ID],
        "proxyAddresses"
    );
    assert_eq!(holding("bob@contoso.com").await, [BOB_ID], "mail");
    assert_eq!(
        holding("dave@fabrikam.onmicrosoft.com").await,
        [MEMBER_ID],
        "userPrincipalName"
    );
    assert!(holding("free@newco.example").await.is_empty());
}

#[tokio::test]
async fn set_mail_then_reset_redemption() {
    let h = harness().await;
    h.client
        .set_mail(ALICE_ID, "alice@newco.example")
        .await
        .unwrap();
    let alice = h.client.get_user(ALICE_ID).await.unwrap().unwrap();
    assert_eq!(alice.mail.as_deref(), Some("alice@newco.example"));

    let invitation = h
        .client
        .reset_redemption(&reset_request(ALICE_ID, "alice@newco.example"))
        .await
        .unwrap();
    assert!(!invitation.id.is_empty());
    assert_eq!(invitation.status, "PendingAcceptance");
    assert_eq!(invitation.invited_user_email_address, "alice@newco.example");
    assert_eq!(invitation.invited_user_id.as_deref(), Some(ALICE_ID));
    let secrets = h.sim.admin().issued_tokens_and_redeem_urls().await.unwrap();
    assert_eq!(
        secrets.redeem_urls,
        [invitation.redeem_url.expose_secret().to_owned()]
    );
    assert!(!format!("{invitation:?}").contains(invitation.redeem_url.expose_secret()));
    // The audit identifiers of the POST: the one this client sent, and Graph's own.
    let posts = h.journal(Call::PostInvitation).await;
    assert_eq!(
        posts[0].client_request_id.as_deref(),
        Some(invitation.client_request_id.as_str())
    );
    let request_id = invitation
        .request_id
        .as_deref()
        .expect("Graph's request-id");
    uuid::Uuid::parse_str(request_id).expect("the simulator's request-id is a UUID");
    assert_ne!(request_id, invitation.client_request_id);

    let records = h.sim.admin().invitations().await.unwrap();
    assert_eq!(records.len(), 1);
    let record = &records[0];
    assert_eq!(record.user_id, ALICE_ID);
    assert!(record.reset_redemption);
    assert!(record.send_invitation_message);
    assert_eq!(record.invite_redirect_url, "https://myapps.microsoft.com");
    assert_eq!(
        record.invited_user_message_info["ccRecipients"][0]["emailAddress"]["address"],
        "manager@fabrikam.example"
    );

    let after = h.client.get_user(ALICE_ID).await.unwrap().unwrap();
    assert_eq!(
        after.external_user_state.as_deref(),
        Some("PendingAcceptance")
    );
    assert!(after.external_user_state_change_date_time.is_some());
    assert_eq!(h.journal(Call::PostInvitation).await.len(), 1);
    assert!(h.sim.admin().hazards().await.unwrap().is_empty());
}

#[tokio::test]
async fn email_not_on_the_user_is_a_definite_refusal() {
    let h = harness().await;
    let err = h
        .client
        .reset_redemption(&reset_request(BOB_ID, "bob@elsewhere.example"))
        .await
        .unwrap_err();
    assert!(err.is_email_not_on_user(), "{err}");
    assert_eq!(err.class(), ErrorClass::Definite);
    assert_eq!(err.status, Some(400));
    assert!(err.request_id.is_some() && err.client_request_id.is_some());
    assert_eq!(h.journal(Call::PostInvitation).await.len(), 1);
}

/// Faults that refuse the POST: each a definite answer, never repeated.
#[tokio::test]
async fn refusals_map_to_their_classes_and_are_not_retried() {
    let h = harness().await;
    let req = reset_request(ALICE_ID, "alice@newco.example");
    type Check = fn(&GraphError) -> bool;
    let cases: [(FaultAction, Check, ErrorClass); 3] = [
        (
            FaultAction::Forbidden,
            GraphError::is_forbidden,
            ErrorClass::Definite,
        ),
        (
            FaultAction::Unauthorized,
            GraphError::is_forbidden,
            ErrorClass::Definite,
        ),
        (
            FaultAction::AbuseBlock,
            GraphError::is_abuse_blocked,
            ErrorClass::AbuseBlocked,
        ),
    ];
    for (n, (action, check, class)) in cases.into_iter().enumerate() {
        let name = action.name();
        h.fault(FaultRule::once(Call::PostInvitation, action)).await;
        let err = h.client.reset_redemption(&req).await.unwrap_err();
        println!("{name}: {err}");
        assert!(check(&err), "{name}: {err}");
        assert_eq!(err.class(), class, "{name}");
        assert_eq!(err.attempts, 1, "{name} not retried");
        assert_eq!(h.journal(Call::PostInvitation).await.len(), n + 1, "{name}");
    }
    assert!(h.sim.admin().invitations().await.unwrap().is_empty());
}

/// Faults after which the invitation may exist: the POST is sent exactly once.
#[tokio::test]
async fn ambiguous_post_failures_are_never_repeated() {
    let h = harness_with(|s| s.with_timeout(Duration::from_millis(1500))).await;
    let req = reset_request(ALICE_ID, "alice@newco.example");
    let cases = [
        (
            FaultAction::ServerErrorAfter { status: 500 },
            FailureKind::Status,
        ),
        (
            FaultAction::ServerErrorBefore { status: 503 },
            FailureKind::Status,
        ),
        (
            FaultAction::DropConnectionAfter,
            FailureKind::ConnectionLost,
        ),
        // The client cannot tell a drop before processing from one after.
        (
            FaultAction::DropConnectionBefore,
            FailureKind::ConnectionLost,
        ),
        (FaultAction::HangAfter, FailureKind::Timeout),
    ];
    for (n, (action, kind)) in cases.into_iter().enumerate() {
        let name = action.name();
        h.fault(FaultRule::once(Call::PostInvitation, action)).await;
        let started = std::time::Instant::now();
        let err = h.client.reset_redemption(&req).await.unwrap_err();
        println!("{name}: {err} ({:?})", started.elapsed());
        assert_eq!(err.class(), ErrorClass::Ambiguous, "{name}: {err}");
        assert!(err.may_have_taken_effect());
        assert_eq!(err.kind, kind, "{name}");
        assert_eq!(err.attempts, 1, "{name}");
        // Let a dropped or held request settle before reading the journal.
        h.sim.admin().release_held().await.unwrap();
        let posts = h.journal(Call::PostInvitation).await;
        assert_eq!(posts.len(), n + 1, "{name}: exactly one POST: {posts:#?}");
        assert_eq!(posts[n].fault.as_deref(), Some(name));
    }
    // ServerErrorAfter, DropConnectionAfter and HangAfter applied the request.
    assert_eq!(h.sim.admin().invitations().await.unwrap().len(), 3);
}

/// A 429 proves the POST was not processed, but the client still does not resend it:
/// the caller marks every send (`postStartedAt`) and resends itself.
#[tokio::test]
async fn a_throttled_post_is_returned_to_the_caller_not_resent() {
    let h = harness().await;
    let req = reset_request(ALICE_ID, "alice@newco.example");
    for (n, seconds) in [Some(1), None, Some(120)].into_iter().enumerate() {
        h.fault(FaultRule::once(
            Call::PostInvitation,
            FaultAction::Throttle {
                retry_after_seconds: seconds,
                retry_after_http_date: false,
            },
        ))
        .await;
        let err = h.client.reset_redemption(&req).await.unwrap_err();
        assert_eq!(
            err.class(),
            ErrorClass::Throttled {
                retry_after: seconds.map(Duration::from_secs)
            },
            "{err}"
        );
        assert_eq!(err.attempts, 1);
        let posts = h.journal(Call::PostInvitation).await;
        assert_eq!(posts.len(), n + 1, "one POST per call: {posts:#?}");
        assert_eq!(posts[n].status, 429);
    }
    assert!(h.sim.admin().invitations().await.unwrap().is_empty());

    // The caller's resend is a new POST with a new client-request-id.
    let invitation = h.client.reset_redemption(&req).await.unwrap();
    let posts = h.journal(Call::PostInvitation).await;
    assert_eq!(
        posts.iter().map(|p| p.status).collect::<Vec<_>>(),
        [429, 429, 429, 201]
    );
    assert_eq!(
        posts[3].client_request_id.as_deref(),
        Some(invitation.client_request_id.as_str())
    );
    assert_ne!(posts[2].client_request_id, posts[3].client_request_id);
    assert_eq!(h.sim.admin().invitations().await.unwrap().len(), 1);
}

/// Writes in a slot the caller took: one HTTP attempt each, no wait on the limiter and
/// no second slot. At 1 write a minute with a burst of 2, both slots are taken up front;
/// a call that waited for another slot would take a minute (the guard below fails it)
/// and would push the next free slot to two minutes away.
#[tokio::test]
async fn writes_in_a_slot_make_one_attempt_and_take_no_other_slot() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(&dir).await;
    let settings = GraphSettings::new(sim.base_url()).with_retry(fast_retry());
    let client = client_for(&sim, settings, WriteLimiter::new(1, 2));
    let admin = sim.admin();
    let fault = |call, action| admin.add_fault(FaultRule::once(call, action));
    fault(
        Call::PatchUser,
        FaultAction::ServerErrorBefore { status: 503 },
    )
    .await
    .unwrap();
    fault(Call::PostInvitation, FaultAction::DropConnectionBefore)
        .await
        .unwrap();
    let guard = Duration::from_secs(20);

    let (slot, waited) = client.limiter().take_slot().await;
    assert_eq!(waited, Duration::ZERO);
    let patch = tokio::time::timeout(
        guard,
        client.set_mail_in_slot(slot, BOB_ID, "bob@newco.example"),
    )
    .await
    .expect("no wait for another slot")
    .unwrap_err();
    assert_eq!((patch.status, patch.attempts), (Some(503), 1), "{patch}");

    let (slot, waited) = client.limiter().take_slot().await;
    assert_eq!(waited, Duration::ZERO);
    let req = reset_request(ALICE_ID, "alice@newco.example");
    let auth = client.post_authorization().await.unwrap();
    let post = tokio::time::timeout(guard, client.reset_redemption_sending(slot, auth, &req))
        .await
        .expect("no wait for another slot")
        .unwrap_err();
    assert_eq!(post.class(), ErrorClass::Ambiguous, "{post}");
    assert_eq!(post.attempts, 1);

    let journal = sim.admin().journal().await.unwrap();
    let count = |call| journal.iter().filter(|e| e.call == call).count();
    assert_eq!(
        (count(Call::PatchUser), count(Call::PostInvitation)),
        (1, 1)
    );
    let next = client.limiter().current_wait();
    assert!(
        next <= Duration::from_secs(60),
        "a slot was taken: next in {next:?}"
    );
}

#[tokio::test]
async fn set_mail_in_slot_sets_the_mail() {
    let h = harness().await;
    let (slot, _) = h.client.limiter().take_slot().await;
    h.client
        .set_mail_in_slot(slot, BOB_ID, "bob@newco.example")
        .await
        .unwrap();
    let bob = h.client.get_user(BOB_ID).await.unwrap().unwrap();
    assert_eq!(bob.mail.as_deref(), Some("bob@newco.example"));
    assert_eq!(h.journal(Call::PatchUser).await.len(), 1);
}

#[tokio::test]
async fn reads_and_the_mail_patch_are_retried() {
    let h = harness().await;
    h.fault(FaultRule::once(
        Call::GetUser,
        FaultAction::ServerErrorBefore { status: 503 },
    ))
    .await;
    h.fault(FaultRule::once(
        Call::ListUsers,
        FaultAction::DropConnectionAfter,
    ))
    .await;
    h.fault(FaultRule::once(
        Call::PatchUser,
        FaultAction::ServerErrorAfter { status: 500 },
    ))
    .await;
    assert!(h.client.get_user(ALICE_ID).await.unwrap().is_some());
    assert_eq!(
        h.client.find_users_by_mail(ALICE_MAIL).await.unwrap().len(),
        1
    );
    h.client
        .set_mail(BOB_ID, "bob@newco.example")
        .await
        .unwrap();
    for call in [Call::GetUser, Call::ListUsers, Call::PatchUser] {
        let entries = h.journal(call).await;
        assert_eq!(entries.len(), 2, "{call:?} retried once: {entries:#?}");
        assert!(entries[0].fault.is_some() && entries[1].fault.is_none());
    }
}

#[tokio::test]
async fn retries_are_bounded() {
    let h = harness().await;
    h.fault(FaultRule::always(
        Call::GetUser,
        FaultAction::ServerErrorBefore { status: 503 },
    ))
    .await;
    let err = h.client.get_user(ALICE_ID).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Ambiguous);
    assert_eq!(err.status, Some(503));
    assert_eq!(err.attempts, 4);
    assert_eq!(h.journal(Call::GetUser).await.len(), 4);
}

#[tokio::test]
async fn long_retry_after_is_returned_as_throttled() {
    let h = harness().await;
    h.fault(FaultRule::once(
        Call::ListUsers,
        FaultAction::Throttle {
            retry_after_seconds: Some(120),
            retry_after_http_date: false,
        },
    ))
    .await;
    let err = h.client.find_users_by_mail(ALICE_MAIL).await.unwrap_err();
    assert_eq!(
        err.class(),
        ErrorClass::Throttled {
            retry_after: Some(Duration::from_secs(120))
        }
    );
    assert_eq!(err.attempts, 1);
    assert_eq!(h.journal(Call::ListUsers).await.len(), 1);
}

#[tokio::test]
async fn retry_after_is_honoured_on_a_get() {
    let h = harness().await;
    for (http_date, seconds, min_gap) in [(false, 2, 2.0), (true, 2, 0.99)] {
        h.fault(FaultRule::once(
            Call::GetUser,
            FaultAction::Throttle {
                retry_after_seconds: Some(seconds),
                retry_after_http_date: http_date,
            },
        ))
        .await;
        let before = h.journal(Call::GetUser).await.len();
        assert!(h.client.get_user(ALICE_ID).await.unwrap().is_some());
        let gets = h.journal(Call::GetUser).await;
        assert_eq!(gets.len(), before + 2);
        let (throttled, retried) = (&gets[before], &gets[before + 1]);
        assert_eq!((throttled.status, retried.status), (429, 200));
        let gap = secs_between(throttled, retried);
        println!(
            "Retry-After {seconds}{}: retry came {gap:.3} s after the 429",
            if http_date { " (HTTP date)" } else { " s" }
        );
        // An HTTP date has whole-second resolution, so it may be up to 1 s nearer.
        assert!(
            gap >= min_gap,
            "retried {gap:.3} s after a {seconds} s Retry-After"
        );
        assert!(
            gap < f64::from(seconds as u32) + 1.0,
            "no needless wait: {gap:.3}"
        );
    }
}

#[tokio::test]
async fn connect_failure_is_transient_before_send() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(&dir).await;
    // A port with no listener: the token comes from the simulator, Graph is unreachable.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("https://{}", closed.local_addr().unwrap());
    drop(closed);
    let settings = GraphSettings::new(endpoint)
        .with_scope(format!("{}/.default", sim.base_url()))
        .with_retry(fast_retry());
    let client = client_for(&sim, settings, WriteLimiter::new(6000, 100));
    let err = client
        .reset_redemption(&reset_request(ALICE_ID, "alice@newco.example"))
        .await
        .unwrap_err();
    println!("connect failure: {err}");
    assert_eq!(err.class(), ErrorClass::TransientBeforeSend);
    assert_eq!(err.kind, FailureKind::Connect);
    assert_eq!(
        err.attempts, 1,
        "nothing was sent, but the caller resends the POST, not the client"
    );
    let read = client.get_user(ALICE_ID).await.unwrap_err();
    assert_eq!(read.kind, FailureKind::Connect);
    assert_eq!(read.attempts, 4, "reads are retried");
}

/// The defect: `Retry-After: 18446744073709551615` reached the caller as is, and the
/// deadline computed from it overflowed and panicked. It is capped at
/// `GraphSettings::max_retry_after` (default: the one-hour tenant cool-down).
#[tokio::test]
async fn retry_after_u64_max_is_capped() {
    for (max, expected) in [
        (None, Duration::from_secs(3600)),
        (Some(Duration::from_secs(30)), Duration::from_secs(30)),
    ] {
        let h = harness_with(|s| match max {
            Some(max) => s.with_max_retry_after(max),
            None => s,
        })
        .await;
        for call in [Call::GetUser, Call::PostInvitation] {
            h.fault(FaultRule::once(
                call,
                FaultAction::Throttle {
                    retry_after_seconds: Some(u64::MAX),
                    retry_after_http_date: false,
                },
            ))
            .await;
        }
        let read = h.client.get_user(ALICE_ID).await.unwrap_err();
        let post = h
            .client
            .reset_redemption(&reset_request(ALICE_ID, "alice@newco.example"))
            .await
            .unwrap_err();
        for err in [read, post] {
            assert_eq!(
                err.class(),
                ErrorClass::Throttled {
                    retry_after: Some(expected)
                },
                "{err}"
            );
            // What the controller does with it: a requeue deadline and a status timestamp.
            let after = err.retry_after.unwrap();
            assert!(tokio::time::Instant::now().checked_add(after).is_some());
            assert!(jiff::Timestamp::now().checked_add(after).is_ok());
        }
    }
}

/// Answers over the body cap are not read further: a read fails as InvalidResponse; the
/// POST, whose 201 may mean it took effect, is Ambiguous and sent once.
#[tokio::test]
async fn answers_over_the_body_cap() {
    let h = harness_with(|s| s.with_max_body_bytes(64)).await;
    let read = h.client.get_user(ALICE_ID).await.unwrap_err();
    assert_eq!(read.kind, FailureKind::InvalidResponse, "{read}");
    assert_eq!(read.status, Some(200));

    let post = h
        .client
        .reset_redemption(&reset_request(ALICE_ID, "alice@newco.example"))
        .await
        .unwrap_err();
    println!("POST over the cap: {post}");
    assert_eq!(post.kind, FailureKind::InvalidResponse);
    assert_eq!(post.class(), ErrorClass::Ambiguous);
    assert_eq!((post.status, post.attempts), (Some(201), 1));
    let posts = h.journal(Call::PostInvitation).await;
    assert_eq!(posts.len(), 1);
    assert_eq!(
        h.sim.admin().invitations().await.unwrap().len(),
        1,
        "it took effect"
    );

    // An error answer over the cap keeps its class.
    let refused = h
        .client
        .reset_redemption(&reset_request(BOB_ID, "bob@elsewhere.example"))
        .await
        .unwrap_err();
    assert_eq!(
        (refused.class(), refused.status),
        (ErrorClass::Definite, Some(400))
    );
}

#[tokio::test]
async fn untrusted_server_certificate_fails_before_send() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(&dir).await;
    // Platform roots only: the simulator's CA is not among them.
    let http = http::build_client_with_ca_file(Duration::from_secs(5), None).unwrap();
    let cred = credential::from_env(&env_for(&sim, sim.client_secret()), &http).unwrap();
    let settings = GraphSettings::new(sim.base_url()).with_retry(RetryPolicy::none());
    let client = GraphClient::new(settings, http, cred, WriteLimiter::default());
    let err = client.get_user(ALICE_ID).await.unwrap_err();
    println!("untrusted CA: {err}");
    assert_eq!(err.class(), ErrorClass::TransientBeforeSend);
    assert!(err.is_credential(), "the token request fails first: {err}");
    assert!(sim.admin().journal().await.unwrap().is_empty());
}

/// 120 writes a minute with a burst of 2: ten PATCHes started together take
/// (10 - 2) / 2 = 4 s, and no window ever holds more than the burst plus the rate.
#[tokio::test]
async fn write_limiter_paces_writes() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(&dir).await;
    let (per_minute, burst, writes) = (120u32, 2u32, 10usize);
    let rate = f64::from(per_minute) / 60.0;
    let client = client_for(
        &sim,
        GraphSettings::new(sim.base_url()),
        WriteLimiter::new(per_minute, burst),
    );
    // Token first, so the pacing measured is the limiter's alone.
    client.get_user(ALICE_ID).await.unwrap();

    let started = tokio::time::Instant::now();
    let calls = (0..writes).map(|i| {
        let client = client.clone();
        async move {
            client
                .set_mail(BOB_ID, &format!("bob{i}@newco.example"))
                .await
        }
    });
    for result in futures::future::join_all(calls).await {
        result.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();

    let mut patches = sim.admin().journal().await.unwrap();
    patches.retain(|e| e.call == Call::PatchUser);
    assert_eq!(patches.len(), writes);
    patches.sort_by_key(at);
    let span = secs_between(&patches[0], &patches[writes - 1]);
    let expected = (writes as f64 - f64::from(burst)) / rate;
    println!(
        "limiter {per_minute}/min burst {burst}: {writes} writes spanned {span:.3} s at the server \
         (expected {expected:.3} s), {elapsed:.3} s at the client"
    );
    assert!(
        // The first writes may open new TLS connections, arriving a little late.
        span >= expected - 0.25 && span <= expected + 0.75,
        "span {span:.3} s, expected {expected:.3} s"
    );
    let mut worst = 0.0f64;
    for i in 0..writes {
        for j in i..writes {
            let window = secs_between(&patches[i], &patches[j]);
            let allowed = f64::from(burst) + window * rate;
            let count = (j - i + 1) as f64;
            worst = worst.max(count - allowed);
            // 200 ms of slack for connection set-up: less than one write, so a
            // write beyond the burst would still show.
            assert!(
                count <= allowed + 0.2 * rate,
                "{count} writes in {window:.3} s exceed burst {burst} + {rate}/s"
            );
        }
    }
    println!("largest excess over burst + rate x window: {worst:.3} writes");
}

/// A writer that appends every formatted event to a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

/// Everything logged by the client, azure_identity and the HTTP stack, at every level,
/// during a run with successes, retries and failures: no token, no redeem URL.
#[tokio::test(flavor = "current_thread")]
async fn logs_never_carry_tokens_or_redeem_urls() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_env_filter(tracing_subscriber::EnvFilter::new("trace,graph_sim=off"))
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let h = harness().await;
    h.fault(FaultRule::once(
        Call::GetUser,
        FaultAction::ServerErrorBefore { status: 503 },
    ))
    .await;
    h.client.get_user(ALICE_ID).await.unwrap();
    h.client
        .set_mail(ALICE_ID, "alice@newco.example")
        .await
        .unwrap();
    let invitation = h
        .client
        .reset_redemption(&reset_request(ALICE_ID, "alice@newco.example"))
        .await
        .unwrap();
    tracing::info!(?invitation, "caller logs the invitation");
    h.fault(FaultRule::once(
        Call::PostInvitation,
        FaultAction::ServerErrorAfter { status: 500 },
    ))
    .await;
    let err = h
        .client
        .reset_redemption(&reset_request(ALICE_ID, "alice@newco.example"))
        .await
        .unwrap_err();
    tracing::warn!(error = %err, debug = ?err, "caller logs the error");

    let secrets = h.sim.admin().issued_tokens_and_redeem_urls().await.unwrap();
    assert_eq!(secrets.redeem_urls.len(), 2);
    assert!(!secrets.access_tokens.is_empty());
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    println!("captured {} bytes of logs", logs.len());
    // The capture works and holds what operators need.
    for needed in [
        "POST /invitations",
        "client_request_id",
        "request_id",
        "latency_ms",
        "status=201",
        "status=503",
        "retrying Graph call",
        "invitation issued",
    ] {
        assert!(logs.contains(needed), "logs lack {needed:?}");
    }
    for token in &secrets.access_tokens {
        assert!(!logs.contains(token.as_str()), "an access token was logged");
    }
    for url in &secrets.redeem_urls {
        assert!(!logs.contains(url.as_str()), "a redeem URL was logged");
        // Nor its distinctive query part alone.
        let tail = url.rsplit('=').next().unwrap();
        assert!(
            tail.len() < 8 || !logs.contains(tail),
            "a redeem ticket was logged"
        );
    }
    assert!(
        !logs.contains(h.sim.client_secret()),
        "the client secret was logged"
    );
    assert!(
        !logs.contains("Your access moves to your new address."),
        "the invitation body was logged"
    );
}

/// A domain's users through the advanced query, page after page (999 a page), members too.
#[tokio::test]
async fn every_user_of_a_domain_is_listed_across_pages() {
    let dir = tempfile::tempdir().unwrap();
    let mut users = seed_users();
    for i in 0..2_100 {
        users.push(SeedUser::external_guest(
            &format!("d{i:07}-aaaa-4bbb-8ccc-dddddddddddd"),
            &format!("g{i}@northwind.example"),
        ));
    }
    users.push(SeedUser::tenant_member(
        "e0000000-aaaa-4bbb-8ccc-dddddddddddd",
        "boss@northwind.example",
    ));
    let sim = graph_sim::start(SimConfig::new(dir.path().join("sim")).with_users(users))
        .await
        .unwrap();
    let settings = GraphSettings::new(sim.base_url()).with_retry(fast_retry());
    let client = client_for(&sim, settings, WriteLimiter::new(6000, 100));
    let listing = client.list_domain_users("northwind.example").await.unwrap();
    assert_eq!(listing.pages, 3);
    assert_eq!(listing.users.len(), 2_101);
    let ids: HashSet<&str> = listing.users.iter().map(|u| u.id.as_str()).collect();
    assert_eq!(ids.len(), 2_101, "each user once");
    assert_eq!(listing.users.iter().filter(|u| !u.is_guest()).count(), 1);
    let calls: Vec<JournalEntry> = sim
        .admin()
        .journal()
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.call == Call::ListUsers)
        .collect();
    assert_eq!(calls.len(), 3);
    assert!(calls.iter().all(|e| e.status == 200));
    assert!(calls[0].query.as_deref().unwrap().contains("$top=999"));
    assert!(calls[0].query.as_deref().unwrap().contains("$count=true"));
    // Nothing of the other domain.
    assert!(
        client
            .list_domain_users("nowhere.example")
            .await
            .unwrap()
            .users
            .is_empty()
    );
}
