//! [`Postgres`]: a PostgreSQL server (Debian's `postgresql` package) on a free loopback port,
//! and [`Postgres::standby_of`], a streaming standby of one.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::process::{Binary, ServerKind, ServerProcess, forward_lifecycle};

/// The superuser that `initdb` creates; every connection of the tests logs in as it.
pub const USER: &str = "firegrid";

/// A PostgreSQL server for one test, its cluster in its temp dir.
///
/// `initdb` runs on the first start: superuser [`USER`] with a random [`password`](Self::password),
/// `trust` on the Unix socket (in the temp dir, never `/run/postgresql`), SCRAM-SHA-256 on
/// 127.0.0.1, replication connections allowed the same way. The server listens on 127.0.0.1
/// only and logs to [`log_path`](Self::log_path). Durability settings are PostgreSQL's defaults
/// (`fsync`, `synchronous_commit` on), so a commit measured here costs what it costs in
/// production on the same disk.
///
/// PostgreSQL refuses to run as root. When the tests run as root, `initdb` and the server run
/// as the `postgres` user that Debian's package creates, and the temp dir is handed to it.
#[derive(Debug)]
pub struct Postgres {
    process: ServerProcess,
    password: String,
    /// Started with [`Postgres::start_tls`] (or a standby of such a server).
    tls: bool,
}

/// The server certificate and key a [`Postgres::start_tls`] server presents (PEM; e.g. from
/// `firegrid certs`).
#[derive(Debug, Clone)]
pub struct PostgresTls {
    /// The certificate chain.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// When set, the server asks every TCP client for a certificate signed by this CA whose
    /// common name is the role it logs in as (`clientcert=verify-full`), beside the password.
    pub client_ca: Option<PathBuf>,
}

impl PostgresTls {
    /// A new CA and a server certificate for `localhost` and `127.0.0.1` signed by it, made in
    /// `dir` the way `firegrid certs` makes them; returns the server's files and the CA's
    /// certificate (what a client checks the server against).
    ///
    /// # Errors
    /// [`Error::Server`] when the certificates cannot be made or written.
    pub fn make(dir: &Path) -> Result<(PostgresTls, PathBuf)> {
        Self::made(dir, Vec::new())
    }

    /// As [`make`](Self::make), and client certificates for each of `clients` (common names;
    /// `client-{name}.pem` and `client-{name}.key` in `dir`), and a server that requires one
    /// ([`PostgresTls::client_ca`]) for the role it logs in as. The role the harness creates
    /// is [`USER`].
    ///
    /// # Errors
    /// As for [`make`](Self::make).
    pub fn make_requiring_clients(dir: &Path, clients: &[&str]) -> Result<(PostgresTls, PathBuf)> {
        let (mut tls, ca) = Self::made(dir, clients.iter().map(|c| (*c).to_owned()).collect())?;
        tls.client_ca = Some(ca.clone());
        Ok((tls, ca))
    }

    fn made(dir: &Path, clients: Vec<String>) -> Result<(PostgresTls, PathBuf)> {
        use firegrid_gateway::tls::certs;
        let request = certs::Request { dir: dir.to_owned(), hosts: Vec::new(), clients, days: 30 };
        certs::make(&request)
            .map_err(|e| Error::Server { server: "firegrid certs".into(), message: e.to_string() })?;
        let tls = PostgresTls { cert: dir.join("server.pem"), key: dir.join("server.key"), client_ca: None };
        Ok((tls, dir.join("ca.pem")))
    }
}

forward_lifecycle!(Postgres);

impl Postgres {
    /// Starts a new, empty cluster on a free loopback port and waits until it answers a query.
    ///
    /// # Errors
    /// See [`ServerProcess::start`]; a missing binary names the install command.
    pub fn start() -> Result<Self> {
        let password = random_password();
        let kind = PostgresKind {
            password: password.clone(),
            primary_port: None,
            tls: None,
            socket: OnceLock::new(),
        };
        Ok(Postgres { process: ServerProcess::start(kind)?, password, tls: false })
    }

