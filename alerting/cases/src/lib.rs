//! The alarm loop's case service: the [`service::Cases`] thread that runs the
//! `firegrid-alerting` engine over the durable [`store::CaseStore`] (SQLite or PostgreSQL),
//! queues its pages in the `firegrid-notify` outbox, and its `[alerting]` configuration
//! ([`AlertingConfig`]). It knows no device: the gateway feeds it signals and gives it the
//! callbacks that write series and sound buildings ([`service::Wiring`]).

pub mod service;
pub mod store;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::mpsc;

pub use service::{Acted, CaseError, Cases, case_url};

use firegrid_notify::{DeliveryReport, Outcome};

/// `[alerting]`: the alarm loop.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AlertingConfig {
    /// Whether the alarm loop runs.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The district this gateway's streets belong to: the name of the top desk
    /// (`district:<name>`).
    #[serde(default = "default_district")]
    pub district: String,
    /// The duty-officer directory (TOML, reloaded when it changes). Without one the API
    /// accepts no token.
    #[serde(default)]
    pub officers: Option<PathBuf>,
    /// Desk → notification channel names (from `[notify.channels]`); the desk `"*"` reaches
    /// every desk. On-duty officers' own channels are added.
    #[serde(default)]
    pub routes: BTreeMap<String, Vec<String>>,
    /// How long closed cases are kept in the store.
    #[serde(default = "default_retention", with = "humantime_serde")]
    pub retention: Duration,
    /// The console's URL (`https://firegrid.example/console`, or the gateway's base URL), for
    /// links in notifications: they open `<console>/cases/<id>`.
    #[serde(default)]
    pub console_url: Option<String>,
    /// The officers' time zone (IANA name): the console shows every time in it, and pages
    /// give their deadlines in it (`请于 12-02 08:57 前响应 (Asia/Shanghai)`).
    #[serde(default = "default_time_zone")]
    pub time_zone: chrono_tz::Tz,
    /// The desk (`street:Fuhai`, `district:Xishan` ...) that answers for alarms, faults and
    /// camera fire events of devices the registry does not know. Default: the street of the
    /// village the device's topic names (the street of the village's registered buildings;
    /// `street:<village>` when the registry knows none of them, or there is no registry).
    #[serde(default)]
    pub unplaced_desk: Option<String>,
    /// A sounder command a device has not answered with its `command_ack` is sent again this
    /// often (half the minute a fire desk has to answer, so a lost command is repeated
    /// before the fire escalates).
    #[serde(default = "default_linkage_resend", with = "humantime_serde")]
    pub linkage_resend: Duration,
    /// Deadlines, correlation and flood thresholds (`[alerting.engine]`, `[alerting.engine.fire]`
    /// ...); see `firegrid_alerting::Config` for every field and its default.
    #[serde(default)]
    pub engine: firegrid_alerting::Config,
    /// A holiday calendar file (the format of `alerting/engine/holidays/cn.toml`) replacing the
    /// built-in official Chinese one, e.g. once next year's notice is out.
    #[serde(default)]
    pub holidays: Option<std::path::PathBuf>,
    /// Where the case store lives (`[alerting.store]`): SQLite in the data directory unless
    /// a PostgreSQL database is named.
    #[serde(default)]
    pub store: StoreConfig,
}

