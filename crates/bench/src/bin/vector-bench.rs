//! Vector index benchmark: builds the embedded index and Milvus from the same
//! random-but-clustered vectors and prints, per size, build time, resident
//! memory, recall@10 against exact search, and p50/p99 query latency, all
//! measured through the `VectorIndex` port (as Karen calls it).
//!
//! `cargo run --release -p karen-bench --bin vector-bench -- --sizes 10000,100000`
//! (Milvus from `scripts/milvus-lite.sh`, or `--milvus-url`; `--no-milvus` to skip it).
//!
//! 1M embedded and 100k through Milvus Lite (which answers in about 0.7 s a
//! query, so it gets fewer): `--sizes 100000,1000000 --queries 500
//! --milvus-queries 50`. Memory at 1M: the generated vectors (1M × 384 f32,
//! about 1.5 GiB) stay in memory for the exact search, the index holds its own
//! copy plus the graph (about 1.7 GiB), and a snapshot serialises one graph
//! at a time (up to another 1.7 GiB while it is written): about 5 GiB at peak.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use karen_bench::{Rng, percentile};
use karen_vector::karen_domain::ports::{
    EntryAccess, EntryKey, EntryKind, SearchFilter, VectorEntry, VectorIndex, VectorSpace,
};
use karen_vector::karen_domain::{TenantId, UserId};
use karen_vector::uuid::Uuid;
use karen_vector::{
    EmbeddedVectorConfig, EmbeddedVectorIndex, MilvusConfig, MilvusVectorIndex, TenantDirectories,
    dot,
};

/// Vector index benchmark (embedded index and Milvus).
#[derive(Parser, Debug)]
struct Args {
    /// Index sizes to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
    sizes: Vec<usize>,
    /// Vector length.
    #[arg(long, default_value_t = 384)]
    dims: usize,
    /// Cluster centres the vectors are drawn around.
    #[arg(long, default_value_t = 200)]
    clusters: usize,
    /// Queries per size (exact search for recall is the slow part at 1M).
    #[arg(long, default_value_t = 1000)]
    queries: usize,
    /// Queries per size sent to Milvus (the first ones of `--queries`):
    /// Milvus Lite answers in about 0.7 s each.
    #[arg(long, default_value_t = 100)]
    milvus_queries: usize,
    /// Entries per upsert call.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// HNSW search expansion (ef) of the embedded index.
    #[arg(long, default_value_t = EmbeddedVectorConfig::default().expansion_search)]
    ef: usize,
    /// Milvus endpoint.
    #[arg(long, default_value = "http://127.0.0.1:19530")]
    milvus_url: String,
    /// Skip Milvus.
    #[arg(long)]
    no_milvus: bool,
    /// Largest size loaded into Milvus (Milvus Lite is a single local process).
    #[arg(long, default_value_t = 100_000)]
    milvus_max: usize,
    /// Largest size built in the embedded index.
    #[arg(long, default_value_t = usize::MAX)]
    embedded_max: usize,
    /// Directory for the embedded index (a temporary one by default).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

/// `count` vectors around `centres`, each centre + noise, unit length.
fn clustered(rng: &mut Rng, centres: &[Vec<f32>], count: usize, noise: f32) -> Vec<Vec<f32>> {
    (0..count)
        .map(|_| {
            let centre = &centres[(rng.next() % centres.len() as u64) as usize];
            let mut v: Vec<f32> = centre.iter().map(|c| c + noise * rng.normal()).collect();
            let norm = v
                .iter()
                .map(|x| x * x)
                .sum::<f32>()
                .sqrt()
                .max(f32::MIN_POSITIVE);
            v.iter_mut().for_each(|x| *x /= norm);
            v
        })
        .collect()
}

/// Exact top-10 by inner product (the data is unit length: cosine), on every core.
fn exact_top10(data: &[Vec<f32>], queries: &[Vec<f32>]) -> Vec<Vec<usize>> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let chunk = queries.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = queries
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|q| {
                            let mut best: Vec<(f32, usize)> = Vec::with_capacity(11);
                            for (i, v) in data.iter().enumerate() {
                                let s = dot(q, v);
                                if best.len() < 10 || s > best[best.len() - 1].0 {
                                    let at = best.partition_point(|(bs, _)| *bs >= s);
                                    best.insert(at, (s, i));
                                    best.truncate(10);
                                }
                            }
                            best.into_iter().map(|(_, i)| i).collect()
                        })
                        .collect::<Vec<Vec<usize>>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

/// Resident memory of a process in MiB (Linux).
fn rss_mib(pid: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// The pid of the local `milvus-lite server`, to read its memory.
fn milvus_lite_pid() -> Option<String> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid = entry.file_name().to_string_lossy().into_owned();
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            (pid.chars().all(|c| c.is_ascii_digit())
                && cmdline.contains("milvus-lite")
                && cmdline.contains("server"))
            .then_some(pid)
        })
}

fn key_of(i: usize) -> EntryKey {
    EntryKey::new(EntryKind::Chunk, Uuid::from_u128(i as u128 + 1))
}

fn index_of(key: &EntryKey) -> usize {
    (key.id.as_u128() - 1) as usize
}

struct Measured {
    build: Duration,
    rss_mib: Option<f64>,
    recall: f64,
    p50: Duration,
    p99: Duration,
}

