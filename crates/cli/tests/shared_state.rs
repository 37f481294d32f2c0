//! Team scale (DESIGN §13, issue 16): run state in a real PostgreSQL shared by two "machines" —
//! two directories with their own state and evidence directories and one `[state] url` —
//! against real processes (two relay-demo services, the embedded proxy, background load).
//!
//! - Two controllers race for one service: one runs, the other is refused with the holder's
//!   identity (or waits, `--wait`, and checks the cooldown again); another service's lock is
//!   free meanwhile.
//! - A rollback on machine A makes a run on machine B refuse by cooldown; the override is
//!   recorded with who and from where, and `canary history` on B shows A's runs.
//! - `kill -9` of A's controller mid-run: `canary resume` on B (which never had the bundle)
//!   rebuilds it from the store's journal and finishes the run; `canary verify` accepts it. With
//!   `canary run --standby` on B, the takeover happens by itself.
//! - PostgreSQL stopped mid-run and started again: the run completes and the store's journal
//!   equals the bundle's line for line.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is a test failure

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use canary_testkit::postgres::Postgres;
use canary_testkit::wait_for;
use support::{Rig, canary, finish, rig_with, verify};

/// The rig with `[state]` pointing at `pg`, lease 2 s, once its preflight passes (the fresh
/// services' counters have appeared for the baseline).
fn shared_rig(pg: &Postgres) -> Rig {
    let url = pg.url();
    let rig = rig_with(support::embedded_metrics, move |_, _| {
        format!("[state]\nurl = \"{url}\"\nlease = \"2s\"\n")
    });
    wait_for(
        "the rig's preflight to pass",
        Duration::from_secs(60),
        || {
            let out = canary()
                .current_dir(rig.dir.path())
                .args(["preflight", "-c", "canary.toml"])
                .output()
                .unwrap();
            out.status.success().then_some(())
        },
    );
    rig
}

/// Starts `canary run` in the rig (machine A) and waits until it runs `elapsed_ms` into its
/// window. The fresh services' sparse counters can miss one preflight: tried again then.
fn start_run(rig: &Rig, elapsed_ms: i64) -> (std::process::Child, String) {
    for _ in 0..5 {
        let mut run = rig.run(&[]);
        let started = wait_for("the run to start or stop", Duration::from_secs(60), || {
            if let Ok(Some(_)) = run.try_wait() {
                return Some(false);
            }
            rig.status()
                .filter(|s| s["phase"] == "running")
                .map(|_| true)
        });
        if !started {
            let (_, _, stderr) = finish(run);
            assert!(stderr.contains("preflight failed"), "{stderr}");
            continue;
        }
        let status = rig.wait_running(&mut run, elapsed_ms);
        let run_id = status["run_id"].as_str().unwrap().to_owned();
        return (run, run_id);
    }
    panic!("the run's preflight failed five times");
}

/// "Machine B": its own directory beside the rig's, with the same configuration and
/// `.env.canary` (its state and evidence directories are its own: they are relative).
fn machine_b(rig: &Rig) -> PathBuf {
    let b = rig.dir.path().join("machine-b");
    std::fs::create_dir_all(&b).unwrap();
    for file in ["canary.toml", ".env.canary"] {
        std::fs::copy(rig.dir.path().join(file), b.join(file)).unwrap();
    }
    b
}

/// `canary` as machine B runs it: in B's directory, under B's host name.
fn on_b(b: &Path) -> std::process::Command {
    let mut c = canary();
    c.current_dir(b).env("CANARY_HOST", "machine-b");
    c
}

