//! The per-tenant approximate-nearest-neighbour index: an HNSW graph (`instant-distance`) over
//! the rows that existed at the last build, plus an exactly-scanned tail of rows ingested since.
//! When the tail grows past a share of the graph the store rebuilds the graph in the background
//! and swaps it in, so ingestion never waits for a build and a search never misses a row.
//!
//! The graph walks int8-quantised copies of the embeddings, stored inline: a distance reads 256
//! contiguous bytes instead of chasing a pointer to 1 KiB of `f32`s, which is what a search and a
//! build spend their time on. The hits are then scored again with the exact `f32` vectors, so
//! quantisation can only change which candidates the walk visits, never a reported similarity or
//! the order of the results.

use std::cell::RefCell;
use std::cmp::Ordering;
use std::sync::{Arc, LazyLock};

use instant_distance::{Builder, HnswMap, Search};

use crate::embedding::{DIMS, Embedding};

/// A row's id in the store.
pub type RowId = u64;

/// Size of the dynamic candidate list during search (HNSW `ef`): the most candidates one search
/// can return, and the knob that trades latency for recall.
pub const EF_SEARCH: usize = 64;
/// Size of the dynamic candidate list during construction.
pub const EF_CONSTRUCTION: usize = 200;
/// Candidates beyond `n` taken from the graph and scored exactly.
const RESCORE_EXTRA: usize = 8;
/// Below this many rows a tenant is scanned exactly; a graph would not pay for itself.
const GRAPH_MIN_ROWS: usize = 256;
/// Fixed seed: the same rows always give the same graph.
const GRAPH_SEED: u64 = 0x5eed_2e1a_7de0_0001;

/// One search hit: a row and its cosine similarity to the query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neighbor {
    /// The row.
    pub row: RowId,
    /// Cosine similarity to the query, higher is nearer.
    pub similarity: f32,
}

/// An embedding quantised to `i8` with one scale per vector: `x[i] ≈ scale * q[i]`.
#[derive(Clone)]
struct Quantized {
    q: [i8; DIMS],
    scale: f32,
}

impl Quantized {
    fn of(embedding: &Embedding) -> Self {
        let v = embedding.as_slice();
        let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
        let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
        let mut q = [0i8; DIMS];
        for (q, x) in q.iter_mut().zip(v) {
            // |x / scale| <= 127 by construction, so the cast cannot saturate.
            *q = (x / scale).round() as i8;
        }
        Quantized { q, scale }
    }
}

impl instant_distance::Point for Quantized {
    fn distance(&self, other: &Self) -> f32 {
        1.0 - self.scale * other.scale * dot_i8(&self.q, &other.q) as f32
    }
}

fn dot_i8(a: &[i8; DIMS], b: &[i8; DIMS]) -> i32 {
    SIMD.dispatch(DotI8(a, b))
}

/// The widest vector unit the CPU has (AVX2, AVX-512), detected once.
static SIMD: LazyLock<pulp::Arch> = LazyLock::new(pulp::Arch::new);

/// `dot_i8`'s loop, inlined into code compiled for the detected vector unit.
struct DotI8<'a>(&'a [i8; DIMS], &'a [i8; DIMS]);

impl pulp::WithSimd for DotI8<'_> {
    type Output = i32;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) -> i32 {
        // Integer addition is associative, so the compiler may split this sum across lanes.
        self.0
            .iter()
            .zip(self.1)
            .map(|(x, y)| i32::from(*x) * i32::from(*y))
            .sum()
    }
}

/// A built HNSW graph over a prefix of a tenant's rows. Its values are positions in the
/// tenant's entries, where the exact embeddings are.
pub struct Graph {
    map: HnswMap<Quantized, u32>,
    rows: usize,
}

impl Graph {
    /// Builds a graph over `entries` (CPU-heavy: run it off the async runtime).
    pub fn build(entries: &[(RowId, Embedding)]) -> Self {
        let points: Vec<Quantized> = entries.iter().map(|(_, e)| Quantized::of(e)).collect();
        // A tenant holds far fewer than 2^32 rows; positions beyond are not indexed.
        let positions: Vec<u32> = (0..points.len())
            .map(|i| u32::try_from(i).unwrap_or(u32::MAX))
            .collect();
        let map = Builder::default()
            .ef_construction(EF_CONSTRUCTION)
            .ef_search(EF_SEARCH)
            .seed(GRAPH_SEED)
            .build(points, positions);
        Graph {
            map,
            rows: entries.len(),
        }
    }

    /// Number of rows in the graph.
    pub fn rows(&self) -> usize {
        self.rows
    }
}

thread_local! {
    // The search scratch space (visited set, heaps) is reused per worker thread.
    static SCRATCH: RefCell<Search> = RefCell::new(Search::default());
}

/// A tenant's index: graph over `entries[..graph.rows]`, exact scan over the rest.
#[derive(Default)]
pub struct TenantIndex {
    entries: Vec<(RowId, Embedding)>,
    graph: Option<Arc<Graph>>,
    rebuilding: bool,
}

