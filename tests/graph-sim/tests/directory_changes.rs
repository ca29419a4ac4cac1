//! Changes to the directory made by others than the client under test (admin API), and the
//! journal naming the target of every invitation request.

mod common;

use common::*;
use graph_sim::Call;
use reqwest::StatusCode;

const NEW_MAIL: &str = "alice.alt@contoso.example";

#[tokio::test]
async fn a_guest_redeeming_moves_the_state_to_accepted_with_a_new_change_time() {
    let sim = start("redeem").await;
    let graph = Graph::new(&sim).await;
    let admin = sim.admin();
    assert_eq!(
        graph.invite(&reset_body(ALICE, NEW_MAIL)).await.status,
        StatusCode::CREATED
    );
    let pending = admin.user(ALICE).await.unwrap().unwrap();
    assert_eq!(
        pending.external_user_state.as_deref(),
        Some("PendingAcceptance")
    );

    let redeemed = admin.redeem(ALICE).await.unwrap();
    assert_eq!(redeemed.external_user_state.as_deref(), Some("Accepted"));
    // The simulator's change times have three digits of milliseconds: they compare as text.
    let changed = redeemed.external_user_state_change_date_time.unwrap();
    assert!(
        changed.len() == "2024-01-15T09:30:00.000Z".len() && changed.ends_with('Z'),
        "{changed}"
    );
    assert_eq!(changed.as_bytes()[19], b'.', "{changed}");
    assert!(changed >= pending.external_user_state_change_date_time.unwrap());
    assert_ne!(changed, "2024-01-15T09:30:00Z", "the change time moved");
    // Graph shows it.
    let read = graph.get(&format!("/users/{ALICE}?$select={SELECT}")).await;
    assert_eq!(read.body["externalUserState"], "Accepted");
    assert_eq!(
        read.body["externalUserStateChangeDateTime"],
        changed.as_str()
    );
}

#[tokio::test]
async fn a_foreign_reset_changes_the_state_but_leaves_no_invitation_or_journal_entry() {
    let sim = start("foreign-reset").await;
    let graph = Graph::new(&sim).await;
    let admin = sim.admin();
    let before = admin.journal().await.unwrap().len();

    let reset = admin.foreign_reset(BOB).await.unwrap();
    assert_eq!(
        reset.external_user_state.as_deref(),
        Some("PendingAcceptance")
    );
    assert_ne!(
        reset.external_user_state_change_date_time.as_deref(),
        Some("2024-01-15T09:30:00Z")
    );
    assert!(admin.invitations().await.unwrap().is_empty());
    assert_eq!(admin.journal().await.unwrap().len(), before);
    let read = graph.get(&format!("/users/{BOB}?$select={SELECT}")).await;
    assert_eq!(read.body["externalUserState"], "PendingAcceptance");
}

#[tokio::test]
async fn a_guest_converted_to_a_member_is_a_hazard_to_reset() {
    let sim = start("convert").await;
    let graph = Graph::new(&sim).await;
    let admin = sim.admin();
    let member = admin.convert_to_member(ALICE).await.unwrap();
    assert_eq!(member.user_type, "Member");
    assert_eq!(
        member.mail.as_deref(),
        Some("alice@contoso.com"),
        "nothing else"
    );
    let read = graph.get(&format!("/users/{ALICE}?$select={SELECT}")).await;
    assert_eq!(read.body["userType"], "Member");

    assert_eq!(
        graph.invite(&reset_body(ALICE, NEW_MAIL)).await.status,
        StatusCode::CREATED
    );
    let hazards = admin.hazards().await.unwrap();
    assert_eq!(hazards.len(), 1);
    assert_eq!(hazards[0].user_id, ALICE);
}

#[tokio::test]
async fn changes_to_an_unknown_user_or_of_an_unknown_kind_are_refused() {
    let sim = start("change-unknown").await;
    let admin = sim.admin();
    let err = admin
        .redeem("00000000-0000-4000-8000-000000000000")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
    let url = format!("{}/_sim/users/{ALICE}/delete", sim.base_url());
    let response = admin.http().post(url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(admin.user(ALICE).await.unwrap().unwrap().user_type, "Guest");
}

#[tokio::test]
async fn the_journal_names_the_target_of_every_invitation_request() {
    let sim = start("journal-target").await;
    let graph = Graph::new(&sim).await;
    let admin = sim.admin();
    // Refused (the address is not on the user), and accepted.
    assert_eq!(
        graph
            .invite(&reset_body(ALICE, "nobody@else.example"))
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        graph.invite(&reset_body(ALICE, NEW_MAIL)).await.status,
        StatusCode::CREATED
    );
    let posts = admin.invitation_posts().await.unwrap();
    let targets: Vec<_> = posts
        .iter()
        .map(|p| (p.invited_user_id.as_deref(), p.invited_email.as_deref()))
        .collect();
    assert_eq!(
        targets,
        vec![
            (Some(ALICE), Some("nobody@else.example")),
            (Some(ALICE), Some(NEW_MAIL))
        ]
    );
    // Other calls name no invitation target.
    let journal = admin.journal().await.unwrap();
    assert!(
        journal
            .iter()
            .filter(|e| e.call != Call::PostInvitation)
            .all(|e| e.invited_user_id.is_none() && e.invited_email.is_none())
    );
    // The invitation record points at its journal entry.
    let invitations = admin.invitations().await.unwrap();
    assert_eq!(invitations.len(), 1);
    assert_eq!(invitations[0].client_request_id, posts[1].client_request_id);
    assert!(invitations[0].client_request_id.is_some());
}
