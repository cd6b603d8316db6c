//! [`VictoriaMetrics`]: a single-node VictoriaMetrics server with helpers to write and read
//! data back.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::http::Http;
use crate::process::{Binary, ServerKind, ServerProcess, forward_lifecycle};

/// A single-node VictoriaMetrics (`/usr/bin/victoria-metrics`, Debian package
/// `victoria-metrics`, 1.79 on Debian 12) for one test.
///
/// Flags: data in [`data_dir`](Self::data_dir), HTTP on a free loopback port, logging at
/// error level, a 100-year retention (the default of one month silently drops samples with
/// older timestamps), no query latency offset and no response cache (so fresh samples show
/// up in queries at once), and a 1 s graceful HTTP shutdown instead of 7 s.
///
/// It accepts InfluxDB line protocol on `/write` (v1) and `/api/v2/write` (v2, what the
/// `influxdb2` crate posts); measurement `m` with field `f` becomes the metric `m_f`, tags
/// become labels, `true`/`false` become 1/0 and string fields become 0. Timestamps are kept
/// with millisecond precision. Samples more than two days in the future are rejected.
/// A line that does not parse is dropped while the request still answers 204: the only
/// trace is an error in [`log_path`](Self::log_path), so assert on what you read back.
///
/// Ingested samples sit in memory for up to about a second before they are searchable:
/// [`flush`](Self::flush) (which [`export`](Self::export) calls) makes them visible. A
/// graceful [`stop`](Self::stop) or [`restart`](Self::restart) persists everything; after
/// [`kill`](Self::kill) the last unflushed second is lost.
#[derive(Debug)]
pub struct VictoriaMetrics {
    process: ServerProcess,
}

forward_lifecycle!(VictoriaMetrics);

/// One time series as `/api/v1/export` returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct VmSeries {
    /// Labels, including `__name__`.
    pub metric: BTreeMap<String, String>,
    /// Sample values, in timestamp order.
    pub values: Vec<f64>,
    /// Sample timestamps in epoch milliseconds.
    pub timestamps: Vec<i64>,
}

impl VmSeries {
    /// The metric name (the `__name__` label).
    pub fn name(&self) -> &str {
        self.metric.get("__name__").map_or("", String::as_str)
    }

    /// The value of label `label`, if set.
    pub fn label(&self, label: &str) -> Option<&str> {
        self.metric.get(label).map(String::as_str)
    }

    /// `(timestamp_ms, value)` pairs.
    pub fn samples(&self) -> Vec<(i64, f64)> {
        self.timestamps.iter().copied().zip(self.values.iter().copied()).collect()
    }
}

impl VictoriaMetrics {
    /// Where Debian installs the server.
    pub const BINARY: Binary = Binary {
        name: "victoria-metrics",
        default_path: "/usr/bin/victoria-metrics",
        apt_package: "victoria-metrics",
    };

    /// Starts VictoriaMetrics on a free loopback port and waits until `GET /health` answers 200.
    ///
    /// # Errors
    /// See [`ServerProcess::start`]; a missing binary names the install command.
    pub fn start() -> Result<Self> {
        Ok(VictoriaMetrics { process: ServerProcess::start(VmKind)? })
    }

