//! The in-memory part of one (tenant, space) index: one HNSW graph (usearch)
//! per entry kind, the entries' keys and access rules, and the entries of each
//! graph grouped by who may see them.
//!
//! One graph per kind, because a search names the kinds it wants: a search for
//! passages walks the passages' graph only, instead of wading through every
//! memory of the tenant with a filter that rejects them all. Within a graph,
//! the access filter (owner, roles) runs inside the walk and again on what the
//! walk returns; when the filter admits few entries of a graph, they are
//! scored exactly instead, which beats a walk that must visit most of the
//! graph to find them.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use karen_domain::ports::{EntryAccess, EntryKey, EntryKind, Hit, SearchFilter};
use karen_domain::{Result, RoleName, UserId};
use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

use super::space::{Tuning, unavailable};
use super::storage::{Damage, GraphPart, LogRecord, StoredEntry};
use crate::common::dot;

/// The kinds, in the order their graphs are kept and saved.
const KINDS: [EntryKind; 2] = [EntryKind::Memory, EntryKind::Chunk];

/// Searches run at once on one index. usearch keeps a search context per
/// thread, reserved ahead, and fails a search that finds none free; callers
/// take a permit from `SpaceIndex::search_permits` first.
pub(super) const SEARCH_SLOTS: usize = 8;
/// Contexts reserved per graph: every search slot, plus the one writer.
const GRAPH_THREADS: usize = SEARCH_SLOTS + 1;

/// Both graphs are walked at once when the smaller holds at least this many
/// entries (below, its walk is shorter than starting a thread).
const PARALLEL_WALK_MIN: usize = 4_096;
/// At most this many admitted entries in a graph are always scored exactly
/// (a few hundred microseconds at 384 dims), whatever the graph's size.
const EXACT_ALWAYS: usize = 2_048;
/// Beyond `EXACT_ALWAYS`, entries are scored exactly while they are at most
/// one in `EXACT_SELECTIVITY` of the graph (a walk then visits most of the
/// graph before it finds enough of them) and at most `EXACT_MAX`.
const EXACT_SELECTIVITY: usize = 8;
const EXACT_MAX: usize = 32_768;

fn slot(kind: EntryKind) -> usize {
    match kind {
        EntryKind::Memory => 0,
        EntryKind::Chunk => 1,
    }
}

/// A hasher for graph labels: sequential numbers this module hands out (never
/// input from outside, so no flooding to fear), looked up on every node a
/// filtered walk visits, where SipHash would cost more than the lookup.
#[derive(Default, Clone, Copy)]
pub(super) struct LabelHasher(u64);

impl Hasher for LabelHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*byte)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type LabelBuild = BuildHasherDefault<LabelHasher>;
type LabelSet = HashSet<u64, LabelBuild>;

/// An entry's key and access rules (its vector lives in its kind's graph).
#[derive(Debug, Clone)]
struct Stored {
    key: EntryKey,
    access: EntryAccess,
}

/// The labels of one graph grouped by who may see them, so that the entries a
/// filter admits can be counted and listed without looking at the others.
#[derive(Default)]
struct Visibility {
    /// No owner, no roles: everyone.
    public: LabelSet,
    /// Private entries (roles or not), by owner.
    owned: HashMap<UserId, LabelSet>,
    /// Restricted entries without an owner, under each of their roles.
    restricted: HashMap<RoleName, LabelSet>,
}

impl Visibility {
    fn insert(&mut self, label: u64, access: &EntryAccess) {
        if let Some(owner) = access.owner {
            self.owned.entry(owner).or_default().insert(label);
        } else if access.roles.is_empty() {
            self.public.insert(label);
        } else {
            for role in &access.roles {
                self.restricted
                    .entry(role.clone())
                    .or_default()
                    .insert(label);
            }
        }
    }

