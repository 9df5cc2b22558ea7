//! Rough numbers, not assertions: indexing rate and query latency over 10,000
//! synthetic passages. Ignored by default; run with
//! `cargo nextest run -p karen-text --run-ignored only --no-capture bench`
//! (add `--release` for numbers that mean something).

use std::time::{Duration, Instant};

use karen_domain::ports::TextEntry;

use crate::support::{Backend, Fixture, anyone, chunk_key, entry};

const PASSAGES: usize = 10_000;
const WORDS_PER_PASSAGE: usize = 120;
const BATCH: usize = 500;
const QUERIES: usize = 1_000;

/// A deterministic generator (xorshift), so runs compare.
struct Words {
    state: u64,
    vocabulary: Vec<String>,
}

impl Words {
    fn new() -> Self {
        let syllables = [
            "ka", "ren", "lo", "mi", "ta", "su", "ve", "dor", "pla", "qui", "zen", "bro",
        ];
        let mut vocabulary = Vec::new();
        // About 8,600 distinct words (a short novel's vocabulary).
        for a in syllables {
            for b in syllables {
                for c in syllables {
                    for d in ["", "s", "ing", "ed", "ment"] {
                        vocabulary.push(format!("{a}{b}{c}{d}"));
                    }
                }
            }
        }
        Self {
            state: 0x9E37_79B9_7F4A_7C15,
            vocabulary,
        }
    }

    fn next(&mut self) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state
    }

    /// Zipf-like: low ranks are much more frequent, as in real text.
    fn word(&mut self) -> &str {
        let n = self.vocabulary.len() as f64;
        let u = (self.next() % 1_000_000) as f64 / 1_000_000.0;
        let rank = (n.powf(u) as usize)
            .saturating_sub(1)
            .min(self.vocabulary.len() - 1);
        &self.vocabulary[rank]
    }

    fn text(&mut self, words: usize) -> String {
        (0..words)
            .map(|_| self.word().to_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn measure(backend: Backend) {
    let fixture = Fixture::new(backend).await;
    let tenant = fixture.tenant().await;
    let mut words = Words::new();
    let passages: Vec<TextEntry> = (0..PASSAGES)
        .map(|_| entry(chunk_key(), &words.text(WORDS_PER_PASSAGE)))
        .collect();
    let started = Instant::now();
    for batch in passages.chunks(BATCH) {
        fixture.index.upsert(tenant, batch.to_vec()).await.unwrap();
    }
    let indexing = started.elapsed();
    let filter = anyone();
    let mut latencies = Vec::with_capacity(QUERIES);
    let mut hits = 0;
    for i in 0..QUERIES {
        let query = words.text(2 + i % 4);
        let started = Instant::now();
        hits += fixture
            .index
            .search(tenant, &query, 10, &filter)
            .await
            .unwrap()
            .len();
        latencies.push(started.elapsed());
    }
    latencies.sort();
    println!(
        "{backend:?}: indexed {PASSAGES} passages of {WORDS_PER_PASSAGE} words in batches of {BATCH} \
         in {indexing:.2?} ({:.0} entries/s); {QUERIES} queries of 2-5 words, top 10 \
         ({hits} hits): p50 {:.2?}, p99 {:.2?}, max {:.2?}",
        PASSAGES as f64 / indexing.as_secs_f64(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1],
    );
    fixture.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a test"]
async fn embedded_10k_passages() {
    measure(Backend::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a test"]
async fn postgres_10k_passages() {
    measure(Backend::Postgres).await;
}
