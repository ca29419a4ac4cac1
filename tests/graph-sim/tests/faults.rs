mod common;

use common::*;
use graph_sim::{Call, FaultAction, FaultRule, JournalEntry, Simulator};
use reqwest::StatusCode;
use std::time::{Duration, Instant, SystemTime};

const NEW_MAIL: &str = "alice.alt@contoso.example";

async fn last_post(sim: &Simulator) -> JournalEntry {
    sim.admin()
        .invitation_posts()
        .await
        .unwrap()
        .pop()
        .expect("a journaled POST")
}

async fn alice_state(sim: &Simulator) -> Option<String> {
    sim.admin()
        .user(ALICE)
        .await
        .unwrap()
        .unwrap()
        .external_user_state
}

async fn setup(name: &str, action: FaultAction) -> (Simulator, Graph) {
    let sim = start(name).await;
    let graph = Graph::new(&sim).await;
    sim.admin()
        .add_fault(FaultRule::once(Call::PostInvitation, action))
        .await
        .unwrap();
    (sim, graph)
}

#[tokio::test]
async fn throttle_answers_429_with_retry_after_seconds_and_applies_nothing() {
    let (sim, graph) = setup(
        "throttle",
        FaultAction::Throttle {
            retry_after_seconds: Some(7),
            retry_after_http_date: false,
        },
    )
    .await;
    let a = graph.invite(&reset_body(ALICE, NEW_MAIL)).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(a.code(), "TooManyRequests");
    assert_eq!(a.header("retry-after"), Some("7"));
    assert_eq!(alice_state(&sim).await.as_deref(), Some("Accepted"));
    let entry = last_post(&sim).await;
    assert_eq!(entry.status, 429);
    assert_eq!(entry.fault.as_deref(), Some("Throttle"));
    assert_eq!(entry.effect, None);

    // `once` is used up: the retry goes through.
    let retry = graph.invite(&reset_body(ALICE, NEW_MAIL)).await;
    assert_eq!(retry.status, StatusCode::CREATED);
}

#[tokio::test]
async fn throttle_can_give_retry_after_as_an_http_date() {
    let (_sim, graph) = setup(
        "throttle-date",
        FaultAction::Throttle {
            retry_after_seconds: Some(120),
            retry_after_http_date: true,
        },
    )
    .await;
    let a = graph.invite(&reset_body(ALICE, NEW_MAIL)).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    let when = httpdate::parse_http_date(a.header("retry-after").unwrap()).unwrap();
    assert!(when > SystemTime::now() + Duration::from_secs(60));
}

#[tokio::test]
async fn server_error_before_applies_nothing() {
    let (sim, graph) = setup("5xx-before", FaultAction::ServerErrorBefore { status: 503 }).await;
    let a = graph.invite(&reset_body(ALICE, NEW_MAIL)).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(!a.code().is_empty());
    assert_eq!(alice_state(&sim).await.as_deref(), Some("Accepted"));
    let entry = last_post(&sim).await;
    assert_eq!(
        (entry.status, entry.effect, entry.fault.as_deref()),
        (503, None, Some("ServerErrorBefore"))
    );
    assert!(sim.admin().invitations().await.unwrap().is_empty());
}

#[tokio::test]
async fn server_error_after_applies_the_write_then_fails() {
    let (sim, graph) = setup("5xx-after", FaultAction::ServerErrorAfter { status: 500 }).await;
    let a = graph.invite(&reset_body(ALICE, NEW_MAIL)).await;
    assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        alice_state(&sim).await.as_deref(),
        Some("PendingAcceptance")
    );
    let entry = last_post(&sim).await;
    assert_eq!(entry.status, 500);
    assert_eq!(entry.effect.as_deref(), Some("invitation issued"));
    assert_eq!(entry.fault.as_deref(), Some("ServerErrorAfter"));
    assert_eq!(sim.admin().invitations().await.unwrap().len(), 1);
}