async fn measure(
    index: &dyn VectorIndex,
    space: &VectorSpace,
    data: &[Vec<f32>],
    queries: &[Vec<f32>],
    truth: &[Vec<usize>],
    batch: usize,
    rss_of: &dyn Fn() -> Option<f64>,
) -> anyhow::Result<Measured> {
    let tenant = TenantId::generate();
    let started = Instant::now();
    for (b, chunk) in data.chunks(batch).enumerate() {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, v)| VectorEntry {
                key: key_of(b * batch + i),
                access: EntryAccess::default(),
                vector: v.clone(),
            })
            .collect();
        index.upsert(tenant, space, entries).await?;
    }
    let build = started.elapsed();
    let rss_mib = rss_of();
    let filter = SearchFilter {
        kinds: vec![],
        user: UserId::generate(),
        roles: vec![],
    };
    // Warm-up (loads, caches), not measured.
    for q in queries.iter().take(20.min(queries.len() / 5 + 1)) {
        index.search(tenant, space, q, 10, &filter).await?;
    }
    let mut latencies = Vec::with_capacity(queries.len());
    let mut found = 0usize;
    for (q, expected) in queries.iter().zip(truth) {
        let t = Instant::now();
        let hits = index.search(tenant, space, q, 10, &filter).await?;
        latencies.push(t.elapsed());
        found += hits
            .iter()
            .filter(|h| expected.contains(&index_of(&h.key)))
            .count();
    }
    latencies.sort();
    let pick = |p: f64| percentile(&latencies, p * 100.0);
    let measured = Measured {
        build,
        rss_mib,
        recall: found as f64 / (truth.len() * 10) as f64,
        p50: pick(0.50),
        p99: pick(0.99),
    };
    index.drop_space(tenant, space).await?;
    Ok(measured)
}

fn print_row(backend: &str, n: usize, m: &Measured) {
    println!(
        "| {backend} | {n} | {:.1} s | {} | {:.4} | {:.2} ms | {:.2} ms |",
        m.build.as_secs_f64(),
        m.rss_mib
            .map_or("n/a".to_owned(), |r| format!("{r:.0} MiB")),
        m.recall,
        m.p50.as_secs_f64() * 1e3,
        m.p99.as_secs_f64() * 1e3,
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.dims == 0 || args.sizes.is_empty() || args.queries == 0 || args.milvus_queries == 0 {
        bail!("--dims, --sizes, --queries and --milvus-queries must be positive");
    }
    let space = VectorSpace {
        model: format!("bench-clustered-{}", args.dims),
        dims: args.dims as u32,
    };
    let temp = std::env::temp_dir().join(format!("karen-vector-bench-{}", Uuid::new_v4()));
    let root = args.dir.clone().unwrap_or(temp.clone());
    let config = EmbeddedVectorConfig {
        expansion_search: args.ef,
        ..EmbeddedVectorConfig::default()
    };
    let embedded: Arc<dyn VectorIndex> = Arc::new(EmbeddedVectorIndex::new(
        TenantDirectories::new(&root),
        config,
    ));
    let milvus: Option<Arc<dyn VectorIndex>> = if args.no_milvus {
        None
    } else {
        let config = MilvusConfig {
            collection_prefix: "karen_bench".to_owned(),
            timeout: Duration::from_secs(120),
            ..MilvusConfig::new(args.milvus_url.clone())
        };
        let index = MilvusVectorIndex::connect(config)
            .await
            .with_context(|| format!("Milvus at {} (or pass --no-milvus)", args.milvus_url))?;
        Some(Arc::new(index))
    };
    let milvus_pid = milvus_lite_pid();
    let own_pid = std::process::id().to_string();

    println!(
        "dims {}, {} clusters, {} queries per size ({} for Milvus), ef {}, {} cores",
        args.dims,
        args.clusters,
        args.queries,
        args.milvus_queries.min(args.queries),
        args.ef,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("| backend | vectors | build | resident memory | recall@10 | p50 | p99 |");
    println!("|---|---|---|---|---|---|---|");
    for &n in &args.sizes {
        let mut rng = Rng(0x5EED ^ n as u64);
        let centres: Vec<Vec<f32>> = (0..args.clusters)
            .map(|_| (0..args.dims).map(|_| rng.unit()).collect())
            .collect();
        let data = clustered(&mut rng, &centres, n, 0.35);
        let queries = clustered(&mut rng, &centres, args.queries, 0.35);
        let t = Instant::now();
        let truth = exact_top10(&data, &queries);
        eprintln!(
            "n={n}: exact top-10 of {} queries in {:.1} s",
            queries.len(),
            t.elapsed().as_secs_f64()
        );

        if n <= args.embedded_max {
            let base = rss_mib(&own_pid).unwrap_or(0.0);
            let rss = || rss_mib(&own_pid).map(|r| r - base);
            let m = measure(
                embedded.as_ref(),
                &space,
                &data,
                &queries,
                &truth,
                args.batch,
                &rss,
            )
            .await?;
            print_row("embedded (usearch)", n, &m);
        } else {
            println!("| embedded (usearch) | {n} | skipped (--embedded-max) | | | | |");
        }
        match (&milvus, n <= args.milvus_max) {
            (Some(milvus), true) => {
                let pid = milvus_pid.clone();
                let rss = move || pid.as_deref().and_then(rss_mib);
                let asked = args.milvus_queries.min(queries.len());
                let m = measure(
                    milvus.as_ref(),
                    &space,
                    &data,
                    &queries[..asked],
                    &truth[..asked],
                    args.batch,
                    &rss,
                )
                .await?;
                print_row("Milvus Lite", n, &m);
            }
            (Some(_), false) => println!("| Milvus Lite | {n} | skipped (--milvus-max) | | | | |"),
            (None, _) => {}
        }
    }
    if args.dir.is_none() {
        let _ = std::fs::remove_dir_all(temp);
    }
    Ok(())
}