/// `[alerting.store]`: the case store's backend. The notification outbox stays in SQLite in
/// the data directory either way.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// A PostgreSQL database for the case store, as a libpq connection string
    /// (`host=db.example port=5432 user=firegrid dbname=firegrid`) or a `postgresql://` URL,
    /// without the password. Absent: SQLite, `cases.sqlite` in the data directory.
    #[serde(default)]
    pub postgres: Option<String>,
    /// A file whose first line is the PostgreSQL password. Without one, the environment
    /// variable `FIREGRID_POSTGRES_PASSWORD` gives it; without either, PostgreSQL's
    /// `pg_hba.conf` must admit the user without one.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Stand by while another gateway holds the PostgreSQL store: wait for its writer lock as
    /// long as it takes instead of refusing to start after 30 s. The second gateway of a
    /// village connects to no broker until it holds the store, then starts as the active one
    /// would after a restart (the engine from the store, the same MQTT sessions). Set it on
    /// both gateways of a village: whichever holds the store holds it under a lease
    /// (`lease`), and the other takes over when that lease runs out, also from a gateway that
    /// froze (SIGSTOP, a paused VM) without losing its connection.
    #[serde(default)]
    pub standby: bool,
    /// With `standby`: how long the active gateway's hold on the store lasts without a
    /// renewal, on the database's clock. A standby takes over at most this long (plus its
    /// start) after the active one stopped renewing, and the active one stops paging,
    /// publishing and reconnecting, and exits, once this much less a margin has passed on its
    /// own monotonic clock since its last renewal. Shorter is a faster takeover of a frozen
    /// gateway; longer survives a longer database hiccup without a takeover.
    #[serde(default = "default_lease", with = "humantime_serde")]
    pub lease: Duration,
    /// With `standby`: how often the active gateway renews its lease; at most a third of
    /// `lease`, so that one late or lost renewal does not end it.
    #[serde(default = "default_renew_every", with = "humantime_serde")]
    pub renew_every: Duration,
    /// TLS to PostgreSQL: `{ ca = "/etc/firegrid/db-ca.pem" }`, and `client_cert` with
    /// `client_key` for a server that requires client certificates (`pg_hba.conf`
    /// `clientcert=verify-full`). Set, every connection is TLS with no fallback to plain text,
    /// and the server's certificate must chain to `ca` and name the host of the connection
    /// string (libpq's `verify-full`). Absent: plain TCP, and a warning at start unless every
    /// host is a Unix socket or a loopback address. The case store's traffic carries every
    /// alarm and the officers' actions: encrypt it whenever the database is on another machine.
    #[serde(default)]
    pub tls: Option<firegrid_base::tls::ClientTls>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            postgres: None,
            password_file: None,
            standby: false,
            lease: default_lease(),
            renew_every: default_renew_every(),
            tls: None,
        }
    }
}

/// Three renewals a lease: a takeover of a frozen gateway within about 3 s, and one that
/// stays active through two lost renewals (a database failover of a second or two).
fn default_lease() -> Duration {
    Duration::from_secs(3)
}

fn default_renew_every() -> Duration {
    Duration::from_secs(1)
}

/// The environment variable that carries the case store's PostgreSQL password when
/// `[alerting.store] password_file` names no file.
pub const POSTGRES_PASSWORD_ENV: &str = "FIREGRID_POSTGRES_PASSWORD";

impl StoreConfig {
    /// What is wrong with the settings, if anything: a connection string that does not parse
    /// or that carries a password (which belongs in `password_file` or the environment, so
    /// that the configuration file can be shown and logged). The message never quotes the
    /// connection string.
    pub fn problem(&self) -> Option<String> {
        if self.standby && self.postgres.is_none() {
            return Some("standby needs a shared store: set postgres too".to_owned());
        }
        if self.renew_every.is_zero() || self.renew_every.saturating_mul(3) > self.lease {
            return Some(format!(
                "renew_every ({:?}) must be more than zero and at most a third of lease ({:?})",
                self.renew_every, self.lease
            ));
        }
        let conninfo = self.postgres.as_ref()?;
        match conninfo.parse::<postgres::Config>() {
            Err(e) => Some(format!("postgres: not a connection string: {e}")),
            Ok(config) if config.get_password().is_some() => Some(format!(
                "postgres: put the password in password_file or {POSTGRES_PASSWORD_ENV}, not in the connection string"
            )),
            Ok(config) => match (&self.tls, config.get_ssl_mode()) {
                (Some(_), postgres::config::SslMode::Disable) => {
                    Some("postgres: sslmode=disable contradicts tls; remove one".to_owned())
                }
                (None, postgres::config::SslMode::Require) => Some(
                    "postgres: sslmode=require needs tls (at least its ca) to check the server against"
                        .to_owned(),
                ),
                _ => None,
            },
        }
    }

