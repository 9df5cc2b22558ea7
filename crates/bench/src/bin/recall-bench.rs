//! Chat-turn recall benchmark: the latency recall adds to a chat turn (what
//! runs before the model is called: embedding the message, the vector and
//! full-text searches, fusion, loading the hits from SQL, the relevance floor
//! and the token budget), measured through the same service call the chat
//! turn makes, on a tenant holding many memories and document passages.
//!
//! `cargo run --release -p karen-bench --bin recall-bench -- --memories 100000 --chunks 10000`
//! (`--backend postgres` runs on PostgreSQL with its full-text index and Milvus).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use karen_app::memory::{DocumentUpload, RecallPolicy};
use karen_bench::{Rng, percentile};
use karen_domain::memory::{DecayTier, Importance, MemoryDraft, MemoryKind, MemoryText};
use karen_testkit::{Backend, spawn};

/// Recall latency in a chat turn.
#[derive(Parser, Debug)]
struct Args {
    /// Memories of the user.
    #[arg(long, default_value_t = 100_000)]
    memories: usize,
    /// Document passages of the tenant (approximately: documents are added
    /// until at least this many).
    #[arg(long, default_value_t = 10_000)]
    chunks: usize,
    /// Measured recalls.
    #[arg(long, default_value_t = 1000)]
    queries: usize,
    /// `sqlite` (embedded indexes) or `postgres` (PostgreSQL full text and Milvus).
    #[arg(long, default_value = "sqlite")]
    backend: String,
}

/// A reproducible vocabulary of pronounceable words.
fn vocabulary(rng: &mut Rng, size: usize) -> Vec<String> {
    const SYLLABLES: &[&str] = &[
        "ka", "ren", "mo", "li", "tas", "ver", "on", "del", "pi", "sur", "ga", "to", "mel", "din",
        "ro", "sa", "quo", "ber", "na", "vix", "tul", "ep", "ra", "zo",
    ];
    let mut words = std::collections::BTreeSet::new();
    while words.len() < size {
        let syllables = 2 + rng.below(3);
        let word: String = (0..syllables)
            .map(|_| SYLLABLES[rng.below(SYLLABLES.len())])
            .collect();
        words.insert(word);
    }
    words.into_iter().collect()
}

fn sentence(rng: &mut Rng, words: &[String], length: usize) -> String {
    let mut text: Vec<&str> = (0..length)
        .map(|_| words[rng.below(words.len())].as_str())
        .collect();
    text.dedup();
    let mut sentence = text.join(" ");
    sentence.push('.');
    sentence
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let backend = match args.backend.as_str() {
        "sqlite" => Backend::Sqlite,
        "postgres" => Backend::Postgres,
        other => bail!("--backend: '{other}' is not sqlite or postgres"),
    };
    let app = spawn(backend)
        .await
        .context("the backend's services are not running")?;
    let tenant = app.create_tenant("bench").await;
    let services = &app.karen.services;
    let ctx = services
        .auth
        .authenticate(&tenant.owner_token)
        .await
        .map_err(|e| anyhow::anyhow!("authenticate: {e}"))?;
    let mut rng = Rng(0x00C0_FFEE);
    let words = vocabulary(&mut rng, 5000);

    let started = Instant::now();
    let mut stored: Vec<String> = Vec::with_capacity(args.memories);
    while stored.len() < args.memories {
        let batch: Vec<String> = (0..1000.min(args.memories - stored.len()))
            .map(|_| {
                let length = 8 + rng.below(8);
                sentence(&mut rng, &words, length)
            })
            .collect();
        let mut drafts = Vec::with_capacity(batch.len());
        for text in &batch {
            drafts.push(MemoryDraft {
                kind: MemoryKind::Fact,
                content: MemoryText::parse(text).map_err(|e| anyhow::anyhow!("{e}"))?,
                importance: Importance::new(1 + rng.below(10) as u8)
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
                tier: DecayTier::Long,
            });
        }
        services
            .memory
            .memories
            .remember_drafts(&ctx, drafts, None)
            .await
            .map_err(|e| anyhow::anyhow!("remember: {e}"))?;
        stored.extend(batch);
    }
    let memories_built = started.elapsed();

    let started = Instant::now();
    let mut chunks = 0usize;
    let mut documents = 0usize;
    let mut passages: Vec<String> = Vec::new();
    while chunks < args.chunks {
        let mut markdown = format!("# Handbook {documents}\n");
        for section in 0..40 {
            let paragraph: Vec<String> = (0..6)
                .map(|_| {
                    let length = 10 + rng.below(10);
                    sentence(&mut rng, &words, length)
                })
                .collect();
            let paragraph = paragraph.join(" ");
            markdown.push_str(&format!("\n## Section {section}\n\n{paragraph}\n"));
            passages.push(paragraph);
        }
        let document = services
            .memory
            .documents
            .upload(
                &ctx,
                DocumentUpload {
                    bytes: markdown.into_bytes(),
                    media_type: Some("text/markdown".into()),
                    file_name: Some(format!("handbook-{documents}.md")),
                    title: None,
                    access_roles: Vec::new(),
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("upload: {e}"))?;
        chunks += document.chunk_count as usize;
        documents += 1;
    }
    let documents_built = started.elapsed();

    // Questions: most share words with a stored memory or passage (so recall
    // finds something, as in real use), some share nothing.
    let questions: Vec<String> = (0..args.queries + 50)
        .map(|i| {
            let source = match i % 10 {
                0..=4 => stored[rng.below(stored.len())].clone(),
                5..=7 => passages[rng.below(passages.len())].clone(),
                _ => sentence(&mut rng, &words, 12),
            };
            let own: Vec<&str> = source.split_whitespace().collect();
            let mut question: Vec<String> = (0..4)
                .map(|_| own[rng.below(own.len())].trim_end_matches('.').to_owned())
                .collect();
            question.push(words[rng.below(words.len())].clone());
            format!("what about {}?", question.join(" "))
        })
        .collect();
    let policy = RecallPolicy::default();
    let retriever = &services.memory.retriever;
    for question in questions.iter().take(50) {
        retriever
            .recall_for_turn(&ctx, question, &policy)
            .await
            .map_err(|e| anyhow::anyhow!("recall: {e}"))?;
    }
    let mut latencies: Vec<Duration> = Vec::with_capacity(args.queries);
    let mut offered = 0usize;
    for question in questions.iter().skip(50) {
        let t = Instant::now();
        let recall = retriever
            .recall_for_turn(&ctx, question, &policy)
            .await
            .map_err(|e| anyhow::anyhow!("recall: {e}"))?;
        latencies.push(t.elapsed());
        offered += recall.items.len();
    }
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "| backend | memories | passages (documents) | load memories | load documents | items offered / turn | p50 | p90 | p99 | max |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {chunks} ({documents}) | {:.0} s | {:.0} s | {:.1} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms |",
        args.backend,
        stored.len(),
        memories_built.as_secs_f64(),
        documents_built.as_secs_f64(),
        offered as f64 / latencies.len().max(1) as f64,
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 90.0)),
        ms(percentile(&latencies, 99.0)),
        ms(latencies.last().copied().unwrap_or_default()),
    );
    app.stop().await;
    Ok(())
}
