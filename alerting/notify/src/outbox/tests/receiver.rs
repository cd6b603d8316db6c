//! A real HTTP receiver on loopback standing in for every platform: it checks each request's
//! signature the way the platform does, records it, and answers with scripted replies.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use tokio_util::sync::CancellationToken;

use crate::sign::{base64, hmac_sha256};
use crate::{Channel, NotifyConfig, build_channels_with_env, webhook};

pub const WEBHOOK_SECRET: &str = "webhook-secret";
pub const WECOM_KEY: &str = "wecom-key";
pub const DINGTALK_TOKEN: &str = "ding-token";
pub const DINGTALK_SECRET: &str = "SECding-secret";
pub const FEISHU_SECRET: &str = "feishu-secret";

/// Every channel kind pointed at a receiver at `addr`, under the names the tests use:
/// `console` (webhook), `wecom`, `dingtalk`, `feishu`, `sms`, `slow` (an unsigned webhook
/// whose replies the tests delay) and `limited` (an unsigned webhook taking 3 messages an
/// hour, 1 of them kept for fire and pre-alarm pages).
pub fn channels(addr: SocketAddr) -> HashMap<String, Channel> {
    let toml_text = format!(
        r#"
        [channels.console]
        kind = "webhook"
        url = "http://{addr}/hook"
        secret = "{WEBHOOK_SECRET}"
        timeout = "3s"

        [channels.slow]
        kind = "webhook"
        url = "http://{addr}/slow"
        timeout = "5s"

        [channels.limited]
        kind = "webhook"
        url = "http://{addr}/limited"
        timeout = "3s"
        rate_limit = {{ messages = 3, per = "1h", reserve = 1 }}

        [channels.wecom]
        kind = "wecom"
        url = "http://{addr}/wecom?key={WECOM_KEY}"
        timeout = "3s"

        [channels.dingtalk]
        kind = "dingtalk"
        url = "http://{addr}/dingtalk?access_token={DINGTALK_TOKEN}"
        secret = "{DINGTALK_SECRET}"
        timeout = "3s"

        [channels.feishu]
        kind = "feishu"
        url = "http://{addr}/feishu"
        secret = "{FEISHU_SECRET}"
        timeout = "3s"

        [channels.sms]
        kind = "sms"
        url = "http://{addr}/sms"
        body = '{{"to":"{{phone}}","id":"{{notification_id}}","text":"{{summary}}"}}'
        phones = ["13800000000"]
        success_field = "code"
        success_value = "0"
        timeout = "3s"
        "#
    );
    let cfg: NotifyConfig = toml::from_str(&toml_text).unwrap();
    build_channels_with_env(&cfg.channels, &crate::tests::no_env).unwrap()
}

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    /// The path without its `/`: `hook`, `wecom`, ...
    pub route: String,
    /// Whether the platform's check (signature, key, token) passed.
    pub authentic: bool,
    /// The body as JSON (`Null` if it is not JSON).
    pub body: serde_json::Value,
    /// When it arrived.
    pub at: Instant,
}

impl Received {
    /// The notification id the request carries: from the webhook's JSON body or the SMS
    /// template's `id`; robots carry only text, so `None`.
    pub fn notification_id(&self) -> Option<u64> {
        match &self.body["notification_id"] {
            serde_json::Value::Number(n) => n.as_u64(),
            _ => self.body["id"].as_str().and_then(|s| s.parse().ok()),
        }
    }
}

#[derive(Default)]
struct Script {
    requests: Vec<Received>,
    replies: HashMap<String, VecDeque<(u16, String)>>,
    delays: HashMap<String, Duration>,
}

type Shared = Arc<(Mutex<Script>, tokio::sync::Notify)>;

/// The receiver; stopped on [`Receiver::stop`].
pub struct Receiver {
    pub addr: SocketAddr,
    shared: Shared,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Starts on a free loopback port.
    pub async fn start() -> Receiver {
        Self::start_at("127.0.0.1:0".parse().unwrap()).await
    }