impl TenantIndex {
    /// An index over `entries`, with its graph built now when the tenant is large enough.
    pub fn build(entries: Vec<(RowId, Embedding)>) -> Self {
        let graph = (entries.len() >= GRAPH_MIN_ROWS).then(|| Arc::new(Graph::build(&entries)));
        TenantIndex {
            entries,
            graph,
            rebuilding: false,
        }
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the index holds no rows.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every row with its embedding, in insertion order.
    pub fn entries(&self) -> &[(RowId, Embedding)] {
        &self.entries
    }

    /// Rows covered by the graph (the rest are scanned exactly).
    pub fn graph_rows(&self) -> usize {
        self.graph.as_ref().map_or(0, |g| g.rows)
    }

    /// Adds a row. Returns the rows to build a new graph from when the exactly-scanned tail has
    /// outgrown the graph and no rebuild is running; the caller builds it and calls
    /// [`TenantIndex::install`].
    pub fn insert(&mut self, row: RowId, embedding: Embedding) -> Option<Vec<(RowId, Embedding)>> {
        self.entries.push((row, embedding));
        let tail = self.entries.len() - self.graph_rows();
        let due = self.entries.len() >= GRAPH_MIN_ROWS && tail >= (self.graph_rows() / 4).max(64);
        if due && !self.rebuilding {
            self.rebuilding = true;
            Some(self.entries.clone())
        } else {
            None
        }
    }

    /// Installs a graph built from the first `graph.rows()` entries.
    pub fn install(&mut self, graph: Graph) {
        self.rebuilding = false;
        if graph.rows > self.graph_rows() && graph.rows <= self.entries.len() {
            self.graph = Some(Arc::new(graph));
        }
    }

    /// The `n` nearest rows to `query`, nearest first: HNSW over the graph, exact over the tail.
    pub fn search(&self, query: &Embedding, n: usize) -> Vec<Neighbor> {
        // The graph yields at most `EF_SEARCH` candidates; a larger ask is answered exactly.
        let graph = match &self.graph {
            Some(graph) if n <= EF_SEARCH => graph,
            _ => return self.search_exact(query, n),
        };
        let quantized = Quantized::of(query);
        let mut hits: Vec<Neighbor> = SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            graph
                .map
                .search(&quantized, &mut scratch)
                // A few more than asked: the exact scores may reorder the boundary.
                .take(n + RESCORE_EXTRA)
                .filter_map(|item| self.entries.get(*item.value as usize))
                .map(|(row, e)| Neighbor {
                    row: *row,
                    similarity: query.similarity(e),
                })
                .collect()
        });
        hits.extend(self.entries[graph.rows..].iter().map(|(row, e)| Neighbor {
            row: *row,
            similarity: query.similarity(e),
        }));
        sort_nearest_first(&mut hits);
        hits.truncate(n);
        hits
    }

    /// The `n` nearest rows by exhaustive scan (ground truth for recall, and small tenants).
    pub fn search_exact(&self, query: &Embedding, n: usize) -> Vec<Neighbor> {
        let mut hits: Vec<Neighbor> = self
            .entries
            .iter()
            .map(|(row, e)| Neighbor {
                row: *row,
                similarity: query.similarity(e),
            })
            .collect();
        sort_nearest_first(&mut hits);
        hits.truncate(n);
        hits
    }
}

fn sort_nearest_first(hits: &mut [Neighbor]) {
    hits.sort_by(|a, b| {
        b.similarity
            .partial_cmp(&a.similarity)
            .unwrap_or(Ordering::Equal)
            .then(a.row.cmp(&b.row))
    });
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn corpus(n: usize) -> Vec<(RowId, Embedding)> {
        (0..n)
            .map(|i| {
                let text = format!(
                    "note {i} about topic {} and place {} with item {}",
                    i % 17,
                    i % 23,
                    i % 31
                );
                (i as RowId, Embedding::of_text(&text))
            })
            .collect()
    }

    #[test]
    fn graph_search_agrees_with_exact_search() {
        let index = TenantIndex::build(corpus(1000));
        assert_eq!(index.graph_rows(), 1000);
        let mut overlap = 0;
        for i in (0..1000).step_by(50) {
            let q = Embedding::of_text(&format!("topic {} place {}", i % 17, i % 23));
            let ann: Vec<RowId> = index.search(&q, 10).iter().map(|h| h.row).collect();
            let exact: Vec<RowId> = index.search_exact(&q, 10).iter().map(|h| h.row).collect();
            overlap += ann.iter().filter(|r| exact.contains(r)).count();
        }
        assert!(overlap >= 180, "recall too low: {overlap}/200");
    }

    #[test]
    fn quantised_distance_tracks_the_exact_one() {
        let rows = corpus(200);
        for pair in rows.windows(2) {
            let (a, b) = (&pair[0].1, &pair[1].1);
            let approx =
                1.0 - instant_distance::Point::distance(&Quantized::of(a), &Quantized::of(b));
            assert!(
                (approx - a.similarity(b)).abs() < 0.02,
                "{approx} vs {}",
                a.similarity(b)
            );
        }
    }

    #[test]
    fn hits_carry_exact_similarities_and_a_large_ask_is_answered_exactly() {
        let index = TenantIndex::build(corpus(1000));
        let q = Embedding::of_text("topic 3 place 5 item 7");
        for hit in index.search(&q, 10) {
            let (_, e) = index
                .entries()
                .iter()
                .find(|(row, _)| *row == hit.row)
                .unwrap();
            assert_eq!(hit.similarity, q.similarity(e));
        }
        let n = EF_SEARCH + 20;
        assert_eq!(index.search(&q, n), index.search_exact(&q, n));
    }

    #[test]
    fn rows_inserted_after_a_build_are_found_and_trigger_a_rebuild() {
        let mut index = TenantIndex::build(corpus(300));
        let mut rebuild = None;
        for i in 300..400 {
            let r = index.insert(i, Embedding::of_text(&format!("fresh memory number {i}")));
            rebuild = rebuild.or(r);
        }
        let q = Embedding::of_text("fresh memory number 399");
        assert_eq!(index.search(&q, 1)[0].row, 399);
        let entries = rebuild.unwrap();
        index.install(Graph::build(&entries));
        assert!(index.graph_rows() > 300);
        assert_eq!(index.search(&q, 1)[0].row, 399);
    }
}
