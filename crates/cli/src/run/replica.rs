//! The run's journal in the state store as well as in the bundle (DESIGN §13): every input is
//! stored before the engine applies it, so another machine can take the run over from the store.
//!
//! The local journal (fsynced) stays the run's record: when the store does not answer, the
//! controller goes on deciding and acting on it, and catches the store up, in order, once the
//! store is back. Lines are stored under their position in the local journal (the header is 0),
//! so the stored journal equals the local one line for line; storing a line again is a no-op.

use std::collections::VecDeque;
use std::path::Path;
use std::time::{Duration, Instant};

use canary_state::{Store, StoreError};

/// How long one store write may take before the input is applied without it.
const WRITE_PATIENCE: Duration = Duration::from_secs(2);
/// After a failed write, how long before the next attempt (inputs in between queue up).
const RETRY_AFTER: Duration = Duration::from_secs(2);

/// Replicates one run's journal into the store.
pub struct Replica {
    store: Store,
    run_id: String,
    /// The position of the first line in `pending`.
    next: u64,
    /// Lines the store does not have yet, in order.
    pending: VecDeque<String>,
    retry_at: Option<Instant>,
    /// Since when the store has been behind, for the warnings.
    behind_since: Option<Instant>,
    /// The store holds a different journal for this run: replication stopped.
    broken: Option<String>,
}

impl Replica {
    /// Starts replicating run `run_id` whose local journal is at `journal`: stores every line
    /// the store does not have yet (all of them for a new run; the tail for a resumed one).
    pub async fn start(store: Store, run_id: &str, journal: &Path) -> anyhow::Result<Replica> {
        let text = std::fs::read_to_string(journal)?;
        // Complete lines only: a torn last line was dropped by the journal writer already.
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        let stored = match store.last_seq(run_id).await {
            Ok(last) => last.map_or(0, |s| s + 1),
            Err(e) => {
                tracing::warn!(target: "canary", error = %e, "state store not answering: the journal goes to the store once it is back");
                0
            }
        };
        let skip = (stored as usize).min(lines.len());
        let mut replica = Replica {
            store,
            run_id: run_id.to_owned(),
            next: skip as u64,
            pending: lines.into_iter().skip(skip).collect(),
            retry_at: None,
            behind_since: None,
            broken: None,
        };
        replica.flush().await;
        Ok(replica)
    }

    /// Stores `line` (the input just appended to the local journal, without its newline), after
    /// any lines still waiting. Returns once stored, or once the store failed to answer in time
    /// (the line waits for the next attempt).
    pub async fn push(&mut self, line: &str) {
        self.pending.push_back(line.to_owned());
        self.flush().await;
    }

    /// Writes waiting lines in order until one fails.
    async fn flush(&mut self) {
        if self.broken.is_some() || self.pending.is_empty() {
            return;
        }
        if self.retry_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        while let Some(line) = self.pending.front() {
            let written = tokio::time::timeout(
                WRITE_PATIENCE,
                self.store.append(&self.run_id, self.next, line),
            )
            .await;
            match written {
                Ok(Ok(())) => {
                    self.pending.pop_front();
                    self.next += 1;
                }
                Ok(Err(
                    e @ (StoreError::JournalConflict { .. } | StoreError::JournalGap { .. }),
                )) => {
                    tracing::error!(target: "canary", error = %e, "the state store holds another journal for this run: no longer replicating; the bundle's journal is the record");
                    self.broken = Some(e.to_string());
                    return;
                }
                Ok(Err(e)) => return self.failed(&e.to_string()),
                Err(_) => {
                    return self.failed(&format!(
                        "no answer within {}",
                        canary_core::duration::Human(WRITE_PATIENCE)
                    ));
                }
            }
        }
        if let Some(since) = self.behind_since.take() {
            tracing::info!(
                target: "canary",
                "state store caught up after {}: its journal of {} is complete again",
                canary_core::duration::Human(since.elapsed()),
                self.run_id
            );
        }
        self.retry_at = None;
    }

    fn failed(&mut self, why: &str) {
        if self.behind_since.is_none() {
            tracing::warn!(target: "canary", "state store write failed ({why}): deciding on the local journal; the store catches up when it answers");
            self.behind_since = Some(Instant::now());
        }
        self.retry_at = Some(Instant::now() + RETRY_AFTER);
    }

    /// At the end of the run: keeps trying for `patience` to store what is waiting. Says what
    /// is missing if the store stayed away.
    pub async fn finish(&mut self, patience: Duration) -> Option<String> {
        let deadline = Instant::now() + patience;
        loop {
            self.retry_at = None;
            self.flush().await;
            if let Some(why) = &self.broken {
                return Some(why.clone());
            }
            if self.pending.is_empty() {
                return None;
            }
            if Instant::now() >= deadline {
                return Some(format!(
                    "the state store is missing the last {} line(s) of the journal of {}: the bundle's journal.jsonl has them",
                    self.pending.len(),
                    self.run_id
                ));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
