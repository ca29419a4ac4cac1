//! Azure credentials chosen from the environment, getting tokens from the simulator's
//! token endpoint over TLS, through the same HTTP client as the Graph calls.

use graph_sim::{Call, SeedUser, SimConfig, Simulator};
use guestreset::graph::{
    CredentialKind, ErrorClass, GraphClient, GraphSettings, WriteLimiter, credential, http,
};
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

const ALICE_ID: &str = "3f0a6c1e-8d2b-4c55-9b0e-2f6a1d9c7e41";

async fn start_sim(dir: &Path) -> Simulator {
    let alice = SeedUser::guest(
        ALICE_ID,
        "alice_contoso.com#EXT#@fabrikam.onmicrosoft.com",
        "alice@contoso.com",
    );
    graph_sim::start(SimConfig::new(dir.join("sim")).with_users([alice]))
        .await
        .expect("simulator starts")
}

type Env = HashMap<&'static str, String>;

fn base_env(sim: &Simulator) -> Env {
    HashMap::from([
        (credential::AZURE_TENANT_ID, sim.tenant_id().to_owned()),
        (credential::AZURE_CLIENT_ID, sim.client_id().to_owned()),
        (credential::AZURE_AUTHORITY_HOST, sim.base_url()),
    ])
}

fn lookup(env: &Env) -> impl Fn(&str) -> Option<String> + '_ {
    move |name| env.get(name).cloned()
}

fn http_client(sim: &Simulator) -> reqwest::Client {
    http::build_client_with_ca_file(Duration::from_secs(10), Some(&sim.ca_pem_path())).unwrap()
}

fn graph_client(sim: &Simulator, env: &Env) -> GraphClient {
    let http = http_client(sim);
    let cred = credential::from_env(&lookup(env), &http).expect("credential builds");
    GraphClient::new(
        GraphSettings::new(sim.base_url()),
        http,
        cred,
        WriteLimiter::default(),
    )
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// A service-account token as Kubernetes projects it (the simulator reads its claims
/// and does not check the signature).
fn projected_token(subject: &str) -> String {
    let exp = jiff::Timestamp::now().as_second() + 3600;
    let header = serde_json::json!({"alg": "RS256", "kid": "test", "typ": "JWT"});
    let payload = serde_json::json!({
        "aud": ["api://AzureADTokenExchange"],
        "iss": "https://oidc.example/cluster",
        "sub": subject,
        "exp": exp,
    });
    format!(
        "{}.{}.{}",
        base64url(header.to_string().as_bytes()),
        base64url(payload.to_string().as_bytes()),
        base64url(b"not-a-real-signature"),
    )
}

#[tokio::test]
async fn client_secret_token_is_acquired_once_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(dir.path()).await;
    let mut env = base_env(&sim);
    env.insert(
        credential::AZURE_CLIENT_SECRET,
        sim.client_secret().to_owned(),
    );
    let kind = CredentialKind::from_env(&lookup(&env)).unwrap();
    assert_eq!(kind.name(), "ClientSecretCredential");
    assert!(!kind.to_string().contains(sim.client_secret()));

    let client = graph_client(&sim, &env);
    for _ in 0..3 {
        assert!(client.get_user(ALICE_ID).await.unwrap().is_some());
    }
    // Clones share the credential and its cache.
    let clone = client.clone();
    assert_eq!(
        clone
            .find_users_by_mail("alice@contoso.com")
            .await
            .unwrap()
            .len(),
        1
    );
    let admin = sim.admin();
    assert_eq!(admin.tokens_issued().await.unwrap(), 1, "token cached");
    let journal = admin.journal().await.unwrap();
    assert_eq!(journal.iter().filter(|e| e.call == Call::Token).count(), 1);
    assert_eq!(
        journal.iter().filter(|e| e.call == Call::GetUser).count(),
        3
    );
}

#[tokio::test]
async fn workload_identity_exchanges_the_projected_token() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(dir.path()).await;
    let token_file = dir.path().join("azure-identity-token");
    let subject = "system:serviceaccount:identity:guestreset";
    std::fs::write(&token_file, projected_token(subject)).unwrap();
    let mut env = base_env(&sim);
    env.insert(
        credential::AZURE_FEDERATED_TOKEN_FILE,
        token_file.display().to_string(),
    );
    // The federated token file wins over a secret that is also present.
    env.insert(credential::AZURE_CLIENT_SECRET, "ignored".to_owned());
    let kind = CredentialKind::from_env(&lookup(&env)).unwrap();
    assert!(
        matches!(&kind, CredentialKind::WorkloadIdentity { token_file: f, .. } if *f == token_file),
        "{kind}"
    );

    let client = graph_client(&sim, &env);
    assert!(client.get_user(ALICE_ID).await.unwrap().is_some());
    assert!(client.get_user(ALICE_ID).await.unwrap().is_some());
    let admin = sim.admin();
    assert_eq!(admin.tokens_issued().await.unwrap(), 1);
    let assertions = admin.client_assertions().await.unwrap();
    assert_eq!(assertions.len(), 1);
    assert_eq!(assertions[0].sub, subject);
}

