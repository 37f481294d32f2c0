//! The live page and the report in real headless Chromium, during and after `canary demo` run as
//! a user runs it (the real binary, its real services, the 60× compressed runbook).
//!
//! Screenshots go to `canary_testkit::browser::artifacts_dir()` (`$CANARY_TEST_ARTIFACTS`, else
//! `target/test-artifacts/`) for a reviewer to look at; they are not compared.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is a test failure

mod support;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use canary_testkit::browser::Browser;
use canary_testkit::{http_get, http_request, wait_for};
use serde_json::{Value, json};

const PROXY_TOKEN: &str = "browser-test-proxy-token-3f9a";

/// The terminal line that carries the live page's address.
const LIVE_MARKER: &str = "live dashboard ";
/// The terminal line that carries the one-time operator link.
const LINK_MARKER: &str = "operator link (works once): ";

/// A `canary demo` running in a temporary directory; its stderr is read line by line as it
/// comes (the live page's address and the operator link are printed there). Killed on drop.
struct Demo {
    child: Child,
    stderr: Arc<Mutex<String>>,
    stdout: Option<std::thread::JoinHandle<String>>,
    dir: tempfile::TempDir,
}

impl Demo {
    fn start(args: &[&str]) -> Demo {
        let dir = tempfile::tempdir().unwrap();
        let mut child = support::canary()
            .current_dir(dir.path())
            .env("CANARY_PROXY_TOKEN", PROXY_TOKEN)
            .args(["demo", "--output", "json"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let lines = BufReader::new(child.stderr.take().unwrap());
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in lines.lines().map_while(Result::ok) {
                let mut text = sink.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        });
        let mut out = child.stdout.take().unwrap();
        let stdout = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = out.read_to_string(&mut text);
            text
        });
        Demo {
            child,
            stderr,
            stdout: Some(stdout),
            dir,
        }
    }

    fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The rest of the first stderr line containing `marker`, up to the next space; waits for
    /// it (the demo starts its services and runs its preflight first).
    fn printed_after(&mut self, marker: &str) -> String {
        wait_for(
            &format!("the demo to print {marker:?}"),
            Duration::from_secs(240),
            || {
                if let Ok(Some(status)) = self.child.try_wait() {
                    panic!("the demo exited ({status}) early:\n{}", self.stderr());
                }
                let text = self.stderr();
                let line = text.lines().find(|l| l.contains(marker))?;
                let rest = &line[line.find(marker)? + marker.len()..];
                Some(rest.split_whitespace().next()?.to_owned())
            },
        )
    }

    /// The live page's address (`http://127.0.0.1:PORT/`).
    fn live_url(&mut self) -> String {
        self.printed_after(LIVE_MARKER)
    }

    fn control_addr(&mut self) -> SocketAddr {
        let url = self.live_url();
        url.trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    /// `GET /api/status` while the controller serves it.
    fn status(&mut self) -> Option<Value> {
        let (code, body) = http_get(self.control_addr(), "/api/status").ok()?;
        (code == 200).then(|| serde_json::from_str(&body).ok())?
    }

    /// Waits for the demo to end: its exit code, its JSON summary and its bundle (which lives
    /// as long as the `Demo`).
    fn finish(&mut self) -> (i32, Value, PathBuf) {
        let status = wait_for("the demo to end", Duration::from_secs(300), || {
            self.child.try_wait().unwrap()
        });
        let stdout = self.stdout.take().unwrap().join().unwrap();
        let summary: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "the demo printed no summary ({e}):\n{stdout}\n{}",
                self.stderr()
            )
        });
        let bundle = self.dir.path().join(summary["bundle"].as_str().unwrap());
        (status.code().unwrap_or(-1), summary, bundle)
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Each `[data-guardrail]` on the page: its name, `data-points`, and the length of the `d`
/// of its canary and baseline paths — read in one script, so from one rendering.
const CHARTS: &str = r#"
return Array.from(document.querySelectorAll('[data-guardrail]')).map(g => {
  const d = sel => { const p = g.querySelector('svg ' + sel); return p ? (p.getAttribute('d') || '').trim().length : -1; };
  return {
    name: g.getAttribute('data-guardrail'),
    points: Number(g.getAttribute('data-points') || 0),
    canary: d('path.canary'),
    baseline: d('path.baseline'),
    svgs: g.querySelectorAll('svg').length,
  };
});"#;