fn canary_in(dir: &Path, args: &[&str]) -> std::process::Output {
    on_b(dir).args(args).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn one_controller_per_service_across_machines_and_the_cooldown_holds_for_all() {
    let pg = Postgres::start();
    let rig = shared_rig(&pg);
    let b = machine_b(&rig);

    let (run, run_id) = start_run(&rig, 2_000);

    // Machine B, same service: refused, naming the run, who and where, touching nothing.
    let out = canary_in(&b, &["run", "-c", "canary.toml"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("relay is being canaried by run {run_id} of ")),
        "{stderr}"
    );
    assert!(stderr.contains("(pid "), "{stderr}");
    assert!(stderr.contains("canary run --wait"), "{stderr}");
    assert!(
        !b.join("evidence").exists(),
        "a refused run writes no bundle"
    );
    assert_eq!(rig.canary_weight(), 5, "the refused run touched no traffic");
    // B's preflight says the same, and another service's lock is free meanwhile.
    let out = canary_in(&b, &["preflight", "-c", "canary.toml", "--output", "json"]);
    let checks: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let lock = checks
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "run lock")
        .unwrap();
    assert_eq!(lock["pass"], false, "{lock}");
    assert!(lock["detail"].as_str().unwrap().contains(&run_id), "{lock}");
    let other = std::fs::read_to_string(b.join("canary.toml"))
        .unwrap()
        .replacen("service = \"relay\"", "service = \"search\"", 1);
    std::fs::write(b.join("search.toml"), other).unwrap();
    let out = canary_in(&b, &["preflight", "-c", "search.toml", "--output", "json"]);
    let checks: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let lock = checks
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "run lock")
        .unwrap();
    assert_eq!(lock["pass"], true, "{lock}");

    // B with --wait waits for A instead of refusing...
    let mut waiting = on_b(&b)
        .args(["run", "-c", "canary.toml", "--wait"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(2);
    let stopped = wait_for("B to keep waiting for 2 s", Duration::from_secs(10), || {
        if waiting.try_wait().unwrap().is_some() {
            return Some(true);
        }
        (Instant::now() >= until).then_some(false)
    });
    if stopped {
        let (code, _, stderr) = finish(waiting);
        panic!("B stopped waiting ({code}):\n{stderr}");
    }
    assert!(!b.join("state/active/relay.json").exists());
    assert_eq!(rig.canary_weight(), 5);
    // ...A rolls back (an operator aborts): B wakes up and is refused by the cooldown A's
    // rollback started, checked again after the wait.
    rig.cli(&["abort", "-c", "canary.toml", "--reason", "bad build"]);
    let (code, _, stderr) = finish(run);
    assert_eq!(code, 3, "{stderr}");
    let (code, _, stderr) = finish(waiting);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("waiting for relay: run {run_id} of ")),
        "{stderr}"
    );
    assert!(stderr.contains("cooldown"), "{stderr}");
    assert!(stderr.contains(&run_id), "{stderr}");
    let out = canary_in(&b, &["run", "-c", "canary.toml"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cooldown"), "{stderr}");

    // Overridden on B: recorded with who and from where; B's history shows A's run too.
    let mut overridden = None;
    for _ in 0..5 {
        let mut child = on_b(&b)
            .args([
                "run",
                "-c",
                "canary.toml",
                "--override-cooldown",
                "--reason",
                "fix verified in staging (INC-42)",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let running = wait_for("B's run to start or stop", Duration::from_secs(60), || {
            if let Ok(Some(_)) = child.try_wait() {
                return Some(false);
            }
            b.join("state/active/relay.json").exists().then_some(true)
        });
        if running {
            overridden = Some(child);
            break;
        }
        let (_, _, stderr) = finish(child);
        assert!(stderr.contains("preflight failed"), "{stderr}");
    }
    let overridden = overridden.expect("B's run passed its preflight within five tries");
    canary_in(&b, &["abort", "-c", "canary.toml", "--reason", "test over"]);
    let (code, _, stderr) = finish(overridden);
    assert_eq!(code, 3, "{stderr}");
    let out = canary_in(&b, &["history", "-c", "canary.toml", "--output", "json"]);
    let history: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let runs = history.as_array().unwrap();
    assert_eq!(runs.len(), 2, "{history:#}");
    let b_run = &runs[0];
    let a_run = runs
        .iter()
        .find(|r| r["run_id"] == run_id.as_str())
        .unwrap();
    assert_eq!(a_run["verdict"], "ROLLBACK");
    let o = &b_run["cooldown_override"];
    assert_eq!(o["reason"], "fix verified in staging (INC-42)", "{b_run:#}");
    assert_eq!(o["overridden_run"], run_id.as_str());
    assert!(o["by"].as_str().is_some_and(|s| !s.is_empty()), "{o}");
    assert!(o["host"].as_str().is_some_and(|s| !s.is_empty()), "{o}");
    assert!(a_run["host"].as_str().is_some(), "{a_run}");
    assert_eq!(b_run["host"], "machine-b");
    // The text view says the same: reasons, the override with who and where, each bundle and
    // the machine it is on.
    let out = canary_in(&b, &["history", "-c", "canary.toml"]);
    let history = text(&out.stdout);
    assert!(history.contains("    - aborted by"), "{history}");
    assert!(
        history.contains(&format!("    cooldown of {run_id} overridden by ")),
        "{history}"
    );
    assert!(
        history.contains("@machine-b: fix verified in staging (INC-42)"),
        "{history}"
    );
    assert!(history.contains("machine-b/evidence/"), "{history}");
    assert!(history.contains(" on machine-b"), "{history}");
}

/// Kills A's controller mid-run; returns its run id.
fn kill_mid_run(rig: &Rig) -> String {
    let (mut run, run_id) = start_run(rig, 8_000);
    run.kill().unwrap();
    let _ = run.wait();
    run_id
}

#[test]
fn a_dead_controllers_run_is_finished_on_another_machine_from_the_stores_journal() {
    let pg = Postgres::start();
    let rig = shared_rig(&pg);
    let b = machine_b(&rig);
    let run_id = kill_mid_run(&rig);

    // Resume on B: it waits for the dead controller's lease to lapse (the store cannot tell
    // dead from slow before that), then takes the run over.
    let out = canary_in(&b, &["resume", &run_id, "-c", "canary.toml"]);
    check_taken_over(&b, &run_id, &out);
    // A's bundle stays as it was left: unsealed.
    assert!(!rig.bundle(&run_id).join("manifest.json").exists());
}

/// B finished A's run: PROMOTE (the canary is healthy, as it would have been uninterrupted),
/// a bundle rebuilt from the store that `canary verify` accepts and whose manifest says so.
fn check_taken_over(b: &Path, run_id: &str, out: &std::process::Output) {
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("PROMOTE"), "{stdout}");
    assert!(
        stderr.contains("rebuilt its bundle from the state store's journal"),
        "{stderr}"
    );
    let bundle = b.join("evidence").join(run_id);
    let (code, report) = verify(&bundle);
    assert_eq!(code, 0, "{report}");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join("manifest.json")).unwrap())
            .unwrap();
    let rebuilt = manifest["rebuilt"].as_str().unwrap();
    assert!(
        rebuilt.contains("from the state store's journal"),
        "{rebuilt}"
    );
}

