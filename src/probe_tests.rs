//! The probe against a tiny local server: a 2xx passes, anything else fails with its reason.

use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::net::TcpListener;

use super::*;

const TIMEOUT: Duration = Duration::from_secs(10);

/// A server answering `/ok` with 200, `/readyz` with 503 and a two-line body, `/hang` never;
/// its base URL.
async fn server() -> String {
    let app = Router::new()
        .route("/ok", get(|| async { "ready" }))
        .route(
            "/readyz",
            get(|| async {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "watch cache\nnot synced yet",
                )
            }),
        )
        .route("/hang", get(std::future::pending::<&str>));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn url(text: &str) -> Url {
    Url::parse(text).unwrap()
}

#[tokio::test]
async fn a_2xx_answer_passes() {
    let base = server().await;
    let status = probe(&url(&format!("{base}/ok")), TIMEOUT).await.unwrap();
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn another_answer_fails_with_its_status_and_body_on_one_line() {
    let base = server().await;
    let err = probe(&url(&format!("{base}/readyz")), TIMEOUT)
        .await
        .unwrap_err();
    assert!(matches!(err, ProbeError::Status { status, .. } if status == 503));
    let line = one_line(&err.to_string());
    assert_eq!(
        line,
        format!("GET {base}/readyz: 503 Service Unavailable: watch cache not synced yet")
    );
}

#[tokio::test]
async fn a_refused_connection_fails_naming_the_cause() {
    // A port nobody listens on: bound, then released.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = probe(&url(&format!("http://{addr}/readyz")), TIMEOUT)
        .await
        .unwrap_err();
    assert!(matches!(err, ProbeError::Request { .. }), "{err:?}");
    assert!(err.to_string().to_lowercase().contains("refused"), "{err}");
}

/// A server that never answers fails the probe with the timeout as the reason (the outcome
/// only: how long it took is not asserted).
#[tokio::test]
async fn a_silent_server_fails_at_the_timeout() {
    let base = server().await;
    let err = probe(&url(&format!("{base}/hang")), Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(err, ProbeError::Timeout { .. }), "{err:?}");
    assert!(err.to_string().ends_with("no answer within 300ms"), "{err}");
}

#[test]
fn only_http_urls_are_accepted() {
    assert!(http_url("http://guestreset-metrics:8080/readyz").is_ok());
    assert!(http_url("https://x.example/readyz").is_ok());
    assert!(
        http_url("ftp://x.example/")
            .unwrap_err()
            .contains("http://")
    );
    assert!(http_url("guestreset-metrics:8080").is_err());
}
