mod common;

use common::*;
use graph_sim::{Call, SeedUser};
use reqwest::StatusCode;
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test]
async fn get_user_by_id_and_by_percent_encoded_upn_honours_select() {
    let sim = start("get-user").await;
    let graph = Graph::new(&sim).await;

    let by_id = graph.get(&format!("/users/{ALICE}?$select={SELECT}")).await;
    assert_eq!(by_id.status, StatusCode::OK);
    assert_eq!(by_id.body["userType"], "Guest");
    assert_eq!(by_id.body["externalUserState"], "Accepted");
    assert_eq!(
        by_id.body["externalUserStateChangeDateTime"],
        "2024-01-15T09:30:00Z"
    );
    assert_eq!(
        by_id.body["otherMails"],
        json!(["alice.alt@contoso.example"])
    );
    assert!(by_id.body.get("displayName").is_none(), "not selected");
    assert!(by_id.header("request-id").is_some());

    let upn = ALICE_UPN.replace('#', "%23");
    let by_upn = graph.get(&format!("/users/{upn}?$select=id,mail")).await;
    assert_eq!(by_upn.status, StatusCode::OK);
    assert_eq!(by_upn.body["id"], ALICE);
    let keys: Vec<&String> = by_upn
        .body
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| !k.starts_with('@'))
        .collect();
    assert_eq!(keys, vec!["id", "mail"]);

    // Without $select Graph returns its default set: no userType, no externalUserState.
    let default = graph.get(&format!("/users/{ALICE}")).await;
    assert_eq!(default.body["userPrincipalName"], ALICE_UPN);
    assert!(default.body.get("externalUserState").is_none());
    assert!(
        default
            .body
            .get("externalUserStateChangeDateTime")
            .is_none()
    );
    assert!(default.body.get("userType").is_none());

    let unknown_property = graph
        .get(&format!("/users/{ALICE}?$select=id,shoeSize"))
        .await;
    assert_eq!(unknown_property.status, StatusCode::BAD_REQUEST);
    assert!(unknown_property.message().contains("shoeSize"));
}

#[tokio::test]
async fn unknown_user_is_404_in_graphs_shape_with_ids_echoed() {
    let sim = start("get-404").await;
    let graph = Graph::new(&sim).await;
    let missing = "00000000-1111-2222-3333-444444444444";
    let response = graph
        .http
        .get(format!("{}/users/{missing}", graph.base))
        .bearer_auth(&graph.token)
        .header("client-request-id", "my-correlation-id")
        .send()
        .await
        .unwrap();
    let a = answer(response).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.code(), "Request_ResourceNotFound");
    assert_eq!(
        a.message(),
        format!(
            "Resource '{missing}' does not exist or one of its queried reference-property objects are not present."
        )
    );
    let inner = &a.body["error"]["innerError"];
    assert_eq!(inner["client-request-id"], "my-correlation-id");
    assert_eq!(a.header("client-request-id"), Some("my-correlation-id"));
    assert_eq!(inner["request-id"].as_str(), a.header("request-id"));
    assert!(inner["date"].as_str().unwrap().len() >= 19);
    let journal = sim.admin().journal().await.unwrap();
    let last = journal.last().unwrap();
    assert_eq!(last.call, Call::GetUser);
    assert_eq!(last.status, 404);
    assert_eq!(last.client_request_id.as_deref(), Some("my-correlation-id"));
}

#[tokio::test]
async fn graph_requires_a_token_this_simulator_issued_and_not_expired() {
    let sim = start("auth").await;
    let graph = Graph::new(&sim).await;
    let http = &graph.http;
    let url = format!("{}/users/{ALICE}", graph.base);

    let none = answer(http.get(&url).send().await.unwrap()).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert_eq!(none.code(), "InvalidAuthenticationToken");

    let forged = answer(http.get(&url).bearer_auth("forged").send().await.unwrap()).await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED);
    assert_eq!(forged.code(), "InvalidAuthenticationToken");

    assert_eq!(
        graph.get(&format!("/users/{ALICE}")).await.status,
        StatusCode::OK
    );
    sim.admin().expire_tokens().await.unwrap();
    let expired = graph.get(&format!("/users/{ALICE}")).await;
    assert_eq!(expired.status, StatusCode::UNAUTHORIZED);
    assert!(expired.message().contains("expired"));
}