#[tokio::test]
async fn server_error_after_on_patch_sets_the_mail() {
    let sim = start("5xx-after-patch").await;
    let graph = Graph::new(&sim).await;
    sim.admin()
        .add_fault(FaultRule::once(
            Call::PatchUser,
            FaultAction::ServerErrorAfter { status: 504 },
        ))
        .await
        .unwrap();
    let a = graph.patch_mail(ALICE, "alice@newco.example").await;
    assert_eq!(a.status, StatusCode::GATEWAY_TIMEOUT);
    let user = sim.admin().user(ALICE).await.unwrap().unwrap();
    assert_eq!(user.mail.as_deref(), Some("alice@newco.example"));
}

#[tokio::test]
async fn delay_after_applies_and_answers_late() {
    let (sim, graph) = setup("delay", FaultAction::DelayAfter { millis: 300 }).await;
    let started = Instant::now();
    let a = graph.invite(&reset_body(ALICE, NEW_MAIL)).await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert!(started.elapsed() >= Duration::from_millis(300));
    let entry = last_post(&sim).await;
    assert_eq!(entry.fault.as_deref(), Some("DelayAfter"));
    assert_eq!(entry.effect.as_deref(), Some("invitation issued"));
    // The journal dates the decision and, apart, the answer: the delay lies between them.
    let answered = entry.answered_at.as_deref().expect("an answered entry");
    assert!(
        elapsed(&entry.at, answered) >= Duration::from_millis(300),
        "{entry:?}"
    );
}

/// The time from RFC 3339 `from` to RFC 3339 `to`.
fn elapsed(from: &str, to: &str) -> Duration {
    use time::{OffsetDateTime, format_description::well_known::Rfc3339};
    let parse = |s: &str| OffsetDateTime::parse(s, &Rfc3339).unwrap();
    (parse(to) - parse(from)).try_into().unwrap()
}

#[tokio::test]
async fn hang_after_applies_holds_and_is_released_by_the_admin_call() {
    let (sim, graph) = setup("hang", FaultAction::HangAfter).await;
    let graph = std::sync::Arc::new(graph);
    let poster = graph.clone();
    let post = tokio::spawn(async move { poster.invite(&reset_body(ALICE, NEW_MAIL)).await });

    let admin = sim.admin();
    wait_until(
        "the response to be held",
        Duration::from_secs(10),
        || async { (admin.held_count().await.unwrap() == 1).then_some(()) },
    )
    .await;
    // Held, yet applied and journaled.
    assert_eq!(
        alice_state(&sim).await.as_deref(),
        Some("PendingAcceptance")
    );
    let entry = last_post(&sim).await;
    assert_eq!(entry.fault.as_deref(), Some("HangAfter"));
    assert_eq!(entry.status, 201);
    assert_eq!(entry.answered_at, None, "a held answer has not left");
    assert!(!post.is_finished());

    admin.release_held().await.unwrap();
    let a = tokio::time::timeout(Duration::from_secs(10), post)
        .await
        .expect("released response arrives")
        .unwrap();
    assert_eq!(a.status, StatusCode::CREATED);
    assert_eq!(admin.held_count().await.unwrap(), 0);
    assert!(last_post(&sim).await.answered_at.is_some());
}

#[tokio::test]
async fn hang_after_ends_when_the_client_goes_away() {
    let (sim, graph) = setup("hang-disconnect", FaultAction::HangAfter).await;
    let result = graph
        .request(reqwest::Method::POST, "/invitations")
        .json(&reset_body(ALICE, NEW_MAIL))
        .timeout(Duration::from_millis(500))
        .send()
        .await;
    assert!(result.unwrap_err().is_timeout());
    let admin = sim.admin();
    wait_until(
        "the hold to end with the connection",
        Duration::from_secs(10),
        || async { (admin.held_count().await.unwrap() == 0).then_some(()) },
    )
    .await;
    assert_eq!(
        alice_state(&sim).await.as_deref(),
        Some("PendingAcceptance")
    );
    assert_eq!(
        last_post(&sim).await.answered_at,
        None,
        "the client went away before the answer"
    );
}

