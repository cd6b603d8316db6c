//! [`InfluxDb1`]: an InfluxDB 1.x server (`influxd`) with helpers for its v1 HTTP API.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::http::Http;
use crate::process::{Binary, ServerKind, ServerProcess, forward_lifecycle};

/// An InfluxDB 1.x server (`/usr/bin/influxd`, Debian package `influxdb`, 1.6.7 on Debian 12)
/// for one test.
///
/// Configuration (written to `influxdb.conf` in its temp dir): meta, data and WAL dirs inside
/// the temp dir, the HTTP API and the RPC (backup) listener both on free loopback ports, no
/// authentication, no usage reporting, no `_internal` monitoring database, no continuous
/// queries, the WAL fsynced on every write (so data survives even [`kill`](Self::kill)), and
/// logging at error level only.
///
/// Version 1.6 speaks only the v1 API (`/write`, `/query`); it has no `/api/v2/write`.
#[derive(Debug)]
pub struct InfluxDb1 {
    process: ServerProcess,
}

forward_lifecycle!(InfluxDb1);

/// One series of an InfluxQL result: what `/query` returns per measurement and tag group.
#[derive(Debug, Clone, PartialEq)]
pub struct InfluxSeries {
    /// Measurement name (or the `SHOW ...` result's name).
    pub name: String,
    /// Tag values of a `GROUP BY` group; empty without `GROUP BY`.
    pub tags: BTreeMap<String, String>,
    /// Column names; `time` comes first for `SELECT`s.
    pub columns: Vec<String>,
    /// Rows, each with one value per column. Times are epoch milliseconds.
    pub values: Vec<Vec<Value>>,
}

impl InfluxSeries {
    /// All values of the column called `name`, in row order (`None` if there is no such column).
    pub fn column(&self, name: &str) -> Option<Vec<&Value>> {
        let index = self.columns.iter().position(|c| c == name)?;
        Some(self.values.iter().map(|row| &row[index]).collect())
    }
}

impl InfluxDb1 {
    /// Where Debian installs the server.
    pub const BINARY: Binary =
        Binary { name: "influxd", default_path: "/usr/bin/influxd", apt_package: "influxdb" };

    /// Starts `influxd` on free loopback ports and waits until `GET /ping` answers 204.
    ///
    /// # Errors
    /// See [`ServerProcess::start`]; a missing binary names the install command.
    pub fn start() -> Result<Self> {
        Ok(InfluxDb1 { process: ServerProcess::start(InfluxKind { max_body_size: None })? })
    }

    /// Like [`start`](Self::start), with the server refusing (HTTP 413) request bodies larger
    /// than `bytes`.
    ///
    /// # Errors
    /// As for [`start`](Self::start).
    pub fn start_with_max_body_size(bytes: u64) -> Result<Self> {
        Ok(InfluxDb1 { process: ServerProcess::start(InfluxKind { max_body_size: Some(bytes) })? })
    }