#[tokio::test]
async fn list_users_supports_the_filters_guestreset_uses() {
    let sim = start("list").await;
    let graph = Graph::new(&sim).await;

    let by_mail = graph.list("mail eq 'ALICE@contoso.com'", "id,mail").await;
    assert_eq!(by_mail.status, StatusCode::OK);
    let ids: Vec<&str> = by_mail.body["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![ALICE]);
    assert!(by_mail.body["value"][0].get("userType").is_none());

    let suggested = "userPrincipalName eq '{0}' or mail eq '{0}' or proxyAddresses/any(x:x eq 'SMTP:{0}') or otherMails/any(x:x eq '{0}')";
    let in_use = graph
        .list(&suggested.replace("{0}", "alice.alt@contoso.example"), "id")
        .await;
    assert_eq!(in_use.body["value"].as_array().unwrap().len(), 1);
    let free = graph
        .list(&suggested.replace("{0}", "nobody@x.example"), "id")
        .await;
    assert_eq!(free.body["value"], json!([]));

    let two = graph
        .list(
            "mail eq 'bob@partner.example' or userPrincipalName eq 'dave@fabrikam.onmicrosoft.com'",
            "id,userType",
        )
        .await;
    assert_eq!(two.body["value"].as_array().unwrap().len(), 2);

    let quoted = graph.list("mail eq 'o''brien@x.example'", "id").await;
    assert_eq!(quoted.status, StatusCode::OK);

    let unsupported = graph.list("displayName eq 'Alice'", "id").await;
    assert_eq!(unsupported.status, StatusCode::BAD_REQUEST);
    assert_eq!(unsupported.code(), "Request_UnsupportedQuery");
    let broken = graph.list("mail eq 'unterminated", "id").await;
    assert_eq!(broken.status, StatusCode::BAD_REQUEST);
    assert_eq!(broken.code(), "BadRequest");

    let journal = sim.admin().journal().await.unwrap();
    let lists: Vec<_> = journal
        .iter()
        .filter(|e| e.call == Call::ListUsers)
        .collect();
    assert_eq!(lists.len(), 7);
    assert!(lists[0].query.as_deref().unwrap().contains("filter"));
}

#[tokio::test]
async fn patch_sets_mail_and_keeps_other_mails() {
    let sim = start("patch").await;
    let graph = Graph::new(&sim).await;
    let patched = graph.patch_mail(ALICE, "alice@newco.example").await;
    assert_eq!(patched.status, StatusCode::NO_CONTENT);
    let user = sim.admin().user(ALICE).await.unwrap().unwrap();
    assert_eq!(user.mail.as_deref(), Some("alice@newco.example"));
    assert_eq!(user.other_mails, vec!["alice.alt@contoso.example"]);
    assert_eq!(user.proxy_addresses[0], "SMTP:alice@newco.example");
    let journal = sim.admin().journal().await.unwrap();
    let last = journal.last().unwrap();
    assert_eq!((last.call, last.status), (Call::PatchUser, 204));
    assert_eq!(last.effect.as_deref(), Some("mail set"));

    // Same value again: accepted, nothing changed.
    graph.patch_mail(ALICE, "alice@newco.example").await;
    let journal = sim.admin().journal().await.unwrap();
    assert_eq!(journal.last().unwrap().effect, None);

    let taken = graph.patch_mail(ALICE, "bob@partner.example").await;
    assert_eq!(taken.status, StatusCode::BAD_REQUEST);
    let invalid = graph.patch_mail(ALICE, "not an address").await;
    assert_eq!(invalid.status, StatusCode::BAD_REQUEST);
    let missing = graph
        .patch_mail("00000000-0000-0000-0000-00000000f00d", "x@y.example")
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn reset_succeeds_and_moves_external_user_state_time() {
    let sim = start("reset").await;
    let graph = Graph::new(&sim).await;
    let before = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap();

    let a = graph
        .invite(&reset_body(ALICE, "alice.alt@contoso.example"))
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
    assert_eq!(a.body["status"], "PendingAcceptance");
    assert_eq!(a.body["invitedUser"]["id"], ALICE);
    assert_eq!(a.body["resetRedemption"], true);
    assert_eq!(a.body["sendInvitationMessage"], true);
    assert_eq!(
        a.body["invitedUserEmailAddress"],
        "alice.alt@contoso.example"
    );
    assert_eq!(a.body["inviteRedirectUrl"], "https://myapps.microsoft.com");
    assert_eq!(a.body["invitedUserType"], "Guest");
    assert_eq!(
        a.body["invitedUserMessageInfo"]["ccRecipients"][0]["emailAddress"]["address"],
        "manager@fabrikam.example"
    );
    let redeem = a.body["inviteRedeemUrl"].as_str().unwrap();
    assert!(redeem.starts_with("https://") && redeem.len() > 150);
    assert!(!a.body["id"].as_str().unwrap().is_empty());

    let user = graph.get(&format!("/users/{ALICE}?$select={SELECT}")).await;
    assert_eq!(user.body["externalUserState"], "PendingAcceptance");
    let changed = time::OffsetDateTime::parse(
        user.body["externalUserStateChangeDateTime"]
            .as_str()
            .unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(changed >= before, "{changed} < {before}");

    let second = graph
        .invite(&reset_body(ALICE, "alice.alt@contoso.example"))
        .await;
    assert_eq!(second.status, StatusCode::CREATED);
    assert_ne!(second.body["inviteRedeemUrl"], a.body["inviteRedeemUrl"]);

    let posts = sim.admin().invitation_posts().await.unwrap();
    assert_eq!(posts.len(), 2);
    assert_eq!(posts[0].effect.as_deref(), Some("invitation issued"));
    let records = sim.admin().invitations().await.unwrap();
    assert_eq!(records[0].user_id, ALICE);
    assert!(records[0].send_invitation_message);
    assert!(sim.admin().hazards().await.unwrap().is_empty());
}

#[tokio::test]
async fn reset_refuses_an_email_that_is_not_on_the_user() {
    let sim = start("reset-email").await;
    let graph = Graph::new(&sim).await;
    let a = graph
        .invite(&reset_body(ALICE, "alice@elsewhere.example"))
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.code(), "BadRequest");
    assert_eq!(
        a.message(),
        "The email you're using to invite this user doesn't match any emails on the user object. Please add this email to the user object and try again."
    );
    let user = sim.admin().user(ALICE).await.unwrap().unwrap();
    assert_eq!(user.external_user_state.as_deref(), Some("Accepted"));

    // After the documented PATCH the same reset goes through.
    graph.patch_mail(ALICE, "alice@elsewhere.example").await;
    let ok = graph
        .invite(&reset_body(ALICE, "ALICE@elsewhere.example"))
        .await;
    assert_eq!(ok.status, StatusCode::CREATED);
}

#[tokio::test]
async fn reset_refuses_forbidden_characters_missing_fields_and_unknown_users() {
    let sim = start("reset-rules").await;
    let graph = Graph::new(&sim).await;
    for address in [
        "ali#ce@contoso.com",
        "a(b)@contoso.com",
        "alice@contoso.com;x@y.z",
    ] {
        let a = graph.invite(&reset_body(ALICE, address)).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{address}");
        assert_eq!(a.message(), "The Primary SMTP Address is an invalid value");
    }
    let mut no_redirect = reset_body(ALICE, "alice@contoso.com");
    no_redirect
        .as_object_mut()
        .unwrap()
        .remove("inviteRedirectUrl");
    assert_eq!(
        graph.invite(&no_redirect).await.status,
        StatusCode::BAD_REQUEST
    );
    let mut no_user = reset_body(ALICE, "alice@contoso.com");
    no_user.as_object_mut().unwrap().remove("invitedUser");
    assert_eq!(graph.invite(&no_user).await.status, StatusCode::BAD_REQUEST);

    let unknown = graph
        .invite(&reset_body(
            "00000000-0000-0000-0000-00000000beef",
            "a@b.example",
        ))
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.code(), "Request_ResourceNotFound");
    assert!(sim.admin().invitations().await.unwrap().is_empty());
}

#[tokio::test]
async fn privileged_target_is_forbidden_for_app_only_callers() {
    let sim = start("reset-privileged").await;
    let graph = Graph::new(&sim).await;
    let a = graph
        .invite(&reset_body(ADMIN_GUEST, "admin@partner.example"))
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let user = sim.admin().user(ADMIN_GUEST).await.unwrap().unwrap();
    assert_eq!(user.external_user_state.as_deref(), Some("Accepted"));
}

#[tokio::test]
async fn invitation_for_a_member_converts_it_and_is_recorded_as_a_hazard() {
    let sim = start("reset-member").await;
    let graph = Graph::new(&sim).await;
    let a = graph
        .invite(&reset_body(DAVE_MEMBER, "dave@fabrikam.example"))
        .await;
    assert_eq!(a.status, StatusCode::CREATED);
    let user = sim.admin().user(DAVE_MEMBER).await.unwrap().unwrap();
    assert_eq!(user.user_type, "Guest");
    assert_eq!(
        user.external_user_state.as_deref(),
        Some("PendingAcceptance")
    );
    let hazards = sim.admin().hazards().await.unwrap();
    assert_eq!(hazards.len(), 1);
    assert_eq!(hazards[0].user_id, DAVE_MEMBER);
    let posts = sim.admin().invitation_posts().await.unwrap();
    assert_eq!(posts[0].effect.as_deref(), Some("member converted"));
}

#[tokio::test]
async fn a_new_user_is_invisible_until_replicated() {
    let sim = start("visible-after").await;
    let graph = Graph::new(&sim).await;
    let mut late = SeedUser::guest(
        "7c2e8f30-ad4b-4e77-9b20-4f8c3d1e9a63",
        "carol_late.example#EXT#@fabrikam.onmicrosoft.com",
        "carol@late.example",
    );
    late.visible_after_ms = 400;
    let added = Instant::now();
    sim.admin().put_user(&late).await.unwrap();
    let first = graph.get(&format!("/users/{}", late.id)).await;
    if added.elapsed() < Duration::from_millis(400) {
        assert_eq!(first.status, StatusCode::NOT_FOUND);
    }
    wait_until(
        "the user to become visible",
        Duration::from_secs(10),
        || async {
            (graph.get(&format!("/users/{}", late.id)).await.status == StatusCode::OK).then_some(())
        },
    )
    .await;
    assert!(added.elapsed() >= Duration::from_millis(400));
    // The admin API sees it regardless.
    assert!(sim.admin().user(&late.id).await.unwrap().is_some());
}

#[tokio::test]
async fn a_patched_mail_reaches_the_invitation_service_only_after_propagation() {
    let sim = start("propagation").await;
    let graph = Graph::new(&sim).await;
    sim.admin()
        .set_mail_propagation(Duration::from_millis(500))
        .await
        .unwrap();
    let patched_at = Instant::now();
    assert_eq!(
        graph.patch_mail(BOB, "bob@newco.example").await.status,
        StatusCode::NO_CONTENT
    );
    let early = graph.invite(&reset_body(BOB, "bob@newco.example")).await;
    if patched_at.elapsed() < Duration::from_millis(500) {
        assert_eq!(early.status, StatusCode::BAD_REQUEST);
        assert!(early.message().starts_with("The email you're using"));
    }
    let ok = wait_until("the mail to propagate", Duration::from_secs(10), || async {
        let a = graph.invite(&reset_body(BOB, "bob@newco.example")).await;
        (a.status == StatusCode::CREATED).then_some(a)
    })
    .await;
    assert_eq!(ok.body["invitedUser"]["id"], BOB);
    assert!(patched_at.elapsed() >= Duration::from_millis(500));
}

#[tokio::test]
async fn latency_is_added_to_graph_responses() {
    let sim = start("latency").await;
    let graph = Graph::new(&sim).await;
    sim.admin()
        .set_latency(Duration::from_millis(150))
        .await
        .unwrap();
    let started = Instant::now();
    assert_eq!(
        graph.get(&format!("/users/{ALICE}")).await.status,
        StatusCode::OK
    );
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert_eq!(sim.admin().settings().await.unwrap().latency_ms, 150);
}

#[tokio::test]
async fn journal_and_admin_views_never_hold_tokens_or_redeem_urls() {
    let sim = start("journal-secrets").await;
    let graph = Graph::new(&sim).await;
    graph.get(&format!("/users/{ALICE}")).await;
    graph.patch_mail(ALICE, "alice@newco.example").await;
    let a = graph
        .invite(&reset_body(ALICE, "alice@newco.example"))
        .await;
    assert_eq!(a.status, StatusCode::CREATED);

    let secrets = sim.admin().issued_tokens_and_redeem_urls().await.unwrap();
    assert_eq!(secrets.access_tokens, vec![graph.token.clone()]);
    assert_eq!(secrets.redeem_urls.len(), 1);
    assert_eq!(secrets.redeem_urls[0], a.body["inviteRedeemUrl"]);

    let journal = sim.admin().journal().await.unwrap();
    let calls: Vec<Call> = journal.iter().map(|e| e.call).collect();
    assert_eq!(
        calls,
        vec![
            Call::Token,
            Call::GetUser,
            Call::PatchUser,
            Call::PostInvitation
        ]
    );
    assert_eq!(
        journal.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    let ticket = secrets.redeem_urls[0].rsplit("ticket").next().unwrap();
    for text in [
        serde_json::to_string(&journal).unwrap(),
        serde_json::to_string(&sim.admin().invitations().await.unwrap()).unwrap(),
        serde_json::to_string(&sim.admin().users().await.unwrap()).unwrap(),
    ] {
        assert!(!text.contains(&graph.token));
        assert!(!text.contains(&secrets.redeem_urls[0]));
        assert!(!text.contains(&ticket[..20]));
    }
}

#[tokio::test]
async fn plain_invitation_creates_a_guest() {
    let sim = start("plain-invite").await;
    let graph = Graph::new(&sim).await;
    let a = graph
        .invite(&json!({
            "invitedUserEmailAddress": "erin@new.example",
            "inviteRedirectUrl": "https://myapps.microsoft.com",
        }))
        .await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert_eq!(a.body["sendInvitationMessage"], false);
    let id = a.body["invitedUser"]["id"].as_str().unwrap();
    let user = graph.get(&format!("/users/{id}?$select={SELECT}")).await;
    assert_eq!(user.body["userType"], "Guest");
    assert_eq!(user.body["mail"], "erin@new.example");
}

/// The advanced query of a domain migration, as Graph answers it: refused without
/// `ConsistencyLevel: eventual` or without `$count=true`, a page of `$top` (at most 999) with
/// `@odata.count` and a next link that carries on where it stopped.
#[tokio::test]
async fn the_advanced_domain_query_needs_its_header_and_count_and_pages() {
    let mut users = users();
    for i in 0..25 {
        users.push(SeedUser::external_guest(
            &format!("d{i:07}-aaaa-4bbb-8ccc-dddddddddddd"),
            &format!("g{i}@northwind.example"),
        ));
    }
    users.push(SeedUser::tenant_member(
        "e0000000-aaaa-4bbb-8ccc-dddddddddddd",
        "boss@northwind.example",
    ));
    let sim =
        graph_sim::start(graph_sim::SimConfig::new(state_dir("advanced-query")).with_users(users))
            .await
            .unwrap();
    let graph = Graph::new(&sim).await;
    let filter = "endswith(mail,'@northwind.example')";
    let url = |extra: &str| {
        let mut s = form_urlencoded::Serializer::new(String::new());
        s.append_pair("$filter", filter);
        s.append_pair("$select", "id,userType,mail");
        format!("/users?{}{extra}", s.finish())
    };
    let get = |path: String, eventual: bool| {
        let mut request = graph.request(reqwest::Method::GET, &path);
        if eventual {
            request = request.header("ConsistencyLevel", "eventual");
        }
        async move { answer(request.send().await.unwrap()).await }
    };

    let no_header = get(url("&$count=true"), false).await;
    assert_eq!(no_header.status, StatusCode::BAD_REQUEST);
    assert_eq!(no_header.code(), "Request_UnsupportedQuery");
    assert!(no_header.message().contains("ConsistencyLevel:eventual"));
    let no_count = get(url(""), true).await;
    assert_eq!(no_count.status, StatusCode::BAD_REQUEST);
    assert_eq!(no_count.code(), "Request_UnsupportedQuery");
    let too_big = get(url("&$count=true&$top=1000"), true).await;
    assert_eq!(too_big.status, StatusCode::BAD_REQUEST);

    // Pages of 10: 26 users (members too) in three pages, each once.
    let mut seen = std::collections::BTreeSet::new();
    let mut next = Some(format!("{}{}", graph.base, url("&$count=true&$top=10")));
    let mut pages = 0;
    while let Some(link) = next {
        let path = link
            .strip_prefix(&graph.base)
            .expect("next link on the endpoint");
        let page = get(path.to_owned(), true).await;
        assert_eq!(page.status, StatusCode::OK, "{:?}", page.body);
        assert_eq!(page.body["@odata.count"], 26);
        for user in page.body["value"].as_array().unwrap() {
            assert!(seen.insert(user["id"].as_str().unwrap().to_owned()));
        }
        pages += 1;
        next = page.body["@odata.nextLink"].as_str().map(str::to_owned);
    }
    assert_eq!((pages, seen.len()), (3, 26));

    // With the userType clause, the guests only.
    let guests = get(
        {
            let mut s = form_urlencoded::Serializer::new(String::new());
            s.append_pair(
                "$filter",
                "endswith(mail,'@northwind.example') and userType eq 'Guest'",
            );
            format!("/users?{}&$count=true&$top=999", s.finish())
        },
        true,
    )
    .await;
    assert_eq!(guests.body["@odata.count"], 25);
    assert!(guests.body.get("@odata.nextLink").is_none());
}
