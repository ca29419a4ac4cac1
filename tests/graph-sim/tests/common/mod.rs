#![allow(dead_code)]

use graph_sim::{SeedUser, SimConfig, Simulator};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub const ALICE: &str = "3f0a6c1e-8d2b-4c55-9b0e-2f6a1d9c7e41";
pub const ALICE_UPN: &str = "alice_contoso.com#EXT#@fabrikam.onmicrosoft.com";
pub const BOB: &str = "5b1d7e2f-9c3a-4d66-8a1f-3e7b2c0d8f52";
pub const DAVE_MEMBER: &str = "1a2b3c4d-0000-4000-8000-00000000dead";
pub const ADMIN_GUEST: &str = "9e4fa152-cf6d-4a99-bd42-61ae5f3b1c85";
pub const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";

pub fn state_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "graph-sim-test-{name}-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn users() -> Vec<SeedUser> {
    let mut alice = SeedUser::guest(ALICE, ALICE_UPN, "alice@contoso.com");
    alice.other_mails = vec!["alice.alt@contoso.example".into()];
    let bob = SeedUser::external_guest(BOB, "bob@partner.example");
    let dave = SeedUser::tenant_member(DAVE_MEMBER, "dave@fabrikam.example");
    let mut admin = SeedUser::external_guest(ADMIN_GUEST, "admin@partner.example");
    admin.privileged = true;
    vec![alice, bob, dave, admin]
}

pub async fn start(name: &str) -> Simulator {
    graph_sim::start(SimConfig::new(state_dir(name)).with_users(users()))
        .await
        .expect("simulator starts")
}

/// Polls `check` until it yields `Some`, failing the test after `deadline`.
pub async fn wait_until<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
    pub fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or("")
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("JSON body expected: {text}"))
    };
    Answer {
        status,
        headers,
        body,
    }
}

/// A Graph caller holding a token from the simulator.
pub struct Graph {
    pub http: reqwest::Client,
    pub base: String,
    pub token: String,
}

pub async fn token_with_secret(sim: &Simulator, http: &reqwest::Client) -> Answer {
    let form = form_body(&[
        ("client_id", sim.client_id()),
        ("client_secret", sim.client_secret()),
        ("grant_type", "client_credentials"),
        ("scope", GRAPH_SCOPE),
    ]);
    answer(
        http.post(sim.token_url())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .unwrap(),
    )
    .await
}

pub fn form_body(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

impl Graph {
    pub async fn new(sim: &Simulator) -> Graph {
        let http = sim.admin().http().clone();
        let token = token_with_secret(sim, &http).await;
        assert_eq!(token.status, StatusCode::OK, "{:?}", token.body);
        Graph {
            http,
            base: format!("{}/v1.0", sim.base_url()),
            token: token.body["access_token"].as_str().unwrap().to_string(),
        }
    }

    pub fn request(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
    ) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path_and_query}", self.base))
            .bearer_auth(&self.token)
            .header("client-request-id", uuid::Uuid::new_v4().to_string())
    }

    pub async fn get(&self, path_and_query: &str) -> Answer {
        answer(
            self.request(reqwest::Method::GET, path_and_query)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn patch_mail(&self, id: &str, mail: &str) -> Answer {
        answer(
            self.request(reqwest::Method::PATCH, &format!("/users/{id}"))
                .json(&json!({ "mail": mail }))
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn invite(&self, body: &Value) -> Answer {
        answer(self.invite_raw(body).await.unwrap()).await
    }

    pub async fn invite_raw(&self, body: &Value) -> reqwest::Result<reqwest::Response> {
        self.request(reqwest::Method::POST, "/invitations")
            .json(body)
            .send()
            .await
    }

    pub async fn list(&self, filter: &str, select: &str) -> Answer {
        let url = reqwest::Url::parse_with_params(
            &format!("{}/users", self.base),
            &[("$filter", filter), ("$select", select)],
        )
        .unwrap();
        answer(
            self.http
                .get(url)
                .bearer_auth(&self.token)
                .send()
                .await
                .unwrap(),
        )
        .await
    }
}

pub fn reset_body(user_id: &str, email: &str) -> Value {
    json!({
        "invitedUserEmailAddress": email,
        "inviteRedirectUrl": "https://myapps.microsoft.com",
        "sendInvitationMessage": true,
        "resetRedemption": true,
        "invitedUser": { "id": user_id },
        "invitedUserMessageInfo": {
            "messageLanguage": "en-US",
            "customizedMessageBody": "Your access moves to your new address.",
            "ccRecipients": [{ "emailAddress": { "address": "manager@fabrikam.example" } }]
        }
    })
}

pub const SELECT: &str = "id,userType,userPrincipalName,mail,otherMails,externalUserState,externalUserStateChangeDateTime";