    /// As [`start`](Self::start), with TLS: the server presents `tls`'s certificate
    /// (`ssl = on`), and `pg_hba.conf` admits TCP connections only over TLS (`hostssl`; a
    /// plain one is rejected with PostgreSQL's own "no encryption" refusal). The harness's own
    /// connections ([`connect`](Self::connect)) go through the Unix socket.
    ///
    /// # Errors
    /// As for [`Postgres::start`]; unreadable certificate files are an [`Error::Io`].
    pub fn start_tls(tls: &PostgresTls) -> Result<Self> {
        let password = random_password();
        let kind = PostgresKind {
            password: password.clone(),
            primary_port: None,
            tls: Some(tls.clone()),
            socket: OnceLock::new(),
        };
        Ok(Postgres { process: ServerProcess::start(kind)?, password, tls: true })
    }

    /// Starts a streaming standby of `primary`: its cluster is a `pg_basebackup -R` of the
    /// primary's (so it follows the primary through `primary_conninfo` and `standby.signal`),
    /// and it answers read-only queries (`hot_standby`) until [`promote`](Self::promote)d.
    ///
    /// # Errors
    /// As for [`Postgres::start`]; a failed base backup is an [`Error::Server`].
    pub fn standby_of(primary: &Postgres) -> Result<Self> {
        let password = primary.password.clone();
        // The base backup copies the primary's certificate, key and pg_hba.conf with the rest.
        let tls = primary.tls.then(|| PostgresTls {
            cert: SERVER_CERT.into(),
            key: SERVER_KEY.into(),
            client_ca: None,
        });
        let kind = PostgresKind {
            password: password.clone(),
            primary_port: Some(primary.port()),
            tls,
            socket: OnceLock::new(),
        };
        Ok(Postgres { process: ServerProcess::start(kind)?, password, tls: primary.tls })
    }

    /// Promotes a standby to a primary (`pg_ctl promote`), waiting until it accepts writes.
    ///
    /// # Errors
    /// [`Error::Server`] when `pg_ctl` fails (e.g. the server is not a standby).
    pub fn promote(&self) -> Result<()> {
        let data = data_dir(self.dir());
        let mut pg_ctl = tool("pg_ctl")?;
        pg_ctl.arg("promote").arg("-w").arg("-D").arg(&data);
        run(pg_ctl, "pg_ctl promote")
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.process.ports()[0]
    }

    /// The superuser's password, for SCRAM-SHA-256 over TCP.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// A libpq key/value connection string to `dbname` over TCP, without the password.
    pub fn conninfo(&self, dbname: &str) -> String {
        format!("host={} port={} user={USER} dbname={dbname} connect_timeout=10", self.host(), self.port())
    }

    /// A client connected to `dbname` as the superuser. It is the synchronous `postgres`
    /// client, which panics on a thread that drives async tasks: in a tokio test, use it
    /// inside `tokio::task::block_in_place` or `spawn_blocking`.
    ///
    /// # Errors
    /// [`Error::Server`] when the connection or the login fails.
    pub fn connect(&self, dbname: &str) -> Result<postgres::Client> {
        if self.tls {
            let socket = socket_dir(self.dir());
            let conninfo =
                format!("host={} port={} user={USER} dbname={dbname}", socket.display(), self.port());
            return connect(&conninfo, &self.password);
        }
        connect(&self.conninfo(dbname), &self.password)
    }

    /// Creates database `name` and returns its connection string (without the password).
    ///
    /// # Errors
    /// [`Error::Server`] when PostgreSQL refuses, e.g. because it exists.
    pub fn create_database(&self, name: &str) -> Result<String> {
        // An identifier cannot be a bind parameter; quoting it is PostgreSQL's own rule
        // (SQL standard delimited identifiers, `"` doubled inside).
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        off_runtime(|| {
            let mut client = self.connect("postgres")?;
            client.batch_execute(&format!("CREATE DATABASE {quoted}")).map_err(server_error)
        })?;
        Ok(self.conninfo(name))
    }
}

fn data_dir(dir: &Path) -> PathBuf {
    dir.join("data")
}

