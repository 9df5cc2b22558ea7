//! The built-in embedder: a deterministic, dependency-free text embedding
//! for embedded mode and tests (no model download, no network).
//!
//! It captures lexical similarity only — shared words, word pairs and word
//! fragments — not meaning: "car" and "automobile" are unrelated to it. It
//! is what retrieval falls back on until a real model is configured.
//!
//! # The function (model id [`HASH_EMBEDDING_MODEL_ID`])
//!
//! Vectors are persisted in the vector index, so this function must never
//! change for a given model id: a change means a new model id (and a
//! re-index). The golden tests pin its output bit for bit. It is:
//!
//! 1. **Tokens**: maximal runs of Unicode alphanumeric characters
//!    ([`char::is_alphanumeric`]), lowercased with [`char::to_lowercase`].
//!    Everything else separates words.
//! 2. **Features** of each text, each a 64-bit hash (FNV-1a over a
//!    one-byte namespace and the UTF-8 bytes, finished with MurmurHash3's
//!    `fmix64`):
//!    - every word (namespace `w`),
//!    - every pair of adjacent words (namespace `b`, the two word hashes
//!      hashed together),
//!    - every character trigram of each word padded as `<word>` (namespace
//!      `c`), so that "retrieve" and "retrieval" share most of theirs.
//! 3. **Weights**: a feature seen `tf` times weighs `kind × √tf` (sublinear
//!    term frequency, as Lucene's classic similarity); `kind` is 1 for
//!    words, 0.5 for pairs and 0.5 for trigrams (together, the trigrams of
//!    a word of six or more letters outweigh the word itself, so that forms
//!    of one stem come out close: "retrieve" and "retrieval" score ~0.5).
//! 4. **Signed feature hashing** into [`HASH_EMBEDDING_DIMENSIONS`] buckets:
//!    the bucket is the hash's high 32 bits scaled to the dimension count,
//!    the sign its lowest bit (collisions cancel out on average instead of
//!    piling up).
//! 5. **L2 normalisation**.
//!
//! Only IEEE-754 operations that are exactly rounded everywhere are used
//! (`+`, `×`, `/`, `√`; no `ln`, whose result differs between C libraries),
//! accumulated in `f64` in sorted feature order, so the output is the same
//! on every platform and every run. Word splitting and lowercasing follow
//! the Unicode tables of Rust's standard library; Unicode's stability
//! policies keep them fixed for assigned characters.
//!
//! # Empty texts
//!
//! A text without any letter or digit (empty, whitespace, punctuation)
//! embeds as the zero vector: it has no direction, and its cosine with
//! anything is undefined (a vector index computes 0 or NaN). Callers should
//! not index such texts and should answer an empty query with no results;
//! [`is_zero_vector`] tells them apart.

use async_trait::async_trait;
use karen_domain::ports::{EmbeddingProvider, Embeddings, LlmError};

use crate::embedding_common::{check_inputs, check_model};
use crate::tokens::estimate_tokens;

/// The model id of the built-in embedder (and of every vector it produced).
pub const HASH_EMBEDDING_MODEL_ID: &str = "karen-offline-hash-384";

/// The length of the built-in embedder's vectors.
pub const HASH_EMBEDDING_DIMENSIONS: usize = 384;

/// Feature namespaces: the same string as a word and as a trigram must not
/// share a hash.
const NAMESPACE_WORD: u8 = b'w';
const NAMESPACE_BIGRAM: u8 = b'b';
const NAMESPACE_TRIGRAM: u8 = b'c';

const WEIGHT_WORD: f64 = 1.0;
const WEIGHT_BIGRAM: f64 = 0.5;
const WEIGHT_TRIGRAM: f64 = 0.5;

/// Inputs above this many bytes in total are embedded on the blocking pool,
/// so that a big batch does not stall the async runtime (about 1 ms of work).
const INLINE_LIMIT_BYTES: usize = 32 * 1024;

/// The built-in deterministic embedder; see the module documentation.
#[derive(Debug, Clone)]
pub struct HashEmbedder {
    name: String,
}

impl HashEmbedder {
    /// An embedder reporting `name` in logs and usage records.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }

    /// Embeds one text (the pure function the provider applies to each input).
    pub fn embed_text(text: &str) -> Vec<f32> {
        // A word of n characters gives n trigrams, itself and a pair: about
        // one feature per byte of prose.
        let mut features = Vec::with_capacity(text.len() + 8);
        collect_features(text, &mut features);
        vector_of(&mut features)
    }
}

impl Default for HashEmbedder {
    /// Named `offline`, like the offline chat provider.
    fn default() -> Self {
        Self::new("offline")
    }
}

#[async_trait]
impl EmbeddingProvider for HashEmbedder {
    fn name(&self) -> &str {
        &self.name
    }

    /// Refuses another model id (its vectors would be filed under the wrong
    /// model) and an empty list of inputs, like every Karen embedder.
    async fn embed(&self, model: &str, inputs: &[String]) -> Result<Embeddings, LlmError> {
        check_model(model, HASH_EMBEDDING_MODEL_ID)?;
        check_inputs(inputs)?;
        let prompt_tokens = inputs
            .iter()
            .map(|input| estimate_tokens(input))
            .fold(0_u32, u32::saturating_add);
        let total_bytes: usize = inputs.iter().map(String::len).sum();
        let vectors = if total_bytes <= INLINE_LIMIT_BYTES {
            inputs.iter().map(|text| Self::embed_text(text)).collect()
        } else {
            let owned = inputs.to_vec();
            tokio::task::spawn_blocking(move || {
                owned.iter().map(|text| Self::embed_text(text)).collect()
            })
            .await
            // Not transient: the same inputs would fail the same way.
            .map_err(|error| {
                LlmError::InvalidResponse(format!("the embedding task failed: {error}"))
            })?
        };
        Ok(Embeddings {
            model: HASH_EMBEDDING_MODEL_ID.to_owned(),
            vectors,
            prompt_tokens,
            // Karen's estimate: this embedder has no tokenizer.
            counted_locally: true,
        })
    }
}

