//! Real load balancers and backends for the traffic router tests: HAProxy and nginx started
//! from the test in a temp dir on loopback ports, killed on drop; tiny backends that answer
//! with their arm's name; measuring the split on real requests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "canary-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A keep-alive HTTP backend answering every request `200 <name>`.
pub struct Backend {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Backend {
    pub async fn start(name: &'static str) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, name));
            }
        });
        Backend { addr, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut stream: TcpStream, name: &'static str) {
    let _ = stream.set_nodelay(true);
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{name}",
        name.len()
    );
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        // Answer each complete request head (bodies are not used by these tests).
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.drain(..end + 4);
            if stream.write_all(response.as_bytes()).await.is_err() {
                return;
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `condition` every 10 ms until it holds or `within` passes.
pub async fn wait_until<F, Fut>(what: &str, within: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn accepts(addr: SocketAddr) -> bool {
    TcpStream::connect(addr).await.is_ok()
}

/// Sends `n` requests to `url` over fresh keep-alive connections and returns the percentage
/// answered by the canary backend.
pub async fn canary_share(url: &str, n: usize) -> f64 {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut canary = 0usize;
    for _ in 0..n {
        let resp = client.get(url).send().await.unwrap();
        assert!(
            resp.status().is_success(),
            "{url} answered {}",
            resp.status()
        );
        match resp.text().await.unwrap().as_str() {
            "canary" => canary += 1,
            "baseline" => {}
            other => panic!("unexpected answer {other:?}"),
        }
    }
    canary as f64 * 100.0 / n as f64
}

/// A process killed (and reaped) on drop.
pub struct Process {
    pub child: Child,
    pub name: &'static str,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// HAProxy in the foreground (no master-worker), one backend `app` with servers `baseline`
/// and `canary`, runtime API on a unix socket and on TCP.
pub struct Haproxy {
    pub dir: TempDir,
    pub frontend: SocketAddr,
    pub socket: PathBuf,
    pub admin_tcp: SocketAddr,
    _process: Process,
}

impl Haproxy {
    pub async fn start(baseline: &Backend, canary: &Backend) -> Haproxy {
        let dir = TempDir::new("haproxy");
        let frontend: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin_tcp: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let socket = dir.join("haproxy.sock");
        let config = format!(
            "global
    stats socket {socket} mode 600 level admin
    stats socket ipv4@{admin_tcp} level admin
    stats timeout 10s
defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s
frontend fe
    bind {frontend}
    default_backend app
backend app
    balance roundrobin
    server baseline {baseline} weight 100
    server canary {canary} weight 0
",
            socket = socket.display(),
            baseline = baseline.addr,
            canary = canary.addr,
        );
        let cfg_path = dir.join("haproxy.cfg");
        std::fs::write(&cfg_path, config).unwrap();
        let log = std::fs::File::create(dir.join("haproxy.log")).unwrap();
        let child = Command::new("/usr/sbin/haproxy")
            .args(["-db", "-f"])
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("haproxy is installed (scripts/test.sh installs it)");
        let process = Process {
            child,
            name: "haproxy",
        };
        let log_path = dir.join("haproxy.log");
        wait_until("haproxy to listen", Duration::from_secs(10), || {
            let socket = socket.clone();
            let log_path = log_path.clone();
            async move {
                let up = accepts(frontend).await && socket.exists() && accepts(admin_tcp).await;
                if !up {
                    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                    assert!(!log.contains("[ALERT]"), "haproxy failed to start:\n{log}");
                }
                up
            }
        })
        .await;
        Haproxy {
            dir,
            frontend,
            socket,
            admin_tcp,
            _process: process,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.frontend)
    }

    /// Runs one runtime API command with the real `socat`, as an operator would by hand.
    pub fn socat(&self, command: &str) -> String {
        let output = Command::new("socat")
            .arg("stdio")
            .arg(format!("unix-connect:{}", self.socket.display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child
                    .stdin
                    .take()
                    .unwrap()
                    .write_all(format!("{command}\n").as_bytes())?;
                child.wait_with_output()
            })
            .expect("socat is installed");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

/// nginx in the foreground with one worker, proxying to `upstream relay` from an include file.
pub struct Nginx {
    pub dir: TempDir,
    pub listen: SocketAddr,
    pub upstream_file: PathBuf,
    pub config: PathBuf,
    process: Process,
}

impl Nginx {
    pub async fn start(baseline: &Backend, canary: &Backend) -> Nginx {
        let dir = TempDir::new("nginx");
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let upstream_file = dir.join("upstream.conf");
        std::fs::write(
            &upstream_file,
            format!(
                "upstream relay {{\n    server {} weight=100;\n    server {} down;\n}}\n",
                baseline.addr, canary.addr
            ),
        )
        .unwrap();
        let d = dir.path().display();
        let config = dir.join("nginx.conf");
        std::fs::write(
            &config,
            format!(
                "worker_processes 1;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    include {upstream};
    server {{
        listen {listen};
        location / {{
            proxy_pass http://relay;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }}
    }}
}}
",
                upstream = upstream_file.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("nginx.log")).unwrap();
        let child = Command::new("/usr/sbin/nginx")
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&config)
            .arg("-g")
            .arg(Self::globals(dir.path(), true))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("nginx is installed (scripts/test.sh installs it)");
        let process = Process {
            child,
            name: "nginx",
        };
        let nginx = Nginx {
            dir,
            listen,
            upstream_file,
            config,
            process,
        };
        wait_until("nginx to listen", Duration::from_secs(10), || async {
            accepts(listen).await && !nginx.workers().is_empty()
        })
        .await;
        nginx
    }

    fn globals(dir: &Path, foreground: bool) -> String {
        let daemon = if foreground { "daemon off; " } else { "" };
        format!("{daemon}pid {}/nginx.pid; error_log stderr;", dir.display())
    }

    /// `nginx <args>` with this instance's prefix, config and globals, as a shell command.
    pub fn command(&self, args: &str) -> String {
        format!(
            "/usr/sbin/nginx {args} -p {d} -c {c} -g '{g}'",
            d = self.dir.path().display(),
            c = self.config.display(),
            g = Self::globals(self.dir.path(), false)
        )
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.listen)
    }

    /// Process ids of the master's current worker processes.
    pub fn workers(&self) -> Vec<u32> {
        let master = self.process.child.id();
        let mut workers = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // Fields after the parenthesised command name: state, ppid, ...
            let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
            let mut fields = after.split_whitespace();
            let state = fields.next();
            let ppid = fields.next().and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(master) && state != Some("Z") {
                workers.push(pid);
            }
        }
        workers
    }

    /// Waits until every worker in `old` has exited and a new one serves: the reload is in
    /// effect for every new connection.
    pub async fn wait_for_reload(&self, old: &[u32]) {
        wait_until(
            "nginx workers to be replaced",
            Duration::from_secs(10),
            || async {
                let now = self.workers();
                !now.is_empty() && now.iter().all(|pid| !old.contains(pid))
            },
        )
        .await;
    }
}

/// Shared handle so tests can keep a backend alive across helpers.
pub type Shared<T> = Arc<T>;

impl Drop for Nginx {
    /// Stops the master with SIGTERM so that it takes its workers down: the SIGKILL of
    /// [`Process`]'s drop alone would leave them running, orphaned.
    fn drop(&mut self) {
        let workers = self.workers();
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.process.child.id().to_string())
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.process.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Any worker still there (the master was stuck) goes too.
        for pid in workers {
            let cmdline =
                std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if cmdline.starts_with("nginx: worker") {
                let _ = Command::new("kill")
                    .arg("-KILL")
                    .arg(pid.to_string())
                    .status();
            }
        }
    }
}