    fn remove(&mut self, label: u64, access: &EntryAccess) {
        if let Some(owner) = access.owner {
            if let Some(set) = self.owned.get_mut(&owner) {
                set.remove(&label);
                if set.is_empty() {
                    self.owned.remove(&owner);
                }
            }
        } else if access.roles.is_empty() {
            self.public.remove(&label);
        } else {
            for role in &access.roles {
                if let Some(set) = self.restricted.get_mut(role) {
                    set.remove(&label);
                    if set.is_empty() {
                        self.restricted.remove(role);
                    }
                }
            }
        }
    }

    /// The groups that may hold entries `filter` admits: every admitted entry
    /// is in one of them (some entries of them may still be refused).
    fn groups<'a>(&'a self, filter: &'a SearchFilter) -> impl Iterator<Item = &'a LabelSet> + 'a {
        std::iter::once(&self.public)
            .chain(self.owned.get(&filter.user))
            .chain(filter.roles.iter().filter_map(|r| self.restricted.get(r)))
    }

    /// At least as many as `filter` admits.
    fn admitted_bound(&self, filter: &SearchFilter) -> usize {
        self.groups(filter).map(HashSet::len).sum()
    }

    /// The labels of the groups `filter` may see, each once.
    fn candidates(&self, filter: &SearchFilter) -> Vec<u64> {
        let mut labels: Vec<u64> = self.groups(filter).flatten().copied().collect();
        // An entry restricted to several of the searcher's roles is in several groups.
        labels.sort_unstable();
        labels.dedup();
        labels
    }
}

/// The graph of one kind.
struct KindGraph {
    kind: EntryKind,
    graph: Index,
    visibility: Visibility,
}

/// Reserves room for `capacity` vectors and the search contexts.
fn reserve(graph: &Index, capacity: usize) -> Result<()> {
    graph
        .reserve_capacity_and_threads(capacity.max(64), GRAPH_THREADS)
        .map_err(|e| unavailable(format!("cannot grow HNSW index: {e}")))
}

pub(super) fn new_graph(dims: u32, tuning: &Tuning) -> Result<Index> {
    let options = IndexOptions {
        dimensions: dims as usize,
        // Vectors are stored at unit length: inner product is cosine similarity
        // (distance = 1 - cosine), without usearch renormalising every query.
        metric: MetricKind::IP,
        quantization: ScalarKind::F32,
        connectivity: tuning.connectivity,
        expansion_add: tuning.expansion_add,
        expansion_search: tuning.expansion_search,
        multi: false,
    };
    let graph =
        Index::new(&options).map_err(|e| unavailable(format!("cannot create HNSW index: {e}")))?;
    reserve(&graph, 64)?;
    Ok(graph)
}

/// A failure to get memory or an index from usearch: not damage, nothing must
/// be reset for it.
fn resources(error: karen_domain::Error) -> Damage {
    Damage::Io(std::io::Error::other(error.to_string()))
}

fn corrupt(why: impl Into<String>) -> Damage {
    Damage::Corrupt(why.into())
}

/// Loads a graph saved by usearch, checking its header against the space.
fn load_graph(bytes: &[u8], dims: u32, tuning: &Tuning) -> std::result::Result<Index, Damage> {
    let graph = new_graph(dims, tuning).map_err(resources)?;
    // The snapshot's checksum matched, so these are the bytes usearch wrote;
    // its own header is still checked before it is trusted with them.
    let header =
        Index::metadata_from_buffer(bytes).map_err(|e| corrupt(format!("graph header: {e}")))?;
    if header.dimensions != u64::from(dims) || header.multi {
        return Err(corrupt("graph header does not match the space"));
    }
    graph
        .load_from_buffer(bytes)
        .map_err(|e| corrupt(format!("graph: {e}")))?;
    reserve(&graph, graph.size()).map_err(resources)?;
    graph.change_expansion_search(tuning.expansion_search);
    graph.change_expansion_add(tuning.expansion_add);
    Ok(graph)
}