#[tokio::test]
async fn drop_connection_before_closes_without_answer_and_applies_nothing() {
    let (sim, graph) = setup("drop-before", FaultAction::DropConnectionBefore).await;
    let err = graph
        .invite_raw(&reset_body(ALICE, NEW_MAIL))
        .await
        .unwrap_err();
    assert!(err.status().is_none(), "{err}");
    assert_eq!(alice_state(&sim).await.as_deref(), Some("Accepted"));
    let entry = last_post(&sim).await;
    assert_eq!(
        (entry.status, entry.effect, entry.fault.as_deref()),
        (0, None, Some("DropConnectionBefore"))
    );
    // The client saw no answer and did not resend on its own.
    assert_eq!(sim.admin().invitation_posts().await.unwrap().len(), 1);
}

#[tokio::test]
async fn drop_connection_after_applies_then_closes_without_answer() {
    let (sim, graph) = setup("drop-after", FaultAction::DropConnectionAfter).await;
    let err = graph
        .invite_raw(&reset_body(ALICE, NEW_MAIL))
        .await
        .unwrap_err();
    assert!(err.status().is_none(), "{err}");
    assert_eq!(
        alice_state(&sim).await.as_deref(),
        Some("PendingAcceptance")
    );
    let entry = last_post(&sim).await;
    assert_eq!(
        (
            entry.status,
            entry.effect.as_deref(),
            entry.fault.as_deref()
        ),
        (0, Some("invitation issued"), Some("DropConnectionAfter"))
    );
    assert_eq!(sim.admin().invitation_posts().await.unwrap().len(), 1);
}

