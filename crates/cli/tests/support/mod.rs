//! Shared rig for the `canary run` tests: two relay-demo services (`canary relay-demo serve`),
//! the proxy (`canary proxy`), background load (`canary load`), a `.env.canary` with the
//! tokens, markers and a signing key, and a short (30-second) runbook configuration.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // test support

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use canary_testkit::{Process, free_port, http_get, http_request, wait_for};

pub const JWT_SECRET: &str = "run-test-jwt-secret-91ab";
pub const DATA_KEY: &str = "run-test-data-key-c4d2";
pub const PROXY_TOKEN: &str = "run-test-proxy-token-7e11";
pub const ALERT_TOKEN: &str = "run-test-alert-token-2b90";

pub fn canary() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_canary"));
    c.env("NO_COLOR", "1")
        .env("RELAY_JWT_SECRET", JWT_SECRET)
        .env("RELAY_DATA_KEY", DATA_KEY);
    c
}

pub struct Rig {
    pub dir: tempfile::TempDir,
    pub proxy_admin: std::net::SocketAddr,
    pub baseline: String,
    pub canary: String,
    pub proxy: String,
    _services: Vec<Process>,
}

/// The embedded metrics section: scrape both services every 250 ms.
pub fn embedded_metrics(baseline: &str, canary: &str) -> String {
    format!(
        r#"
[metrics]
source = "embedded"
scrape_interval = "250ms"

[[metrics.targets]]
url = "{baseline}/metrics"
arm = "baseline"
job = "relay"

[[metrics.targets]]
url = "{canary}/metrics"
arm = "canary"
job = "relay"
"#
    )
}

pub fn config_text(
    baseline: &str,
    canary: &str,
    proxy: &str,
    admin: std::net::SocketAddr,
    metrics: &str,
    extra: &str,
) -> String {
    format!(
        r#"
[run]
service = "relay"
duration = "30s"
evaluation_interval = "500ms"
check_log_interval = "3s"
checkpoints = ["10s", "20s", "30s"]
cooldown = "1h"
state_dir = "state"

[arms.baseline]
name = "r0.5-hotfix"
selector = '{{version="r0.5"}}'
url = "{baseline}"
health = "/healthz"

[arms.canary]
name = "main"
selector = '{{version="r1"}}'
url = "{canary}"
health = "/healthz"

[[steps]]
weight = 5
hold = "30s"

[traffic]
provider = "embedded"
admin = "{admin}"
token = "${{CANARY_PROXY_TOKEN}}"
lease = "3s"

{metrics}

[load]
at = "2s"
url = "{proxy}"
requests_per_user = 4
pause = "50ms"
min_success_rate = 99.0

[[load.users]]
name = "user_1"
token = "${{API_TOKEN_USER_1}}"
marker = "${{MARKER_USER_1}}"

[[load.users]]
name = "user_2"
token = "${{API_TOKEN_USER_2}}"
marker = "${{MARKER_USER_2}}"

[[guardrails]]
name = "ttfv_p95"
query = 'histogram_quantile(0.95, sum by (le) (rate(ttfv_ms_bucket[5s])))'
must = "< 1500"
for = "5s"

[[guardrails]]
name = "rls_errors"
query = 'sum(increase(memory_rls_policy_errors_total[5s]))'
must = "== 0"

[[guardrails]]
name = "sse_success"
query = '100 * sum(rate(sse_complete_total[5s])) / sum(rate(sse_total[5s]))'
must = ">= 99.6"
for = "5s"

[[guardrails]]
name = "cross_tenant"
query = 'sum(increase(memory_cross_tenant_attempts_total[1s]))'
must = "== 0"
on_breach = "security-rollback"

[evidence]
dir = "evidence"
signing_key = "${{CANARY_SIGNING_KEY}}"

{extra}
"#
    )
}

/// Services and configuration with the embedded metrics store.
pub fn rig() -> Rig {
    rig_with(embedded_metrics, |_, _| String::new())
}

