//! The reranker: BM25 over the ANN candidates, blended with their vector similarity, under a
//! time budget. A rerank that cannot finish within its budget is abandoned and the ANN order is
//! kept — the request still answers, and the skip is counted.

use std::time::{Duration, Instant};

use crate::embedding::{is_stopword, raw_tokens, tokens};

const K1: f32 = 1.2;
const B: f32 = 0.75;
/// Weight of the vector similarity in the final score; the rest is the squashed BM25 score.
const SIMILARITY_WEIGHT: f32 = 0.6;

/// What happened to a rerank.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RerankOutcome {
    /// Scores were blended and candidates reordered.
    Applied,
    /// Not attempted: the request had no time left for it.
    SkippedNoTime,
    /// Started but ran past its budget; abandoned.
    TimedOut,
}

/// A candidate to rerank: its text and its vector similarity.
pub trait Candidate {
    /// The text scored against the query.
    fn text(&self) -> &str;
    /// The ANN similarity.
    fn similarity(&self) -> f32;
    /// Stores the final score.
    fn set_score(&mut self, score: f32);
}

/// Reranks `candidates` for `query` within `budget`, best first. On any outcome other than
/// [`RerankOutcome::Applied`], candidates keep the ANN order and their similarity as score.
pub fn rerank<C: Candidate>(query: &str, candidates: &mut [C], budget: Duration) -> RerankOutcome {
    let started = Instant::now();
    keep_ann_order(candidates);
    if budget.is_zero() {
        return RerankOutcome::SkippedNoTime;
    }
    let query_terms: Vec<String> = tokens(query)
        .into_iter()
        .filter(|t| !is_stopword(t))
        .collect();
    if query_terms.is_empty() || candidates.is_empty() {
        return RerankOutcome::Applied;
    }
    // Per candidate: how often each query term occurs, and the length in tokens. Only the
    // query's few terms are counted, so no per-token allocation is needed.
    let mut docs: Vec<Vec<u32>> = Vec::with_capacity(candidates.len());
    let mut lengths = Vec::with_capacity(candidates.len());
    for c in candidates.iter() {
        if started.elapsed() > budget {
            return RerankOutcome::TimedOut;
        }
        let mut tf = vec![0u32; query_terms.len()];
        let mut length = 0u32;
        for word in raw_tokens(c.text()) {
            length += 1;
            for (count, term) in tf.iter_mut().zip(&query_terms) {
                if same_token(word, term) {
                    *count += 1;
                }
            }
        }
        lengths.push(length as f32);
        docs.push(tf);
    }
    let n = docs.len() as f32;
    let avg_len = (lengths.iter().sum::<f32>() / n).max(1.0);
    let idf: Vec<f32> = (0..query_terms.len())
        .map(|j| {
            let df = docs.iter().filter(|d| d[j] > 0).count() as f32;
            ((n - df + 0.5) / (df + 0.5) + 1.0).ln()
        })
        .collect();
    let mut scores = Vec::with_capacity(candidates.len());
    for (doc, len) in docs.iter().zip(&lengths) {
        if started.elapsed() > budget {
            return RerankOutcome::TimedOut;
        }
        let bm25: f32 = doc
            .iter()
            .zip(&idf)
            .map(|(tf, idf)| {
                let tf = *tf as f32;
                idf * tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * len / avg_len))
            })
            .sum();
        scores.push(bm25 / (bm25 + 2.0));
    }
    for (c, lexical) in candidates.iter_mut().zip(scores) {
        let blended = SIMILARITY_WEIGHT * c.similarity() + (1.0 - SIMILARITY_WEIGHT) * lexical;
        c.set_score(blended);
    }
    RerankOutcome::Applied
}

/// Gives each candidate its ANN similarity as score: the order a skipped rerank leaves.
pub fn keep_ann_order<C: Candidate>(candidates: &mut [C]) {
    for c in candidates.iter_mut() {
        let s = c.similarity();
        c.set_score(s);
    }
}

/// Whether a raw token equals a lowercased query term, as [`tokens`] would compare them.
fn same_token(raw: &str, term: &str) -> bool {
    if raw.is_ascii() {
        raw.eq_ignore_ascii_case(term)
    } else {
        raw.to_lowercase() == term
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Doc(&'static str, f32, f32);
    impl Candidate for Doc {
        fn text(&self) -> &str {
            self.0
        }
        fn similarity(&self) -> f32 {
            self.1
        }
        fn set_score(&mut self, score: f32) {
            self.2 = score;
        }
    }

    #[test]
    fn lexical_match_lifts_a_candidate() {
        let mut docs = [
            Doc("likes green tea in the morning", 0.50, 0.0),
            Doc("dentist appointment on tuesday", 0.49, 0.0),
        ];
        assert_eq!(
            rerank("when is the dentist", &mut docs, Duration::from_millis(50)),
            RerankOutcome::Applied
        );
        assert!(docs[1].2 > docs[0].2, "{docs:?}");
    }

    #[test]
    fn terms_match_whatever_their_case() {
        let mut docs = [
            Doc("Lunch with ÉMILE at the Café", 0.50, 0.0),
            Doc("lunch with the team", 0.50, 0.0),
        ];
        rerank("émile café", &mut docs, Duration::from_millis(50));
        assert!(docs[0].2 > docs[1].2, "{docs:?}");
    }

    #[test]
    fn zero_budget_skips_and_keeps_similarity() {
        let mut docs = [Doc("a b c", 0.7, 0.0)];
        assert_eq!(
            rerank("b", &mut docs, Duration::ZERO),
            RerankOutcome::SkippedNoTime
        );
        assert_eq!(docs[0].2, 0.7);
    }
}
