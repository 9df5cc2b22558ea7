//! Filtered searches in one tenant's space holding memories and document
//! passages together (as a chat turn's recall searches them): p50/p99 and
//! recall@10 against exact search, for the embedded index (one HNSW graph per
//! entry kind) and for the layout before it (one graph of every kind, walked
//! with the access filter, every entry scanned when the walk comes up short),
//! rebuilt here on usearch directly so that both run in one binary.
//!
//! `nice -n 19 cargo run --release -p karen-vector --example filtered_search -- --memories 100000 --chunks 10000`
//!
//! Alice owns 95% of the memories (a user recalling their own), Bob 5% (a
//! selective filter); 80% of the passages are open, 20% restricted to a role
//! neither has.

use std::collections::HashMap;
use std::error::Error;
use std::time::{Duration, Instant};

use karen_vector::karen_domain::ports::{
    EntryAccess, EntryKey, EntryKind, SearchFilter, VectorEntry, VectorIndex, VectorSpace,
};
use karen_vector::karen_domain::{RoleName, TenantId, UserId};
use karen_vector::uuid::Uuid;
use karen_vector::{EmbeddedVectorConfig, EmbeddedVectorIndex, TenantDirectories, dot};
use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

type Failure = Box<dyn Error + Send + Sync>;

struct Args {
    memories: usize,
    chunks: usize,
    queries: usize,
    dims: usize,
}

