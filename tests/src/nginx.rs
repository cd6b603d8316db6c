//! [`Nginx`]: nginx as a TLS-terminating reverse proxy in front of the gateway, started from a
//! `server { ... }` block (the README's example, with its listen address, certificate paths
//! and upstream port filled in), so the documented configuration is the tested one.

use std::ffi::OsString;
use std::io;
use std::path::Path;

use crate::error::Result;
use crate::process::{Binary, ServerKind, ServerProcess, forward_lifecycle};

/// A running nginx.
pub struct Nginx {
    process: ServerProcess,
}

impl std::fmt::Debug for Nginx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nginx").field("process", &self.process).finish_non_exhaustive()
    }
}

forward_lifecycle!(Nginx);

struct NginxKind {
    /// The `server { ... }` block, with `{port}` for its listen port.
    server: String,
}

impl ServerKind for NginxKind {
    fn binary(&self) -> Binary {
        Binary { name: "nginx", default_path: "/usr/sbin/nginx", apt_package: "nginx-light" }
    }

    fn args(&self, dir: &Path, ports: &[u16]) -> io::Result<Vec<OsString>> {
        let d = dir.display();
        let server = self.server.replace("{port}", &ports[0].to_string());
        // Foreground, everything under the temp dir; `user root` keeps workers able to read
        // the temp dir when started as root (ignored, with a notice, otherwise).
        let config = format!(
            "# Written by firegrid-tests.\n\
             daemon off;\nmaster_process on;\nworker_processes 1;\nuser root;\n\
             pid {d}/nginx.pid;\nerror_log stderr notice;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n  access_log off;\n\
             client_body_temp_path {d}/client_body;\n  proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
             {server}\n}}\n"
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, config)?;
        Ok(vec![
            "-p".into(),
            dir.as_os_str().to_owned(),
            "-e".into(),
            "stderr".into(),
            "-c".into(),
            path.into(),
        ])
    }

    fn is_ready(&self, _ports: &[u16]) -> bool {
        // The process itself listens on the port (checked by the caller): ready.
        true
    }
}

impl Nginx {
    /// Starts nginx with `server` (a `server { ... }` block whose `listen` names `{port}`).
    pub fn start(server: &str) -> Result<Self> {
        Ok(Nginx { process: ServerProcess::start(NginxKind { server: server.to_owned() })? })
    }

    /// Its listen port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.process.ports()[0]
    }
}