/// Whether `vector` is all zeros (the embedding of a text without words).
pub fn is_zero_vector(vector: &[f32]) -> bool {
    vector.iter().all(|value| *value == 0.0)
}

/// What kind of feature a hash stands for; its weight and its namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Word,
    Bigram,
    Trigram,
}

impl Kind {
    fn weight(self) -> f64 {
        match self {
            Kind::Word => WEIGHT_WORD,
            Kind::Bigram => WEIGHT_BIGRAM,
            Kind::Trigram => WEIGHT_TRIGRAM,
        }
    }
}

/// Appends the features of `text` as `(hash, kind)` pairs.
fn collect_features(text: &str, features: &mut Vec<(u64, Kind)>) {
    let mut padded = String::new();
    let mut boundaries = Vec::new();
    let mut previous_word_hash: Option<u64> = None;
    for raw_word in text
        .split(|character: char| !character.is_alphanumeric())
        .filter(|raw_word| !raw_word.is_empty())
    {
        // Lowercased character by character (not `str::to_lowercase`, whose
        // word-final sigma would make "σ" and "ς" different words).
        padded.clear();
        padded.push('<');
        padded.extend(raw_word.chars().flat_map(char::to_lowercase));
        padded.push('>');
        let word = &padded[1..padded.len() - 1];
        let word_hash = fnv1a_mixed(NAMESPACE_WORD, word.as_bytes());
        features.push((word_hash, Kind::Word));
        if let Some(previous) = previous_word_hash {
            features.push((combine(NAMESPACE_BIGRAM, previous, word_hash), Kind::Bigram));
        }
        previous_word_hash = Some(word_hash);
        // Every run of three characters of `<word>`: the byte ranges between
        // character boundaries i and i + 3.
        boundaries.clear();
        boundaries.extend(padded.char_indices().map(|(offset, _)| offset));
        boundaries.push(padded.len());
        for window in boundaries.windows(4) {
            let trigram = &padded.as_bytes()[window[0]..window[3]];
            features.push((fnv1a_mixed(NAMESPACE_TRIGRAM, trigram), Kind::Trigram));
        }
    }
}

/// Sums the features into buckets and normalises. `features` is sorted
/// first so that equal features are counted together and the floating-point
/// sums happen in one fixed order.
fn vector_of(features: &mut [(u64, Kind)]) -> Vec<f32> {
    features.sort_unstable();
    let mut sums = [0.0_f64; HASH_EMBEDDING_DIMENSIONS];
    for group in features.chunk_by(|left, right| left == right) {
        let (hash, kind) = group[0];
        let count = u32::try_from(group.len()).unwrap_or(u32::MAX);
        let weight = kind.weight() * f64::from(count).sqrt();
        let bucket = bucket_of(hash);
        if hash & 1 == 0 {
            sums[bucket] += weight;
        } else {
            sums[bucket] -= weight;
        }
    }
    let norm = sums.iter().map(|value| value * value).sum::<f64>().sqrt();
    if norm == 0.0 {
        return vec![0.0; HASH_EMBEDDING_DIMENSIONS];
    }
    sums.iter().map(|value| (value / norm) as f32).collect()
}

/// The bucket of a feature: its high 32 bits scaled to the dimension count
/// (Lemire's multiply-shift range reduction, no modulo bias to speak of).
fn bucket_of(hash: u64) -> usize {
    let high = hash >> 32;
    // Both factors are below 2^32, so the product fits in 64 bits.
    let bucket = (high * HASH_EMBEDDING_DIMENSIONS as u64) >> 32;
    bucket as usize
}

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Continues a 64-bit FNV-1a hash from `state` over `bytes`.
fn fnv1a_extend(state: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(state, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(FNV_PRIME)
    })
}

/// 64-bit FNV-1a of `bytes` (the published test vectors check it).
#[cfg(test)]
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    fnv1a_extend(FNV_OFFSET_BASIS, bytes)
}

/// FNV-1a of `namespace` then `bytes`, finished with MurmurHash3's 64-bit
/// finaliser: FNV alone mixes its last bytes poorly into the high bits,
/// which pick the bucket.
pub(crate) fn fnv1a_mixed(namespace: u8, bytes: &[u8]) -> u64 {
    fmix64(fnv1a_extend(
        fnv1a_extend(FNV_OFFSET_BASIS, &[namespace]),
        bytes,
    ))
}

/// The hash of an ordered pair of hashes in `namespace`.
pub(crate) fn combine(namespace: u8, first: u64, second: u64) -> u64 {
    let mut bytes = [0_u8; 16];
    bytes[..8].copy_from_slice(&first.to_le_bytes());
    bytes[8..].copy_from_slice(&second.to_le_bytes());
    fnv1a_mixed(namespace, &bytes)
}

/// MurmurHash3's `fmix64`: every input bit affects every output bit.
pub(crate) fn fmix64(mut hash: u64) -> u64 {
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^= hash >> 33;
    hash
}

#[cfg(test)]
#[path = "hash_embedder_tests.rs"]
mod tests;