/// Every entry of a space: the graphs of each kind, and the entries' keys and
/// access rules by label.
pub(super) struct Graphs {
    dims: usize,
    kinds: [KindGraph; 2],
    /// Graph label → entry, labels of every kind. Labels are never reused, so
    /// a stale label in a graph can never be mistaken for a newer entry.
    entries: HashMap<u64, Stored, LabelBuild>,
    labels: HashMap<EntryKey, u64>,
    pub next_label: u64,
}

impl Graphs {
    /// No entries.
    pub fn empty(dims: u32, tuning: &Tuning) -> Result<Self> {
        Ok(Self::with_graphs(
            dims,
            [new_graph(dims, tuning)?, new_graph(dims, tuning)?],
        ))
    }

    fn with_graphs(dims: u32, graphs: [Index; 2]) -> Self {
        let [memory, chunk] = graphs;
        Self {
            dims: dims as usize,
            kinds: [
                KindGraph {
                    kind: KINDS[0],
                    graph: memory,
                    visibility: Visibility::default(),
                },
                KindGraph {
                    kind: KINDS[1],
                    graph: chunk,
                    visibility: Visibility::default(),
                },
            ],
            entries: HashMap::default(),
            labels: HashMap::new(),
            next_label: 1,
        }
    }

    /// Entries of a format-2 snapshot: one saved graph per kind (`parts`
    /// describes `bytes`).
    pub fn load(
        dims: u32,
        tuning: &Tuning,
        parts: &[GraphPart],
        bytes: &[u8],
        entries: Vec<StoredEntry>,
    ) -> std::result::Result<Self, Damage> {
        let mut graphs: [Option<Index>; 2] = [None, None];
        let mut at = 0usize;
        for part in parts {
            let part_bytes = usize::try_from(part.bytes)
                .ok()
                .and_then(|len| at.checked_add(len))
                .and_then(|end| bytes.get(at..end))
                .ok_or_else(|| corrupt("graph lengths exceed the file"))?;
            let target = &mut graphs[slot(part.kind)];
            if target.is_some() {
                return Err(corrupt(format!(
                    "two graphs of {} entries",
                    part.kind.as_str()
                )));
            }
            *target = Some(load_graph(part_bytes, dims, tuning)?);
            at += part_bytes.len();
        }
        let [memory, chunk] = graphs;
        let fresh = || new_graph(dims, tuning).map_err(resources);
        let memory = match memory {
            Some(graph) => graph,
            None => fresh()?,
        };
        let chunk = match chunk {
            Some(graph) => graph,
            None => fresh()?,
        };
        let mut graphs = Self::with_graphs(dims, [memory, chunk]);
        graphs.adopt(entries)?;
        Ok(graphs)
    }

    /// Entries of a format-1 snapshot, whose one graph holds every kind: split
    /// into one graph per kind. A graph holding one kind only is kept as it
    /// is; otherwise each vector is read back and added to its kind's new
    /// graph (a one-time cost at the first open after an upgrade, about as
    /// long as building the index again).
    pub fn migrate(
        dims: u32,
        tuning: &Tuning,
        bytes: &[u8],
        entries: Vec<StoredEntry>,
    ) -> std::result::Result<Self, Damage> {
        let old = load_graph(bytes, dims, tuning)?;
        let single_kind = entries
            .first()
            .map(|e| e.key.kind)
            .filter(|kind| entries.iter().all(|e| e.key.kind == *kind));
        let fresh = || new_graph(dims, tuning).map_err(resources);
        let mut graphs = match single_kind {
            Some(EntryKind::Memory) => Self::with_graphs(dims, [old, fresh()?]),
            Some(EntryKind::Chunk) => Self::with_graphs(dims, [fresh()?, old]),
            None => {
                let graphs = Self::empty(dims, tuning).map_err(resources)?;
                let mut per_kind = [0usize; 2];
                for entry in &entries {
                    per_kind[slot(entry.key.kind)] += 1;
                }
                for (kind, count) in graphs.kinds.iter().zip(per_kind) {
                    reserve(&kind.graph, count).map_err(resources)?;
                }
                copy_vectors(&old, &graphs, &entries, dims as usize)?;
                graphs
            }
        };
        graphs.adopt(entries)?;
        Ok(graphs)
    }

