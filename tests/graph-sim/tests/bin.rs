mod common;

use common::*;
use graph_sim::AdminClient;
use reqwest::StatusCode;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[tokio::test]
async fn binary_serves_the_seed_file_and_stops_on_sigterm() {
    let dir = state_dir("bin");
    let seed = concat!(env!("CARGO_MANIFEST_DIR"), "/seed-example.yaml");
    let mut child = Command::new(env!("CARGO_BIN_EXE_graph-sim"))
        .args(["--bind", "127.0.0.1:0", "--state-dir"])
        .arg(&dir)
        .args(["--seed", seed, "--latency-ms", "5"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("graph-sim starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base_url = line
        .trim()
        .strip_prefix("LISTENING ")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_string();
    assert!(base_url.starts_with("https://127.0.0.1:"));
    assert_eq!(
        std::fs::read_to_string(dir.join("base_url")).unwrap(),
        base_url
    );

    let admin = AdminClient::new(&base_url, &dir.join("ca.pem")).unwrap();
    let users = admin.users().await.unwrap();
    assert_eq!(users.len(), 5);
    assert_eq!(users.iter().filter(|u| u.user_type == "Member").count(), 1);
    assert!(users.iter().any(|u| u.privileged));
    assert_eq!(admin.settings().await.unwrap().latency_ms, 5);

    let http = admin.http();
    let token = answer(
        http.post(format!(
            "{base_url}/{}/oauth2/v2.0/token",
            graph_sim::DEFAULT_TENANT_ID
        ))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(&[
            ("client_id", graph_sim::DEFAULT_CLIENT_ID),
            ("client_secret", graph_sim::DEFAULT_CLIENT_SECRET),
            ("grant_type", "client_credentials"),
            ("scope", GRAPH_SCOPE),
        ]))
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(token.status, StatusCode::OK);
    let upn = "alice_contoso.com%23EXT%23@fabrikam.onmicrosoft.com";
    let alice = answer(
        http.get(format!("{base_url}/v1.0/users/{upn}?$select=id,otherMails"))
            .bearer_auth(token.body["access_token"].as_str().unwrap())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(alice.status, StatusCode::OK);
    assert_eq!(alice.body["id"], ALICE);

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let started = Instant::now();
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "graph-sim did not stop on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "{exit:?}");
}
