//! Deterministic local text embedding: hashed word, word-bigram and character-trigram features
//! folded into [`DIMS`] signed buckets and L2-normalised. No model, no download, the same vector
//! for the same text on every machine — which is what a reference service needs.

use std::sync::Arc;

/// Embedding dimensionality.
pub const DIMS: usize = 256;

/// An L2-normalised embedding (or the zero vector for text without features). Cheap to clone:
/// the store row and the ANN index share one allocation.
#[derive(Clone, Debug, PartialEq)]
pub struct Embedding(Arc<[f32; DIMS]>);

impl Embedding {
    /// Embeds `text`.
    pub fn of_text(text: &str) -> Self {
        let mut v = [0f32; DIMS];
        let words = tokens(text);
        let content: Vec<&str> = words
            .iter()
            .map(String::as_str)
            .filter(|w| !is_stopword(w))
            .collect();
        for word in &content {
            add_feature(&mut v, b"w", word.as_bytes(), 1.0);
            let padded: Vec<char> = std::iter::once('^')
                .chain(word.chars())
                .chain(std::iter::once('$'))
                .collect();
            let grams = padded.len().saturating_sub(2).max(1) as f32;
            let gram_weight = 0.6 / grams.sqrt();
            for gram in padded.windows(3) {
                let gram: String = gram.iter().collect();
                add_feature(&mut v, b"c", gram.as_bytes(), gram_weight);
            }
        }
        for pair in content.windows(2) {
            let bigram = format!("{} {}", pair[0], pair[1]);
            add_feature(&mut v, b"b", bigram.as_bytes(), 0.5);
        }
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            v.iter_mut().for_each(|x| *x /= norm);
        }
        Embedding(Arc::new(v))
    }

    /// The vector.
    pub fn as_slice(&self) -> &[f32; DIMS] {
        &self.0
    }

    /// Cosine similarity (a dot product, both vectors being unit length).
    pub fn similarity(&self, other: &Embedding) -> f32 {
        dot(&self.0, &other.0)
    }
}

fn dot(a: &[f32; DIMS], b: &[f32; DIMS]) -> f32 {
    // Sixteen independent accumulators let the compiler vectorise the loop (a single running sum
    // would force sequential float additions).
    let mut acc = [0f32; 16];
    for k in (0..DIMS).step_by(16) {
        for i in 0..16 {
            acc[i] += a[k + i] * b[k + i];
        }
    }
    acc.iter().sum()
}

fn add_feature(v: &mut [f32; DIMS], namespace: &[u8], feature: &[u8], weight: f32) {
    let h = feature_hash(namespace, feature);
    let bucket = (h % DIMS as u64) as usize;
    let sign = if h >> 63 == 0 { 1.0 } else { -1.0 };
    v[bucket] += sign * weight;
}

/// FNV-1a followed by a SplitMix64 finaliser: stable across platforms and Rust versions.
fn feature_hash(namespace: &[u8], feature: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in namespace.iter().chain(b":").chain(feature) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Lowercased alphanumeric tokens of `text` (the tokeniser shared with the reranker).
pub fn tokens(text: &str) -> Vec<String> {
    raw_tokens(text).map(str::to_lowercase).collect()
}

/// The alphanumeric tokens of `text` as they appear, not yet lowercased.
pub fn raw_tokens(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
}

/// Common English function words, which carry no topic.
pub fn is_stopword(word: &str) -> bool {
    matches!(
        word,
        "a" | "an"
            | "and"
            | "are"
            | "as"
            | "at"
            | "be"
            | "by"
            | "for"
            | "from"
            | "has"
            | "have"
            | "i"
            | "in"
            | "is"
            | "it"
            | "its"
            | "me"
            | "my"
            | "of"
            | "on"
            | "or"
            | "that"
            | "the"
            | "this"
            | "to"
            | "was"
            | "we"
            | "what"
            | "with"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_normalised() {
        let a = Embedding::of_text("Prefers aisle seats on long flights");
        let b = Embedding::of_text("Prefers aisle seats on long flights");
        assert_eq!(a, b);
        let norm: f32 = a.as_slice().iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-4, "{norm}");
        assert_eq!(Embedding::of_text("").similarity(&a), 0.0);
    }

    #[test]
    fn similar_text_scores_higher_than_unrelated_text() {
        let q = Embedding::of_text("which seat do I like on flights");
        let near = Embedding::of_text("Prefers aisle seats on long flights");
        let far = Embedding::of_text("Daughter's piano recital is on Friday");
        assert!(q.similarity(&near) > q.similarity(&far));
    }

    #[test]
    fn marker_query_finds_the_marker() {
        let q = Embedding::of_text("MARKER-user_3-5f1c2a9e0b7d");
        let own = Embedding::of_text("Vault note: MARKER-user_3-5f1c2a9e0b7d keep private");
        let other = Embedding::of_text("Vault note: MARKER-user_4-a0e9d31c88b2 keep private");
        assert!(q.similarity(&own) > q.similarity(&other));
    }
}
