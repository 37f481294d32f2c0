//! A promotion the load balancer refuses, end to end: `canary run` against real services and
//! the proxy, driven through the `command` provider by a platform CLI stand-in that moves the
//! proxy's split but refuses 100 %. The run is not a PROMOTE: PROMOTION_FAILED, exit 5, traffic
//! verified back at 0 %, the artifacts say so, `canary verify` re-derives it, the history holds
//! it (and its cooldown), and the pages say what happened.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is a test failure

mod support;

use support::{
    PROXY_TOKEN, artifact_text, canary, embedded_metrics, finish, rig_with, verify,
    webhook_receiver,
};

#[test]
fn a_promotion_the_load_balancer_refuses_is_promotion_failed_end_to_end() {
    let (hook, received) = webhook_receiver();
    let rig = rig_with(embedded_metrics, |_, _| {
        format!(
            "[[notify]]\nkind = \"webhook\"\nurl = \"{hook}/decision\"\non = [\"decision\"]\n\n\
             [[notify]]\nkind = \"webhook\"\nurl = \"{hook}/rollback\"\non = [\"rollback\"]\n"
        )
    });
    // A platform CLI that moves the proxy's split but refuses to give the canary 100 %.
    let script = rig.dir.path().join("platform.sh");
    let admin = rig.proxy_admin;
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             case \"$1\" in\n\
             set)\n\
               if [ \"$2\" = 100 ]; then echo \"platform: main:100 refused (quota exceeded)\" >&2; exit 1; fi\n\
               curl -sf -X PUT -H 'Authorization: Bearer {PROXY_TOKEN}' -H 'content-type: application/json' \
                 -d \"{{\\\"canary\\\":$2}}\" http://{admin}/weights >/dev/null ;;\n\
             get) curl -sf -H 'Authorization: Bearer {PROXY_TOKEN}' http://{admin}/weights ;;\n\
             esac\n"
        ),
    )
    .unwrap();
    let config_path = rig.dir.path().join("canary.toml");
    let config = std::fs::read_to_string(&config_path).unwrap();
    let embedded = format!(
        "[traffic]\nprovider = \"embedded\"\nadmin = \"{admin}\"\ntoken = \"${{CANARY_PROXY_TOKEN}}\"\nlease = \"3s\"\n"
    );
    assert!(config.contains(&embedded), "{config}");
    let command = format!(
        "[traffic]\nprovider = \"command\"\nset = \"sh {0} set {{canary}} {{baseline}}\"\nverify = \"sh {0} get\"\nverify_regex = '\"canary\":(?P<canary>\\d+)'\ntimeout = \"10s\"\n",
        script.display()
    );
    std::fs::write(&config_path, config.replace(&embedded, &command)).unwrap();

    let (code, stdout, stderr) = finish(rig.run(&[]));
    assert_eq!(code, 5, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("PROMOTION_FAILED") && stdout.contains("quota exceeded"),
        "{stdout}"
    );
    assert_eq!(rig.canary_weight(), 0, "traffic is back on the baseline");

    // The evidence: the outcome file says what happened, never "promoted".
    let run_id = stdout.split_whitespace().next().unwrap().to_owned();
    let bundle = rig.bundle(&run_id);
    assert!(!bundle.join("CANARY_PROMOTION_FINAL.txt").exists());
    let outcome = std::fs::read_to_string(bundle.join("CANARY_ROLLBACK_FINAL.txt")).unwrap();
    assert_eq!(
        outcome.lines().next(),
        Some("CANARY PASSED - PROMOTION FAILED - TRAFFIC RETURNED TO BASELINE"),
        "{outcome}"
    );
    assert!(outcome.contains("quota exceeded"), "{outcome}");
    let decision = std::fs::read_to_string(bundle.join("CANARY_DECISION_FINAL.txt")).unwrap();
    assert!(
        decision.contains("DECISION: PROMOTION_FAILED"),
        "{decision}"
    );
    for text in [&outcome, &decision] {
        assert!(!text.contains("PROMOTED TO 100%"), "{text}");
    }
    let diff = artifact_text(&bundle, "CANARY_LB_DIFF_");
    assert!(diff.contains("-> 100 % (promote)"), "{diff}");
    assert!(
        diff.contains("100 % -> 0 % (rollback)") || diff.contains("-> 0 % (rollback)"),
        "{diff}"
    );
    // `canary verify` re-derives PROMOTION_FAILED from the journal.
    let (code, report) = verify(&bundle);
    assert_eq!(code, 0, "{report}");
    assert!(report.contains("PROMOTION_FAILED"), "{report}");

    // The history holds it, and its cooldown refuses the next run.
    let history = canary()
        .current_dir(rig.dir.path())
        .args(["history", "-c", "canary.toml"])
        .output()
        .unwrap();
    let history = String::from_utf8_lossy(&history.stdout);
    assert!(
        history.contains(&run_id) && history.contains("PROMOTION_FAILED"),
        "{history}"
    );
    let (code, _, stderr) = finish(rig.run(&[]));
    assert_eq!(code, 1);
    assert!(
        stderr.contains("cooldown") && stderr.contains("PROMOTION_FAILED"),
        "{stderr}"
    );

    // People were told at the highest severity, and the incident stays open: the release is
    // not out.
    let received = received.lock().unwrap();
    let at = |path: &str| -> Vec<&serde_json::Value> {
        received
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, j)| j)
            .collect()
    };
    let decisions = at("/decision");
    let failed = decisions
        .iter()
        .find(|j| j["outcome"] == "promotion_failed")
        .unwrap_or_else(|| panic!("{decisions:?}"));
    assert_eq!(failed["severity"], "page");
    assert!(failed["text"].as_str().unwrap().contains("quota exceeded"));
    let rollbacks = at("/rollback");
    assert_eq!(rollbacks.len(), 2, "{rollbacks:?}");
    assert_eq!(rollbacks[0]["severity"], "page");
    assert!(
        rollbacks[0]["text"]
            .as_str()
            .unwrap()
            .starts_with("PROMOTION_FAILED: rolling back"),
        "{}",
        rollbacks[0]
    );
    assert!(
        rollbacks[1]["text"]
            .as_str()
            .unwrap()
            .contains("traffic back on the baseline"),
        "{}",
        rollbacks[1]
    );
    assert_eq!(rollbacks[1]["incident"]["state"], "run");
}
