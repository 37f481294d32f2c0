//! What an adversarial SRE tried against the release binary, as they tried it: a forged pin
//! header on `canary proxy`, and readers that close stdout early.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is a test failure

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use canary_testkit::{Process, free_port, http_get, http_request, wait_for};

const PROXY_TOKEN: &str = "hardening-proxy-admin-token";

fn canary() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_canary"));
    c.env("NO_COLOR", "1");
    c
}

/// A static HTTP server (Python's http.server) whose `/x` answers `name`.
fn static_server(dir: &Path, name: &str) -> (Process, String) {
    let root = dir.join(name);
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("x"), name).unwrap();
    std::fs::write(root.join("healthz"), "ok").unwrap();
    let port = free_port();
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "http.server", "--bind", "127.0.0.1", "--directory"])
        .arg(&root)
        .arg(port.to_string());
    let process = Process::spawn(name, dir, cmd);
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_for(name, Duration::from_secs(30), || {
        matches!(http_get(addr, "/x"), Ok((200, _))).then_some(())
    });
    (process, format!("http://127.0.0.1:{port}"))
}

#[test]
fn a_forged_pin_header_does_not_reach_the_canary_of_canary_proxy() {
    // The repro: `canary proxy ... --weight 0`, then `curl -H 'X-Canary: canary'` → canary.
    let dir = tempfile::tempdir().unwrap();
    let (_b, baseline) = static_server(dir.path(), "baseline");
    let (_c, canary_url) = static_server(dir.path(), "canary");
    let ready = dir.path().join("proxy.ready");
    let mut cmd = canary();
    cmd.env("CANARY_PROXY_TOKEN", PROXY_TOKEN)
        .args(["proxy", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .args(["--threads", "1", "--weight", "0", "--baseline", &baseline])
        .args(["--canary", &canary_url, "--ready-file"])
        .arg(&ready);
    let _proxy = Process::spawn("proxy", dir.path(), cmd);
    let v: serde_json::Value = wait_for("the proxy", Duration::from_secs(30), || {
        serde_json::from_str(&std::fs::read_to_string(&ready).ok()?).ok()
    });
    let data = v["data"].as_str().unwrap().parse().unwrap();
    let admin = v["admin"].as_str().unwrap().parse().unwrap();

    for _ in 0..20 {
        let (status, body) =
            http_request(data, "GET", "/x", &[("X-Canary", "canary")], b"").unwrap();
        assert_eq!((status, body.as_str()), (200, "baseline"));
    }
    // The pin token is for admin-token holders; with it the pin is honoured.
    let auth = format!("Bearer {PROXY_TOKEN}");
    let (status, pin) =
        http_request(admin, "GET", "/pin", &[("Authorization", &auth)], b"").unwrap();
    assert_eq!(status, 200, "{pin}");
    let pin: serde_json::Value = serde_json::from_str(&pin).unwrap();
    let token = pin["token"].as_str().unwrap();
    let (status, body) = http_request(
        data,
        "GET",
        "/x",
        &[("X-Canary", "canary"), ("X-Canary-Token", token)],
        b"",
    )
    .unwrap();
    assert_eq!((status, body.as_str()), (200, "canary"));
    let (status, _) = http_request(admin, "GET", "/pin", &[], b"").unwrap();
    assert_eq!(status, 401, "the pin token is not for anyone");
}

/// Runs `canary ARGS` in `dir` with a stdout whose reader has already gone.
fn with_closed_stdout(dir: &Path, args: &[&str]) -> (i32, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = canary()
        .current_dir(dir)
        .args(args)
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_reader_that_stops_early_is_no_error() {
    // `canary verify DIR | head -1` printed a backtrace and exited 101.
    let dir = tempfile::tempdir().unwrap();
    assert!(
        canary()
            .current_dir(dir.path())
            .arg("init")
            .status()
            .unwrap()
            .success()
    );
    std::fs::write(
        dir.path().join("history.om"),
        "# TYPE up gauge\nup{job=\"a\"} 1 1000\nup{job=\"b\"} 0 1000\n# EOF\n",
    )
    .unwrap();
    let cases: [&[&str]; 6] = [
        &["init", "--out", "-"],
        &["keygen"],
        &["validate", "--no-env", "-c", "canary.toml"],
        &["query", "--data", "history.om", "--at", "1", "up"],
        &["relay-demo", "markers"],
        &["render", "alertmanager", "--help"],
    ];
    for args in cases {
        let (code, stderr) = with_closed_stdout(dir.path(), args);
        assert_eq!(code, 0, "{args:?}: {stderr}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("error"),
            "{args:?}: {stderr}"
        );
    }
}
