//! The `relay-demo` binary: `tokens`, `markers`, argument errors, and `serve` stopping cleanly
//! on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use relay_demo::auth::Authenticator;

const BIN: &str = env!("CARGO_BIN_EXE_relay-demo");

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn tokens_prints_one_runbook_variable_per_user_signed_with_the_env_secret() {
    let out = Command::new(BIN)
        .arg("tokens")
        .env("RELAY_JWT_SECRET", "cli-secret")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let auth = Authenticator::new("cli-secret");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 5);
    for (n, line) in lines.iter().enumerate() {
        let (name, token) = line.split_once('=').unwrap();
        assert_eq!(name, format!("API_TOKEN_USER_{}", n + 1));
        let principal = auth.authenticate(Some(&format!("Bearer {token}"))).unwrap();
        assert_eq!(principal.user_id, format!("user_{}", n + 1));
    }
    assert!(
        String::from_utf8_lossy(&out.stderr).is_empty(),
        "no warning when the secret is set"
    );
}

#[test]
fn tokens_warns_when_falling_back_to_the_development_secret() {
    let out = Command::new(BIN)
        .arg("tokens")
        .env_remove("RELAY_JWT_SECRET")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("RELAY_JWT_SECRET"));
    let first = String::from_utf8(out.stdout).unwrap();
    let token = first
        .lines()
        .next()
        .unwrap()
        .split_once('=')
        .unwrap()
        .1
        .to_owned();
    let auth = Authenticator::new(relay_demo::DEVELOPMENT_JWT_SECRET);
    assert!(auth.authenticate(Some(&format!("Bearer {token}"))).is_ok());
}

#[test]
fn markers_prints_each_users_marker() {
    let out = Command::new(BIN).arg("markers").output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let expected: Vec<String> = relay_demo::seed_markers()
        .into_iter()
        .map(|(u, m)| format!("{u} {m}"))
        .collect();
    assert_eq!(stdout.lines().collect::<Vec<_>>(), expected);
}

#[test]
fn a_bad_fault_is_rejected_with_the_valid_kinds() {
    let out = Command::new(BIN)
        .args(["serve", "--fault", "slow-db"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("slow-ttfv") && stderr.contains("pool-saturation"),
        "{stderr}"
    );
}

#[test]
fn serve_answers_and_stops_cleanly_on_sigterm() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = KillOnDrop(
        Command::new(BIN)
            .args([
                "serve",
                "--seed",
                "--seed-per-user",
                "20",
                "--version-label",
                "r0.5",
            ])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--fault", "sse-drop:0.01@90s"])
            .env("RELAY_JWT_SECRET", "cli-secret")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = BufReader::new(child.0.stderr.take().unwrap());
    let mut lines = stderr.lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let line = lines.next().expect("serve logs until it listens").unwrap();
        if line.contains("relay-demo listening") {
            assert!(line.contains("r0.5"), "{line}");
            assert!(
                line.contains(relay_demo::DEFAULT_PROFILE.name()),
                "the default profile: {line}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "serve did not start");
    }
    let health: serde_json::Value = http_get::json(&format!("http://127.0.0.1:{port}/healthz"));
    assert_eq!(health["rows"], 100);
    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.0.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
    assert!(lines.any(|l| l.unwrap().contains("relay-demo stopped")));
}

mod http_get {
    /// A tiny blocking GET on a private runtime (the test itself is synchronous).
    pub fn json(url: &str) -> serde_json::Value {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            super::support::client()
                .get(url)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap()
        })
    }
}

#[test]
fn serve_timeouts_default_to_the_library_defaults_and_can_be_shortened() {
    use clap::Parser;
    let serve = |args: &[&str]| match relay_demo::Cli::try_parse_from(
        ["relay-demo", "serve"].iter().chain(args),
    ) {
        Ok(relay_demo::Cli {
            command: relay_demo::Command::Serve(args),
        }) => Ok(args.to_options()),
        Ok(other) => panic!("{other:?}"),
        Err(e) => Err(e.to_string()),
    };
    let defaults = serve(&[]).unwrap();
    assert_eq!(defaults.header_timeout, relay_demo::DEFAULT_HEADER_TIMEOUT);
    assert_eq!(defaults.body_timeout, relay_demo::DEFAULT_BODY_TIMEOUT);
    let short = serve(&["--header-timeout", "300ms", "--body-timeout", "1.5s"]).unwrap();
    assert_eq!(short.header_timeout, Duration::from_millis(300));
    assert_eq!(short.body_timeout, Duration::from_millis(1500));
    let zero = serve(&["--body-timeout", "0s"]).unwrap_err();
    assert!(zero.contains("above zero"), "{zero}");
}

#[test]
fn serve_runs_the_default_profile_unless_told() {
    use clap::Parser;
    use relay_demo::Profile;
    let serve = |args: &[&str]| match relay_demo::Cli::try_parse_from(
        ["relay-demo", "serve"].iter().chain(args),
    ) {
        Ok(relay_demo::Cli {
            command: relay_demo::Command::Serve(args),
        }) => args.to_options(),
        other => panic!("{other:?}"),
    };
    let default = serve(&[]);
    let profile = relay_demo::DEFAULT_PROFILE;
    assert_eq!(default.profile, profile);
    assert_eq!(default.pool_size, profile.pool_size());
    assert_eq!(default.rerank_budget, profile.rerank_budget());
    let realistic = serve(&["--profile", "realistic"]);
    assert_eq!(realistic.profile, Profile::Realistic);
    assert_eq!(
        (realistic.pool_size, realistic.rerank_budget),
        (8, Duration::from_millis(250))
    );
    let fast = serve(&["--profile", "fast"]);
    assert_eq!(fast.profile, Profile::Fast);
    assert_eq!(
        (fast.pool_size, fast.rerank_budget),
        (16, Duration::from_millis(25))
    );
    // An explicit size or budget wins over the profile's.
    let sized = serve(&["--pool-size", "32", "--rerank-budget", "40ms"]);
    assert_eq!(
        (sized.pool_size, sized.rerank_budget),
        (32, Duration::from_millis(40))
    );
    assert!(relay_demo::Cli::try_parse_from(["relay-demo", "serve", "--profile", "slow"]).is_err());
}
