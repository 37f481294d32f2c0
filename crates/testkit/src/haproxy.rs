//! A real HAProxy (Debian's `haproxy`) on loopback: one HTTP frontend balancing a backend of two
//! servers by weight, its runtime API on a unix socket (`level admin`, what canary's `haproxy`
//! provider drives), and its built-in Prometheus exporter.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{Process, free_port, http_get, wait_for};

/// The backend's name in the configuration.
pub const BACKEND: &str = "relay";

/// HAProxy balancing [`BACKEND`] between a baseline and a canary server, killed on drop.
pub struct Haproxy {
    /// The frontend (what clients and `PROD_API_URL` use).
    pub addr: SocketAddr,
    /// The Prometheus exporter (`/metrics`).
    pub metrics: SocketAddr,
    /// The runtime API.
    pub socket: PathBuf,
    process: Process,
}

impl Haproxy {
    /// Starts HAProxy in `dir` with servers `baseline` (weight 100) and `canary` (weight 0),
    /// named `baseline_name` and `canary_name` as a team's haproxy.cfg would name them.
    pub fn start(dir: &Path, baseline: (&str, SocketAddr), canary: (&str, SocketAddr)) -> Haproxy {
        let socket = dir.join("haproxy.sock");
        for _attempt in 0..3 {
            let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
            let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
            let config = format!(
                r#"global
    stats socket {socket} mode 600 level admin
    maxconn 4096

defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s

frontend relay
    bind {addr}
    default_backend {BACKEND}

frontend stats
    bind {metrics}
    http-request use-service prometheus-exporter if {{ path /metrics }}

backend {BACKEND}
    balance roundrobin
    server {bn} {ba} weight 100
    server {cn} {ca} weight 0
"#,
                socket = socket.display(),
                bn = baseline.0,
                ba = baseline.1,
                cn = canary.0,
                ca = canary.1,
            );
            let cfg = dir.join("haproxy.cfg");
            std::fs::write(&cfg, config).expect("write haproxy.cfg");
            let _ = std::fs::remove_file(&socket);
            let mut cmd = Command::new("haproxy");
            cmd.arg("-db").arg("-f").arg(&cfg);
            let mut process = Process::spawn("haproxy", dir, cmd);
            let up = wait_for("haproxy to listen", Duration::from_secs(15), || {
                if process.exited() {
                    return Some(false);
                }
                (socket.exists() && http_get(metrics, "/metrics").is_ok()).then_some(true)
            });
            if up {
                return Haproxy {
                    addr,
                    metrics,
                    socket,
                    process,
                };
            }
        }
        panic!("haproxy did not start after three attempts");
    }

    /// One runtime API command through `socat` (as an operator would type it); its answer.
    pub fn runtime(&self, command: &str) -> String {
        runtime(&self.socket, command)
    }

    /// The weight HAProxy reports for `server` of [`BACKEND`] (`get weight`: current first).
    pub fn weight(&self, server: &str) -> u32 {
        let answer = self.runtime(&format!("get weight {BACKEND}/{server}"));
        answer
            .split_whitespace()
            .next()
            .and_then(|w| w.parse().ok())
            .unwrap_or_else(|| panic!("`get weight {BACKEND}/{server}` answered {answer:?}"))
    }

    pub fn output(&self) -> String {
        self.process.output()
    }
}

/// One runtime API command on the socket at `socket`, through `socat`.
pub fn runtime(socket: &Path, command: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("socat")
        .arg("stdio")
        .arg(format!("unix-connect:{}", socket.display()))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("socat is installed (scripts/test.sh installs it)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{command}\n").as_bytes())
        .expect("write to socat");
    let out = child.wait_with_output().expect("socat output");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