    /// Registers the entries of a snapshot, whose vectors are in the graphs
    /// already.
    fn adopt(&mut self, entries: Vec<StoredEntry>) -> std::result::Result<(), Damage> {
        let mut counts = [0usize; 2];
        for entry in entries {
            let kind = &mut self.kinds[slot(entry.key.kind)];
            if !kind.graph.contains(entry.label) || self.entries.contains_key(&entry.label) {
                return Err(corrupt(format!(
                    "entry {} has no vector in the graph",
                    entry.key
                )));
            }
            counts[slot(entry.key.kind)] += 1;
            kind.visibility.insert(entry.label, &entry.access);
            self.labels.insert(entry.key, entry.label);
            self.entries.insert(
                entry.label,
                Stored {
                    key: entry.key,
                    access: entry.access,
                },
            );
        }
        for (kind, count) in self.kinds.iter().zip(counts) {
            if kind.graph.size() != count {
                return Err(corrupt(format!(
                    "graph of {} entries holds {} vectors, metadata {count}",
                    kind.kind.as_str(),
                    kind.graph.size()
                )));
            }
        }
        Ok(())
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn contains(&self, key: &EntryKey) -> bool {
        self.labels.contains_key(key)
    }

    /// Every key held, sorted.
    pub fn keys(&self) -> Vec<EntryKey> {
        let mut keys: Vec<EntryKey> = self.labels.keys().copied().collect();
        keys.sort_unstable();
        keys
    }

    /// Makes room for the upserts of `records` before they are applied.
    pub fn reserve_for(&self, records: &[LogRecord]) -> Result<()> {
        let mut more = [0usize; 2];
        for record in records {
            if let LogRecord::Upsert { key, .. } = record {
                more[slot(key.kind)] += 1;
            }
        }
        for (kind, more) in self.kinds.iter().zip(more) {
            reserve_more(&kind.graph, more)?;
        }
        Ok(())
    }

    pub fn remove(&mut self, key: &EntryKey) -> Result<()> {
        if let Some(label) = self.labels.remove(key) {
            let kind = &mut self.kinds[slot(key.kind)];
            if let Some(stored) = self.entries.remove(&label) {
                kind.visibility.remove(label, &stored.access);
            }
            kind.graph
                .remove(label)
                .map_err(|e| unavailable(format!("cannot remove from HNSW index: {e}")))?;
        }
        Ok(())
    }

    /// Applies one change of the write-ahead log.
    pub fn apply(&mut self, record: LogRecord) -> Result<()> {
        match record {
            LogRecord::Upsert {
                label,
                key,
                access,
                vector,
            } => {
                self.remove(&key)?;
                let kind = &mut self.kinds[slot(key.kind)];
                reserve_more(&kind.graph, 1)?;
                kind.graph
                    .add(label, &vector)
                    .map_err(|e| unavailable(format!("cannot add to HNSW index: {e}")))?;
                kind.visibility.insert(label, &access);
                self.entries.insert(label, Stored { key, access });
                self.labels.insert(key, label);
                self.next_label = self.next_label.max(label + 1);
            }
            LogRecord::Remove { key } => self.remove(&key)?,
        }
        Ok(())
    }

    /// The entries as a snapshot stores them, by label.
    pub fn stored_entries(&self) -> Vec<StoredEntry> {
        let mut entries: Vec<StoredEntry> = self
            .entries
            .iter()
            .map(|(label, stored)| StoredEntry {
                label: *label,
                key: stored.key,
                access: stored.access.clone(),
            })
            .collect();
        entries.sort_unstable_by_key(|e| e.label);
        entries
    }

    /// The graphs a snapshot saves, in the order of [`Graphs::graph_bytes`].
    pub fn parts(&self) -> Vec<GraphPart> {
        self.kinds
            .iter()
            .map(|kind| GraphPart {
                kind: kind.kind,
                bytes: kind.graph.serialized_length() as u64,
            })
            .collect()
    }

    /// The `i`-th graph of [`Graphs::parts`], serialised.
    pub fn graph_bytes(&self, i: usize) -> Result<Vec<u8>> {
        let graph = &self
            .kinds
            .get(i)
            .ok_or_else(|| unavailable("no such graph"))?
            .graph;
        let mut bytes = vec![0u8; graph.serialized_length()];
        graph
            .save_to_buffer(&mut bytes)
            .map_err(|e| unavailable(format!("cannot serialise HNSW index: {e}")))?;
        Ok(bytes)
    }

    fn admits(&self, label: u64, filter: &SearchFilter) -> bool {
        self.entries
            .get(&label)
            .is_some_and(|s| filter.admits(s.key.kind, &s.access))
    }

    /// The admitted entries nearest to `query` (a unit vector), best first:
    /// the best of each graph whose kind the filter wants.
    /// When both graphs are wanted and both are large, the smaller one is
    /// walked on a second thread meanwhile (a chat turn's recall searches
    /// memories and passages at once; a walk is CPU work of a millisecond or
    /// more there, a thread costs some tens of microseconds).
    pub fn search(&self, query: &[f32], limit: usize, filter: &SearchFilter) -> Result<Vec<Hit>> {
        let wanted: Vec<&KindGraph> = self
            .kinds
            .iter()
            .filter(|kind| filter.kinds.is_empty() || filter.kinds.contains(&kind.kind))
            .collect();
        let mut hits: Vec<(u64, f32)> = Vec::new();
        match wanted[..] {
            [first, second] if first.graph.size().min(second.graph.size()) >= PARALLEL_WALK_MIN => {
                let (mine, other) = std::thread::scope(|scope| {
                    let other = scope.spawn(|| self.search_graph(second, query, limit, filter));
                    (self.search_graph(first, query, limit, filter), other.join())
                });
                hits.extend(mine?);
                hits.extend(other.map_err(|_| unavailable("a vector search thread failed"))??);
            }
            _ => {
                for kind in wanted {
                    hits.extend(self.search_graph(kind, query, limit, filter)?);
                }
            }
        }
        hits.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap_or(Ordering::Equal));
        hits.truncate(limit);
        Ok(hits
            .into_iter()
            .filter_map(|(label, score)| {
                self.entries.get(&label).map(|s| Hit { key: s.key, score })
            })
            .collect())
    }

