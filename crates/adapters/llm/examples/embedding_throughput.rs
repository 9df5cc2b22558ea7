//! Measures embeddings per second of the built-in embedder and, with the
//! `local-embeddings` feature and a model directory, of all-MiniLM-L6-v2.
//!
//! ```text
//! cargo run --release -p karen-llm --example embedding_throughput
//! cargo run --release -p karen-llm --features local-embeddings \
//!     --example embedding_throughput -- /path/to/minilm
//! ```
//!
//! Passages are 200 words drawn from a fixed vocabulary by a fixed
//! pseudo-random sequence, so runs compare.

use std::error::Error;
use std::time::Instant;

use karen_llm::{EmbeddingProvider, HASH_EMBEDDING_MODEL_ID, HashEmbedder};

const VOCABULARY: &[&str] = &[
    "tenant",
    "retrieval",
    "document",
    "memory",
    "assistant",
    "invoice",
    "policy",
    "audit",
    "the",
    "of",
    "and",
    "a",
    "to",
    "in",
    "is",
    "for",
    "on",
    "with",
    "that",
    "by",
    "encryption",
    "backup",
    "latency",
    "report",
    "customer",
    "quarterly",
    "revenue",
    "contract",
    "meeting",
    "schedule",
    "passage",
    "embedding",
    "vector",
    "index",
    "search",
    "answer",
    "question",
    "rate",
    "limit",
    "budget",
    "billing",
    "usage",
    "compliance",
    "retention",
    "deployment",
    "Kubernetes",
    "PostgreSQL",
    "Redis",
    "model",
    "provider",
    "résumé",
    "naïve",
    "2026",
];

/// `count` passages of `words` words each.
fn passages(count: usize, words: usize) -> Vec<String> {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    (0..count)
        .map(|_| {
            (0..words)
                .map(|_| {
                    state = state
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    let index = (state >> 33) as usize % VOCABULARY.len();
                    VOCABULARY[index]
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

async fn measure(
    label: &str,
    provider: &dyn EmbeddingProvider,
    model: &str,
    inputs: &[String],
    batch: usize,
) -> Result<(), Box<dyn Error>> {
    // One warm-up batch: first-call costs are not throughput.
    provider
        .embed(model, &inputs[..batch.min(inputs.len())])
        .await?;
    let started = Instant::now();
    let mut tokens: u64 = 0;
    for chunk in inputs.chunks(batch) {
        tokens += u64::from(provider.embed(model, chunk).await?.prompt_tokens);
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{label}: {} inputs in {seconds:.2} s = {:.0} embeddings/s ({} tokens per input)",
        inputs.len(),
        inputs.len() as f64 / seconds,
        tokens / inputs.len() as u64
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let hash = HashEmbedder::default();
    measure(
        "karen-offline-hash-384, 200-word passages",
        &hash,
        HASH_EMBEDDING_MODEL_ID,
        &passages(20_000, 200),
        64,
    )
    .await?;
    measure(
        "karen-offline-hash-384, 12-word sentences",
        &hash,
        HASH_EMBEDDING_MODEL_ID,
        &passages(100_000, 12),
        64,
    )
    .await?;
    local_model().await
}

#[cfg(feature = "local-embeddings")]
async fn local_model() -> Result<(), Box<dyn Error>> {
    use karen_llm::{MINILM_MODEL_ID, MiniLmConfig, MiniLmEmbedder};
    let Some(directory) = std::env::args().nth(1) else {
        println!("all-minilm-l6-v2: skipped (pass the model directory)");
        return Ok(());
    };
    let started = Instant::now();
    let model = MiniLmEmbedder::load("minilm", &directory, MiniLmConfig::default())?;
    println!(
        "all-minilm-l6-v2: loaded in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    measure(
        "all-minilm-l6-v2, 200-word passages",
        &model,
        MINILM_MODEL_ID,
        &passages(256, 200),
        32,
    )
    .await?;
    measure(
        "all-minilm-l6-v2, 12-word sentences",
        &model,
        MINILM_MODEL_ID,
        &passages(1_024, 12),
        32,
    )
    .await
}

#[cfg(not(feature = "local-embeddings"))]
async fn local_model() -> Result<(), Box<dyn Error>> {
    println!("all-minilm-l6-v2: not built (enable the local-embeddings feature)");
    Ok(())
}