fn updates(browser: &Browser) -> u64 {
    browser
        .attribute("body", "data-updates")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn text(browser: &Browser, css: &str) -> String {
    browser
        .text(css)
        .unwrap_or_else(|| panic!("no {css} on the page"))
}

/// The console's errors, as lines for an assertion message.
fn console_errors(browser: &Browser) -> Vec<String> {
    browser
        .console_errors()
        .into_iter()
        .map(|e| format!("{} {}: {}", e.level, e.source, e.message))
        .collect()
}

/// Chromium reports every non-2xx answer to a `fetch` as a console error: the refusals the
/// abort test provokes on purpose (`api/abort`, `api/grant` answered 401) are not the page's.
fn is_provoked_refusal(line: &str) -> bool {
    line.contains(" network: ")
        && (line.contains("/api/abort ") || line.contains("/api/grant "))
        && line.contains("status of 401")
}

fn artifact(bundle: &Path, prefix: &str) -> String {
    support::artifact_text(bundle, prefix)
}

#[test]
fn the_live_page_shows_a_healthy_demo_live_to_its_verdict_and_the_report_renders() {
    let mut demo = Demo::start(&[]);
    let live = demo.live_url();
    let browser = Browser::start();
    browser.goto(&live);

    // The plan's guardrails, as the controller publishes them.
    let status = wait_for("the run's status", Duration::from_secs(60), || {
        demo.status()
    });
    let guardrails: Vec<String> = status["guardrails"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(guardrails.len() >= 4, "{status:#}");

    // Every guardrail's chart, drawn with data for both arms.
    let charts = browser.wait_until(
        "every guardrail's chart with data",
        Duration::from_secs(120),
        || {
            let charts = browser.script(CHARTS, &[]);
            let charts = charts.as_array()?;
            (charts.len() == guardrails.len()
                && charts.iter().all(|c| {
                    c["points"].as_u64() > Some(0)
                        && c["canary"].as_i64() > Some(0)
                        && c["baseline"].as_i64() > Some(0)
                        && c["svgs"] == 1
                }))
            .then(|| charts.clone())
        },
    );
    let mut names: Vec<&str> = charts.iter().map(|c| c["name"].as_str().unwrap()).collect();
    names.sort_unstable();
    let mut expected: Vec<&str> = guardrails.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(names, expected);
    for name in &guardrails {
        let css = format!("[data-guardrail=\"{name}\"] svg line.threshold");
        assert!(browser.find(&css).is_some(), "no threshold line for {name}");
    }

    // Pushed updates, without a reload: a marker set in the page survives while the update
    // count grows and the runbook clock moves.
    browser.script("window.__probe = 1", &[]);
    let (before, clock) = (updates(&browser), text(&browser, "#clock"));
    assert!(clock.starts_with("T+"), "#clock {clock:?}");
    browser.wait_until(
        "pushed updates and the clock moving",
        Duration::from_secs(30),
        || (updates(&browser) >= before + 2 && text(&browser, "#clock") != clock).then_some(()),
    );
    assert_eq!(browser.script("return window.__probe", &[]), json!(1));
    assert_eq!(text(&browser, "#connection"), "live");
    assert_eq!(text(&browser, "#verdict"), "", "a verdict mid-run");
    assert!(!text(&browser, "#phase").is_empty());
    assert!(
        browser.find_all("#timeline [data-phase].current").len() == 1,
        "one current phase in the timeline"
    );

    // Mid-run, a third into the window: a screenshot for people.
    wait_for("a third of the window", Duration::from_secs(120), || {
        let s = demo.status()?;
        (s["elapsed_ms"].as_i64()? * 3 >= s["window_ms"].as_i64()?).then_some(())
    });
    let seen = updates(&browser);
    browser.wait_until("the page to catch up", Duration::from_secs(10), || {
        (updates(&browser) > seen).then_some(())
    });
    let shot = browser.screenshot_artifact("live-mid-run.png");
    eprintln!("screenshot: {}", shot.display());

    // The verdict, on the page: the controller's API outlives the decision only until open
    // pages have the last status and the stream's end (at most about 2 s), so this may read the
    // last state the page rendered after the controller went.
    wait_for_verdict(&browser, &mut demo, "PROMOTE", |browser| {
        browser.attribute("#split", "data-canary-weight").as_deref() == Some("100")
    });
    let shot = browser.screenshot_artifact("live-decided.png");
    eprintln!("screenshot: {}", shot.display());
    let stderr = demo.stderr();
    let (code, summary, bundle) = demo.finish();
    assert_eq!(summary["verdict"], "PROMOTE", "{summary:#}\n{stderr}");
    assert_eq!(code, 0);
    // The page stays on its last state once the controller is gone, and said nothing wrong.
    assert_eq!(text(&browser, "#verdict"), "PROMOTE");
    // The events tell the run's story in the runbook's time: the burst, every check, the
    // snapshots, the decision — each with its severity.
    let events = browser.script(
        r#"return Array.from(document.querySelectorAll('#events li[data-severity]'))
             .map(li => li.getAttribute('data-severity') + ' ' + li.textContent);"#,
        &[],
    );
    let events: Vec<String> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_owned())
        .collect();
    for expected in [
        "load burst: ",
        "check at T+5m: ",
        "check at T+60m",
        "T15 snapshot written",
        "T60 snapshot written",
        "PROMOTE",
    ] {
        assert!(
            events.iter().any(|e| e.contains(expected)),
            "no {expected:?} among the page's events: {events:#?}"
        );
    }
    // (Asserted after the report, so that one run shows both.)
    let live_errors = console_errors(&browser);

    // The bundle's report, opened from disk.
    let report = std::fs::canonicalize(bundle.join("report.html")).unwrap();
    browser.goto(&format!("file://{}", report.display()));
    assert_eq!(text(&browser, "header.verdict h1"), "PROMOTE");
    let drawn = browser.script(
        r#"return Array.from(document.querySelectorAll('figure')).map(f => ({
             caption: (f.querySelector('figcaption') || {}).textContent || '',
             width: f.querySelector('svg') ? f.querySelector('svg').getBoundingClientRect().width : 0,
           }));"#,
        &[],
    );
    for name in &guardrails {
        let figure = drawn
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["caption"].as_str().unwrap().starts_with(name.as_str()))
            .unwrap_or_else(|| panic!("no chart for {name} in the report: {drawn:#}"));
        assert!(figure["width"].as_f64() > Some(100.0), "{name}: {figure}");
    }
    let shot = browser.screenshot_artifact("report.png");
    eprintln!("screenshot: {}", shot.display());
    let errors: Vec<String> = console_errors(&browser)
        .into_iter()
        .filter(|e| !live_errors.contains(e))
        .collect();
    assert!(errors.is_empty(), "report console errors: {errors:#?}");
    assert!(
        live_errors.is_empty(),
        "live page console errors: {live_errors:#?}"
    );
}

