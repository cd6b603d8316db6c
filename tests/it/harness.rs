//! The supervision core: binary lookup, startup failures, stop/drop, isolation.

use std::ffi::OsString;
use std::io;
use std::path::Path;

use firegrid_tests::{Binary, Error, Mosquitto, ServerKind, ServerProcess};

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn missing_binary_fails_with_the_install_command() {
    let binary = Binary {
        name: "firegrid-no-such-server",
        default_path: "/nonexistent/sbin/firegrid-no-such-server",
        apt_package: "firegrid-no-such-package",
    };
    let err = binary.locate().unwrap_err();
    assert!(matches!(err, Error::BinaryNotFound { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "firegrid-no-such-server not found at /nonexistent/sbin/firegrid-no-such-server or on \
         PATH: install it with \"sudo apt-get install -y firegrid-no-such-package\""
    );
}

#[test]
fn the_three_servers_are_installed() {
    // Fails (never skips) on a machine without them, naming the install command.
    for binary in
        [Mosquitto::BINARY, firegrid_tests::InfluxDb1::BINARY, firegrid_tests::VictoriaMetrics::BINARY]
    {
        let path = binary.locate().unwrap();
        assert!(path.ends_with(binary.name), "{}", path.display());
    }
}

/// A "server" that complains on stderr and exits at once.
struct FailingServer;

impl ServerKind for FailingServer {
    fn binary(&self) -> Binary {
        Binary { name: "sh", default_path: "/bin/sh", apt_package: "dash" }
    }

    fn args(&self, dir: &Path, ports: &[u16]) -> io::Result<Vec<OsString>> {
        std::fs::write(dir.join("marker"), "config written")?;
        Ok(vec!["-c".into(), format!("echo 'fatal: cannot use port {}' >&2; exit 3", ports[0]).into()])
    }

    fn is_ready(&self, _ports: &[u16]) -> bool {
        true
    }
}

#[test]
fn a_server_that_exits_during_startup_fails_with_its_log() {
    let err = ServerProcess::start(FailingServer).unwrap_err();
    let Error::StartExited { status, tail, .. } = &err else {
        panic!("expected StartExited, got: {err}");
    };
    assert_eq!(status.code(), Some(3));
    assert!(tail.contains("fatal: cannot use port"), "{tail}");
    assert!(err.to_string().contains("fatal: cannot use port"), "{err}");
}

#[test]
fn stop_restart_and_drop_leave_no_process_behind() {
    let mut broker = Mosquitto::start().unwrap();
    let port = broker.port();
    let dir = broker.dir().to_path_buf();
    let first = broker.pid().unwrap();
    assert!(alive(first));

    broker.stop().unwrap();
    assert!(!alive(first), "mosquitto {first} still alive after stop()");
    assert!(!broker.is_running());
    assert_eq!(broker.pid(), None);
    broker.stop().unwrap(); // stopping twice is fine

    broker.restart().unwrap();
    let second = broker.pid().unwrap();
    assert_ne!(first, second);
    assert_eq!(broker.port(), port, "restart must keep the port");
    assert_eq!(broker.dir(), dir, "restart must keep the data dir");

    broker.kill().unwrap();
    assert!(!alive(second), "mosquitto {second} still alive after kill()");
    broker.restart().unwrap();
    let third = broker.pid().unwrap();
    assert!(broker.is_running());

    drop(broker);
    assert!(!alive(third), "mosquitto {third} still alive after drop");
    assert!(!dir.exists(), "temp dir {} left behind", dir.display());
}

#[test]
fn drop_during_a_panic_stops_the_server() {
    let (tx, rx) = std::sync::mpsc::channel();
    let result = std::thread::spawn(move || {
        let broker = Mosquitto::start().unwrap();
        tx.send(broker.pid().unwrap()).unwrap();
        panic!("test failure while the broker runs");
    })
    .join();
    assert!(result.is_err());
    let pid = rx.recv().unwrap();
    assert!(!alive(pid), "mosquitto {pid} outlived the panicking test");
}

#[test]
fn parallel_servers_get_their_own_ports_and_dirs() {
    let a = Mosquitto::start().unwrap();
    let b = Mosquitto::start().unwrap();
    assert_ne!(a.port(), b.port());
    assert_ne!(a.dir(), b.dir());
    assert_ne!(a.pid(), b.pid());
    assert!(a.log_tail(20).contains("running"), "{}", a.log_tail(20));
}

#[test]
fn restart_on_a_port_taken_meanwhile_fails_with_the_servers_complaint() {
    let mut broker = Mosquitto::start().unwrap();
    broker.stop().unwrap();
    let _squatter = std::net::TcpListener::bind(("127.0.0.1", broker.port())).unwrap();
    let err = broker.restart().unwrap_err();
    assert!(matches!(err, Error::StartExited { .. }), "{err}");
    assert!(err.to_string().contains("Address already in use"), "{err}");
    assert!(!broker.is_running());
}