#[tokio::test]
async fn client_certificate_signs_an_assertion() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(dir.path()).await;
    let (key, cert, pfx) = (
        dir.path().join("key.pem"),
        dir.path().join("cert.pem"),
        dir.path().join("client.pfx"),
    );
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("the openssl command is installed");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let s = |p: &Path| p.display().to_string();
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=guestreset",
        "-keyout",
        &s(&key),
        "-out",
        &s(&cert),
    ]);
    openssl(&[
        "pkcs12",
        "-export",
        "-inkey",
        &s(&key),
        "-in",
        &s(&cert),
        "-out",
        &s(&pfx),
        "-passout",
        "pass:pfx-pass",
    ]);
    let mut env = base_env(&sim);
    env.insert(credential::AZURE_CLIENT_CERTIFICATE_PATH, s(&pfx));
    env.insert(
        credential::AZURE_CLIENT_CERTIFICATE_PASSWORD,
        "pfx-pass".to_owned(),
    );
    let client = graph_client(&sim, &env);
    assert!(client.get_user(ALICE_ID).await.unwrap().is_some());
    let assertions = sim.admin().client_assertions().await.unwrap();
    assert_eq!(assertions.len(), 1);
    assert_eq!(assertions[0].iss, sim.client_id());
    assert!(
        assertions[0].aud.starts_with(&sim.base_url()),
        "{}",
        assertions[0].aud
    );

    // A wrong password is refused when the credential is built, naming the problem.
    env.insert(
        credential::AZURE_CLIENT_CERTIFICATE_PASSWORD,
        "wrong".to_owned(),
    );
    let err = credential::from_env(&lookup(&env), &http_client(&sim))
        .map(|_| ())
        .expect_err("wrong password");
    assert!(
        err.to_string().contains("ClientCertificateCredential"),
        "{err}"
    );
}

#[tokio::test]
async fn bad_secret_is_a_clear_definite_error() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(dir.path()).await;
    let mut env = base_env(&sim);
    env.insert(credential::AZURE_CLIENT_SECRET, "not-the-secret".to_owned());
    let client = graph_client(&sim, &env);
    let err = client.get_user(ALICE_ID).await.unwrap_err();
    println!("bad secret: {err}");
    assert!(err.is_credential());
    assert_eq!(err.class(), ErrorClass::Definite);
    assert_eq!(err.attempts, 1, "a refused credential is not retried");
    let text = err.to_string();
    assert!(
        text.contains("credential cannot get an access token"),
        "{text}"
    );
    assert!(text.contains("ClientSecretCredential"), "{text}");
    assert!(text.contains("Invalid client secret"), "{text}");
    assert!(!text.contains("not-the-secret"), "the secret is not echoed");
    let admin = sim.admin();
    assert_eq!(admin.tokens_issued().await.unwrap(), 0);
    let journal = admin.journal().await.unwrap();
    assert_eq!(journal.iter().filter(|e| e.call == Call::Token).count(), 1);
    assert!(
        journal.iter().all(|e| e.call == Call::Token),
        "Graph never called"
    );
}

#[tokio::test]
async fn unreachable_token_service_is_transient() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(dir.path()).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let authority = format!("https://{}", closed.local_addr().unwrap());
    drop(closed);
    let mut env = base_env(&sim);
    env.insert(
        credential::AZURE_CLIENT_SECRET,
        sim.client_secret().to_owned(),
    );
    env.insert(credential::AZURE_AUTHORITY_HOST, authority);
    let http = http_client(&sim);
    let cred = credential::from_env(&lookup(&env), &http).unwrap();
    let settings =
        GraphSettings::new(sim.base_url()).with_retry(guestreset::graph::RetryPolicy::none());
    let client = GraphClient::new(settings, http, cred, WriteLimiter::default());
    let err = client.get_user(ALICE_ID).await.unwrap_err();
    println!("unreachable token service: {err}");
    assert!(err.is_credential());
    assert_eq!(err.class(), ErrorClass::TransientBeforeSend);
    assert!(sim.admin().journal().await.unwrap().is_empty());
}