    /// Up to `limit` admitted entries of one graph, with their scores.
    fn search_graph(
        &self,
        kind: &KindGraph,
        query: &[f32],
        limit: usize,
        filter: &SearchFilter,
    ) -> Result<Vec<(u64, f32)>> {
        let size = kind.graph.size();
        let count = limit.min(size);
        let bound = kind.visibility.admitted_bound(filter);
        if count == 0 || bound == 0 {
            return Ok(Vec::new());
        }
        if exact_is_cheaper(bound, size) {
            return self.exact(kind, query, count, filter);
        }
        let found = kind
            .graph
            .filtered_search(query, count, |label| self.admits(label, filter))
            .map_err(|e| unavailable(format!("HNSW search failed: {e}")))?;
        let hits: Vec<(u64, f32)> = found
            .keys
            .iter()
            .zip(&found.distances)
            // Checked again: what the graph returns is never trusted to be admitted.
            .filter(|(label, _)| self.admits(**label, filter))
            .map(|(label, distance)| (*label, 1.0 - distance))
            .collect();
        if hits.len() < count && bound > hits.len() {
            // The walk ran out before finding `count` admitted entries although
            // more may exist: score them all, so that the searcher gets up to
            // `limit` hits whenever that many are visible to them.
            return self.exact(kind, query, count, filter);
        }
        Ok(hits)
    }

