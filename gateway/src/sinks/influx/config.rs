//! Configuration of one InfluxDB destination.

use std::time::Duration;

use serde::Deserialize;

/// One database the spool is drained into. Several may be configured (the street's InfluxDB
/// and a city one, say); each reads the spool at its own pace.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(try_from = "RawDestination")]
pub struct DestinationConfig {
    /// A short name, unique among destinations: the spool's ledger file and the metrics label
    /// (`A-Z a-z 0-9 . _ -`).
    pub name: String,
    /// Server address, e.g. `http://127.0.0.1:8086`.
    pub url: String,
    /// Which API the server speaks, and its credentials.
    pub kind: DestinationKind,
    /// Most lines per write request.
    pub batch_lines: usize,
    /// How long a partial batch may wait for more lines before it is written anyway.
    pub flush_interval: Duration,
    /// Time limit for one write request, connection included.
    pub timeout: Duration,
    /// Longest wait between retries after server or network errors.
    pub max_backoff: Duration,
    /// Compress request bodies with gzip (InfluxDB 1.x API only).
    pub gzip: bool,
}

/// The write API of a destination, with what it needs.
#[derive(Debug, Clone, PartialEq)]
pub enum DestinationKind {
    /// InfluxDB 1.x `/write` (also served by 2.x and 3.x for compatibility).
    V1 {
        /// Database name.
        database: String,
        /// Retention policy; the database's default when absent.
        retention_policy: Option<String>,
        /// User name, when authentication is on.
        username: Option<String>,
        /// Password, when authentication is on.
        password: Option<String>,
    },
    /// InfluxDB 2.x/3.x `/api/v2/write` (also VictoriaMetrics).
    V2 {
        /// Organisation.
        org: String,
        /// Bucket (database on 3.x).
        bucket: String,
        /// API token; empty when the server needs none.
        token: String,
    },
}

/// A destination as written in the configuration file: one flat table, checked and turned
/// into a [`DestinationConfig`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDestination {
    /// A short name, unique among destinations (`A-Z a-z 0-9 . _ -`).
    name: String,
    /// Server address, e.g. `http://127.0.0.1:8086`.
    url: String,
    /// `v1` for InfluxDB 1.x `/write`, `v2` for InfluxDB 2.x/3.x or VictoriaMetrics
    /// `/api/v2/write`.
    api: Api,
    /// v1: database name.
    database: Option<String>,
    /// v1: retention policy (default: the database's default).
    retention_policy: Option<String>,
    /// v1: user name, when authentication is on.
    username: Option<String>,
    /// v1: password, when authentication is on.
    password: Option<String>,
    /// v2: organisation.
    org: Option<String>,
    /// v2: bucket.
    bucket: Option<String>,
    /// v2: API token.
    token: Option<String>,
    /// Most lines per write request. InfluxData recommends about 5,000 for 1.x and 2.x.
    #[serde(default = "default_batch_lines")]
    batch_lines: usize,
    /// How long a partial batch may wait for more lines before it is written anyway. Short,
    /// because a reading must be queryable within 2 s of acceptance.
    #[serde(default = "default_flush_interval", with = "humantime_serde")]
    flush_interval: Duration,
    /// Time limit for one write request, connection included. The `influxdb2` crate has no
    /// timeout of its own, so a hung server would otherwise stall the destination forever.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    timeout: Duration,
    /// Longest wait between retries after server or network errors.
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    max_backoff: Duration,
    /// Compress request bodies with gzip (v1 only: the `influxdb2` crate cannot compress
    /// line-protocol bodies).
    #[serde(default = "default_true")]
    gzip: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Api {
    V1,
    V2,
}

impl TryFrom<RawDestination> for DestinationConfig {
    type Error = String;

    fn try_from(raw: RawDestination) -> Result<Self, String> {
        firegrid_protocol::check_id(&raw.name)
            .map_err(|e| format!("destination name {:?}: {e}", raw.name))?;
        let name = &raw.name;
        let misplaced = |api: &str, fields: &[(&str, bool)]| match fields.iter().find(|(_, set)| *set) {
            Some((field, _)) => {
                Err(format!("destination {name:?}: `{field}` does not apply to api = \"{api}\""))
            }
            None => Ok(()),
        };
        let kind = match raw.api {
            Api::V1 => {
                misplaced(
                    "v1",
                    &[
                        ("org", raw.org.is_some()),
                        ("bucket", raw.bucket.is_some()),
                        ("token", raw.token.is_some()),
                    ],
                )?;
                DestinationKind::V1 {
                    database: raw
                        .database
                        .ok_or_else(|| format!("destination {name:?}: api = \"v1\" needs `database`"))?,
                    retention_policy: raw.retention_policy,
                    username: raw.username,
                    password: raw.password,
                }
            }
            Api::V2 => {
                misplaced(
                    "v2",
                    &[
                        ("database", raw.database.is_some()),
                        ("retention_policy", raw.retention_policy.is_some()),
                        ("username", raw.username.is_some()),
                        ("password", raw.password.is_some()),
                    ],
                )?;
                DestinationKind::V2 {
                    org: raw.org.ok_or_else(|| format!("destination {name:?}: api = \"v2\" needs `org`"))?,
                    bucket: raw
                        .bucket
                        .ok_or_else(|| format!("destination {name:?}: api = \"v2\" needs `bucket`"))?,
                    token: raw.token.unwrap_or_default(),
                }
            }
        };
        if raw.batch_lines == 0 {
            return Err(format!("destination {name:?}: batch_lines must be at least 1"));
        }
        Ok(DestinationConfig {
            name: raw.name,
            url: raw.url,
            kind,
            batch_lines: raw.batch_lines,
            flush_interval: raw.flush_interval,
            timeout: raw.timeout,
            max_backoff: raw.max_backoff,
            gzip: raw.gzip,
        })
    }
}

fn default_batch_lines() -> usize {
    5_000
}
fn default_flush_interval() -> Duration {
    Duration::from_millis(200)
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(30)
}
fn default_true() -> bool {
    true
}

impl DestinationConfig {
    /// A destination with every optional setting at its default.
    pub fn new(name: impl Into<String>, url: impl Into<String>, kind: DestinationKind) -> Self {
        DestinationConfig {
            name: name.into(),
            url: url.into(),
            kind,
            batch_lines: default_batch_lines(),
            flush_interval: default_flush_interval(),
            timeout: default_timeout(),
            max_backoff: default_max_backoff(),
            gzip: true,
        }
    }
}
