//! The admin endpoints: `/metrics` (Prometheus text), `/healthz` and `/readyz`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;
use crate::shutdown::Shutdown;

/// What `/readyz` answers: ready once the watch cache has synced, or while standing by for
/// the Lease (a standby is doing what it should). Clones share one flag.
#[derive(Clone, Debug, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set_ready(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// What the endpoints read.
#[derive(Clone)]
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub readiness: Readiness,
    /// A stopping process is not ready, whatever its cache says.
    pub shutdown: Shutdown,
}

impl AdminState {
    pub fn new(metrics: &Arc<Metrics>, readiness: &Readiness, shutdown: &Shutdown) -> Self {
        AdminState {
            metrics: metrics.clone(),
            readiness: readiness.clone(),
            shutdown: shutdown.clone(),
        }
    }
}

/// Serves the admin endpoints on `listener` until `until` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AdminState,
    until: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, "admin endpoints listening");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(until)
        .await
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn metrics_text(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    if state.shutdown.is_stopping() {
        (StatusCode::SERVICE_UNAVAILABLE, "stopping")
    } else if state.readiness.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "watch cache not synced yet",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get_readyz(state: &AdminState) -> (StatusCode, String) {
        let response = readyz(State(state.clone())).await.into_response();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn readyz_follows_readiness_until_the_stop_begins() {
        let state = AdminState::new(
            &Arc::new(Metrics::new()),
            &Readiness::default(),
            &Shutdown::new(),
        );
        assert_eq!(get_readyz(&state).await.0, StatusCode::SERVICE_UNAVAILABLE);
        state.readiness.clone().set_ready(true);
        assert_eq!(get_readyz(&state).await, (StatusCode::OK, "ready".into()));
        state.shutdown.begin();
        assert_eq!(
            get_readyz(&state).await,
            (StatusCode::SERVICE_UNAVAILABLE, "stopping".into())
        );
    }
}
