//! `canary demo` end to end, as a user runs it: real relay-demo processes, the real proxy
//! process, embedded metrics, the whole runbook on a 60× compressed clock.
//!
//! Healthy → PROMOTE with a bundle that verifies and holds no secret; each fault → the verdict
//! and the guardrail that caught it, with traffic verified back at 0 % canary.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is a test failure

use std::path::{Path, PathBuf};
use std::process::Command;

const JWT_SECRET: &str = "test-jwt-secret-0f3c9a71d2";
const DATA_KEY: &str = "test-data-key-77b1e4c0aa";
const PROXY_TOKEN: &str = "test-proxy-token-5d2e8f";

struct Demo {
    code: i32,
    summary: serde_json::Value,
    stderr: String,
    bundle: PathBuf,
}

fn demo(dir: &Path, args: &[&str]) -> Demo {
    let out = Command::new(env!("CARGO_BIN_EXE_canary"))
        .current_dir(dir)
        .env("RELAY_JWT_SECRET", JWT_SECRET)
        .env("RELAY_DATA_KEY", DATA_KEY)
        .env("CANARY_PROXY_TOKEN", PROXY_TOKEN)
        .env("NO_COLOR", "1")
        .args(["demo", "--output", "json"])
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("demo printed no summary ({e}):\nstdout: {stdout}\nstderr: {stderr}")
    });
    let bundle = dir.join(summary["bundle"].as_str().unwrap());
    Demo {
        code: out.status.code().unwrap(),
        summary,
        stderr,
        bundle,
    }
}

fn verify(bundle: &Path) -> (i32, String) {
    verify_with(bundle, &[])
}