    /// Starts on `addr` (a port a test reserved and released to simulate a receiver that comes
    /// up late).
    pub async fn start_at(addr: SocketAddr) -> Receiver {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared: Shared = Arc::default();
        let app = Router::new().fallback(receive).with_state(shared.clone());
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone().cancelled_owned();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).with_graceful_shutdown(stop).await.unwrap();
        });
        Receiver { addr, shared, shutdown, task }
    }

    /// The next replies of `route`, in order; afterwards the platform's success reply.
    pub fn script(&self, route: &str, replies: &[(u16, &str)]) {
        let mut script = self.shared.0.lock().unwrap();
        let queue = script.replies.entry(route.to_owned()).or_default();
        queue.extend(replies.iter().map(|(s, b)| (*s, b.to_string())));
    }

    /// Delays every reply of `route`.
    pub fn delay(&self, route: &str, delay: Duration) {
        self.shared.0.lock().unwrap().delays.insert(route.to_owned(), delay);
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Received> {
        self.shared.0.lock().unwrap().requests.clone()
    }

    /// Requests per route.
    pub fn counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for r in self.requests() {
            *counts.entry(r.route).or_default() += 1;
        }
        counts
    }

    /// Waits until `n` requests have arrived (at most 10 s).
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        let waited = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let arrived = self.shared.1.notified();
                let requests = self.requests();
                if requests.len() >= n {
                    return requests;
                }
                arrived.await;
            }
        });
        waited.await.unwrap_or_else(|_| panic!("{n} requests did not arrive: {:?}", self.requests()))
    }

    /// Stops accepting and closes connections.
    pub async fn stop(self) {
        self.shutdown.cancel();
        if tokio::time::timeout(Duration::from_secs(5), self.task).await.is_err() {
            panic!("the receiver did not stop");
        }
    }
}

async fn receive(
    State(shared): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let route = uri.path().trim_start_matches('/').to_owned();
    let query: HashMap<String, String> =
        reqwest::Url::parse(&format!("http://x/?{}", uri.query().unwrap_or("")))
            .unwrap()
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let authentic = match route.as_str() {
        "hook" => webhook::request::verify(
            WEBHOOK_SECRET.as_bytes(),
            header("x-firegrid-timestamp"),
            &body,
            header("x-firegrid-signature"),
        ),
        "wecom" => query.get("key").map(String::as_str) == Some(WECOM_KEY),
        // DingTalk's check: sign = base64(HMAC-SHA256(secret, "{timestamp}\n{secret}")), read
        // from the URL-decoded query.
        "dingtalk" => {
            let ts = query.get("timestamp").cloned().unwrap_or_default();
            let expected = base64(&hmac_sha256(
                DINGTALK_SECRET.as_bytes(),
                format!("{ts}\n{DINGTALK_SECRET}").as_bytes(),
            ));
            query.get("access_token").map(String::as_str) == Some(DINGTALK_TOKEN)
                && query.get("sign") == Some(&expected)
                && fresh(ts.parse::<u64>().unwrap_or(0) / 1000)
        }
        // Feishu's check: sign = base64(HMAC-SHA256(key = "{timestamp}\n{secret}", "")).
        "feishu" => {
            let ts = json["timestamp"].as_str().unwrap_or_default();
            let expected = base64(&hmac_sha256(format!("{ts}\n{FEISHU_SECRET}").as_bytes(), b""));
            json["sign"].as_str() == Some(expected.as_str()) && fresh(ts.parse().unwrap_or(0))
        }
        "sms" => header("content-type").starts_with("application/json"),
        _ => true,
    };
    let delay = {
        let mut script = shared.0.lock().unwrap();
        script.requests.push(Received { route: route.clone(), authentic, body: json, at: Instant::now() });
        script.delays.get(&route).copied()
    };
    shared.1.notify_waiters();
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    let scripted = shared.0.lock().unwrap().replies.get_mut(&route).and_then(VecDeque::pop_front);
    let (status, reply) = scripted.unwrap_or_else(|| match route.as_str() {
        "wecom" | "dingtalk" => (200, r#"{"errcode":0,"errmsg":"ok"}"#.to_owned()),
        "feishu" => (200, r#"{"code":0,"msg":"success","data":{}}"#.to_owned()),
        "sms" => (200, r#"{"code":0,"message":"queued"}"#.to_owned()),
        _ => (204, String::new()),
    });
    (StatusCode::from_u16(status).unwrap(), reply)
}

/// Whether a signed timestamp (Unix seconds) is within a minute of now, as platforms check.
fn fresh(timestamp_s: u64) -> bool {
    crate::unix_ms().div_ceil(1000).abs_diff(timestamp_s) < 60
}