/// Waits until the page shows `verdict` and `also` holds. The page keeps its last state once
/// the controller has gone (its API stops once open pages had the last status), so a
/// controller that exits while the page does not show it fails soon after, with what the
/// page shows.
fn wait_for_verdict(
    browser: &Browser,
    demo: &mut Demo,
    verdict: &str,
    also: impl Fn(&Browser) -> bool,
) {
    // Frames the controller sent just before it exited still reach the page: a moment's grace.
    let mut gone_since = None;
    browser.wait_until(
        &format!("{verdict} on the live page"),
        Duration::from_secs(240),
        || {
            if text(browser, "#verdict") == verdict && also(browser) {
                return Some(());
            }
            if demo.exited() {
                let since = *gone_since.get_or_insert_with(std::time::Instant::now);
                assert!(
                    since.elapsed() < Duration::from_secs(3),
                    "the controller exited and the live page does not show {verdict}: #verdict {:?}, #clock {:?}, #split {:?}, #connection {:?}",
                    text(browser, "#verdict"),
                    text(browser, "#clock"),
                    browser.attribute("#split", "data-canary-weight"),
                    text(browser, "#connection"),
                );
            }
            None
        },
    );
}

/// Clicks `#abort` with `reason` typed in and returns `#action-result` once the server answered.
fn abort_from_page(browser: &Browser, reason: &str) -> String {
    browser.script(
        "document.getElementById('action-result').textContent = ''",
        &[],
    );
    browser.type_into("#abort-reason", reason);
    browser.click("#abort");
    browser.wait_until("the answer to the abort", Duration::from_secs(20), || {
        let answer = text(browser, "#action-result");
        (answer.contains("refused") || answer.contains("accepted")).then_some(answer)
    })
}