fn socket_dir(dir: &Path) -> PathBuf {
    dir.join("socket")
}

fn server_error(error: postgres::Error) -> Error {
    Error::Server { server: "postgres".into(), message: error.to_string() }
}

fn connect(conninfo: &str, password: &str) -> Result<postgres::Client> {
    let mut config: postgres::Config = conninfo.parse().map_err(server_error)?;
    config.password(password);
    config.connect(postgres::NoTls).map_err(server_error)
}

/// Runs `f` on a thread of its own, so that the synchronous client works from a tokio test's
/// thread too, like the rest of the harness.
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| scope.spawn(f).join().expect("the PostgreSQL client does not panic"))
}

/// 24 random letters and digits: unique enough that a test can search a message for it.
fn random_password() -> String {
    std::iter::repeat_with(fastrand::alphanumeric).take(24).collect()
}

/// The bin directory of the newest PostgreSQL that Debian installed
/// (`/usr/lib/postgresql/<major>/bin`; bookworm ships 15, trixie 17).
fn bin_dir() -> Option<&'static Path> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| {
        let versions = std::fs::read_dir("/usr/lib/postgresql").ok()?;
        versions
            .flatten()
            .filter_map(|entry| Some((entry.file_name().to_str()?.parse::<u32>().ok()?, entry.path())))
            .filter(|(_, path)| path.join("bin/postgres").exists())
            .max()
            .map(|(_, path)| path.join("bin"))
    })
    .as_deref()
}

/// One of PostgreSQL's programs, at the same place as the server (they are not on `PATH` in
/// Debian's layout, where `pg_wrapper` only covers the client tools).
fn binary(name: &'static str) -> Binary {
    static PATHS: OnceLock<Vec<(&'static str, &'static str)>> = OnceLock::new();
    let paths = PATHS.get_or_init(|| {
        ["postgres", "initdb", "pg_ctl", "pg_basebackup"]
            .into_iter()
            .map(|name| {
                let path = bin_dir().map_or_else(
                    || format!("/usr/lib/postgresql/15/bin/{name}"),
                    |dir| dir.join(name).display().to_string(),
                );
                (name, &*String::leak(path))
            })
            .collect()
    });
    let default_path = paths.iter().find(|(n, _)| *n == name).map(|(_, p)| *p).expect("a known program");
    Binary { name, default_path, apt_package: "postgresql" }
}

/// The `postgres` user's ids when the tests run as root, since PostgreSQL refuses root.
fn unprivileged() -> Option<(u32, u32)> {
    if !rustix::process::getuid().is_root() {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.first() == Some(&"postgres") && fields.len() > 3)
            .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
            .flatten()
    })
}

/// A PostgreSQL program, run as the server's user.
fn tool(name: &'static str) -> Result<Command> {
    let mut command = Command::new(binary(name).locate()?);
    if let Some((uid, gid)) = unprivileged() {
        use std::os::unix::process::CommandExt;
        command.uid(uid).gid(gid);
    }
    Ok(command)
}