    /// The HTTP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.process.ports()[0]
    }

    /// `http://127.0.0.1:<port>`: the base URL for writes (`/write`, `/api/v2/write`) and
    /// queries (`/api/v1/...`).
    pub fn url(&self) -> String {
        format!("http://{}:{}", self.host(), self.port())
    }

    /// The `-storageDataPath` directory.
    pub fn data_dir(&self) -> PathBuf {
        data_dir(self.process.dir())
    }

    fn http(&self) -> Http {
        Http::new(self.url(), Duration::from_secs(30))
    }

    /// Writes InfluxDB line protocol through `POST /write?precision=ms`: timestamps in the
    /// body are epoch **milliseconds**.
    ///
    /// # Errors
    /// [`Error::Http`] with the server's message.
    pub fn write(&self, line_protocol: &str) -> Result<()> {
        self.http()
            .post("/write", &[("precision", "ms")], line_protocol)?
            .expect(204, || format!("POST {}/write", self.url()))?;
        Ok(())
    }

    /// Makes every sample ingested so far searchable (`GET /internal/force_flush`).
    ///
    /// # Errors
    /// [`Error::Http`].
    pub fn flush(&self) -> Result<()> {
        self.http()
            .get("/internal/force_flush", &[])?
            .expect(200, || format!("GET {}/internal/force_flush", self.url()))?;
        Ok(())
    }

    /// [`flush`](Self::flush)es, then returns every series matching the series selector
    /// `selector` (e.g. `{__name__=~"detector_.*"}` or `detector_temp{zone="a"}`) over all
    /// time through `/api/v1/export`, sorted by labels.
    ///
    /// # Errors
    /// [`Error::Http`], or [`Error::Server`] for an answer of unexpected shape.
    pub fn export(&self, selector: &str) -> Result<Vec<VmSeries>> {
        self.flush()?;
        let request = || format!("GET {}/api/v1/export match[]={selector}", self.url());
        let reply = self
            .http()
            .get("/api/v1/export", &[("match[]", selector), ("start", "0")])?
            .expect(200, request)?;
        let mut out = Vec::new();
        for line in reply.body.lines().filter(|l| !l.trim().is_empty()) {
            let shape = || Error::Server {
                server: "victoria-metrics".into(),
                message: format!("unexpected /api/v1/export line: {line}"),
            };
            let json: Value = serde_json::from_str(line).map_err(|_| shape())?;
            let metric = json["metric"]
                .as_object()
                .ok_or_else(shape)?
                .iter()
                .map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect::<Option<BTreeMap<_, _>>>()
                .ok_or_else(shape)?;
            let values = json["values"]
                .as_array()
                .ok_or_else(shape)?
                .iter()
                .map(Value::as_f64)
                .collect::<Option<Vec<_>>>()
                .ok_or_else(shape)?;
            let timestamps = json["timestamps"]
                .as_array()
                .ok_or_else(shape)?
                .iter()
                .map(Value::as_i64)
                .collect::<Option<Vec<_>>>()
                .ok_or_else(shape)?;
            out.push(VmSeries { metric, values, timestamps });
        }
        out.sort_by(|a, b| a.metric.cmp(&b.metric));
        Ok(out)
    }

    /// Runs an instant PromQL/MetricsQL query at `time_ms` (epoch milliseconds) through
    /// `/api/v1/query` and returns its `data` object (`{"resultType": ..., "result": [...]}`).
    /// Only samples up to 5 minutes before `time_ms` are seen.
    ///
    /// # Errors
    /// [`Error::Server`] with the server's message, or [`Error::Http`].
    pub fn query(&self, promql: &str, time_ms: i64) -> Result<Value> {
        self.flush()?;
        let time = format!("{}.{:03}", time_ms.div_euclid(1000), time_ms.rem_euclid(1000));
        let request = || format!("GET {}/api/v1/query query={promql}", self.url());
        let reply = self.http().get("/api/v1/query", &[("query", promql), ("time", &time)])?;
        let mut json = reply.json(request)?;
        if json["status"] != "success" {
            return Err(Error::Server {
                server: "victoria-metrics".into(),
                message: format!("{promql}: HTTP {}: {}", reply.status, reply.body.trim()),
            });
        }
        Ok(json["data"].take())
    }
}

fn data_dir(dir: &Path) -> PathBuf {
    dir.join("data")
}

struct VmKind;

impl ServerKind for VmKind {
    fn binary(&self) -> Binary {
        VictoriaMetrics::BINARY
    }

    fn args(&self, dir: &Path, ports: &[u16]) -> io::Result<Vec<OsString>> {
        let mut storage = OsString::from("-storageDataPath=");
        storage.push(data_dir(dir));
        Ok(vec![
            storage,
            format!("-httpListenAddr=127.0.0.1:{}", ports[0]).into(),
            "-loggerLevel=ERROR".into(),
            "-retentionPeriod=100y".into(),
            "-search.latencyOffset=0s".into(),
            "-search.disableCache".into(),
            "-http.maxGracefulShutdownDuration=1s".into(),
        ])
    }

    fn is_ready(&self, ports: &[u16]) -> bool {
        Http::new(format!("http://127.0.0.1:{}", ports[0]), Duration::from_secs(1))
            .get("/health", &[])
            .is_ok_and(|reply| reply.status == 200)
    }
}
