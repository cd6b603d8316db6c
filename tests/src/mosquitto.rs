//! [`Mosquitto`]: an Eclipse Mosquitto 2.x MQTT broker on a free loopback port.

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::Result;
use crate::process::{Binary, ServerKind, ServerProcess, forward_lifecycle};

/// An MQTT broker (`/usr/sbin/mosquitto`, Debian package `mosquitto`) for one test.
///
/// Configuration (written to `mosquitto.conf` in its temp dir): a single listener on
/// 127.0.0.1, anonymous access, persistence in [`data_dir`](Self::data_dir) saved every second
/// and on shutdown, up to 1,000,000 queued QoS 1/2 messages per offline client (the default
/// of 1000 silently drops the rest), 100 in-flight messages per client, the largest packet
/// size MQTT allows, and everything logged to [`log_path`](Self::log_path).
///
/// A graceful [`restart`](Self::restart) keeps persistent sessions, their subscriptions and
/// queued messages; after [`kill`](Self::kill) up to the last second of changes is lost.
#[derive(Debug)]
pub struct Mosquitto {
    process: ServerProcess,
}

forward_lifecycle!(Mosquitto);

impl Mosquitto {
    /// Where Debian installs the broker.
    pub const BINARY: Binary =
        Binary { name: "mosquitto", default_path: "/usr/sbin/mosquitto", apt_package: "mosquitto" };

    /// Starts a broker on a free loopback port and waits until it answers an MQTT CONNECT.
    ///
    /// # Errors
    /// See [`ServerProcess::start`]; a missing binary names the install command.
    pub fn start() -> Result<Self> {
        Ok(Mosquitto { process: ServerProcess::start(MosquittoKind { secured: None, tls: None })? })
    }

    /// Starts a broker that admits only the accounts of `passwd` (Mosquitto's `password_file`,
    /// e.g. written by `firegrid broker mosquitto`) within the topics `acl` allows
    /// (`acl_file`): `allow_anonymous false`.
    pub fn start_secured(passwd: &Path, acl: &Path) -> Result<Self> {
        let secured = Some((passwd.to_owned(), acl.to_owned()));
        Ok(Mosquitto { process: ServerProcess::start(MosquittoKind { secured, tls: None })? })
    }

    /// A secured broker (as [`Mosquitto::start_secured`]) that also listens for MQTT over TLS
    /// on [`Mosquitto::tls_port`] with `tls`'s certificate, requiring client certificates
    /// when `tls.require_certificate`.
    pub fn start_tls(passwd: &Path, acl: &Path, tls: MosquittoTls) -> Result<Self> {
        let secured = Some((passwd.to_owned(), acl.to_owned()));
        Ok(Mosquitto { process: ServerProcess::start(MosquittoKind { secured, tls: Some(tls) })? })
    }

    /// The MQTT-over-TLS port on 127.0.0.1 (brokers started with [`Mosquitto::start_tls`]).
    pub fn tls_port(&self) -> Option<u16> {
        self.process.ports().get(1).copied()
    }

    /// The MQTT port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.process.ports()[0]
    }

    /// `mqtt://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("mqtt://{}:{}", self.host(), self.port())
    }

    /// The persistence directory, holding `mosquitto.db` once the broker saved.
    pub fn data_dir(&self) -> PathBuf {
        data_dir(self.process.dir())
    }
}

fn data_dir(dir: &Path) -> PathBuf {
    dir.join("data")
}

/// Mosquitto's TLS listener settings (`cafile`, `certfile`, `keyfile`, `require_certificate`).
#[derive(Debug, Clone)]
pub struct MosquittoTls {
    /// CA certificates that client certificates must chain to.
    pub ca: PathBuf,
    /// The broker's certificate (PEM).
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// Refuse clients without a certificate signed by `ca`.
    pub require_certificate: bool,
}

struct MosquittoKind {
    /// Password file and ACL file, for a broker without anonymous access.
    secured: Option<(PathBuf, PathBuf)>,
    /// A second listener, for MQTT over TLS.
    tls: Option<MosquittoTls>,
}

impl ServerKind for MosquittoKind {
    fn binary(&self) -> Binary {
        Mosquitto::BINARY
    }

    fn port_count(&self) -> usize {
        if self.tls.is_some() { 2 } else { 1 }
    }

    fn args(&self, dir: &Path, ports: &[u16]) -> io::Result<Vec<OsString>> {
        let data = data_dir(dir);
        // Settings after a `listener` line belong to it (per_listener_settings stays false, so
        // the access settings above apply to both).
        let tls = match &self.tls {
            None => String::new(),
            Some(tls) => format!(
                "listener {port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate {}\n",
                tls.ca.display(),
                tls.cert.display(),
                tls.key.display(),
                tls.require_certificate,
                port = ports[1],
            ),
        };
        std::fs::create_dir_all(&data)?;
        let access = match &self.secured {
            None => "allow_anonymous true\n".to_owned(),
            Some((passwd, acl)) => format!(
                "allow_anonymous false\npassword_file {}\nacl_file {}\n",
                passwd.display(),
                acl.display()
            ),
        };
        let config = format!(
            "# Written by firegrid-tests.\n\
             # Stay root when started as root (the default drops to user `mosquitto`, which\n\
             # cannot write to our temp dir); ignored when not started as root.\n\
             user root\n\
             {access}\
             persistence true\n\
             persistence_location {data}/\n\
             autosave_interval 1\n\
             autosave_on_changes false\n\
             max_queued_messages 1000000\n\
             max_queued_bytes 0\n\
             max_inflight_messages 100\n\
             # 0 is rejected by 2.0.11 despite the docs; this is the MQTT maximum.\n\
             max_packet_size 268435455\n\
             set_tcp_nodelay true\n\
             log_dest stderr\n\
             log_type error\n\
             log_type warning\n\
             log_type notice\n\
             log_type information\n\
             connection_messages true\n\
             log_timestamp_format %Y-%m-%dT%H:%M:%S\n\
             listener {port} 127.0.0.1\n\
             {tls}",
            port = ports[0],
            data = data.display(),
        );
        let path = dir.join("mosquitto.conf");
        std::fs::write(&path, config)?;
        Ok(vec!["-c".into(), path.into_os_string()])
    }

    fn is_ready(&self, ports: &[u16]) -> bool {
        // A secured broker answers an anonymous CONNECT with "not authorized": it is up.
        mqtt_handshake(ports[0]).is_ok_and(|code| code == 0 || (self.secured.is_some() && code == 5))
    }
}

/// Sends a minimal anonymous MQTT 3.1.1 CONNECT and returns the CONNACK's return code (0
/// accepted, 5 not authorized); an error when no CONNACK came.
fn mqtt_handshake(port: u16) -> io::Result<u8> {
    let timeout = Duration::from_secs(1);
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    // CONNECT: protocol "MQTT" level 4, clean session, keep-alive 60 s, empty client id.
    stream
        .write_all(&[0x10, 0x0c, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3c, 0x00, 0x00])?;
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack)?;
    // DISCONNECT, so the broker logs a clean disconnect rather than a dropped socket.
    let _ = stream.write_all(&[0xe0, 0x00]);
    if connack[..2] == [0x20, 0x02] {
        Ok(connack[3])
    } else {
        Err(io::Error::new(io::ErrorKind::InvalidData, "not a CONNACK"))
    }
}
