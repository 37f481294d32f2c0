//! `pin_threads`: each data-path thread runs on its own CPU (dealt in turn over the CPUs the
//! process may use) and the pinned proxy serves as usual. Its own test binary, so the only
//! data-path threads in the process are this proxy's.
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use support::{Backend, client, config, get, wait_until};

/// `(thread name, Cpus_allowed_list)` of this process's threads whose name starts with `prefix`.
fn threads_named(prefix: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = task.unwrap().path();
        let Ok(name) = std::fs::read_to_string(dir.join("comm")) else {
            continue; // the thread ended meanwhile
        };
        let name = name.trim().to_owned();
        if !name.starts_with(prefix) {
            continue;
        }
        let status = std::fs::read_to_string(dir.join("status")).unwrap();
        found.push((name, cpus_allowed_list(&status).to_owned()));
    }
    found.sort();
    found
}

/// The `Cpus_allowed_list` of a `/proc/.../status` file, e.g. `0-1`.
fn cpus_allowed_list(status: &str) -> &str {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim()
}

/// The CPUs this process may use, from `/proc/self/status` (independent of the proxy's code).
fn allowed_cpus() -> Vec<usize> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let mut cpus = Vec::new();
    for part in cpus_allowed_list(&status).split(',') {
        match part.split_once('-') {
            Some((a, b)) => cpus.extend(a.parse::<usize>().unwrap()..=b.parse().unwrap()),
            None => cpus.push(part.parse().unwrap()),
        }
    }
    cpus
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_data_path_threads_each_run_on_their_own_cpu_and_serve() {
    let baseline = Backend::start("baseline").await;
    let canary = Backend::start("canary").await;
    let allowed = allowed_cpus();
    let mut cfg = config(&baseline.url(), &canary.url(), 50);
    cfg.workers = allowed.len() + 1; // one more than CPUs: the last wraps to the first CPU
    cfg.pin_threads = true;
    let proxy = canary_proxy::start(cfg).await.unwrap();

    let threads = threads_named("canary-proxy-");
    let expected: Vec<(String, String)> = (0..allowed.len() + 1)
        .map(|i| {
            let cpu = allowed[i % allowed.len()];
            (format!("canary-proxy-{i}"), cpu.to_string())
        })
        .collect();
    assert_eq!(threads, expected);

    // The pinned proxy serves: a fresh connection per request, as many as threads, so each
    // thread (connections are dealt in turn) answers one.
    for _ in 0..allowed.len() + 1 {
        let answer = get(&client(), &proxy, "/pinned").await;
        assert_eq!(answer.status, 200);
    }
    assert_eq!(baseline.hits() + canary.hits(), allowed.len() as u64 + 1);

    proxy.shutdown().await;
    wait_until(
        "the data-path threads to end",
        Duration::from_secs(5),
        || threads_named("canary-proxy-").is_empty(),
    )
    .await;
}