    /// The HTTP API port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.process.ports()[0]
    }

    /// The RPC (backup/restore) port on 127.0.0.1.
    pub fn rpc_port(&self) -> u16 {
        self.process.ports()[1]
    }

    /// `http://127.0.0.1:<port>`, the base URL of the HTTP API.
    pub fn url(&self) -> String {
        format!("http://{}:{}", self.host(), self.port())
    }

    fn http(&self) -> Http {
        Http::new(self.url(), Duration::from_secs(30))
    }

    /// `CREATE DATABASE "<name>"` (a no-op if it exists).
    ///
    /// # Errors
    /// [`Error::Http`] or [`Error::Server`].
    pub fn create_database(&self, name: &str) -> Result<()> {
        let statement = format!("CREATE DATABASE {}", quote_identifier(name));
        let reply = self
            .http()
            .post("/query", &[("q", &statement)], "")?
            .expect(200, || format!("POST {}/query {statement}", self.url()))?;
        check_results(&reply.json(|| format!("POST {}/query", self.url()))?)?;
        Ok(())
    }

    /// Writes line protocol to database `db` through `POST /write?db=<db>&precision=ms`:
    /// timestamps in the body are epoch **milliseconds** (lines without one get the server's
    /// time). The server answers only after the points are in the WAL.
    ///
    /// # Errors
    /// [`Error::Http`] with InfluxDB's message (e.g. a parse error or field type conflict).
    pub fn write(&self, db: &str, line_protocol: &str) -> Result<()> {
        self.http()
            .post("/write", &[("db", db), ("precision", "ms")], line_protocol)?
            .expect(204, || format!("POST {}/write?db={db}", self.url()))?;
        Ok(())
    }

    /// Runs InfluxQL against `db` through `POST /query?db=<db>&epoch=ms` and returns the
    /// whole JSON answer (`{"results": [...]}`); times come back as epoch milliseconds.
    ///
    /// # Errors
    /// [`Error::Server`] if the query or any statement failed, [`Error::Http`] otherwise.
    pub fn query(&self, db: &str, influxql: &str) -> Result<Value> {
        let request = || format!("POST {}/query?db={db} {influxql}", self.url());
        let reply = self.http().post("/query", &[("db", db), ("epoch", "ms"), ("q", influxql)], "")?;
        let json = reply.json(request)?;
        check_results(&json)?;
        if reply.status != 200 {
            return Err(Error::Http {
                request: request(),
                detail: format!("HTTP {}: {}", reply.status, reply.body.trim()),
            });
        }
        Ok(json)
    }

    /// Like [`query`](Self::query), but returns the series of every statement, flattened.
    ///
    /// # Errors
    /// As for [`query`](Self::query), plus [`Error::Server`] for an answer of unexpected shape.
    pub fn query_series(&self, db: &str, influxql: &str) -> Result<Vec<InfluxSeries>> {
        let json = self.query(db, influxql)?;
        let shape = || Error::Server {
            server: "influxd".into(),
            message: format!("unexpected /query answer: {json}"),
        };
        let mut out = Vec::new();
        for result in json["results"].as_array().ok_or_else(shape)? {
            let Some(series) = result.get("series") else {
                continue;
            };
            for s in series.as_array().ok_or_else(shape)? {
                let strings = |v: &Value| -> Option<BTreeMap<String, String>> {
                    v.as_object()?.iter().map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned()))).collect()
                };
                out.push(InfluxSeries {
                    name: s["name"].as_str().unwrap_or_default().to_owned(),
                    tags: match s.get("tags") {
                        Some(tags) => strings(tags).ok_or_else(shape)?,
                        None => BTreeMap::new(),
                    },
                    columns: s["columns"]
                        .as_array()
                        .ok_or_else(shape)?
                        .iter()
                        .map(|c| c.as_str().map(str::to_owned))
                        .collect::<Option<_>>()
                        .ok_or_else(shape)?,
                    values: s
                        .get("values")
                        .and_then(Value::as_array)
                        .map(|rows| {
                            rows.iter().map(|row| row.as_array().cloned().unwrap_or_default()).collect()
                        })
                        .unwrap_or_default(),
                });
            }
        }
        Ok(out)
    }
}

/// Double-quotes an InfluxQL identifier.
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Turns a top-level or per-statement `"error"` into [`Error::Server`].
fn check_results(json: &Value) -> Result<()> {
    let errors: Vec<&str> = std::iter::once(json)
        .chain(json["results"].as_array().into_iter().flatten())
        .filter_map(|v| v.get("error")?.as_str())
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::Server { server: "influxd".into(), message: errors.join("; ") })
    }
}

/// The configuration knobs a test may set.
struct InfluxKind {
    /// `[http] max-body-size`, bytes.
    max_body_size: Option<u64>,
}

impl ServerKind for InfluxKind {
    fn binary(&self) -> Binary {
        InfluxDb1::BINARY
    }

    fn port_count(&self) -> usize {
        2
    }

    fn args(&self, dir: &Path, ports: &[u16]) -> io::Result<Vec<OsString>> {
        let (http_port, rpc_port) = (ports[0], ports[1]);
        let path = |sub: &str| toml_string(&dir.join(sub));
        let config = format!(
            r#"# Written by firegrid-tests.
reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"

[meta]
  dir = {meta}
  logging-enabled = false

[data]
  dir = {data}
  wal-dir = {wal}
  wal-fsync-delay = "0s"
  index-version = "inmem"
  query-log-enabled = false
  trace-logging-enabled = false

[monitor]
  store-enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:{http_port}"
  auth-enabled = false
  log-enabled = false
  write-tracing = false
  pprof-enabled = false
  max-body-size = {max_body}

[logging]
  level = "error"
  suppress-logo = true

[continuous_queries]
  enabled = false

[subscriber]
  enabled = false
"#,
            meta = path("meta"),
            data = path("data"),
            wal = path("wal"),
            // 25 MB is influxd's own default.
            max_body = self.max_body_size.unwrap_or(25_000_000),
        );
        let file = dir.join("influxdb.conf");
        std::fs::write(&file, config)?;
        Ok(vec!["-config".into(), file.into_os_string()])
    }

    fn is_ready(&self, ports: &[u16]) -> bool {
        Http::new(format!("http://127.0.0.1:{}", ports[0]), Duration::from_secs(1))
            .get("/ping", &[])
            .is_ok_and(|reply| reply.status == 204)
    }
}

/// A TOML basic string holding `path`.
fn toml_string(path: &Path) -> String {
    serde_json::Value::String(path.display().to_string()).to_string()
}