fn verify_with(bundle: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_canary"))
        .env_remove("CANARY_VERIFY_KEY")
        .args(["verify"])
        .args(args)
        .arg(bundle)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Runs `canary ARGS PATH` with a stdout whose reader has already gone; exit code and stderr.
fn with_closed_stdout(args: &[&str], path: &Path) -> (i32, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_canary"))
        .args(args)
        .arg(path)
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn artifact(bundle: &Path, prefix: &str) -> String {
    let path = files(bundle)
        .into_iter()
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix}* in {}", bundle.display()));
    std::fs::read_to_string(path).unwrap()
}

/// The last traffic change in the LB diff: its target percentage and whether it was verified.
fn last_change(bundle: &Path) -> (String, bool) {
    let diff = artifact(bundle, "CANARY_LB_DIFF_");
    let block = diff.rsplit("== change").next().unwrap().to_owned();
    let header = block.lines().next().unwrap().to_owned();
    (
        header,
        block.contains("verified") && !block.contains("NOT VERIFIED"),
    )
}

/// Every time label a person reads in a demo run, with what varies from run to run (values,
/// run ids, wall-clock instants, the decision's few milliseconds past its round) left out:
/// the run's first line, the run's log of checks, the check log (offset, guardrail, threshold
/// and `for`), the decision file's header, each snapshot's offset.
fn runbook_time_labels(run: &Demo) -> String {
    let mut out = String::from("# the run's first line\n");
    let first = run
        .stderr
        .lines()
        .find(|l| l.starts_with("canary: run "))
        .unwrap_or_else(|| panic!("no first line of the run in:\n{}", run.stderr));
    let window = first.split(" — ").find(|p| p.starts_with("window "));
    out.push_str(window.unwrap_or("(no window)"));
    out.push_str("\n\n# the run's log: check at …\n");
    let checks: Vec<&str> = run
        .stderr
        .split("check at ")
        .skip(1)
        .filter_map(|rest| rest.split_once(':').map(|(at, _)| at))
        .collect();
    out.push_str(&checks.join(" "));
    out.push_str("\n\n# CANARY_METRICS_CHECK: offset, instant, guardrail, threshold\n");
    for line in artifact(&run.bundle, "CANARY_METRICS_CHECK_").lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let must = line
            .find("(must")
            .map(|i| &line[i..=i + line[i..].find(')').unwrap()]);
        match must {
            Some(must) => out.push_str(&format!("{} <wall> {} {must}\n", words[0], words[3])),
            None => out.push_str(&format!("{} <wall> {} <comparison>\n", words[0], words[3])),
        }
    }
    out.push_str("\n# CANARY_DECISION_FINAL\n");
    for line in artifact(&run.bundle, "CANARY_DECISION_FINAL.txt").lines() {
        if line.starts_with("clock ") || line.starts_with("window ") {
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
    out.push_str("\n# CANARY_SNAPSHOT_*: label, offset\n");
    for label in ["T15", "T30", "T60"] {
        let snapshot: serde_json::Value =
            serde_json::from_str(&artifact(&run.bundle, &format!("CANARY_SNAPSHOT_{label}_")))
                .unwrap();
        out.push_str(&format!(
            "{label} {} ({})\n",
            snapshot["offset"].as_str().unwrap(),
            snapshot["clock"].as_str().unwrap_or("no clock line")
        ));
    }
    out
}

#[test]
fn a_healthy_demo_promotes_with_a_verified_bundle_and_no_secret_anywhere() {
    let dir = tempfile::tempdir().unwrap();
    let run = demo(dir.path(), &[]);
    assert_eq!(
        run.summary["verdict"], "PROMOTE",
        "{:#}\n{}",
        run.summary, run.stderr
    );
    assert_eq!(run.code, 0);
    assert_eq!(run.summary["verified"], true);
    let (header, verified) = last_change(&run.bundle);
    assert!(header.contains("-> 100 % (promote)"), "{header}");
    assert!(verified);
    // On its 60× compressed clock the demo speaks the runbook's time: checks at T+5m … T+60m
    // with `for 5m`, never the wall clock's T+5s and `for 5s`.
    insta::assert_snapshot!("runbook_time_at_time_scale_60", runbook_time_labels(&run));

    // Every runbook artifact, under the runbook's names.
    let names: Vec<String> = files(&run.bundle)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for prefix in [
        "CANARY_LB_DIFF_",
        "CANARY_DASHBOARDS_",
        "CANARY_ALERTS_",
        "canary_load_burst_",
        "CANARY_LOAD_SUMMARY_",
        "CANARY_METRICS_CHECK_",
        "CANARY_SNAPSHOT_T15_",
        "CANARY_SNAPSHOT_T30_",
        "CANARY_SNAPSHOT_T60_",
        "CANARY_DECISION_FINAL.txt",
        "CANARY_PROMOTION_FINAL.txt",
        "CANARY_ISOLATION_PROBES_",
        "journal.jsonl",
        "manifest.json",
        "manifest.sig",
        "report.html",
    ] {
        assert!(
            names.iter().any(|n| n.starts_with(prefix)),
            "missing {prefix} in {names:?}"
        );
    }
    // The burst: 100 queries from 5 users, as the runbook.
    let summary: serde_json::Value =
        serde_json::from_str(&artifact(&run.bundle, "CANARY_LOAD_SUMMARY_")).unwrap();
    assert_eq!(summary["total_queries"], 100, "{summary:#}");
    assert_eq!(
        artifact(&run.bundle, "canary_load_burst_")
            .lines()
            .filter(|l| l.contains("user_"))
            .count(),
        100
    );
    // Snapshots hold raw query results per arm.
    let t15: serde_json::Value =
        serde_json::from_str(&artifact(&run.bundle, "CANARY_SNAPSHOT_T15_")).unwrap();
    assert!(t15.to_string().contains("\"resultType\""), "{t15:#}");
    // The report reads the burst's transcript and the probe report as canary-load and the
    // controller write them: latency per arm, and the 5 × 5 user matrix, clean.
    let report = artifact(&run.bundle, "report.html");
    assert!(
        report.contains("<tr class=\"arm-baseline\">"),
        "no baseline burst row"
    );
    assert!(report.contains("<polyline class=\"cdf baseline\""));
    let matrix = &report[report.find("<table class=\"matrix\">").unwrap()..];
    let matrix = &matrix[..matrix.find("</table>").unwrap()];
    assert_eq!(
        matrix.matches("<td class=\"clean\"").count(),
        20,
        "{matrix}"
    );
    assert_eq!(matrix.matches("<td class=\"self\"").count(), 5, "{matrix}");
    assert!(matrix.contains("answered: canary "), "{matrix}");

    assert_eq!(verify(&run.bundle).0, 0);
    // Without the publisher's key the signature is only self-consistent, and verify says so;
    // with the key the demo printed, the signer is proven.
    let (_, unpinned) = verify(&run.bundle);
    assert!(unpinned.contains("signer is NOT checked"), "{unpinned}");
    let key = run.summary["public_key"].as_str().unwrap().to_owned();
    let (code, pinned) = verify_with(&run.bundle, &["--key", &key]);
    assert_eq!(code, 0, "{pinned}");
    assert!(pinned.contains("signed by the pinned key"), "{pinned}");
    // A reader that stops early (`canary verify DIR | head -1`) is no error and no panic.
    let (code, stderr) = with_closed_stdout(&["verify", "--key", &key], &run.bundle);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // No secret value anywhere: not in the bundle, not in the demo's logs, not on stderr.
    let signing_key = std::fs::read_to_string(dir.path().join(".canary/demo-signing.key")).unwrap();
    let secrets = [
        JWT_SECRET,
        DATA_KEY,
        PROXY_TOKEN,
        signing_key.trim(),
        "eyJhbGci",
    ];
    for path in files(dir.path()) {
        if path.ends_with("demo-signing.key") || path.extension().is_some_and(|e| e == "sqlite") {
            continue;
        }
        let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
        for s in secrets {
            assert!(
                !text.contains(s),
                "{} contains a secret ({s})",
                path.display()
            );
        }
    }
    for s in secrets {
        assert!(!run.stderr.contains(s), "stderr contains a secret ({s})");
    }

    // A changed byte or a missing artifact fails verification, naming the problem.
    let copy = dir.path().join("tampered");
    std::fs::create_dir(&copy).unwrap();
    for f in files(&run.bundle) {
        std::fs::copy(&f, copy.join(f.file_name().unwrap())).unwrap();
    }
    let decision = copy.join("CANARY_DECISION_FINAL.txt");
    let text = std::fs::read_to_string(&decision).unwrap();
    std::fs::write(&decision, text.replacen("PROMOTE", "PROMOTf", 1)).unwrap();
    let (code, out) = verify(&copy);
    assert_eq!(code, 1);
    assert!(
        out.contains("CANARY_DECISION_FINAL.txt") && out.contains("tampered"),
        "{out}"
    );
    std::fs::write(&decision, text).unwrap();
    assert_eq!(verify(&copy).0, 0);
    let report = copy.join("report.html");
    std::fs::remove_file(&report).unwrap();
    let (code, out) = verify(&copy);
    assert_eq!(code, 1);
    assert!(out.contains("report.html"), "{out}");
}

/// Runs each fault in its own directory and checks the verdict and the guardrail named, then
/// `also` on the fault's bundle.
fn check_faults(cases: &[(&str, &str, &str)], also: fn(&str, &Path)) {
    for (fault, guardrail, kind) in cases {
        let dir = tempfile::tempdir().unwrap();
        let run = demo(dir.path(), &["--fault", fault]);
        assert_eq!(
            run.summary["verdict"], "ROLLBACK",
            "{fault}: {:#}\n{}",
            run.summary, run.stderr
        );
        assert_eq!(run.code, 3, "{fault}");
        let reasons = run.summary["reasons"].to_string();
        assert!(
            reasons.contains(&format!("{guardrail}:")),
            "{fault}: {reasons}"
        );
        assert!(reasons.contains(kind), "{fault}: {reasons}");
        let (header, verified) = last_change(&run.bundle);
        assert!(header.contains("-> 0 % (rollback)"), "{fault}: {header}");
        assert!(verified, "{fault}: rollback not verified");
        assert_eq!(verify(&run.bundle).0, 0, "{fault}: bundle does not verify");
        assert!(artifact(&run.bundle, "CANARY_ROLLBACK_FINAL.txt").contains(guardrail));
        also(fault, &run.bundle);
    }
}

/// After a rollback during the window every checkpoint still has its snapshot: the ones reached
/// with their readings, the others saying why not in runbook time — at least T+60, which a
/// rollback during the window never reaches.
fn every_checkpoint_has_its_snapshot(fault: &str, bundle: &Path) {
    let mut reached = Vec::new();
    for label in ["T15", "T30", "T60"] {
        let s: serde_json::Value =
            serde_json::from_str(&artifact(bundle, &format!("CANARY_SNAPSHOT_{label}_"))).unwrap();
        if s["reached"] == true {
            reached.push(label);
            continue;
        }
        assert_eq!(s["reached"], false, "{fault} {label}: {s:#}");
        let why = s["not_reached"].as_str().unwrap_or_default();
        let due = format!("before T+{}m (ROLLBACK: ", &label[1..]);
        assert!(
            why.starts_with("not reached: rolled back at T+") && why.contains(&due),
            "{fault} {label}: {why}"
        );
        assert_eq!(s["decision"]["verdict"], "ROLLBACK", "{fault} {label}");
    }
    assert!(
        !reached.contains(&"T60"),
        "{fault}: T60 reached: {reached:?}"
    );
}

#[test]
fn guardrail_faults_roll_back_during_the_window_for_the_right_reason() {
    check_faults(
        &[
            ("slow-ttfv", "ttfv_p95", "(rollback)"),
            ("sse-drop", "sse_success", "(rollback)"),
            ("rls-errors", "rls_errors", "(rollback)"),
            ("tenant-leak", "cross_tenant", "(security-rollback)"),
        ],
        every_checkpoint_has_its_snapshot,
    );
}

#[test]
fn gate_faults_block_promotion_at_the_decision() {
    check_faults(
        &[
            ("slow-ann", "ann_p95", "at the decision"),
            ("pool-saturation", "db_pool", "at the decision"),
        ],
        |_, _| {},
    );
}

/// The processes (other than `except`) running the canary binary with `dir` as their working
/// directory: the demo's services.
fn services_in(dir: &Path, except: u32) -> Vec<u32> {
    let exe = std::fs::canonicalize(env!("CARGO_BIN_EXE_canary")).unwrap();
    let dir = std::fs::canonicalize(dir).unwrap();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let path = entry.path();
        if pid != except
            && std::fs::read_link(path.join("cwd")).is_ok_and(|c| c == dir)
            && std::fs::read_link(path.join("exe")).is_ok_and(|e| e == exe)
        {
            pids.push(pid);
        }
    }
    pids
}

fn wait_until<T>(what: &str, within: std::time::Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn a_demo_killed_mid_run_takes_its_services_along_and_resumes_to_a_verified_promote() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("RELAY_JWT_SECRET", JWT_SECRET),
        ("RELAY_DATA_KEY", DATA_KEY),
        ("CANARY_PROXY_TOKEN", PROXY_TOKEN),
        ("NO_COLOR", "1"),
    ];
    let mut demo = Command::new(env!("CARGO_BIN_EXE_canary"));
    demo.current_dir(dir.path())
        .envs(env)
        .arg("demo")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut demo = demo.spawn().unwrap();
    // Wait until the run is a third of the way through its window.
    let control = dir.path().join(".canary/active/relay.json");
    let run_id = wait_until(
        "the demo run to reach T+20",
        std::time::Duration::from_secs(180),
        || {
            let file: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&control).ok()?).ok()?;
            let addr = file["url"]
                .as_str()?
                .trim_start_matches("http://")
                .parse()
                .ok()?;
            let (_, body) = canary_testkit::http_get(addr, "/api/status").ok()?;
            let status: serde_json::Value = serde_json::from_str(&body).ok()?;
            (status["elapsed_ms"].as_i64()? >= 20_000)
                .then(|| status["run_id"].as_str().map(str::to_owned))?
        },
    );
    assert_eq!(
        services_in(dir.path(), demo.id()).len(),
        3,
        "two relay-demo services and the proxy"
    );

    // kill -9 of the controller: its three services stop by themselves.
    demo.kill().unwrap();
    demo.wait().unwrap();
    wait_until(
        "the demo's services to stop",
        std::time::Duration::from_secs(20),
        || services_in(dir.path(), 0).is_empty().then_some(()),
    );

    // `canary resume RUN_ID` starts them again and finishes the run from its journal.
    let out = Command::new(env!("CARGO_BIN_EXE_canary"))
        .current_dir(dir.path())
        .envs(env)
        .args(["resume", &run_id, "--output", "json"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(summary["verdict"], "PROMOTE", "{summary:#}\n{stderr}");
    assert_eq!(summary["verified"], true, "{summary:#}");
    let bundle = dir.path().join(summary["bundle"].as_str().unwrap());
    let key = summary["public_key"].as_str().unwrap();
    let (code, report) = verify_with(&bundle, &["--key", key]);
    assert_eq!(code, 0, "{report}");
    assert!(
        services_in(dir.path(), 0).is_empty(),
        "the resumed services stopped too"
    );
}