#[tokio::test]
async fn abuse_block_is_403_and_never_applies() {
    let sim = start("abuse").await;
    let graph = Graph::new(&sim).await;
    sim.admin()
        .add_fault(FaultRule::always(
            Call::PostInvitation,
            FaultAction::AbuseBlock,
        ))
        .await
        .unwrap();
    for _ in 0..2 {
        let a = graph.invite(&reset_body(ALICE, NEW_MAIL)).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN);
        assert!(
            a.message()
                .starts_with("Invitations are blocked for this directory due to suspicious activity. Please contact Microsoft support")
        );
    }
    assert_eq!(alice_state(&sim).await.as_deref(), Some("Accepted"));
    assert!(sim.admin().invitations().await.unwrap().is_empty());
    sim.admin().clear_faults().await.unwrap();
    assert_eq!(
        graph.invite(&reset_body(ALICE, NEW_MAIL)).await.status,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn forbidden_and_unauthorized_answer_graphs_permission_errors() {
    let (sim, graph) = setup("forbidden", FaultAction::Forbidden).await;
    sim.admin()
        .add_fault(FaultRule::once(
            Call::PostInvitation,
            FaultAction::Unauthorized,
        ))
        .await
        .unwrap();
    let first = graph.invite(&reset_body(ALICE, NEW_MAIL)).await;
    assert_eq!(first.status, StatusCode::FORBIDDEN);
    assert_eq!(first.message(), "Generic authorization exception.");
    let second = graph.invite(&reset_body(ALICE, NEW_MAIL)).await;
    assert_eq!(second.status, StatusCode::UNAUTHORIZED);
    assert!(
        second.message().starts_with(
            "Insufficient privileges to perform requested operation by the application"
        )
    );
    assert_eq!(alice_state(&sim).await.as_deref(), Some("Accepted"));
}

#[tokio::test]
async fn rules_match_by_call_in_order_and_count_down() {
    let sim = start("rule-order").await;
    let graph = Graph::new(&sim).await;
    let admin = sim.admin();
    admin
        .add_fault(FaultRule::times(
            Call::GetUser,
            2,
            FaultAction::ServerErrorBefore { status: 502 },
        ))
        .await
        .unwrap();
    admin
        .add_fault(FaultRule::once(
            Call::GetUser,
            FaultAction::Throttle {
                retry_after_seconds: None,
                retry_after_http_date: false,
            },
        ))
        .await
        .unwrap();
    let path = format!("/users/{ALICE}");
    // A PATCH is another call: the GetUser rules leave it alone.
    assert_eq!(
        graph.patch_mail(ALICE, "alice@newco.example").await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(graph.get(&path).await.status, StatusCode::BAD_GATEWAY);
    assert_eq!(graph.get(&path).await.status, StatusCode::BAD_GATEWAY);
    let throttled = graph.get(&path).await;
    assert_eq!(throttled.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(throttled.header("retry-after"), None);
    assert_eq!(graph.get(&path).await.status, StatusCode::OK);
    assert!(admin.faults().await.unwrap().is_empty());
}

#[tokio::test]
async fn token_faults_answer_in_entras_shape() {
    let sim = start("token-fault").await;
    let admin = sim.admin();
    admin
        .add_fault(FaultRule::once(
            Call::Token,
            FaultAction::Throttle {
                retry_after_seconds: Some(3),
                retry_after_http_date: false,
            },
        ))
        .await
        .unwrap();
    let http = admin.http().clone();
    let throttled = token_with_secret(&sim, &http).await;
    assert_eq!(throttled.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(throttled.body["error_codes"].is_array());
    assert_eq!(throttled.header("retry-after"), Some("3"));
    assert_eq!(admin.tokens_issued().await.unwrap(), 0);
    assert_eq!(token_with_secret(&sim, &http).await.status, StatusCode::OK);
}

#[tokio::test]
async fn unauthenticated_calls_do_not_consume_faults() {
    let (sim, graph) = setup(
        "auth-before-fault",
        FaultAction::ServerErrorBefore { status: 500 },
    )
    .await;
    let anonymous = answer(
        graph
            .http
            .post(format!("{}/invitations", graph.base))
            .json(&reset_body(ALICE, NEW_MAIL))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(sim.admin().faults().await.unwrap().len(), 1);
    assert_eq!(
        graph.invite(&reset_body(ALICE, NEW_MAIL)).await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
}

/// Graph sends `Retry-After` with some 5xx: here with 503s when the setting asks, never with a
/// 500 or a 504.
#[tokio::test]
async fn retry_after_comes_with_503_answers_when_asked() {
    let (sim, graph) = setup(
        "retry-after-503",
        FaultAction::ServerErrorBefore { status: 503 },
    )
    .await;
    sim.admin().set_retry_after_on_503(Some(4)).await.unwrap();
    let a = graph.invite(&reset_body(ALICE, NEW_MAIL)).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(a.header("retry-after"), Some("4"));
    for status in [500, 504] {
        sim.admin()
            .add_fault(FaultRule::once(
                Call::PostInvitation,
                FaultAction::ServerErrorBefore { status },
            ))
            .await
            .unwrap();
        let b = graph.invite(&reset_body(ALICE, NEW_MAIL)).await;
        assert_eq!(b.status.as_u16(), status);
        assert_eq!(b.header("retry-after"), None, "{status}");
    }
    sim.admin().set_retry_after_on_503(None).await.unwrap();
    sim.admin()
        .add_fault(FaultRule::once(
            Call::PostInvitation,
            FaultAction::ServerErrorBefore { status: 503 },
        ))
        .await
        .unwrap();
    let c = graph.invite(&reset_body(ALICE, NEW_MAIL)).await;
    assert_eq!(c.header("retry-after"), None);
}

/// With an evidence delay, reads show the user's state before a reset until the delay has
/// passed; the admin API shows the truth at once.
#[tokio::test]
async fn a_reset_shows_in_reads_only_after_the_evidence_delay() {
    let sim = start("evidence-delay").await;
    let graph = Graph::new(&sim).await;
    sim.admin()
        .set_evidence_delay(Duration::from_millis(1500))
        .await
        .unwrap();
    let read = || async {
        let a = graph
            .get(&format!(
                "/users/{ALICE}?$select=externalUserState,externalUserStateChangeDateTime"
            ))
            .await;
        a.body["externalUserState"].as_str().map(str::to_owned)
    };
    assert_eq!(read().await.as_deref(), Some("Accepted"));
    let sent = Instant::now();
    let posted = graph.invite(&reset_body(ALICE, NEW_MAIL)).await;
    assert_eq!(posted.status, StatusCode::CREATED);
    assert_eq!(
        alice_state(&sim).await.as_deref(),
        Some("PendingAcceptance")
    );
    let first = read().await;
    if sent.elapsed() < Duration::from_millis(1500) {
        assert_eq!(first.as_deref(), Some("Accepted"), "still replicating");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while read().await.as_deref() != Some("PendingAcceptance") {
        assert!(Instant::now() < deadline, "the reset never showed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(sent.elapsed() >= Duration::from_millis(1500));
}
