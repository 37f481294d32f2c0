//! The memory store: the `memory_chunks` table (rows sealed at rest, owned by a `user_hash`),
//! partitioned per tenant with one ANN index each, and its row-level security.
//!
//! RLS equivalent: every read must carry a [`TenantContext`] — a read without one is refused with
//! [`StoreError::MissingTenantContext`] — and sees only rows whose `user_hash` equals the context's.
//! [`RowPolicy::Bypassed`] exists only so the `tenant-leak` fault can reproduce a broken policy.
//!
//! The store is synchronous and CPU-bound; callers run it on blocking threads while holding a
//! pool connection. What a production store would add — the network, the database's own time —
//! callers wait for on their own task (the latency profile, the `slow-ann` fault), still holding
//! the connection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::ann::{Graph, Neighbor, RowId, TenantIndex};
use crate::embedding::Embedding;
use crate::tenancy::{SealError, SealedText, TenantContext, TenantKeys, UserHash};

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// A read or write arrived without tenant context; RLS refuses it.
    #[error("row-level security: operation without tenant context refused")]
    MissingTenantContext,
    /// Text could not be sealed for storage.
    #[error("could not seal memory text: {0}")]
    Seal(#[from] SealError),
}

/// Which rows a read may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowPolicy {
    /// Only rows of the context's tenant (the correct policy).
    Enforced,
    /// Rows of every tenant pass the filter: the defect the `tenant-leak` fault injects.
    Bypassed,
}

/// A stored row of `memory_chunks`.
#[derive(Debug)]
pub struct StoredRow {
    /// Row id.
    pub id: RowId,
    /// Owner.
    pub user_hash: UserHash,
    /// Text, sealed with the owner as associated data.
    pub sealed: SealedText,
    /// Tags given at ingestion.
    pub tags: Vec<String>,
    /// Ingestion time, milliseconds since the epoch.
    pub created_ms: u64,
}

/// A row returned by a read, opened.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundRow {
    /// Row id.
    pub id: RowId,
    /// Owner of the row (the final check compares it with the caller).
    pub owner: UserHash,
    /// Plain text.
    pub text: String,
    /// Tags.
    pub tags: Vec<String>,
    /// ANN similarity to the query.
    pub similarity: f32,
    /// Final score (similarity until reranked).
    pub score: f32,
}

impl crate::rerank::Candidate for FoundRow {
    fn text(&self) -> &str {
        &self.text
    }
    fn similarity(&self) -> f32 {
        self.similarity
    }
    fn set_score(&mut self, score: f32) {
        self.score = score;
    }
}

/// A similarity read.
#[derive(Debug, Clone)]
pub struct SimilarityRead<'a> {
    /// The tenant context, `None` reproduces a read that forgot it.
    pub context: Option<&'a TenantContext>,
    /// Row policy in force.
    pub policy: RowPolicy,
    /// Query embedding.
    pub query: &'a Embedding,
    /// Most rows to return.
    pub limit: usize,
}

/// The rows of a read and how long its ANN phase took.
#[derive(Debug)]
pub struct ReadOutcome {
    /// Rows, nearest first.
    pub rows: Vec<FoundRow>,
    /// ANN search time (including any injected delay).
    pub ann_latency: Duration,
}

struct Shard {
    rows: RwLock<HashMap<RowId, Arc<StoredRow>>>,
    index: RwLock<TenantIndex>,
}

/// The in-memory `memory_chunks` table.
pub struct MemoryStore {
    keys: TenantKeys,
    shards: RwLock<HashMap<UserHash, Arc<Shard>>>,
    next_id: AtomicU64,
    row_count: AtomicU64,
}

/// One memory to load in bulk.
#[derive(Debug, Clone)]
pub struct NewMemory {
    /// Owner's user id.
    pub user_id: String,
    /// Text.
    pub text: String,
    /// Tags.
    pub tags: Vec<String>,
}

/// What a bulk load did.
#[derive(Debug, Clone, Copy)]
pub struct LoadReport {
    /// Rows loaded.
    pub rows: usize,
    /// Time spent embedding and sealing.
    pub ingest: Duration,
    /// Time spent building ANN graphs.
    pub index_build: Duration,
}

impl MemoryStore {
    /// An empty store using `keys` for user hashes and sealing.
    pub fn new(keys: TenantKeys) -> Self {
        MemoryStore {
            keys,
            shards: RwLock::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            row_count: AtomicU64::new(0),
        }
    }

    /// The tenancy keys.
    pub fn keys(&self) -> &TenantKeys {
        &self.keys
    }

    /// Rows in the table.
    pub fn row_count(&self) -> u64 {
        self.row_count.load(Ordering::Acquire)
    }