    /// The PostgreSQL password: the first line of `password_file`, else
    /// [`POSTGRES_PASSWORD_ENV`] from `env`, else none.
    pub fn password(
        &self,
        mut env: impl FnMut(&str) -> Option<String>,
    ) -> Result<Option<String>, std::io::Error> {
        match &self.password_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)?;
                Ok(Some(text.lines().next().unwrap_or_default().to_owned()))
            }
            None => Ok(env(POSTGRES_PASSWORD_ENV)),
        }
    }
}

fn yes() -> bool {
    true
}

fn default_linkage_resend() -> Duration {
    Duration::from_secs(30)
}

fn default_time_zone() -> chrono_tz::Tz {
    chrono_tz::Asia::Shanghai
}

fn default_district() -> String {
    "district".into()
}

/// A year and a month: a full year of cases for the annual report, whenever it is run.
fn default_retention() -> Duration {
    Duration::from_secs(400 * 86_400)
}

impl Default for AlertingConfig {
    fn default() -> Self {
        AlertingConfig {
            enabled: true,
            district: default_district(),
            officers: None,
            routes: BTreeMap::new(),
            retention: default_retention(),
            console_url: None,
            time_zone: default_time_zone(),
            unplaced_desk: None,
            linkage_resend: default_linkage_resend(),
            engine: firegrid_alerting::Config::default(),
            holidays: None,
            store: StoreConfig::default(),
        }
    }
}

/// Turns the outbox's per-channel reports into one result per notification for the engine:
/// delivered as soon as any channel got it through; failed once every channel has failed
/// at least once (a desk with a working channel was reached, even if its SMS gateway is down).
/// `count_attempt` is told the outcome of every attempt (`delivered`, a failure reason,
/// `gave_up`), for the metrics.
pub async fn feed_deliveries(
    mut reports: mpsc::Receiver<DeliveryReport>,
    pending: Arc<Mutex<HashMap<u64, usize>>>,
    cases: Cases,
    count_attempt: impl Fn(&str) + Send,
) {
    let mut failed: HashMap<u64, std::collections::HashSet<String>> = HashMap::new();
    while let Some(report) = reports.recv().await {
        let id = report.notification_id;
        match &report.outcome {
            Outcome::Delivered { .. } => {
                count_attempt("delivered");
                failed.remove(&id);
                if pending.lock().unwrap().remove(&id).is_some() {
                    cases.delivery(id, true);
                }
            }
            Outcome::Failed { reason, attempt, .. } => {
                count_attempt(reason);
                if *attempt > 1 {
                    continue;
                }
                let targets = pending.lock().unwrap().get(&id).copied();
                let Some(targets) = targets else { continue };
                let set = failed.entry(id).or_default();
                set.insert(report.target.clone());
                if set.len() >= targets {
                    failed.remove(&id);
                    pending.lock().unwrap().remove(&id);
                    cases.delivery(id, false);
                }
            }
            Outcome::Superseded { .. } => {
                // This channel will not carry the notification (a newer reminder reports for
                // it): it no longer counts among the channels that must all fail.
                let mut waiting = pending.lock().unwrap();
                let Some(targets) = waiting.get_mut(&id) else { continue };
                *targets = targets.saturating_sub(1);
                let left = *targets;
                let failures = failed.get_mut(&id).map_or(0, |set| {
                    set.remove(&report.target);
                    set.len()
                });
                if left == 0 || failures >= left {
                    waiting.remove(&id);
                    failed.remove(&id);
                    drop(waiting);
                    if left > 0 {
                        cases.delivery(id, false);
                    }
                }
            }
            Outcome::GaveUp { .. } => {
                count_attempt("gave_up");
            }
        }
    }
}