fn args() -> Result<Args, Failure> {
    let mut parsed = Args {
        memories: 100_000,
        chunks: 10_000,
        queries: 300,
        dims: 384,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value: usize = it.next().ok_or("a value must follow each flag")?.parse()?;
        match flag.as_str() {
            "--memories" => parsed.memories = value,
            "--chunks" => parsed.chunks = value,
            "--queries" => parsed.queries = value,
            "--dims" => parsed.dims = value,
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    Ok(parsed)
}

/// splitmix64, and a normal deviate from two uniforms.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }

    fn normal(&mut self) -> f32 {
        let (u, v) = (self.unit().max(1e-7), self.unit());
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    }
}

/// `count` unit vectors, each a random centre plus noise.
fn clustered(rng: &mut Rng, centres: &[Vec<f32>], count: usize) -> Vec<Vec<f32>> {
    (0..count)
        .map(|_| {
            let centre = &centres[(rng.next() % centres.len() as u64) as usize];
            let mut v: Vec<f32> = centre.iter().map(|c| c + 0.35 * rng.normal()).collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            v.iter_mut().for_each(|x| *x /= norm);
            v
        })
        .collect()
}

/// One search to time: who searches, for which kinds, how many hits.
struct Case {
    name: &'static str,
    filter: SearchFilter,
    limit: usize,
}

struct Row {
    p50: Duration,
    p99: Duration,
    recall: f64,
}

impl Row {
    /// From each query's time and hits (entry numbers) against its exact answer.
    fn of(mut times: Vec<Duration>, found: &[Vec<usize>], expected: &[&Vec<usize>]) -> Self {
        times.sort();
        let percentile = |p: f64| {
            let rank = ((p / 100.0) * (times.len().saturating_sub(1)) as f64).round() as usize;
            times.get(rank).copied().unwrap_or_default()
        };
        let recall: f64 = found
            .iter()
            .zip(expected)
            .map(|(found, expected)| {
                found.iter().filter(|i| expected.contains(i)).count() as f64
                    / expected.len().max(1) as f64
            })
            .sum();
        Self {
            p50: percentile(50.0),
            p99: percentile(99.0),
            recall: recall / found.len().max(1) as f64,
        }
    }
}

/// The layout before one graph per kind: every entry in one graph, the access
/// filter inside the walk (a `HashMap` lookup per visited node), and every
/// admitted entry scored when the walk returns fewer than wanted.
struct OneGraph {
    graph: Index,
    entries: HashMap<u64, (EntryKind, EntryAccess)>,
    dims: usize,
}

impl OneGraph {
    fn search(
        &self,
        query: &[f32],
        limit: usize,
        filter: &SearchFilter,
    ) -> Result<Vec<u64>, Failure> {
        let admits = |label: u64| {
            self.entries
                .get(&label)
                .is_some_and(|(kind, access)| filter.admits(*kind, access))
        };
        let count = limit.min(self.entries.len());
        let found = self.graph.filtered_search(query, count, admits)?;
        let mut hits: Vec<(u64, f32)> = found
            .keys
            .iter()
            .zip(&found.distances)
            .filter(|(label, _)| admits(**label))
            .map(|(label, distance)| (*label, 1.0 - distance))
            .collect();
        if hits.len() < count {
            let admitted: Vec<u64> = self
                .entries
                .keys()
                .copied()
                .filter(|l| admits(*l))
                .collect();
            if admitted.len() > hits.len() {
                let mut vector = vec![0f32; self.dims];
                hits.clear();
                for label in admitted {
                    if self.graph.get(label, &mut vector)? > 0 {
                        hits.push((label, dot(query, &vector)));
                    }
                }
            }
        }
        hits.sort_by(|a, b| b.1.total_cmp(&a.1));
        hits.truncate(count);
        Ok(hits.into_iter().map(|(label, _)| label).collect())
    }
}

#[tokio::main]
async fn main() -> Result<(), Failure> {
    let args = args()?;
    let (alice, bob) = (UserId::generate(), UserId::generate());
    let legal = RoleName::parse("legal")?;
    let mut rng = Rng(0x5EED);
    let centres: Vec<Vec<f32>> = (0..200)
        .map(|_| (0..args.dims).map(|_| rng.unit() - 0.5).collect())
        .collect();
    let total = args.memories + args.chunks;
    let vectors = clustered(&mut rng, &centres, total);
    let queries = clustered(&mut rng, &centres, args.queries);
    // Entry i: a memory (Bob's every 20th, else Alice's) or a passage (every
    // 5th restricted to `legal`).
    let entries: Vec<(EntryKey, EntryAccess)> = (0..total)
        .map(|i| {
            let id = Uuid::from_u128(i as u128 + 1);
            if i < args.memories {
                let owner = if i % 20 == 0 { bob } else { alice };
                let access = EntryAccess {
                    owner: Some(owner),
                    ..EntryAccess::default()
                };
                (EntryKey::new(EntryKind::Memory, id), access)
            } else {
                let roles = if i % 5 == 0 {
                    vec![legal.clone()]
                } else {
                    vec![]
                };
                let access = EntryAccess {
                    roles,
                    ..EntryAccess::default()
                };
                (EntryKey::new(EntryKind::Chunk, id), access)
            }
        })
        .collect();
    let index_of = |key: &EntryKey| (key.id.as_u128() - 1) as usize;

    let search_as = |user: UserId, kinds: Vec<EntryKind>| SearchFilter {
        kinds,
        user,
        roles: vec![],
    };
    let cases = [
        Case {
            name: "memories (Alice, 95% of them)",
            filter: search_as(alice, vec![EntryKind::Memory]),
            limit: 10,
        },
        Case {
            name: "passages (80% open)",
            filter: search_as(alice, vec![EntryKind::Chunk]),
            limit: 10,
        },
        Case {
            name: "turn: both kinds, 15 (Alice)",
            filter: search_as(alice, vec![EntryKind::Memory, EntryKind::Chunk]),
            limit: 15,
        },
        Case {
            name: "memories (Bob, 5% of them)",
            filter: search_as(bob, vec![EntryKind::Memory]),
            limit: 10,
        },
        Case {
            name: "turn: both kinds, 15 (Bob)",
            filter: search_as(bob, vec![EntryKind::Memory, EntryKind::Chunk]),
            limit: 15,
        },
    ];

    // Exact answers: every query scored against every entry once.
    let started = Instant::now();
    let truth: Vec<Vec<Vec<usize>>> = queries
        .iter()
        .map(|query| {
            let mut scored: Vec<(f32, usize)> = vectors
                .iter()
                .enumerate()
                .map(|(i, v)| (dot(query, v), i))
                .collect();
            scored.sort_by(|a, b| b.0.total_cmp(&a.0));
            cases
                .iter()
                .map(|case| {
                    scored
                        .iter()
                        .filter(|(_, i)| case.filter.admits(entries[*i].0.kind, &entries[*i].1))
                        .take(case.limit)
                        .map(|(_, i)| *i)
                        .collect()
                })
                .collect()
        })
        .collect();
    eprintln!("exact answers in {:.1} s", started.elapsed().as_secs_f64());

    // The embedded index, through the port.
    let root = std::env::temp_dir().join(format!("karen-filtered-search-{}", Uuid::new_v4()));
    let config = EmbeddedVectorConfig::default();
    let index = EmbeddedVectorIndex::new(TenantDirectories::new(&root), config);
    let tenant = TenantId::generate();
    let space = VectorSpace {
        model: "bench-filtered".into(),
        dims: args.dims as u32,
    };
    let started = Instant::now();
    // Memories and passages interleaved, as a tenant adds them over time.
    let mut order: Vec<usize> = (0..total).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, (rng.next() % (i as u64 + 1)) as usize);
    }
    for batch in order.chunks(1000) {
        let batch = batch
            .iter()
            .map(|i| VectorEntry {
                key: entries[*i].0,
                access: entries[*i].1.clone(),
                vector: vectors[*i].clone(),
            })
            .collect();
        index.upsert(tenant, &space, batch).await?;
    }
    eprintln!(
        "embedded index built in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // The layout before, on usearch directly (two threads adding).
    let started = Instant::now();
    let one = OneGraph {
        graph: Index::new(&IndexOptions {
            dimensions: args.dims,
            metric: MetricKind::IP,
            quantization: ScalarKind::F32,
            connectivity: config.connectivity,
            expansion_add: config.expansion_add,
            expansion_search: config.expansion_search,
            multi: false,
        })?,
        entries: order
            .iter()
            .map(|i| (*i as u64 + 1, (entries[*i].0.kind, entries[*i].1.clone())))
            .collect(),
        dims: args.dims,
    };
    one.graph.reserve_capacity_and_threads(total, 2)?;
    std::thread::scope(|scope| -> Result<(), Failure> {
        let halves: Vec<_> = order
            .chunks(total.div_ceil(2).max(1))
            .map(|part| {
                let (graph, vectors) = (&one.graph, &vectors);
                scope.spawn(move || -> Result<(), String> {
                    for i in part {
                        graph
                            .add(*i as u64 + 1, &vectors[*i])
                            .map_err(|e| e.to_string())?;
                    }
                    Ok(())
                })
            })
            .collect();
        for half in halves {
            half.join().map_err(|_| "a builder thread failed")??;
        }
        Ok(())
    })?;
    eprintln!(
        "one-graph index built in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    println!(
        "{} memories + {} passages, {} dims, {} queries per case, ef {}",
        args.memories, args.chunks, args.dims, args.queries, config.expansion_search
    );
    println!(
        "| search | one graph (before): p50 | p99 | recall@k | per kind (now): p50 | p99 | recall@k |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (c, case) in cases.iter().enumerate() {
        let expected: Vec<&Vec<usize>> = truth.iter().map(|per_case| &per_case[c]).collect();
        // Before.
        let (mut times, mut found): (Vec<Duration>, Vec<Vec<usize>>) = (Vec::new(), Vec::new());
        for query in &queries {
            let t = Instant::now();
            let hits = one.search(query, case.limit, &case.filter)?;
            times.push(t.elapsed());
            found.push(hits.iter().map(|l| (*l - 1) as usize).collect());
        }
        let before = Row::of(times, &found, &expected);
        // Now, through the port (as Karen calls it).
        let (mut times, mut found): (Vec<Duration>, Vec<Vec<usize>>) = (Vec::new(), Vec::new());
        for query in &queries {
            let t = Instant::now();
            let hits = index
                .search(tenant, &space, query, case.limit, &case.filter)
                .await?;
            times.push(t.elapsed());
            found.push(hits.iter().map(|h| index_of(&h.key)).collect());
        }
        let now = Row::of(times, &found, &expected);
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "| {} | {:.2} ms | {:.2} ms | {:.4} | {:.2} ms | {:.2} ms | {:.4} |",
            case.name,
            ms(before.p50),
            ms(before.p99),
            before.recall,
            ms(now.p50),
            ms(now.p99),
            now.recall
        );
    }
    index.purge_tenant(tenant).await?;
    let _ = std::fs::remove_dir_all(root);
    Ok(())
}