    /// Loads `memories` in bulk and builds each tenant's graph (CPU-heavy).
    pub fn load(&self, memories: Vec<NewMemory>) -> Result<LoadReport, StoreError> {
        let started = Instant::now();
        let now = epoch_ms();
        let mut per_tenant: HashMap<UserHash, Vec<StoredRow>> = HashMap::new();
        let mut embeddings: HashMap<UserHash, Vec<(RowId, Embedding)>> = HashMap::new();
        let rows = memories.len();
        for m in memories {
            let owner = self.keys.user_hash(&m.user_id);
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let sealed = self.keys.seal(&owner, &m.text)?;
            embeddings
                .entry(owner.clone())
                .or_default()
                .push((id, Embedding::of_text(&m.text)));
            per_tenant
                .entry(owner.clone())
                .or_default()
                .push(StoredRow {
                    id,
                    user_hash: owner,
                    sealed,
                    tags: m.tags,
                    created_ms: now,
                });
        }
        let ingest = started.elapsed();
        let build_started = Instant::now();
        let mut shards = self.shards.write().unwrap_or_else(PoisonError::into_inner);
        for (owner, rows) in per_tenant {
            let shard = shards.entry(owner.clone()).or_insert_with(|| {
                Arc::new(Shard {
                    rows: RwLock::new(HashMap::new()),
                    index: RwLock::new(TenantIndex::default()),
                })
            });
            let mut entries = {
                let index = shard.index.read().unwrap_or_else(PoisonError::into_inner);
                index_entries(&index)
            };
            entries.extend(embeddings.remove(&owner).unwrap_or_default());
            let index = TenantIndex::build(entries);
            *shard.index.write().unwrap_or_else(PoisonError::into_inner) = index;
            let mut table = shard.rows.write().unwrap_or_else(PoisonError::into_inner);
            for row in rows {
                table.insert(row.id, Arc::new(row));
            }
        }
        self.row_count.fetch_add(rows as u64, Ordering::AcqRel);
        Ok(LoadReport {
            rows,
            ingest,
            index_build: build_started.elapsed(),
        })
    }

