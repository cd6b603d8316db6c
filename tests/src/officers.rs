//! The officer side of the alarm loop for tests: a duty-officer directory written with fresh
//! tokens ([`write_directory`]) and a client of the gateway's officer API ([`OfficerApi`]).

use std::path::Path;

use serde_json::Value;

/// One officer of a test directory (see `alerting/officers/officers.example.toml` for the fields).
#[derive(Debug, Clone, Copy)]
pub struct Officer<'a> {
    /// Directory id.
    pub id: &'a str,
    /// Display name.
    pub name: &'a str,
    /// `grid_leader`, `grid_worker`, `duty_officer`, `commander` or `viewer`.
    pub role: &'a str,
    /// The desk, e.g. `street:Fuhai`.
    pub scope: &'a str,
    /// Whether they are paged.
    pub on_duty: bool,
}

/// Writes a directory of `officers` (no notification channels of their own) to `path`, each
/// with a fresh token from `firegrid_officers::new_token`, and returns the bearer
/// tokens in the same order.
pub fn write_directory(path: &Path, officers: &[Officer<'_>]) -> Vec<String> {
    let mut toml = String::new();
    let mut tokens = Vec::new();
    for o in officers {
        let (token, hash) = firegrid_officers::new_token();
        toml.push_str(&format!(
            "[[officer]]\nid = \"{}\"\nname = \"{}\"\nrole = \"{}\"\nscope = \"{}\"\non_duty = {}\n\
             token_sha256 = \"{hash}\"\nchannels = []\n\n",
            o.id, o.name, o.role, o.scope, o.on_duty
        ));
        tokens.push(token);
    }
    std::fs::write(path, toml).unwrap();
    tokens
}

/// Writes a directory at `path` holding one on-duty desk for the whole of `street` and
/// returns its bearer token: the directory of a test that pages one desk for everything.
pub fn write_street_desk(path: &Path, street: &str) -> String {
    let scope = format!("street:{street}");
    let desk = Officer {
        id: "street-desk",
        name: "Street desk",
        role: "duty_officer",
        scope: &scope,
        on_duty: true,
    };
    write_directory(path, &[desk]).remove(0)
}

/// A client of the gateway's officer API (`/api/v1/...`).
pub struct OfficerApi {
    base: String,
    client: reqwest::Client,
}

impl OfficerApi {
    /// A client of the gateway whose HTTP server listens on `127.0.0.1:<http_port>`.
    pub fn new(http_port: u16) -> OfficerApi {
        OfficerApi { base: format!("http://127.0.0.1:{http_port}"), client: reqwest::Client::new() }
    }

    /// `method path` with `token` as bearer and `body` as JSON; the status and the JSON answer
    /// (`Null` when the answer is not JSON).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// `GET path` with `token` as bearer; the JSON answer, which must come with 200.
    pub async fn get(&self, token: &str, path: &str) -> Value {
        let (status, body) = self.call(reqwest::Method::GET, path, Some(token), None).await;
        assert_eq!(status, 200, "GET {path} → {body}");
        body
    }

    /// `POST /api/v1/cases/{case}/actions` with `body` (a command without its `case`).
    pub async fn act(&self, token: &str, case: u64, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, &format!("/api/v1/cases/{case}/actions"), Some(token), Some(body))
            .await
    }
}
