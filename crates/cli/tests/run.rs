//! `canary run`, `canary resume`, `canary abort` and the cooldown, against real processes: two
//! relay-demo services (`canary relay-demo serve`), the proxy (`canary proxy`), background load
//! (`canary load`), all on loopback, with a 30-second plan.
//!
//! - `kill -9` of the controller mid-run: the proxy's lease returns traffic to the baseline by
//!   itself; `canary resume` replays the journal, re-applies the split and completes the run
//!   with a bundle that verifies.
//! - `canary abort` rolls back and records the operator; the cooldown then refuses a new run
//!   until it is overridden, and the override is recorded in the evidence.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is a test failure

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use canary_testkit::{Process, free_port, http_get, http_request, wait_for};

const JWT_SECRET: &str = "run-test-jwt-secret-91ab";
const DATA_KEY: &str = "run-test-data-key-c4d2";
const PROXY_TOKEN: &str = "run-test-proxy-token-7e11";

fn canary() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_canary"));
    c.env("NO_COLOR", "1")
        .env("RELAY_JWT_SECRET", JWT_SECRET)
        .env("RELAY_DATA_KEY", DATA_KEY);
    c
}

struct Rig {
    dir: tempfile::TempDir,
    proxy_admin: std::net::SocketAddr,
    _services: Vec<Process>,
}

fn config_text(baseline: &str, canary: &str, proxy: &str, admin: std::net::SocketAddr) -> String {
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

[arms.canary]
name = "main"
selector = '{{version="r1"}}'
url = "{canary}"

[[steps]]
weight = 5
hold = "30s"

[traffic]
provider = "embedded"
admin = "{admin}"
token = "${{CANARY_PROXY_TOKEN}}"
lease = "3s"

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
"#
    )
}

fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let relay = |name: &str, version: &str| {
        let port = free_port();
        let mut cmd = canary();
        cmd.args([
            "relay-demo",
            "serve",
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

    std::fs::write(
        dir.path().join("canary.toml"),
        config_text(&baseline, &canary_url, &proxy, admin),
    )
    .unwrap();
    let keygen = canary().arg("keygen").output().unwrap();
    let mut env = String::from_utf8(keygen.stdout).unwrap();
    env.push_str(&format!("CANARY_PROXY_TOKEN={PROXY_TOKEN}\n"));
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
        _services: services,
    }
}

impl Rig {
    fn canary_weight(&self) -> u8 {
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
    fn run(&self, args: &[&str]) -> std::process::Child {
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
    fn status(&self) -> Option<serde_json::Value> {
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
    fn wait_running(&self, run: &mut std::process::Child, elapsed_ms: i64) -> serde_json::Value {
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

    fn bundle(&self, run_id: &str) -> PathBuf {
        self.dir.path().join("evidence").join(run_id)
    }
}

fn finish(child: std::process::Child) -> (i32, String, String) {
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn verify(bundle: &Path) -> (i32, String) {
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

#[test]
fn kill_9_mid_run_falls_back_by_lease_and_resume_completes_the_run() {
    let rig = rig();
    let mut run = rig.run(&[]);
    let status = rig.wait_running(&mut run, 12_000);
    let run_id = status["run_id"].as_str().unwrap().to_owned();
    assert_eq!(rig.canary_weight(), 5, "the run set 5 % before the kill");

    // kill -9: no rollback by the controller; the proxy's dead man's switch must act.
    run.kill().unwrap();
    let killed = Instant::now();
    let _ = run.wait();
    wait_for("the lease to lapse", Duration::from_secs(10), || {
        (rig.canary_weight() == 0).then_some(())
    });
    let fell_back = killed.elapsed();
    assert!(
        fell_back < Duration::from_secs(3) + Duration::from_millis(1500),
        "fell back after {fell_back:?}"
    );

    // Resume from the journal: the split is re-applied and the run completes.
    let out = canary()
        .current_dir(rig.dir.path())
        .args(["resume", &run_id, "-c", "canary.toml"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "resume:\n{stdout}\n{stderr}");
    assert!(stdout.contains("PROMOTE"), "{stdout}");
    let bundle = rig.bundle(&run_id);
    let (code, report) = verify(&bundle);
    assert_eq!(code, 0, "{report}");
    let diff = std::fs::read_to_string(
        std::fs::read_dir(&bundle)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("CANARY_LB_DIFF_")
            })
            .unwrap(),
    )
    .unwrap();
    // 5 % at the start, 5 % again on resume (from 0 after the lease lapsed), then 100 %.
    assert_eq!(diff.matches("== change").count(), 3, "{diff}");
    assert!(diff.contains("0 % -> 5 %"), "{diff}");
    assert!(diff.contains("-> 100 % (promote)"), "{diff}");
    assert_eq!(rig.canary_weight(), 100);
}

#[test]
fn abort_rolls_back_and_the_cooldown_holds_until_overridden() {
    let rig = rig();
    let mut run = rig.run(&[]);
    rig.wait_running(&mut run, 3_000);
    let abort = canary()
        .current_dir(rig.dir.path())
        .args([
            "abort",
            "-c",
            "canary.toml",
            "--reason",
            "pager storm in eu-west",
        ])
        .output()
        .unwrap();
    assert!(
        abort.status.success(),
        "{}",
        String::from_utf8_lossy(&abort.stderr)
    );
    let (code, stdout, stderr) = finish(run);
    assert_eq!(code, 3, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("aborted by") && stdout.contains("pager storm in eu-west"),
        "{stdout}"
    );
    assert_eq!(rig.canary_weight(), 0);

    // The cooldown refuses the next run before touching anything.
    let (code, _, stderr) = finish(rig.run(&[]));
    assert_eq!(code, 1);
    assert!(stderr.contains("cooldown"), "{stderr}");
    assert_eq!(rig.canary_weight(), 0);

    // Overridden with a reason: the run goes ahead and the evidence records why.
    let mut run = rig.run(&[
        "--override-cooldown",
        "--reason",
        "fix verified in staging (INC-42)",
    ]);
    let status = rig.wait_running(&mut run, 2_000);
    let run_id = status["run_id"].as_str().unwrap().to_owned();
    let abort = canary()
        .current_dir(rig.dir.path())
        .args(["abort", "-c", "canary.toml"])
        .output()
        .unwrap();
    assert!(abort.status.success());
    let (code, _, _) = finish(run);
    assert_eq!(code, 3);
    let decision =
        std::fs::read_to_string(rig.bundle(&run_id).join("CANARY_DECISION_FINAL.txt")).unwrap();
    assert!(
        decision.contains("fix verified in staging (INC-42)"),
        "{decision}"
    );
    assert_eq!(verify(&rig.bundle(&run_id)).0, 0);
}
