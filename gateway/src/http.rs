//! The gateway's HTTP servers. The main listener serves the duty-officer API of
//! [`crate::api`] and the console when the alarm loop runs, and `/healthz`. The operations
//! endpoints — `/metrics` (Prometheus text), the detailed `/healthz` and
//! `/api/unknown-devices` (devices that sent messages but are missing from the registry) —
//! are served on the main listener only when it is loopback; otherwise on their own listener
//! ([`crate::config::Config::ops_listener`], loopback by default), and the main listener's
//! `/healthz` says only whether the gateway is healthy.

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
    ops: Option<SocketAddr>,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, Vec<tokio::task::JoinHandle<()>>)> {
    let ops_routes = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/api/unknown-devices", get(unknown_devices))
        .with_state(shared.clone());
    let mut tasks = Vec::new();
    let app = match ops {
        None => ops_routes,
        Some(ops) => {
            let (bound, task) = spawn(ops, ops_routes, shutdown.clone()).await?;
            tracing::info!(%bound, "Operations endpoints (/metrics, /healthz, /api/unknown-devices) on their own listener.");
            tasks.push(task);
            Router::new().route("/healthz", get(healthz_brief)).with_state(shared.clone())
        }
    };
    let app = match &shared.api {
        Some(api) => app.merge(crate::api::router(api.clone())).merge(crate::console::router()),
        None => app,
    };
    let (bound, task) = spawn(listen, app, shutdown).await?;
    tasks.push(task);
    Ok((bound, tasks))
}

async fn spawn(
    listen: SocketAddr,
    app: Router,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let bound = listener.local_addr()?;
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

/// `/healthz` on a listener others can reach: the status code and `ok`, no details.
async fn healthz_brief(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let ok = shared.health().ok;
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(serde_json::json!({ "ok": ok })))
}

async fn unknown_devices(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    Json(shared.ingest.unknown_devices())
}
