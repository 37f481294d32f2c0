//! The `command` router with real shell commands: a script that keeps the split in a state
//! file, a verify command matched by a regex, timeouts, stderr in errors, secrets scrubbed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod traffic_support;

use std::time::{Duration, Instant};

use canary_providers::traffic::{
    CommandConfig, CommandRouter, RetryPolicy, Split, Step, TrafficError, TrafficRouter,
    set_verified, verify,
};
use traffic_support::TempDir;

const SECRET: &str = "rly_s3cr3t_token_value";

fn config(dir: &TempDir, set: &str) -> CommandConfig {
    let state = dir.join("split");
    CommandConfig {
        set_template: set.replace("STATE", &state.display().to_string()),
        verify_template: format!("cat {}", state.display()),
        verify_regex: r"main:(?P<canary>\d+),r0\.5-hotfix:(?P<baseline>\d+)".into(),
        timeout: Duration::from_secs(5),
        env: vec![("RAILWAY_TOKEN".into(), SECRET.into())],
    }
}

fn quick() -> RetryPolicy {
    RetryPolicy {
        attempts: 2,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(10),
    }
}

const RAILWAY_LIKE: &str = r#"test -n "$RAILWAY_TOKEN" && printf 'service relay\ntraffic main:%s,r0.5-hotfix:%s\n' {canary} {baseline} > STATE"#;

#[tokio::test]
async fn split_is_set_and_read_back_through_shell_commands() {
    let dir = TempDir::new("command");
    let router = CommandRouter::new(config(&dir, RAILWAY_LIKE)).unwrap();
    for pct in [5u8, 50, 100, 0] {
        let split = set_verified(&router, pct, &quick()).await.unwrap();
        assert_eq!(split, Split::with_canary(pct).unwrap());
        let state = std::fs::read_to_string(dir.join("split")).unwrap();
        assert!(
            state.contains(&format!("main:{pct},r0.5-hotfix:{}", 100 - pct)),
            "{state}"
        );
    }
    let text = router.describe().await.unwrap();
    assert!(
        text.contains("split: canary 0 % / baseline 100 %"),
        "{text}"
    );
    assert!(text.contains("traffic main:0,r0.5-hotfix:100"), "{text}");

    // Someone changes the split by hand.
    std::fs::write(dir.join("split"), "traffic main:20,r0.5-hotfix:80\n").unwrap();
    match verify(&router, 0).await.unwrap_err() {
        TrafficError::Drift { actual, .. } => assert_eq!(actual.canary, 20),
        other => panic!("expected drift, got {other}"),
    }
}

#[tokio::test]
async fn a_failing_command_reports_its_stderr_without_secrets() {
    let dir = TempDir::new("command");
    let set = r#"echo "railway: token $RAILWAY_TOKEN is not authorised for relay" >&2; exit 3 # {canary}"#;
    let router = CommandRouter::new(config(&dir, set)).unwrap();
    let err = set_verified(&router, 5, &quick()).await.unwrap_err();
    assert_eq!(err.step(), Some(Step::Set));
    let message = err.to_string();
    assert!(
        message.contains("failed at step `set` after 2 attempt(s)"),
        "{message}"
    );
    assert!(message.contains("exit status: 3"), "{message}");
    assert!(
        message.contains("railway: token *** is not authorised"),
        "{message}"
    );
    assert!(!message.contains(SECRET), "{message}");
    assert!(!format!("{err:?}").contains(SECRET));
    assert!(!format!("{router:?}").contains(SECRET));
}

#[tokio::test]
async fn a_set_that_does_not_take_effect_fails_verification() {
    let dir = TempDir::new("command");
    // The CLI "succeeds" but the platform keeps the old split.
    let set = "printf 'traffic main:0,r0.5-hotfix:100\\n' > STATE # {canary}";
    let router = CommandRouter::new(config(&dir, set)).unwrap();
    let err = set_verified(&router, 5, &quick()).await.unwrap_err();
    assert_eq!(err.step(), Some(Step::Verify), "{err}");
    assert!(
        err.to_string()
            .contains("reports canary 0 % / baseline 100 %, expected canary 5 %"),
        "{err}"
    );

    // Output the regex cannot read is a read-back failure that says what it saw.
    std::fs::write(dir.join("split"), "Error: service not found\n").unwrap();
    let err = router.get().await.unwrap_err();
    assert!(matches!(err, TrafficError::Unreadable { .. }), "{err}");
    assert!(
        err.to_string().contains("Error: service not found"),
        "{err}"
    );
}

#[tokio::test]
async fn a_hanging_command_is_killed_at_the_timeout() {
    let dir = TempDir::new("command");
    let pid_file = dir.join("sleeper.pid");
    // The command starts a child and waits for it: killing only `sh` would leave it behind.
    let set = format!(
        "sleep 30 & echo $! > {}; wait # {{canary}}",
        pid_file.display()
    );
    let mut cfg = config(&dir, &set);
    cfg.timeout = Duration::from_millis(300);
    let router = CommandRouter::new(cfg).unwrap();
    let started = Instant::now();
    let err = router.set(5).await.unwrap_err();
    assert!(matches!(err, TrafficError::Timeout { .. }), "{err}");
    assert!(
        err.to_string().contains("did not finish within 300 ms"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The whole process group is gone, the `sleep` included.
    let pid = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .to_owned();
    traffic_support::wait_until("the sleeper to be killed", Duration::from_secs(5), || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Gone, or a zombie waiting for its (dead) parent's reaper.
        let gone = stat.is_empty()
            || stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
        async move { gone }
    })
    .await;
}

/// (name, change to a good configuration, text the error must contain)
type Case = (&'static str, fn(&mut CommandConfig), &'static str);

#[test]
fn configuration_mistakes_are_refused_with_the_fix() {
    let dir = TempDir::new("command");
    let cases: [Case; 3] = [
        (
            "no placeholders",
            |c: &mut CommandConfig| c.set_template = "true".into(),
            "neither {canary}",
        ),
        (
            "bad regex",
            |c: &mut CommandConfig| c.verify_regex = "(".into(),
            "does not compile",
        ),
        (
            "no canary group",
            |c: &mut CommandConfig| c.verify_regex = r"(\d+)".into(),
            "named group `canary`",
        ),
    ];
    for (name, mutate, expected) in cases {
        let mut cfg = config(&dir, RAILWAY_LIKE);
        mutate(&mut cfg);
        let err = CommandRouter::new(cfg).unwrap_err().to_string();
        assert!(err.contains(expected), "{name}: {err}");
    }
}