/// Services and configuration with the `[metrics]` section and extra sections the closures
/// write from the services' URLs (baseline, canary).
pub fn rig_with(
    metrics: impl FnOnce(&str, &str) -> String,
    extra: impl FnOnce(&str, &str) -> String,
) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let relay = |name: &str, version: &str| {
        let port = free_port();
        let mut cmd = canary();
        cmd.args([
            "relay-demo",
            "serve",
            // The run's mechanics, not the service's latency, are under test here: the demo
            // and the rehearsal run the realistic default.
            "--profile",
            "fast",
            "--seed",
            "--seed-per-user",
            "50",
            "--listen",
        ])
        .arg(format!("127.0.0.1:{port}"))
        .args(["--version-label", version]);
        let p = Process::spawn(name, dir.path(), cmd);
        let addr = format!("127.0.0.1:{port}").parse().unwrap();
        wait_for(name, Duration::from_secs(120), || {
            matches!(http_get(addr, "/healthz"), Ok((200, _))).then_some(())
        });
        (p, format!("http://127.0.0.1:{port}"))
    };
    let (baseline_p, baseline) = relay("relay-r0.5", "r0.5");
    let (canary_p, canary_url) = relay("relay-r1", "r1");
    let ready = dir.path().join("proxy.ready");
    let mut cmd = canary();
    cmd.env("CANARY_PROXY_TOKEN", PROXY_TOKEN)
        .args([
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--threads",
            "1",
        ])
        .args([
            "--baseline",
            &baseline,
            "--canary",
            &canary_url,
            "--ready-file",
        ])
        .arg(&ready);
    let proxy_p = Process::spawn("proxy", dir.path(), cmd);
    let v: serde_json::Value = wait_for("proxy", Duration::from_secs(30), || {
        serde_json::from_str(&std::fs::read_to_string(&ready).ok()?).ok()
    });
    let proxy = format!("http://{}", v["data"].as_str().unwrap());
    let admin = v["admin"].as_str().unwrap().parse().unwrap();

    let metrics = metrics(&baseline, &canary_url);
    let extra = extra(&baseline, &canary_url);
    std::fs::write(
        dir.path().join("canary.toml"),
        config_text(&baseline, &canary_url, &proxy, admin, &metrics, &extra),
    )
    .unwrap();
    let keygen = canary().arg("keygen").output().unwrap();
    let mut env = String::from_utf8(keygen.stdout).unwrap();
    env.push_str(&format!("CANARY_PROXY_TOKEN={PROXY_TOKEN}\n"));
    env.push_str(&format!("CANARY_ALERT_TOKEN={ALERT_TOKEN}\n"));
    for (user, token) in relay_demo::tokens(JWT_SECRET) {
        env.push_str(&format!("{}={token}\n", relay_demo::token_variable(&user)));
    }
    for (user, marker) in relay_demo::seed_markers() {
        env.push_str(&format!("MARKER_{}={marker}\n", user.to_uppercase()));
    }
    let env_path = dir.path().join(".env.canary");
    std::fs::write(&env_path, env).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&env_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    // Steady traffic through the split and pinned to the canary, for the whole test.
    let mut services = vec![baseline_p, canary_p, proxy_p];
    for (name, extra) in [
        ("load-lb", vec![]),
        ("load-canary", vec!["--target", "canary"]),
    ] {
        let mut cmd = canary();
        cmd.current_dir(dir.path())
            .args([
                "load",
                "-c",
                "canary.toml",
                "--rate",
                "12",
                "--duration",
                "10m",
                "--no-probes",
                "--out",
            ])
            .arg(dir.path().join(name))
            .args(extra);
        std::fs::create_dir_all(dir.path().join(name)).unwrap();
        services.push(Process::spawn(name, dir.path(), cmd));
    }
    Rig {
        dir,
        proxy_admin: admin,
        baseline,
        canary: canary_url,
        proxy,
        _services: services,
    }
}

impl Rig {
    pub fn canary_weight(&self) -> u8 {
        let auth = format!("Bearer {PROXY_TOKEN}");
        let (status, body) = http_request(
            self.proxy_admin,
            "GET",
            "/weights",
            &[("Authorization", &auth)],
            b"",
        )
        .unwrap();
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["canary"].as_u64().unwrap() as u8
    }

    /// Starts `canary run` with `args` in the rig's directory.
    pub fn run(&self, args: &[&str]) -> std::process::Child {
        canary()
            .current_dir(self.dir.path())
            .args(["run", "-c", "canary.toml"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// The running controller's status, once its control file is there.
    pub fn status(&self) -> Option<serde_json::Value> {
        let text = std::fs::read_to_string(self.dir.path().join("state/active/relay.json")).ok()?;
        let file: serde_json::Value = serde_json::from_str(&text).ok()?;
        let addr = file["url"]
            .as_str()?
            .trim_start_matches("http://")
            .parse()
            .ok()?;
        let (code, body) = http_get(addr, "/api/status").ok()?;
        (code == 200).then(|| serde_json::from_str(&body).ok())?
    }

    /// Waits until the run reports `elapsed_ms` into its window; panics with its output if it
    /// exits first.
    pub fn wait_running(
        &self,
        run: &mut std::process::Child,
        elapsed_ms: i64,
    ) -> serde_json::Value {
        wait_for("the run to get going", Duration::from_secs(60), || {
            if let Ok(Some(status)) = run.try_wait() {
                let mut out = String::new();
                for stream in [
                    run.stdout
                        .take()
                        .map(Box::new)
                        .map(|s| s as Box<dyn std::io::Read>),
                    run.stderr
                        .take()
                        .map(|s| Box::new(s) as Box<dyn std::io::Read>),
                ]
                .into_iter()
                .flatten()
                {
                    let mut s = stream;
                    let _ = s.read_to_string(&mut out);
                }
                panic!("canary run exited ({status}) before running:\n{out}");
            }
            self.status().filter(|s| {
                s["phase"] == "running" && s["elapsed_ms"].as_i64().unwrap_or(0) >= elapsed_ms
            })
        })
    }

    /// `canary ARGS` in the rig's directory, which must succeed; its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = canary()
            .current_dir(self.dir.path())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "canary {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `git ARGS` in the rig's directory; its stdout.
    pub fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .current_dir(self.dir.path())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Makes the rig's directory a git repository with an author for commits.
    pub fn git_init(&self) {
        self.git(&["init", "-q"]);
        self.git(&["config", "user.email", "canary@example.invalid"]);
        self.git(&["config", "user.name", "canary test"]);
    }

    /// Stops the canary's relay-demo service, as a crash would.
    pub fn stop_canary(&mut self) {
        self._services.remove(1);
    }

    pub fn bundle(&self, run_id: &str) -> PathBuf {
        self.dir.path().join("evidence").join(run_id)
    }
}

pub fn finish(child: std::process::Child) -> (i32, String, String) {
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn verify(bundle: &Path) -> (i32, String) {
    let out = canary().arg("verify").arg(bundle).output().unwrap();
    (
        out.status.code().unwrap(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[allow(unused_imports)] // each test binary uses a part of the support
pub use canary_testkit::{Received, webhook_receiver};

/// The text of the bundle's artifact whose name starts with `prefix` (the runbook's names carry
/// a timestamp after it).
pub fn artifact_text(bundle: &Path, prefix: &str) -> String {
    let path = std::fs::read_dir(bundle)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} in {}", bundle.display()));
    std::fs::read_to_string(path).unwrap()
}