/// Whether the page's own `POST api/grant` has had its answer.
const GRANT_ANSWERED: &str = r#"
return performance.getEntriesByType('resource')
  .some(e => e.name.endsWith('/api/grant') && e.responseEnd > 0);"#;

#[test]
fn the_page_aborts_only_with_the_operator_link_which_works_once_and_the_run_rolls_back_to_zero() {
    let mut demo = Demo::start(&[]);
    let live = demo.live_url();
    let link = demo.printed_after(LINK_MARKER);
    assert!(
        link.starts_with(&live) && link.contains("#grant="),
        "{link}"
    );
    let code = link.split("#grant=").nth(1).unwrap().to_owned();
    let browser = Browser::start();
    wait_for("the run to start", Duration::from_secs(60), || {
        (demo.status()?["phase"] == "running").then_some(())
    });

    // Without the grant: refused, and the run goes on.
    browser.goto(&live);
    let answer = abort_from_page(&browser, "no credential");
    assert!(answer.contains("refused"), "#action-result {answer:?}");
    let seen = updates(&browser);
    browser.wait_until("three more updates", Duration::from_secs(30), || {
        (updates(&browser) >= seen + 3).then_some(())
    });
    assert_eq!(text(&browser, "#verdict"), "");
    assert_eq!(demo.status().unwrap()["phase"], "running");

    // The operator link, opened as a new page (a link differing only in its fragment would
    // not load the page again): the code leaves the address bar and becomes a session cookie.
    browser.goto("about:blank");
    browser.goto(&link);
    let session = browser.wait_until(
        "the operator session cookie",
        Duration::from_secs(20),
        || browser.cookie("canary_operator"),
    );
    assert_eq!(session["httpOnly"], true, "{session}");
    assert!(!browser.url().contains(&code), "{}", browser.url());

    // The link a second time: refused, by the page (no session) and by the server.
    browser.delete_cookies();
    browser.goto("about:blank");
    browser.goto(&link);
    browser.wait_until("the grant's answer", Duration::from_secs(20), || {
        (browser.script(GRANT_ANSWERED, &[]) == json!(true)).then_some(())
    });
    assert!(browser.cookie("canary_operator").is_none());
    let answer = abort_from_page(&browser, "a used link");
    assert!(answer.contains("refused"), "#action-result {answer:?}");
    let (status, body) = http_request(
        demo.control_addr(),
        "POST",
        "/api/grant",
        &[("Content-Type", "application/json")],
        json!({ "code": code }).to_string().as_bytes(),
    )
    .unwrap();
    assert!((400..500).contains(&status), "{status} {body}");
    assert_eq!(demo.status().unwrap()["phase"], "running");

    // With the session from the first use: accepted, and the run rolls back to 0 %.
    browser.add_cookie(&session);
    let answer = abort_from_page(&browser, "browser test abort");
    assert!(answer.contains("accepted"), "#action-result {answer:?}");
    wait_for_verdict(&browser, &mut demo, "ROLLBACK", |browser| {
        browser.attribute("#split", "data-canary-weight").as_deref() == Some("0")
    });
    let shot = browser.screenshot_artifact("live-abort.png");
    eprintln!("screenshot: {}", shot.display());
    let stderr = demo.stderr();
    let (exit, summary, bundle) = demo.finish();
    assert_eq!(summary["verdict"], "ROLLBACK", "{summary:#}\n{stderr}");
    assert_eq!(exit, 3);
    let reasons = summary["reasons"].to_string();
    assert!(reasons.contains("browser test abort"), "{reasons}");

    // The bundle says so: the decision's reason, and the last traffic change verified at 0 %.
    let decision = artifact(&bundle, "CANARY_DECISION_FINAL.txt");
    assert!(decision.contains("ROLLBACK"), "{decision}");
    assert!(decision.contains("browser test abort"), "{decision}");
    let diff = artifact(&bundle, "CANARY_LB_DIFF_");
    let last = diff.rsplit("== change").next().unwrap();
    assert!(
        last.lines().next().unwrap().contains("-> 0 % (rollback)"),
        "{last}"
    );
    assert!(
        last.contains("verified") && !last.contains("NOT VERIFIED"),
        "{last}"
    );
    let errors: Vec<String> = console_errors(&browser)
        .into_iter()
        .filter(|e| !is_provoked_refusal(e))
        .collect();
    assert!(errors.is_empty(), "live page console errors: {errors:#?}");
}