fn run(mut command: Command, what: &str) -> Result<()> {
    let output = command.output().map_err(|e| Error::io(format!("running {what}"), e))?;
    if output.status.success() {
        return Ok(());
    }
    Err(Error::Server {
        server: what.to_owned(),
        message: format!(
            "{}\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    })
}

struct PostgresKind {
    password: String,
    /// Where a standby's base backup comes from.
    primary_port: Option<u16>,
    /// The certificate and key to serve; for a standby, their names in the copied cluster.
    tls: Option<PostgresTls>,
    /// The Unix socket's directory, known once the server's arguments are made: a TLS
    /// server is probed through it, since its TCP port takes no plain connections.
    socket: OnceLock<PathBuf>,
}

/// Where a TLS server's certificate and key sit in its data directory (the names are
/// PostgreSQL's defaults for `ssl_cert_file` and `ssl_key_file`).
const SERVER_CERT: &str = "server.crt";
const SERVER_KEY: &str = "server.key";
/// The CA a server that requires client certificates checks them against (`ssl_ca_file`).
const CLIENT_CA: &str = "root.crt";

/// Puts `tls`'s certificate and key into the cluster at `data`, readable by the server only
/// (PostgreSQL refuses a key that others can read), and admits TCP clients only over TLS.
fn install_tls(tls: &PostgresTls, data: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let client_ca = tls.client_ca.as_ref().map(|ca| (ca, CLIENT_CA));
    for (from, to) in [(&tls.cert, SERVER_CERT), (&tls.key, SERVER_KEY)].into_iter().chain(client_ca) {
        let to = data.join(to);
        std::fs::copy(from, &to).map_err(|e| Error::io(format!("copying {}", from.display()), e))?;
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::io("restricting the server key", e))?;
        if let Some((uid, gid)) = unprivileged() {
            std::os::unix::fs::chown(&to, Some(uid), Some(gid))
                .map_err(|e| Error::io("handing the certificate to the postgres user", e))?;
        }
    }
    let hba = data.join("pg_hba.conf");
    let text = std::fs::read_to_string(&hba).map_err(|e| Error::io("reading pg_hba.conf", e))?;
    let mut lines: Vec<String> = text
        .lines()
        .map(|line| match line.strip_prefix("host ") {
            Some(rest) if tls.client_ca.is_some() => format!("hostssl {rest} clientcert=verify-full"),
            Some(rest) => format!("hostssl {rest}"),
            None => line.to_owned(),
        })
        .collect();
    lines.extend(["hostnossl all all all reject".into(), "hostnossl replication all all reject".into()]);
    std::fs::write(&hba, lines.join("\n") + "\n").map_err(|e| Error::io("writing pg_hba.conf", e))
}

impl PostgresKind {
    /// Creates the cluster in `dir/data`: `initdb`, or a base backup of the primary.
    fn create_cluster(&self, dir: &Path) -> Result<()> {
        if let Some((uid, gid)) = unprivileged() {
            std::os::unix::fs::chown(dir, Some(uid), Some(gid))
                .map_err(|e| Error::io("handing the temp dir to the postgres user", e))?;
        }
        let data = data_dir(dir);
        match self.primary_port {
            None => {
                let pwfile = dir.join("password");
                std::fs::write(&pwfile, &self.password).map_err(|e| Error::io("writing the password", e))?;
                if let Some((uid, gid)) = unprivileged() {
                    std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid))
                        .map_err(|e| Error::io("handing the password file to the postgres user", e))?;
                }
                let mut initdb = tool("initdb")?;
                // --no-sync: a test cluster need not survive a power cut while it is created.
                initdb
                    .args(["-U", USER, "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync"])
                    .args(["-E", "UTF8", "--locale=C", "--pwfile"])
                    .arg(&pwfile)
                    .arg("-D")
                    .arg(&data);
                run(initdb, "initdb")?;
                if let Some(tls) = &self.tls {
                    install_tls(tls, &data)?;
                }
                std::fs::remove_file(&pwfile).map_err(|e| Error::io("removing the password file", e))
            }
            Some(port) => {
                let mut backup = tool("pg_basebackup")?;
                // -R writes standby.signal and primary_conninfo (with the password, into the
                // standby's own postgresql.auto.conf); -X stream copies the WAL written meanwhile;
                // -c fast checkpoints at once instead of spreading the checkpoint's writes over
                // minutes.
                // Over TLS, libpq looks for a client certificate in `~/.postgresql`; the tools
                // run as `postgres` with root's HOME, where that is unreadable, so the
                // connection (and the standby's `primary_conninfo`, written from it) names one
                // that does not exist, which libpq skips.
                let none = dir.join("no-client-cert");
                let conninfo = format!(
                    "host=127.0.0.1 port={port} user={USER} sslcert={} sslkey={}",
                    none.join("client.crt").display(),
                    none.join("client.key").display()
                );
                backup
                    .args(["-d", &conninfo, "-R", "-X", "stream"])
                    .args(["-c", "fast"])
                    .arg("-D")
                    .arg(&data)
                    .env("PGPASSWORD", &self.password);
                run(backup, "pg_basebackup")
            }
        }
    }
}

