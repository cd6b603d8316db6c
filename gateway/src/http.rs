//! The gateway's HTTP servers. The main listener serves the duty-officer API of
//! [`firegrid_officers::api`] and the console when the alarm loop runs, and `/healthz`. The operations
//! endpoints — `/metrics` (Prometheus text), the detailed `/healthz` and
//! `/api/unknown-devices` (devices that sent messages but are missing from the registry) —
//! are served on the main listener only when it is loopback; otherwise on their own listener
//! ([`crate::config::Config::ops_listener`], loopback by default), and the main listener's
//! `/healthz` says only whether the gateway is healthy.
//!
//! Every listener bounds what a client can hold: [`MAX_CONNECTIONS`] connections, headers
//! within [`HEADER_TIMEOUT`], a response started within [`RESPONSE_TIMEOUT`], a TLS handshake
//! within [`HANDSHAKE_TIMEOUT`]; refusals count in `firegrid_api_refused_total`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use axum::{Extension, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower_http::timeout::TimeoutLayer;

use crate::metrics::{Metrics, ReasonLabel};
use crate::runtime::Shared;

/// Serves until `shutdown` is cancelled. Binding happens before this returns, so a taken
/// port is an error at start, not a log line later. With `tls` the main listener speaks HTTPS
/// only (the operations listener stays plain: it is loopback by default).
pub async fn serve(
    listen: SocketAddr,
    ops: Option<SocketAddr>,
    tls: Option<Arc<rustls::ServerConfig>>,
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
            let (bound, task) =
                spawn(ops, ops_routes, None, shared.metrics.clone(), shutdown.clone()).await?;
            tracing::info!(%bound, "Operations endpoints (/metrics, /healthz, /api/unknown-devices) on their own listener.");
            tasks.push(task);
            Router::new().route("/healthz", get(healthz_brief)).with_state(shared.clone())
        }
    };
    let app = match &shared.api {
        Some(api) => app
            .merge(firegrid_officers::api::router(api.api.clone()))
            .merge(crate::device_api::router(api.clone()))
            .merge(firegrid_officers::console::router(shared.basemap.clone())),
        None => app,
    };
    let (bound, task) = spawn(listen, app, tls, shared.metrics.clone(), shutdown).await?;
    tasks.push(task);
    Ok((bound, tasks))
}

/// Most connections a listener holds at once; beyond it new connections are closed at once
/// (and counted), so a flood of idle sockets cannot exhaust the gateway's file descriptors.
/// HTTP/1.1 serves one request at a time per connection, so this also bounds the requests in
/// flight.
pub const MAX_CONNECTIONS: usize = 512;
/// Longest a client may take to send a request's headers (slow-loris defence).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a TLS handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a response may take to start (the live case stream starts at once and then runs
/// as long as the officer watches).
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stop waits for requests in flight.
const DRAIN: Duration = Duration::from_secs(5);

async fn spawn(
    listen: SocketAddr,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let bound = listener.local_addr()?;
    let app = app.layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, RESPONSE_TIMEOUT));
    let task = tokio::spawn(accept_loop(listener, app, tls.map(TlsAcceptor::from), metrics, shutdown));
    Ok((bound, task))
}

fn refused(metrics: &Metrics, reason: &'static str) {
    metrics.api_refused.get_or_create(&ReasonLabel { reason: reason.into() }).inc();
    if let Some(suppressed) = metrics.may_log(reason) {
        tracing::warn!(reason, suppressed, "HTTP connection refused.");
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Option<TlsAcceptor>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let graceful = GracefulShutdown::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, most likely: back off instead of spinning.
                    if metrics.may_log("http_accept").is_some() {
                        tracing::error!(%error, "HTTP listener cannot accept connections.");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refused(&metrics, "too_many_connections");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone().layer(Extension(ConnectInfo(peer))));
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
        let (tls, metrics) = (tls.clone(), metrics.clone());
        match tls {
            None => {
                let conn = graceful.watch(http.serve_connection(TokioIo::new(tcp), service));
                tokio::spawn(async move {
                    let _permit = permit;
                    let _ = conn.await;
                });
            }
            Some(acceptor) => {
                // The handshake runs in the connection's own task, so a slow client holds only
                // its own permit; the connection is watched for the stop once it is up.
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let _permit = permit;
                    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(_)) => return refused(&metrics, "tls_handshake"),
                        Err(_) => return refused(&metrics, "tls_handshake_timeout"),
                    };
                    let _ = watcher.watch(http.serve_connection(TokioIo::new(stream), service)).await;
                });
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown()).await.is_err() {
        tracing::warn!("HTTP connections still open after {DRAIN:?}; closing them.");
    }
}

/// Runs `f` off the async runtime: the gauges and the health read the spool under its lock,
/// which the ingest may hold through an fsync.
async fn off_runtime<T: Send + 'static>(
    shared: Arc<Shared>,
    f: impl FnOnce(&Shared) -> T + Send + 'static,
) -> T {
    tokio::task::spawn_blocking(move || f(&shared)).await.expect("reading the gateway's state does not panic")
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let text = off_runtime(shared, |shared| {
        shared.refresh_gauges();
        shared.metrics.encode()
    })
    .await;
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text)
}

async fn healthz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let health = off_runtime(shared, Shared::health).await;
    let status = if health.ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(health))
}

/// `/healthz` on a listener others can reach: the status code and `ok`, no details.
async fn healthz_brief(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let ok = off_runtime(shared, |shared| shared.health().ok).await;
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(serde_json::json!({ "ok": ok })))
}

async fn unknown_devices(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    Json(shared.ingest.unknown_devices())
}
