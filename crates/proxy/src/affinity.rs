//! Optional CPU pinning of the data-path threads (`--pin-threads`), like nginx's
//! `worker_cpu_affinity auto` and HAProxy's `cpu-map`: thread *i* runs on the *i*-th CPU the
//! process may use, wrapping around when there are more threads than CPUs.
//!
//! Off by default. At saturation on a small machine it removes the rounds where the proxy's p99
//! doubles (a pinned thread cannot migrate); at partial load a pinned thread cannot leave a core
//! that a neighbour keeps busy, which costs latency. Both are measured in docs/BENCHMARKS.md.

use std::io;

/// The CPUs this process may run on, in ascending order.
#[cfg(target_os = "linux")]
pub(crate) fn allowed_cpus() -> io::Result<Vec<usize>> {
    use rustix::thread::{CpuSet, sched_getaffinity};
    let set = sched_getaffinity(None)?;
    Ok((0..CpuSet::MAX_CPU)
        .filter(|&cpu| set.is_set(cpu))
        .collect())
}

/// Binds the calling thread to `cpu`.
#[cfg(target_os = "linux")]
pub(crate) fn pin_current_thread(cpu: usize) -> io::Result<()> {
    use rustix::thread::{CpuSet, sched_setaffinity};
    let mut set = CpuSet::new();
    set.set(cpu);
    sched_setaffinity(None, &set)?;
    Ok(())
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn allowed_cpus() -> io::Result<Vec<usize>> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "pinning threads to CPUs is only supported on Linux",
    ))
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn pin_current_thread(_cpu: usize) -> io::Result<()> {
    allowed_cpus().map(drop)
}

/// The CPU for data-path thread `index`: the allowed CPUs dealt out in turn.
pub(crate) fn cpu_for(index: usize, allowed: &[usize]) -> Option<usize> {
    (!allowed.is_empty()).then(|| allowed[index % allowed.len()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_are_dealt_over_the_allowed_cpus_in_turn() {
        let allowed = [2, 3, 7];
        let cpus: Vec<_> = (0..5).map(|i| cpu_for(i, &allowed)).collect();
        assert_eq!(cpus, [Some(2), Some(3), Some(7), Some(2), Some(3)]);
        assert_eq!(cpu_for(0, &[]), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_pinned_thread_runs_only_on_its_cpu() {
        let allowed = allowed_cpus().unwrap();
        assert!(!allowed.is_empty());
        let cpu = *allowed.last().unwrap();
        let seen = std::thread::spawn(move || {
            pin_current_thread(cpu).unwrap();
            allowed_cpus().unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(seen, [cpu]);
        // The process (this thread) keeps every CPU it had.
        assert_eq!(allowed_cpus().unwrap(), allowed);
    }
}
