mod common;

use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::{Secret, TokenCredential};
use azure_core::http::{ClientOptions, Transport};
use azure_identity::{
    ClientAssertionCredentialOptions, ClientSecretCredential, ClientSecretCredentialOptions,
    WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};
use base64::Engine;
use common::*;
use graph_sim::{Simulator, client_trusting};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;

fn jwt(payload: &Value) -> String {
    let e = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.{}",
        e(&json!({"alg": "RS256", "typ": "JWT", "kid": "k1"})),
        e(payload),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b"not-a-real-signature")
    )
}

fn federated_token() -> String {
    let exp = time::OffsetDateTime::now_utc().unix_timestamp() + 3600;
    jwt(&json!({
        "aud": ["api://AzureADTokenExchange"],
        "iss": "https://oidc.cluster.example/",
        "sub": "system:serviceaccount:guestreset-system:guestreset",
        "exp": exp,
    }))
}

async fn post_token(sim: &Simulator, tenant: &str, pairs: &[(&str, &str)]) -> Answer {
    let http = sim.admin().http().clone();
    answer(
        http.post(format!("{}/{tenant}/oauth2/v2.0/token", sim.base_url()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_body(pairs))
            .send()
            .await
            .unwrap(),
    )
    .await
}

fn azure_options(sim: &Simulator) -> ClientOptions {
    let http = client_trusting(sim.ca_pem().as_bytes()).unwrap();
    let mut cloud = CustomConfiguration::default();
    cloud.authority_host = sim.base_url();
    ClientOptions {
        transport: Some(Transport::new(Arc::new(http))),
        cloud: Some(Arc::new(CloudConfiguration::from(cloud))),
        ..Default::default()
    }
}

#[tokio::test]
async fn secret_grants_an_entra_shaped_token_that_graph_accepts() {
    let sim = start("token-secret").await;
    let http = sim.admin().http().clone();
    let token = token_with_secret(&sim, &http).await;
    assert_eq!(token.status, StatusCode::OK);
    assert_eq!(token.body["token_type"], "Bearer");
    assert_eq!(token.body["expires_in"], 3599);
    assert_eq!(token.body["ext_expires_in"], 3599);
    let access = token.body["access_token"].as_str().unwrap();
    assert!(access.len() >= 32);

    let user = answer(
        http.get(format!("{}/v1.0/users/{ALICE}", sim.base_url()))
            .bearer_auth(access)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(user.status, StatusCode::OK);
    assert_eq!(sim.admin().tokens_issued().await.unwrap(), 1);
    let journal = sim.admin().journal().await.unwrap();
    assert_eq!(journal[0].call, graph_sim::Call::Token);
    assert_eq!(journal[0].effect.as_deref(), Some("token issued"));
}

#[tokio::test]
async fn bad_credentials_and_parameters_are_refused_as_entra_does() {
    let sim = start("token-bad").await;
    let tenant = sim.tenant_id().to_string();
    let client = sim.client_id().to_string();
    let base = [
        ("client_id", client.as_str()),
        ("grant_type", "client_credentials"),
        ("scope", GRAPH_SCOPE),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut v: Vec<(&str, &str)> = base.to_vec();
        v.extend_from_slice(extra);
        v
    };

    let bad_secret = post_token(&sim, &tenant, &with(&[("client_secret", "wrong")])).await;
    assert_eq!(bad_secret.status, StatusCode::UNAUTHORIZED);
    assert_eq!(bad_secret.body["error"], "invalid_client");
    assert!(
        bad_secret.body["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS7000215: ")
    );
    assert_eq!(bad_secret.body["error_codes"], json!([7000215]));

    let wrong_tenant = post_token(
        &sim,
        "11111111-2222-3333-4444-555555555555",
        &with(&[("client_secret", "sim-secret")]),
    )
    .await;
    assert_eq!(wrong_tenant.status, StatusCode::BAD_REQUEST);
    assert_eq!(wrong_tenant.body["error_codes"], json!([90002]));

    let mut wrong_client = with(&[("client_secret", "sim-secret")]);
    wrong_client[0] = ("client_id", "99999999-0000-0000-0000-000000000000");
    let wrong_client = post_token(&sim, &tenant, &wrong_client).await;
    assert_eq!(wrong_client.body["error"], "unauthorized_client");

    let mut bad_scope = with(&[("client_secret", "sim-secret")]);
    bad_scope[2] = ("scope", "https://graph.microsoft.com/User.Read");
    let bad_scope = post_token(&sim, &tenant, &bad_scope).await;
    assert_eq!(bad_scope.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad_scope.body["error"], "invalid_scope");

    let no_credential = post_token(&sim, &tenant, &with(&[])).await;
    assert_eq!(no_credential.body["error"], "invalid_client");

    let malformed = post_token(
        &sim,
        &tenant,
        &with(&[
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", "abc.def"),
        ]),
    )
    .await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert_eq!(malformed.body["error"], "invalid_client");

    assert_eq!(sim.admin().tokens_issued().await.unwrap(), 0);
}

#[tokio::test]
async fn client_assertion_grants_a_token_and_its_claims_are_recorded() {
    let sim = start("token-assertion").await;
    let assertion = federated_token();
    let answer = post_token(
        &sim,
        sim.tenant_id(),
        &[
            ("client_assertion", &assertion),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_id", sim.client_id()),
            ("grant_type", "client_credentials"),
            ("scope", GRAPH_SCOPE),
        ],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    let claims = sim.admin().client_assertions().await.unwrap();
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].aud, "api://AzureADTokenExchange");
    assert_eq!(
        claims[0].sub,
        "system:serviceaccount:guestreset-system:guestreset"
    );
    // The assertion is a credential too: it must not be kept anywhere visible.
    let journal = serde_json::to_string(&sim.admin().journal().await.unwrap()).unwrap();
    assert!(!journal.contains(&assertion));
}

#[tokio::test]
async fn azure_identity_client_secret_credential_works_against_the_simulator() {
    let sim = start("token-azure-secret").await;
    let credential = ClientSecretCredential::new(
        sim.tenant_id(),
        sim.client_id().to_string(),
        Secret::new(sim.client_secret().to_string()),
        Some(ClientSecretCredentialOptions {
            client_options: azure_options(&sim),
        }),
    )
    .unwrap();
    let token = credential.get_token(&[GRAPH_SCOPE], None).await.unwrap();
    let secrets = sim.admin().issued_tokens_and_redeem_urls().await.unwrap();
    assert_eq!(
        secrets.access_tokens,
        vec![token.token.secret().to_string()]
    );

    let wrong = ClientSecretCredential::new(
        sim.tenant_id(),
        sim.client_id().to_string(),
        Secret::new("not-the-secret".to_string()),
        Some(ClientSecretCredentialOptions {
            client_options: azure_options(&sim),
        }),
    )
    .unwrap();
    let err = wrong.get_token(&[GRAPH_SCOPE], None).await.unwrap_err();
    assert!(err.to_string().contains("AADSTS7000215"), "{err}");
}

#[tokio::test]
async fn azure_identity_workload_identity_credential_works_against_the_simulator() {
    let sim = start("token-azure-wi").await;
    let dir = state_dir("wi-token");
    let file = dir.join("token");
    std::fs::write(&file, federated_token()).unwrap();
    let credential = WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
        credential_options: ClientAssertionCredentialOptions {
            client_options: azure_options(&sim),
        },
        client_id: Some(sim.client_id().to_string()),
        tenant_id: Some(sim.tenant_id().to_string()),
        token_file_path: Some(file),
    }))
    .unwrap();
    let token = credential.get_token(&[GRAPH_SCOPE], None).await.unwrap();
    assert!(!token.token.secret().is_empty());
    let claims = sim.admin().client_assertions().await.unwrap();
    assert_eq!(claims[0].iss, "https://oidc.cluster.example/");
}

#[tokio::test]
async fn managed_identity_endpoint_speaks_the_app_service_protocol() {
    let sim = start("token-msi").await;
    let http = sim.admin().http().clone();
    let url = format!(
        "{}{}?api-version=2019-08-01&resource=https://graph.microsoft.com",
        sim.base_url(),
        graph_sim::MANAGED_IDENTITY_PATH
    );
    let refused = answer(
        http.get(&url)
            .header("metadata", "true")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    let granted = answer(
        http.get(&url)
            .header("metadata", "true")
            .header("x-identity-header", sim.client_secret())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(granted.status, StatusCode::OK);
    let expires_on: i64 = granted.body["expires_on"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(expires_on > time::OffsetDateTime::now_utc().unix_timestamp());
    assert_eq!(sim.admin().tokens_issued().await.unwrap(), 1);
}