    /// The best `count` admitted entries of one graph, every one scored.
    fn exact(
        &self,
        kind: &KindGraph,
        query: &[f32],
        count: usize,
        filter: &SearchFilter,
    ) -> Result<Vec<(u64, f32)>> {
        let mut vector = vec![0f32; self.dims];
        let mut scored = Vec::new();
        for label in kind.visibility.candidates(filter) {
            if !self.admits(label, filter) {
                continue;
            }
            let found = kind
                .graph
                .get(label, &mut vector)
                .map_err(|e| unavailable(format!("cannot read a vector back: {e}")))?;
            if found > 0 {
                scored.push((label, dot(query, &vector)));
            }
        }
        if scored.len() > count {
            scored.select_nth_unstable_by(count - 1, |a, b| {
                b.1.partial_cmp(&a.1).unwrap_or(Ordering::Equal)
            });
            scored.truncate(count);
        }
        Ok(scored)
    }
}

/// Adds the vector of each entry from `old` to its kind's graph in `graphs`,
/// on every core (usearch takes concurrent additions, one search context each).
fn copy_vectors(
    old: &Index,
    graphs: &Graphs,
    entries: &[StoredEntry],
    dims: usize,
) -> std::result::Result<(), Damage> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, GRAPH_THREADS);
    let share = entries.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = entries
            .chunks(share)
            .map(|part| {
                scope.spawn(move || -> std::result::Result<(), Damage> {
                    let mut vector = vec![0f32; dims];
                    for entry in part {
                        let found = old
                            .get(entry.label, &mut vector)
                            .map_err(|e| corrupt(format!("reading a vector back: {e}")))?;
                        if found == 0 {
                            return Err(corrupt(format!(
                                "entry {} has no vector in the graph",
                                entry.key
                            )));
                        }
                        graphs.kinds[slot(entry.key.kind)]
                            .graph
                            .add(entry.label, &vector)
                            .map_err(|e| {
                                resources(unavailable(format!("adding to HNSW index: {e}")))
                            })?;
                    }
                    Ok(())
                })
            })
            .collect();
        workers.into_iter().try_for_each(|worker| {
            worker
                .join()
                .unwrap_or_else(|_| Err(resources(unavailable("a migration thread failed"))))
        })
    })
}

/// Whether scoring `admitted` entries (at most) of a graph of `size` exactly
/// is cheaper than a filtered walk.
fn exact_is_cheaper(admitted: usize, size: usize) -> bool {
    admitted <= EXACT_ALWAYS
        || (admitted <= EXACT_MAX && admitted.saturating_mul(EXACT_SELECTIVITY) <= size)
}

/// Grows a graph so that `more` vectors fit, doubling to keep growth amortised.
fn reserve_more(graph: &Index, more: usize) -> Result<()> {
    let needed = graph.size() + more;
    if needed > graph.capacity() {
        reserve(graph, needed.max(graph.capacity() * 2))?;
    }
    Ok(())
}

#[cfg(test)]
pub(super) mod tests {
    use karen_domain::ports::EntryKind;
    use uuid::Uuid;

    use super::*;

    const DIMS: u32 = 8;

    /// Small graphs' settings, for the tests of this module and `space`.
    pub(in crate::embedded) fn tuning() -> Tuning {
        Tuning {
            connectivity: 16,
            expansion_add: 64,
            expansion_search: 64,
            snapshot_min_records: 1024,
        }
    }