impl ServerKind for PostgresKind {
    fn binary(&self) -> Binary {
        binary("postgres")
    }

    fn args(&self, dir: &Path, ports: &[u16]) -> io::Result<Vec<OsString>> {
        if !data_dir(dir).exists() {
            self.create_cluster(dir).map_err(io::Error::other)?;
        }
        let sockets = socket_dir(dir);
        std::fs::create_dir_all(&sockets)?;
        if let Some((uid, gid)) = unprivileged() {
            std::os::unix::fs::chown(&sockets, Some(uid), Some(gid))?;
        }
        let _ = self.socket.set(sockets.clone());
        let mut args: Vec<OsString> = vec!["-D".into(), data_dir(dir).into(), "-k".into(), sockets.into()];
        for setting in [
            format!("port={}", ports[0]),
            "listen_addresses=127.0.0.1".to_owned(),
            "logging_collector=off".to_owned(),
        ] {
            args.extend(["-c".into(), setting.into()]);
        }
        if let Some(tls) = &self.tls {
            for setting in ["ssl=on", "ssl_cert_file=server.crt", "ssl_key_file=server.key"] {
                args.extend(["-c".into(), setting.into()]);
            }
            if tls.client_ca.is_some() {
                args.extend(["-c".into(), format!("ssl_ca_file={CLIENT_CA}").into()]);
            }
        }
        Ok(args)
    }

    fn run_as(&self) -> Option<(u32, u32)> {
        unprivileged()
    }

    fn stop_signal(&self) -> rustix::process::Signal {
        rustix::process::Signal::INT
    }

    fn is_ready(&self, ports: &[u16]) -> bool {
        let host = match (&self.tls, self.socket.get()) {
            (Some(_), Some(socket)) => socket.display().to_string(),
            _ => "127.0.0.1".to_owned(),
        };
        let conninfo = format!("host={host} port={} user={USER} dbname=postgres connect_timeout=2", ports[0]);
        let probe = off_runtime(|| {
            let mut client = connect(&conninfo, &self.password)?;
            client.simple_query("SELECT 1").map_err(server_error).map(drop)
        });
        if probe.is_err() {
            // The server refuses connections while it starts up or replays WAL.
            std::thread::sleep(Duration::from_millis(50));
        }
        probe.is_ok()
    }
}

/// A `firegrid` configuration for a village whose case store is in PostgreSQL: MQTT client
/// id `client_id` on the broker at `broker_port`, the store at `conninfo` with its password in
/// `password_file`, every desk paged through the webhook at `hook_port`; `store` goes into
/// `[alerting.store]`, `rest` after it. For `Firegrid::start`.
pub fn gateway_config(
    broker_port: u16,
    hook_port: u16,
    conninfo: &str,
    password_file: &std::path::Path,
    client_id: &str,
    store: &str,
    rest: &str,
) -> impl Fn(&std::path::Path, u16) -> String + Send + Sync + 'static + use<> {
    let (conninfo, password_file) = (conninfo.to_owned(), password_file.display().to_string());
    let (client_id, store, rest) = (client_id.to_owned(), store.to_owned(), rest.to_owned());
    move |dir: &std::path::Path, http_port: u16| {
        format!(
            r#"
data_dir = "{data}"
http_listen = "127.0.0.1:{http_port}"
[mqtt]
host = "127.0.0.1"
port = {broker_port}
client_id = "{client_id}"
max_backoff = "500ms"
[alerting]
district = "Xishan"
routes = {{ "*" = ["hook"] }}
[alerting.store]
postgres = "{conninfo}"
password_file = "{password_file}"
{store}
{rest}
[notify.channels.hook]
kind = "webhook"
url = "http://127.0.0.1:{hook_port}/hook"
secret = "test-secret"
"#,
            data = dir.join("data").display(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binaries_come_from_one_postgresql_install() {
        let server = binary("postgres");
        let initdb = binary("initdb");
        assert_eq!(Path::new(server.default_path).parent(), Path::new(initdb.default_path).parent());
        assert_eq!(server.apt_package, "postgresql");
    }
}
