use super::*;

fn cosine(left: &[f32], right: &[f32]) -> f64 {
    left.iter()
        .zip(right)
        .map(|(a, b)| f64::from(*a) * f64::from(*b))
        .sum()
}

fn embed(text: &str) -> Vec<f32> {
    HashEmbedder::embed_text(text)
}

/// A digest of a vector's exact bits: any change of any component shows.
fn bits_digest(vector: &[f32]) -> u64 {
    let bytes: Vec<u8> = vector
        .iter()
        .flat_map(|value| value.to_bits().to_le_bytes())
        .collect();
    fnv1a(&bytes)
}

#[test]
fn fnv1a_matches_the_published_test_vectors() {
    assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
}

#[test]
fn fmix64_matches_murmurhash3() {
    assert_eq!(fmix64(0), 0);
    assert_eq!(fmix64(1), 0xb456_bcfc_34c2_cb2c);
}

/// The golden values: these vectors are persisted in vector indexes, so they
/// must never change for this model id. If this test fails, the function
/// changed: revert, or give it a new model id (and plan a re-index).
/// Each entry: the text, a digest of the exact bits of its whole vector, and
/// its first non-zero components (readable evidence of what changed).
/// An independent implementation of the documented function (in Python,
/// outside the repository) gave the same digests.
type Golden = (&'static str, u64, &'static [(usize, f32)]);

const GOLDEN: &[Golden] = &[
    ("", 0x6ab0_5ef9_aa8b_9b25, &[]),
    (
        "a",
        0x4f80_8abd_c7a1_bdf6,
        &[(145, -0.4472136), (240, -0.8944272)],
    ),
    (
        "Karen retrieves passages from the tenant's documents.",
        0x9a83_a780_d9a7_3581,
        &[(0, -0.1118034), (3, 0.1118034), (6, -0.1118034)],
    ),
    (
        "Ünïcödé ΣΟΦΙΑ straße 東京 2026",
        0x58ad_323c_e68e_fd80,
        &[(30, 0.14142136), (65, 0.14142136), (86, -0.28284273)],
    ),
];

#[test]
fn golden_vectors_never_change() {
    for (text, digest, first_components) in GOLDEN {
        let vector = embed(text);
        assert_eq!(vector.len(), HASH_EMBEDDING_DIMENSIONS);
        let nonzero: Vec<(usize, f32)> = vector
            .iter()
            .copied()
            .enumerate()
            .filter(|(_, value)| *value != 0.0)
            .take(first_components.len())
            .collect();
        let bits = |components: &[(usize, f32)]| {
            components
                .iter()
                .map(|(index, value)| (*index, value.to_bits()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            bits(&nonzero),
            bits(first_components),
            "{text:?}: {nonzero:?}"
        );
        assert_eq!(
            bits_digest(&vector),
            *digest,
            "digest of {text:?}: {:#x}",
            bits_digest(&vector)
        );
    }
}

#[test]
fn vectors_are_unit_length_or_zero() {
    for text in [
        "one",
        "a longer text with several words, and punctuation!",
        "ÉCOLE école",
    ] {
        let vector = embed(text);
        let norm = cosine(&vector, &vector).sqrt();
        assert!((norm - 1.0).abs() < 1e-6, "{text}: {norm}");
    }
    for text in ["", "   ", "?!… — ;", "\n\t"] {
        let vector = embed(text);
        assert_eq!(vector.len(), HASH_EMBEDDING_DIMENSIONS);
        assert!(is_zero_vector(&vector), "{text:?}");
    }
    assert!(!is_zero_vector(&embed("x")));
}

#[test]
fn tokens_are_case_and_punctuation_insensitive_words() {
    assert_eq!(
        embed("Hello, World!"),
        embed("hello world"),
        "case and punctuation"
    );
    assert_eq!(embed("ÉCOLE"), embed("école"), "non-ASCII case");
    assert_eq!(
        embed("ΣΟΦΟΣ"),
        embed("σοφοσ"),
        "word-final sigma is not special"
    );
    assert_ne!(
        embed("new york"),
        embed("york new"),
        "bigrams keep word order"
    );
}

#[test]
fn shared_words_and_fragments_make_texts_close() {
    let query = embed("how do I retrieve a document");
    let related = embed("document retrieval for tenants");
    let unrelated = embed("the weather in paris is sunny");
    assert!(
        cosine(&query, &related) > cosine(&query, &unrelated) + 0.1,
        "{} vs {}",
        cosine(&query, &related),
        cosine(&query, &unrelated)
    );
    // Morphology: the word forms share most character trigrams.
    let retrieve = embed("retrieve");
    let retrieval = cosine(&retrieve, &embed("retrieval"));
    let banana = cosine(&retrieve, &embed("banana"));
    assert!(retrieval > 0.4, "{retrieval}");
    assert!(retrieval > banana + 0.3, "{retrieval} vs {banana}");
    // Repetition counts sublinearly: a repeated word does not swamp the rest.
    let repeated = embed("invoice invoice invoice invoice refund");
    let refund = embed("refund");
    assert!(
        cosine(&repeated, &refund) > 0.2,
        "{}",
        cosine(&repeated, &refund)
    );
}

#[test]
fn every_bucket_and_both_signs_are_used() {
    let mut buckets = [false; HASH_EMBEDDING_DIMENSIONS];
    let (mut positive, mut negative) = (0, 0);
    for word in 0..5_000 {
        let hash = fnv1a_mixed(NAMESPACE_WORD, format!("word{word}").as_bytes());
        buckets[bucket_of(hash)] = true;
        if hash & 1 == 0 {
            positive += 1;
        } else {
            negative += 1;
        }
    }
    assert!(buckets.iter().all(|used| *used));
    assert!(
        (2_300..2_700).contains(&positive),
        "{positive} / {negative}"
    );
}

#[tokio::test]
async fn the_provider_embeds_in_order_and_counts_tokens() {
    let embedder = HashEmbedder::default();
    assert_eq!(embedder.name(), "offline");
    let inputs = vec!["first text".to_owned(), String::new(), "third".to_owned()];
    let embeddings = embedder
        .embed(HASH_EMBEDDING_MODEL_ID, &inputs)
        .await
        .unwrap();
    assert_eq!(embeddings.model, HASH_EMBEDDING_MODEL_ID);
    assert_eq!(
        embeddings.vectors,
        vec![embed("first text"), embed(""), embed("third")]
    );
    assert_eq!(embeddings.prompt_tokens, 3);
}

#[tokio::test]
async fn large_batches_give_the_same_vectors() {
    let inputs: Vec<String> = (0..1_000)
        .map(|index| format!("passage number {index} about retrieval and memory"))
        .collect();
    assert!(inputs.iter().map(String::len).sum::<usize>() > INLINE_LIMIT_BYTES);
    let embeddings = HashEmbedder::default()
        .embed(HASH_EMBEDDING_MODEL_ID, &inputs)
        .await
        .unwrap();
    assert_eq!(embeddings.vectors.len(), 1_000);
    assert_eq!(embeddings.vectors[999], embed(&inputs[999]));
}

#[tokio::test]
async fn other_models_and_empty_input_lists_are_refused() {
    let embedder = HashEmbedder::new("builtin");
    let inputs = vec!["text".to_owned()];
    assert!(matches!(
        embedder.embed("text-embedding-3-small", &inputs).await,
        Err(LlmError::Refused(_))
    ));
    assert!(matches!(
        embedder.embed(HASH_EMBEDDING_MODEL_ID, &[]).await,
        Err(LlmError::Refused(_))
    ));
}