    /// A deterministic pseudo-random unit vector.
    fn vector(seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let v: Vec<f32> = (0..DIMS)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / norm).collect()
    }

    fn upsert(graphs: &mut Graphs, kind: EntryKind, access: EntryAccess, seed: u64) -> EntryKey {
        let key = EntryKey::new(kind, Uuid::new_v4());
        let label = graphs.next_label;
        graphs
            .apply(LogRecord::Upsert {
                label,
                key,
                access,
                vector: vector(seed),
            })
            .unwrap();
        key
    }

    fn filter(kinds: Vec<EntryKind>, user: UserId, roles: &[&str]) -> SearchFilter {
        SearchFilter {
            kinds,
            user,
            roles: roles.iter().map(|r| RoleName::parse(r).unwrap()).collect(),
        }
    }

    /// The best `limit` keys among `entries` that `filter` admits, by brute force.
    fn brute_force(
        entries: &[(EntryKey, EntryAccess, u64)],
        query: &[f32],
        limit: usize,
        filter: &SearchFilter,
    ) -> Vec<EntryKey> {
        let mut scored: Vec<(f32, EntryKey)> = entries
            .iter()
            .filter(|(key, access, _)| filter.admits(key.kind, access))
            .map(|(key, _, seed)| (dot(query, &vector(*seed)), *key))
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        scored.into_iter().take(limit).map(|(_, k)| k).collect()
    }

    #[test]
    fn each_kind_is_searched_in_its_own_graph_by_walk_or_exactly() {
        let mut graphs = Graphs::empty(DIMS, &tuning()).unwrap();
        let (alice, bob) = (UserId::generate(), UserId::generate());
        let mut entries = Vec::new();
        for i in 0..3_000u64 {
            let (kind, access) = match i % 6 {
                // 2,500 public memories: a walk (too many to score exactly).
                0..=4 => (EntryKind::Memory, EntryAccess::default()),
                // 500 passages, Alice's own or restricted: scored exactly.
                _ if i % 12 == 5 => (
                    EntryKind::Chunk,
                    EntryAccess {
                        owner: Some(alice),
                        ..EntryAccess::default()
                    },
                ),
                _ => (
                    EntryKind::Chunk,
                    EntryAccess {
                        owner: None,
                        roles: vec![
                            RoleName::parse("hr").unwrap(),
                            RoleName::parse("legal").unwrap(),
                        ],
                        document: None,
                    },
                ),
            };
            let key = upsert(&mut graphs, kind, access.clone(), i);
            entries.push((key, access, i));
        }
        assert_eq!(graphs.len(), 3_000);
        let query = vector(99_999);
        let memories = filter(vec![EntryKind::Memory], bob, &[]);
        assert!(!exact_is_cheaper(
            graphs.kinds[0].visibility.admitted_bound(&memories),
            graphs.kinds[0].graph.size()
        ));
        let hits = graphs.search(&query, 10, &memories).unwrap();
        assert_eq!(hits.len(), 10);
        assert!(hits.iter().all(|h| h.key.kind == EntryKind::Memory));
        assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
        let expected = brute_force(&entries, &query, 10, &memories);
        let found = hits.iter().filter(|h| expected.contains(&h.key)).count();
        assert!(found >= 9, "recall {found}/10");

        // Bob has no passage: no public ones, none of his, no role.
        let chunks_bob = filter(vec![EntryKind::Chunk], bob, &[]);
        assert!(graphs.search(&query, 10, &chunks_bob).unwrap().is_empty());
        // Alice sees her own; with both roles also the restricted ones, once each.
        for roles in [&[][..], &["hr", "legal"][..]] {
            let chunks = filter(vec![EntryKind::Chunk], alice, roles);
            let hits: Vec<EntryKey> = graphs
                .search(&query, 400, &chunks)
                .unwrap()
                .iter()
                .map(|h| h.key)
                .collect();
            assert_eq!(hits, brute_force(&entries, &query, 400, &chunks));
        }
        // Both kinds: the best of both graphs, ranked together.
        let both = filter(vec![], alice, &["legal"]);
        let hits = graphs.search(&query, 20, &both).unwrap();
        assert_eq!(hits.len(), 20);
        assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
        let expected = brute_force(&entries, &query, 20, &both);
        let found = hits.iter().filter(|h| expected.contains(&h.key)).count();
        assert!(found >= 18, "recall {found}/20");
    }

    #[test]
    fn two_large_graphs_are_walked_at_once_with_the_same_answer() {
        let mut graphs = Graphs::empty(DIMS, &tuning()).unwrap();
        let alice = UserId::generate();
        let mut entries = Vec::new();
        for i in 0..(2 * PARALLEL_WALK_MIN as u64 + 10) {
            let kind = if i % 2 == 0 {
                EntryKind::Memory
            } else {
                EntryKind::Chunk
            };
            let key = upsert(&mut graphs, kind, EntryAccess::default(), i);
            entries.push((key, EntryAccess::default(), i));
        }
        assert!(
            graphs
                .kinds
                .iter()
                .all(|k| k.graph.size() >= PARALLEL_WALK_MIN)
        );
        let query = vector(7);
        let both = filter(vec![EntryKind::Memory, EntryKind::Chunk], alice, &[]);
        let hits = graphs.search(&query, 30, &both).unwrap();
        // The same as each graph searched alone, ranked together.
        let mut alone: Vec<Hit> = [EntryKind::Memory, EntryKind::Chunk]
            .into_iter()
            .flat_map(|kind| {
                graphs
                    .search(&query, 30, &filter(vec![kind], alice, &[]))
                    .unwrap()
            })
            .collect();
        alone.sort_by(|a, b| b.score.total_cmp(&a.score));
        alone.truncate(30);
        assert_eq!(
            hits.iter().map(|h| h.key).collect::<Vec<_>>(),
            alone.iter().map(|h| h.key).collect::<Vec<_>>()
        );
        assert!(hits.iter().any(|h| h.key.kind == EntryKind::Memory));
        assert!(hits.iter().any(|h| h.key.kind == EntryKind::Chunk));
        let expected = brute_force(&entries, &query, 30, &both);
        let found = hits.iter().filter(|h| expected.contains(&h.key)).count();
        assert!(found >= 27, "recall {found}/30");
    }

    #[test]
    fn removing_and_replacing_entries_keeps_the_groups_in_step() {
        let mut graphs = Graphs::empty(DIMS, &tuning()).unwrap();
        let alice = UserId::generate();
        let owned = EntryAccess {
            owner: Some(alice),
            ..EntryAccess::default()
        };
        let key = upsert(&mut graphs, EntryKind::Memory, owned.clone(), 1);
        let mine = filter(vec![], alice, &[]);
        assert_eq!(graphs.kinds[0].visibility.admitted_bound(&mine), 1);
        // Replaced by a public entry under the same key: Alice's group is gone.
        graphs
            .apply(LogRecord::Upsert {
                label: graphs.next_label,
                key,
                access: EntryAccess::default(),
                vector: vector(2),
            })
            .unwrap();
        assert!(graphs.kinds[0].visibility.owned.is_empty());
        assert_eq!(graphs.kinds[0].visibility.public.len(), 1);
        graphs.remove(&key).unwrap();
        assert_eq!(graphs.len(), 0);
        assert_eq!(graphs.kinds[0].visibility.admitted_bound(&mine), 0);
        assert_eq!(graphs.kinds[0].graph.size(), 0);
    }

    #[test]
    fn few_or_rare_admitted_entries_are_scored_exactly() {
        assert!(exact_is_cheaper(100, 1_000_000));
        assert!(exact_is_cheaper(EXACT_ALWAYS, EXACT_ALWAYS));
        assert!(!exact_is_cheaper(10_000, 10_000));
        assert!(exact_is_cheaper(10_000, 100_000));
        assert!(!exact_is_cheaper(50_000, 10_000_000));
    }
}
