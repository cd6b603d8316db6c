//! The gateway's HTTP server: `/metrics` (Prometheus text), `/healthz`,
//! `/api/unknown-devices` (devices that sent messages but are missing from the registry), and
//! the duty-officer API of [`crate::api`] when the alarm loop runs.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::runtime::Shared;

/// Serves until `shutdown` is cancelled. Binding happens before this returns, so a taken
/// port is an error at start, not a log line later.
pub async fn serve(
    listen: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/api/unknown-devices", get(unknown_devices))
        .with_state(shared.clone());
    let app = match &shared.api {
        Some(api) => app.merge(crate::api::router(api.clone())).merge(crate::console::router()),
        None => app,
    };
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "HTTP server stopped.");
        }
    });
    Ok((bound, task))
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    shared.refresh_gauges();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], shared.metrics.encode())
}

async fn healthz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let health = shared.health();
    let status = if health.ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(health))
}

async fn unknown_devices(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    Json(shared.ingest.unknown_devices())
}