    /// Inserts one memory for the context's tenant. Returns its id. When the tenant's unindexed
    /// tail has grown enough, a background thread rebuilds its graph.
    pub fn insert(
        &self,
        context: Option<&TenantContext>,
        text: &str,
        tags: Vec<String>,
    ) -> Result<RowId, StoreError> {
        let context = context.ok_or(StoreError::MissingTenantContext)?;
        let owner = context.user_hash().clone();
        let sealed = self.keys.seal(&owner, text)?;
        let embedding = Embedding::of_text(text);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let shard = self.shard_or_create(&owner);
        shard
            .rows
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                id,
                Arc::new(StoredRow {
                    id,
                    user_hash: owner,
                    sealed,
                    tags,
                    created_ms: epoch_ms(),
                }),
            );
        let rebuild = shard
            .index
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, embedding);
        self.row_count.fetch_add(1, Ordering::AcqRel);
        if let Some(entries) = rebuild {
            let shard = Arc::clone(&shard);
            let spawned = std::thread::Builder::new()
                .name("relay-index-build".into())
                .spawn(move || {
                    let started = Instant::now();
                    let graph = Graph::build(&entries);
                    tracing::debug!(
                        rows = graph.rows(),
                        ms = started.elapsed().as_millis() as u64,
                        "tenant graph rebuilt"
                    );
                    shard
                        .index
                        .write()
                        .unwrap_or_else(PoisonError::into_inner)
                        .install(graph);
                });
            if let Err(error) = spawned {
                tracing::warn!(%error, "could not start index rebuild; rows stay in the exact tail");
            }
        }
        Ok(id)
    }

    /// Nearest rows to `read.query` visible under the read's context and policy, opened.
    pub fn search(&self, read: &SimilarityRead<'_>) -> Result<ReadOutcome, StoreError> {
        let context = read.context.ok_or(StoreError::MissingTenantContext)?;
        let shards: Vec<Arc<Shard>> = {
            let all = self.shards.read().unwrap_or_else(PoisonError::into_inner);
            match read.policy {
                RowPolicy::Enforced => all.get(context.user_hash()).cloned().into_iter().collect(),
                RowPolicy::Bypassed => all.values().cloned().collect(),
            }
        };
        let ann_started = Instant::now();
        let mut neighbors: Vec<(Arc<Shard>, Neighbor)> = Vec::new();
        for shard in &shards {
            let index = shard.index.read().unwrap_or_else(PoisonError::into_inner);
            neighbors.extend(
                index
                    .search(read.query, read.limit)
                    .into_iter()
                    .map(|n| (Arc::clone(shard), n)),
            );
        }
        let ann_latency = ann_started.elapsed();
        neighbors.sort_by(|a, b| {
            b.1.similarity
                .partial_cmp(&a.1.similarity)
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        neighbors.truncate(read.limit);
        let mut rows = Vec::with_capacity(neighbors.len());
        for (shard, neighbor) in neighbors {
            // Opened under the shard's read lock: the sealed row is read in place, not copied.
            let shard_rows = shard.rows.read().unwrap_or_else(PoisonError::into_inner);
            let Some(stored) = shard_rows.get(&neighbor.row) else {
                continue;
            };
            // The row's own user_hash is the associated data: a row whose ciphertext was moved
            // under another tenant does not open, and is never returned.
            match self.keys.open(&stored.user_hash, &stored.sealed) {
                Ok(text) => rows.push(FoundRow {
                    id: stored.id,
                    owner: stored.user_hash.clone(),
                    text,
                    tags: stored.tags.clone(),
                    similarity: neighbor.similarity,
                    score: neighbor.similarity,
                }),
                Err(error) => {
                    tracing::error!(row = stored.id, %error, "row failed to open; dropped");
                }
            }
        }
        Ok(ReadOutcome { rows, ann_latency })
    }

    /// Rows owned by `user_hash`.
    pub fn tenant_rows(&self, user_hash: &UserHash) -> usize {
        self.shards
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(user_hash)
            .map_or(0, |s| {
                s.rows.read().unwrap_or_else(PoisonError::into_inner).len()
            })
    }

    fn shard_or_create(&self, owner: &UserHash) -> Arc<Shard> {
        if let Some(shard) = self
            .shards
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(owner)
        {
            return Arc::clone(shard);
        }
        let mut shards = self.shards.write().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(shards.entry(owner.clone()).or_insert_with(|| {
            Arc::new(Shard {
                rows: RwLock::new(HashMap::new()),
                index: RwLock::new(TenantIndex::default()),
            })
        }))
    }
}

fn index_entries(index: &TenantIndex) -> Vec<(RowId, Embedding)> {
    index.entries().to_vec()
}

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn store_with_two_tenants() -> (MemoryStore, TenantContext, TenantContext) {
        let store = MemoryStore::new(TenantKeys::derive(b"test"));
        let memories = ["user_a", "user_b"]
            .iter()
            .flat_map(|u| {
                (0..50).map(move |i| NewMemory {
                    user_id: (*u).to_owned(),
                    text: format!("{u} memory number {i} about gardening"),
                    tags: vec![],
                })
            })
            .collect();
        store.load(memories).unwrap();
        let a = TenantContext::new(store.keys().user_hash("user_a"));
        let b = TenantContext::new(store.keys().user_hash("user_b"));
        (store, a, b)
    }

    fn read<'a>(
        ctx: Option<&'a TenantContext>,
        policy: RowPolicy,
        q: &'a Embedding,
    ) -> SimilarityRead<'a> {
        SimilarityRead {
            context: ctx,
            policy,
            query: q,
            limit: 100,
        }
    }

    #[test]
    fn reads_see_only_their_tenant() {
        let (store, a, b) = store_with_two_tenants();
        let q = Embedding::of_text("user_b memory about gardening");
        let rows = store
            .search(&read(Some(&a), RowPolicy::Enforced, &q))
            .unwrap()
            .rows;
        assert_eq!(rows.len(), 50);
        assert!(rows.iter().all(|r| &r.owner == a.user_hash()));
        assert!(rows.iter().all(|r| r.text.starts_with("user_a")));
        let rows = store
            .search(&read(Some(&b), RowPolicy::Enforced, &q))
            .unwrap()
            .rows;
        assert!(rows.iter().all(|r| &r.owner == b.user_hash()));
    }

    #[test]
    fn read_without_tenant_context_is_refused() {
        let (store, _, _) = store_with_two_tenants();
        let q = Embedding::of_text("gardening");
        assert_eq!(
            store
                .search(&read(None, RowPolicy::Enforced, &q))
                .unwrap_err(),
            StoreError::MissingTenantContext
        );
        assert_eq!(
            store.insert(None, "x", vec![]).unwrap_err(),
            StoreError::MissingTenantContext
        );
    }

    #[test]
    fn bypassed_policy_lets_foreign_rows_through() {
        let (store, a, _) = store_with_two_tenants();
        let q = Embedding::of_text("user_b memory about gardening");
        let rows = store
            .search(&read(Some(&a), RowPolicy::Bypassed, &q))
            .unwrap()
            .rows;
        assert!(rows.iter().any(|r| &r.owner != a.user_hash()));
    }

    #[test]
    fn inserted_rows_are_searchable_by_their_owner_only() {
        let (store, a, b) = store_with_two_tenants();
        let id = store
            .insert(
                Some(&a),
                "dentist on the fourth of june",
                vec!["health".into()],
            )
            .unwrap();
        let q = Embedding::of_text("dentist june");
        let top = &store
            .search(&read(Some(&a), RowPolicy::Enforced, &q))
            .unwrap()
            .rows[0];
        assert_eq!(top.id, id);
        assert_eq!(top.tags, vec!["health".to_owned()]);
        let other = store
            .search(&read(Some(&b), RowPolicy::Enforced, &q))
            .unwrap()
            .rows;
        assert!(other.iter().all(|r| r.id != id));
        assert_eq!(store.row_count(), 101);
    }
}
