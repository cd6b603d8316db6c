//! [`WebhookReceiver`]: the far end of the gateway's `webhook` notification channel, an axum
//! server on a free loopback port that records every notification with the time it arrived.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::post;
use serde_json::Value;

/// One notification as it arrived.
pub type Received = (Instant, Value);

/// A webhook receiver on `127.0.0.1`: every POST to `/hook` is answered with 200 and recorded
/// with its JSON body and arrival time, in arrival order. Point the gateway's channel at
/// [`url`](Self::url).
pub struct WebhookReceiver {
    port: u16,
    got: Arc<Mutex<Vec<Received>>>,
    /// The `Idempotency-Key` header of each request, in the same order (empty when absent).
    keys: Arc<Mutex<Vec<String>>>,
    /// While set, every request is answered 503 and not recorded ([`refuse`](Self::refuse)).
    refusing: Arc<AtomicBool>,
    /// Requests answered 503.
    refused: Arc<AtomicUsize>,
}

impl WebhookReceiver {
    /// Starts the receiver on a free port, serving from the current tokio runtime.
    pub async fn start() -> WebhookReceiver {
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let keys: Arc<Mutex<Vec<String>>> = Arc::default();
        let (refusing, refused) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
        let (sink, key_sink) = (got.clone(), keys.clone());
        let (refuse, count) = (refusing.clone(), refused.clone());
        let app = axum::Router::new().route(
            "/hook",
            post(move |headers: axum::http::HeaderMap, body: axum::Json<Value>| {
                let (sink, key_sink) = (sink.clone(), key_sink.clone());
                let (refuse, count) = (refuse.clone(), count.clone());
                async move {
                    if refuse.load(Ordering::SeqCst) {
                        count.fetch_add(1, Ordering::SeqCst);
                        return (axum::http::StatusCode::SERVICE_UNAVAILABLE, "refused");
                    }
                    let key =
                        headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or_default();
                    // One lock order, so the two lists stay aligned.
                    let mut got = sink.lock().unwrap();
                    key_sink.lock().unwrap().push(key.to_owned());
                    got.push((Instant::now(), body.0));
                    (axum::http::StatusCode::OK, "ok")
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        WebhookReceiver { port, got, keys, refusing, refused }
    }

    /// While `on`, answers every request with 503 (a receiver that is down: the gateway
    /// retries) and records none of them.
    pub fn refuse(&self, on: bool) {
        self.refusing.store(on, Ordering::SeqCst);
    }

    /// How many requests were answered 503 so far.
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }

    /// The `Idempotency-Key` header of every notification received so far, in arrival order
    /// (empty for one without it).
    pub fn idempotency_keys(&self) -> Vec<String> {
        let _got = self.got.lock().unwrap();
        self.keys.lock().unwrap().clone()
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>/hook`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// Everything received so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// The `desk` of every notification received so far, in arrival order.
    pub fn desks(&self) -> Vec<String> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(|(_, v)| v["desk"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Waits until some notification satisfies `pred` and returns it; panics after `timeout`
    /// naming `what` and the desks told so far.
    pub async fn wait(&self, what: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            if let Some((_, v)) = self.got.lock().unwrap().iter().find(|(_, v)| pred(v)) {
                return v.clone();
            }
            assert!(
                started.elapsed() < timeout,
                "no notification {what} within {timeout:?}; got desks {:?}",
                self.desks()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
