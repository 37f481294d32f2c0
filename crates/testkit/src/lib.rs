//! Test support shared by every crate's integration tests: real servers started on loopback
//! ports the test picks, waited for by condition (never by sleeping a guessed time), and killed
//! when the handle drops.
//!
//! Blocking std code on purpose: usable from plain `#[test]`s and from inside `#[tokio::test]`
//! (call it before or outside the async work, or via `spawn_blocking`).
#![forbid(unsafe_code)]
#![allow(clippy::expect_used, clippy::unwrap_used)] // test support: a failure here is a test failure

pub mod browser;
pub mod grafana;
pub mod haproxy;
pub mod postgres;
pub mod receiver;
pub mod rehearsal;
pub mod ruler;
pub mod smtp;

pub use receiver::{Received, webhook_receiver};

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound, then released for the child to take).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// Polls `condition` until it returns `Some`, or panics with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut condition: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(10);
    loop {
        if let Some(v) = condition() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// A minimal HTTP/1.1 GET over a fresh connection: `(status, body)`. For readiness checks and
/// simple assertions; tests of real behaviour use a real client.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    http_request(addr, "GET", path, &[], b"")
}

/// A minimal HTTP/1.1 request (`Connection: close`): `(status, body)`. Chunked bodies are
/// decoded.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not HTTP: {head:?}")))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:")
            && l.to_ascii_lowercase().contains("chunked")
    });
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    Ok((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// An axum app served on a free loopback port from a thread of its own (so synchronous and
/// async tests can both use it); stopped when dropped.
pub struct Served {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Served {
    pub fn start(what: &str, app: axum::Router) -> Served {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let url = format!("http://{}", listener.local_addr().expect("local address"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let what = what.to_owned();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap_or_else(|e| panic!("a runtime for {what}: {e}"));
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        Served {
            url,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A child process killed (and reaped) on drop, with its output captured to a file in its
/// directory so a failing test can show it.
pub struct Process {
    child: Child,
    name: String,
    log: PathBuf,
}

impl Process {
    /// Spawns `cmd` with stdout and stderr appended to `<dir>/<name>.log`.
    pub fn spawn(name: &str, dir: &Path, mut cmd: Command) -> Process {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("create log file");
        let err = out.try_clone().expect("clone log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {name} ({cmd:?}): {e} — run scripts/test.sh --install")
            });
        Process {
            child,
            name: name.to_owned(),
            log,
        }
    }

    /// The captured output so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics with the process output if it has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited with {status}:\n{}", self.name, self.output());
        }
    }

    /// Whether it has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One series for [`Prometheus::remote_write`]: its labels (including `__name__`) and its
/// samples `(milliseconds, value)` in time order.
pub type RemoteSeries = (Vec<(String, String)>, Vec<(i64, f64)>);

/// A real Prometheus (Debian's `prometheus`), serving history built with `promtool tsdb
/// create-blocks-from openmetrics`, on a loopback port. No scraping.
pub struct Prometheus {
    pub addr: SocketAddr,
    process: Process,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Builds blocks from `openmetrics` (must end with `# EOF`) and starts Prometheus on them.
    /// Returns once `/-/ready` answers and the data is queryable.
    pub fn with_history(openmetrics: &str) -> Prometheus {
        let (dir, data) = blocks_from_openmetrics(openmetrics);
        Self::start(dir, &data, "global:\n  scrape_interval: 1h\n")
    }

    /// [`Prometheus::with_history`] that also accepts remote writes
    /// (`--web.enable-remote-write-receiver`), see [`Prometheus::remote_write`]. Remote-written
    /// samples must be newer than the history's last block.
    pub fn with_history_writable(openmetrics: &str) -> Prometheus {
        let (dir, data) = blocks_from_openmetrics(openmetrics);
        Self::start_with_flags(
            dir,
            &data,
            "global:\n  scrape_interval: 1h\n",
            &["--web.enable-remote-write-receiver"],
        )
    }

    /// `POST /api/v1/write` (remote write 1.0: protobuf, snappy): appends `series`, each a label
    /// set (including `__name__`) and samples `(ms, value)` in time order. Values are written
    /// bit for bit, so a staleness marker (`f64::from_bits(0x7ff0000000000002)`) stays one —
    /// the only way to get markers into a Prometheus without scraping.
    pub fn remote_write(&self, series: &[RemoteSeries]) {
        let body = remote_write::snappy_block(&remote_write::write_request(series));
        let (status, text) = http_request(
            self.addr,
            "POST",
            "/api/v1/write",
            &[
                ("Content-Type", "application/x-protobuf"),
                ("Content-Encoding", "snappy"),
                ("X-Prometheus-Remote-Write-Version", "0.1.0"),
            ],
            &body,
        )
        .expect("remote write");
        assert!(
            (200..300).contains(&status),
            "remote write answered {status}: {text}"
        );
    }

    /// Starts Prometheus with `config` (YAML text) and storage at `data`, inside `dir`.
    pub fn start(dir: tempfile::TempDir, data: &Path, config: &str) -> Prometheus {
        Self::start_with_flags(dir, data, config, &[])
    }

    /// [`Prometheus::start`] with extra command-line flags.
    pub fn start_with_flags(
        dir: tempfile::TempDir,
        data: &Path,
        config: &str,
        flags: &[&str],
    ) -> Prometheus {
        let cfg = dir.path().join("prometheus.yml");
        std::fs::write(&cfg, config).expect("write prometheus.yml");
        for _attempt in 0..3 {
            let port = free_port();
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
            let mut cmd = Command::new("prometheus");
            cmd.arg(format!("--config.file={}", cfg.display()))
                .arg(format!("--storage.tsdb.path={}", data.display()))
                .arg(format!("--web.listen-address={addr}"))
                .arg("--storage.tsdb.retention.time=100y")
                .arg("--web.enable-lifecycle")
                .arg("--log.level=warn")
                .args(flags);
            let mut process = Process::spawn("prometheus", dir.path(), cmd);
            let ready = wait_for_ready(&mut process, addr, "/-/ready", Duration::from_secs(60));
            if ready {
                return Prometheus {
                    addr,
                    process,
                    _dir: dir,
                };
            }
        }
        panic!("prometheus did not start after three attempts");
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn output(&self) -> String {
        self.process.output()
    }
}

/// Writes `openmetrics` to a fresh directory and builds TSDB blocks from it with `promtool tsdb
/// create-blocks-from openmetrics`: `(directory, data path)`.
fn blocks_from_openmetrics(openmetrics: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let om = dir.path().join("history.om");
    std::fs::write(&om, openmetrics).expect("write history");
    let data = dir.path().join("data");
    let out = Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&om)
        .arg(&data)
        .output()
        .expect("promtool is installed (scripts/test.sh --install)");
    assert!(
        out.status.success(),
        "promtool create-blocks-from openmetrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (dir, data)
}

/// Waits until `path` answers 200; `false` if the process died (e.g. port taken), panics on
/// timeout.
fn wait_for_ready(process: &mut Process, addr: SocketAddr, path: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(_)) = process.child.try_wait() {
            if process.output().contains("address already in use") {
                return false;
            }
            panic!(
                "{} exited during startup:\n{}",
                process.name,
                process.output()
            );
        }
        if let Ok((200, _)) = http_get(addr, path) {
            return true;
        }
        assert!(
            Instant::now() < deadline,
            "{} not ready on {addr}{path} after {timeout:?}:\n{}",
            process.name,
            process.output()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The remote-write wire format, written by hand to keep test dependencies at zero: protobuf
/// `prometheus.WriteRequest` and an all-literal snappy block (valid snappy, just uncompressed).
mod remote_write {
    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn bytes_field(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
        varint(out, (field << 3) | 2);
        varint(out, bytes.len() as u64);
        out.extend_from_slice(bytes);
    }

    pub fn write_request(series: &[super::RemoteSeries]) -> Vec<u8> {
        let mut req = Vec::new();
        for (labels, samples) in series {
            let mut ts = Vec::new();
            let mut sorted = labels.clone();
            sorted.sort();
            for (name, value) in &sorted {
                let mut l = Vec::new();
                bytes_field(&mut l, 1, name.as_bytes());
                bytes_field(&mut l, 2, value.as_bytes());
                bytes_field(&mut ts, 1, &l);
            }
            for (t, v) in samples {
                let mut s = Vec::new();
                s.push((1 << 3) | 1); // value: fixed64
                s.extend_from_slice(&v.to_bits().to_le_bytes());
                varint(&mut s, 2 << 3); // timestamp: varint
                varint(&mut s, *t as u64);
                bytes_field(&mut ts, 2, &s);
            }
            bytes_field(&mut req, 1, &ts);
        }
        req
    }

    pub fn snappy_block(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len() + data.len() / 60_000 * 3 + 8);
        varint(&mut out, data.len() as u64);
        for chunk in data.chunks(65_536) {
            let n = chunk.len() - 1;
            if n < 60 {
                out.push((n as u8) << 2);
            } else if n < 256 {
                out.push(60 << 2);
                out.push(n as u8);
            } else {
                out.push(61 << 2);
                out.extend_from_slice(&(n as u16).to_le_bytes());
            }
            out.extend_from_slice(chunk);
        }
        out
    }
}

/// A real Alertmanager (Debian's `prometheus-alertmanager`) running `config` (alertmanager.yml
/// text) on a loopback port, clustering off, killed on drop.
pub struct Alertmanager {
    pub addr: SocketAddr,
    process: Process,
    dir: tempfile::TempDir,
}

impl Alertmanager {
    /// Writes `config` and starts Alertmanager on it; returns once `/-/ready` answers.
    /// Panics with Alertmanager's output if the configuration is refused.
    pub fn start(config: &str) -> Alertmanager {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir, config)
    }

    /// [`Alertmanager::start`] in a directory the test prepared (e.g. holding credential files
    /// the configuration references).
    pub fn start_in(dir: tempfile::TempDir, config: &str) -> Alertmanager {
        Self::start_at(dir, config, None)
    }

    /// [`Alertmanager::start`] on `port` (a Prometheus configured before it started points
    /// there).
    pub fn start_on(port: u16, config: &str) -> Alertmanager {
        Self::start_at(tempfile::tempdir().expect("tempdir"), config, Some(port))
    }

    fn start_at(dir: tempfile::TempDir, config: &str, port: Option<u16>) -> Alertmanager {
        let cfg = dir.path().join("alertmanager.yml");
        std::fs::write(&cfg, config).expect("write alertmanager.yml");
        for _attempt in 0..3 {
            let port = port.unwrap_or_else(free_port);
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
            let mut cmd = Command::new("prometheus-alertmanager");
            cmd.arg(format!("--config.file={}", cfg.display()))
                .arg(format!(
                    "--storage.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .arg("--cluster.listen-address=")
                .arg("--log.level=warn");
            let mut process = Process::spawn("alertmanager", dir.path(), cmd);
            if wait_for_ready(&mut process, addr, "/-/ready", Duration::from_secs(60)) {
                return Alertmanager { addr, process, dir };
            }
        }
        panic!("alertmanager did not start after three attempts");
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The directory holding its configuration and data.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn output(&self) -> String {
        self.process.output()
    }
}