#[test]
fn a_standby_takes_the_run_over_by_itself_when_its_controller_dies() {
    let pg = Postgres::start();
    let rig = shared_rig(&pg);
    let b = machine_b(&rig);

    let (mut run, run_id) = start_run(&rig, 4_000);
    let standby = on_b(&b)
        .args(["run", "-c", "canary.toml", "--standby"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    run.kill().unwrap();
    let killed = Instant::now();
    let killed_at = now_ms();
    let _ = run.wait();
    let out = standby.wait_with_output().unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        stderr.contains(&format!("standing by for run {run_id}")),
        "{stderr}"
    );
    assert!(stderr.contains("taking the run over"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("PROMOTE"), "{stdout}");
    let bundle = b.join("evidence").join(&run_id);
    let (code, report) = verify(&bundle);
    assert_eq!(code, 0, "{report}");
    assert_eq!(rig.canary_weight(), 100);
    // The takeover's first traffic change, verified on the load balancer: the split back.
    let diff = support::artifact_text(&bundle, "CANARY_LB_DIFF_");
    let verified = diff
        .lines()
        .find_map(|l| l.strip_prefix("verified  "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap();
    let verified_ms = ms_of_day(verified);
    let killed_ms = ms_of_day(&canary_evidence::stamp::rfc3339(killed_at));
    eprintln!(
        "TAKEOVER killed→split verified by the standby: {} ms (lease 2 s); killed→run finished: {:?}",
        verified_ms - killed_ms,
        killed.elapsed()
    );
    assert!(verified_ms > killed_ms, "{diff}");
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Milliseconds since midnight of an RFC 3339 UTC instant (`2026-12-03T05:12:14.135Z`); both
/// instants compared are minutes apart.
fn ms_of_day(rfc3339: &str) -> i64 {
    let time = rfc3339.split('T').nth(1).unwrap().trim_end_matches('Z');
    let mut parts = time.split(':');
    let h: i64 = parts.next().unwrap().parse().unwrap();
    let m: i64 = parts.next().unwrap().parse().unwrap();
    let s: f64 = parts.next().unwrap().parse().unwrap();
    (h * 3600 + m * 60) * 1000 + (s * 1000.0).round() as i64
}

#[test]
fn postgres_down_mid_run_costs_nothing_and_the_store_catches_up_line_for_line() {
    let mut pg = Postgres::start();
    let rig = shared_rig(&pg);
    let (run, run_id) = start_run(&rig, 4_000);
    pg.stop();
    // The run goes on deciding on its local journal: six more seconds of its window pass,
    // evaluated, with the store down (its lease lapses meanwhile; nobody takes it).
    let down_at = rig.status().unwrap()["elapsed_ms"].as_i64().unwrap();
    wait_for(
        "the run to go on without the store",
        Duration::from_secs(30),
        || {
            rig.status()
                .filter(|s| s["phase"] == "running")
                .filter(|s| s["elapsed_ms"].as_i64().unwrap_or(0) >= down_at + 6_000)
        },
    );
    pg.restart();
    let (code, stdout, stderr) = finish(run);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stderr.contains("state store"), "{stderr}");
    let bundle = rig.bundle(&run_id);
    let (code, report) = verify(&bundle);
    assert_eq!(code, 0, "{report}");

    // The store's journal equals the bundle's, line for line.
    let local: Vec<String> = std::fs::read_to_string(bundle.join("journal.jsonl"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let url = pg.url();
    let stored = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = canary_state::Store::postgres(&canary_core::Secret::new(url))
            .await
            .unwrap();
        store.journal(&run_id).await.unwrap()
    });
    assert_eq!(stored.len(), local.len());
    assert!(
        stored == local,
        "the stored journal differs from the bundle's"
    );
}

#[test]
fn a_store_that_cannot_be_used_is_one_clear_error_without_its_password() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let port = canary_testkit::free_port();
    let cases = [
        (
            pg.url_for("canary", "not-the-password", "canary"),
            "not-the-password",
        ),
        (
            pg.url_for("canary", "hunter2-wrong", "nope"),
            "hunter2-wrong",
        ),
        (
            format!("postgres://canary:s3cret-unreachable@127.0.0.1:{port}/canary"),
            "s3cret-unreachable",
        ),
    ];
    let mut messages = Vec::new();
    for (url, password) in cases {
        let out = canary()
            .current_dir(dir.path())
            .env("CANARY_STATE_URL", &url)
            .args(["history", "--state-dir", "state"])
            .output()
            .unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(!stderr.contains(password), "the password leaked: {stderr}");
        assert!(!text(&out.stdout).contains(password));
        assert!(
            stderr.contains("***"),
            "the URL is shown redacted: {stderr}"
        );
        messages.push(stderr);
    }
    // Each failure says which it is: credentials, database, reachability.
    assert!(
        messages[0].to_lowercase().contains("password"),
        "{}",
        messages[0]
    );
    assert!(messages[1].contains("nope"), "{}", messages[1]);
    assert!(
        messages[2].to_lowercase().contains("reach") || messages[2].contains("refused"),
        "{}",
        messages[2]
    );
    // Without CANARY_STATE_URL the same command uses the embedded store.
    let out = canary()
        .current_dir(dir.path())
        .env_remove("CANARY_STATE_URL")
        .args(["history", "--state-dir", "state"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("history.sqlite"),
        "{}",
        text(&out.stdout)
    );
}
