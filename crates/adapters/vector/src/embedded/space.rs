//! One open (tenant, space) index: the HNSW graph (usearch) with the entries'
//! keys and access rules, kept in step with its directory (see `storage`).

use std::cmp::Ordering;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use karen_domain::ports::{EntryAccess, EntryKey, Hit, IndexStatus, SearchFilter, VectorSpace};
use karen_domain::{Error, Result};
use parking_lot::{RwLock, RwLockUpgradableReadGuard, RwLockWriteGuard};
use tokio::sync::Semaphore;
use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

use super::storage::{
    self, Damage, LogRecord, REBUILD_MARKER, SPACE_FILE, SnapshotMeta, StoredEntry,
};
use crate::common::dot;

/// HNSW parameters and housekeeping thresholds.
#[derive(Debug, Clone, Copy)]
pub(super) struct Tuning {
    pub connectivity: usize,
    pub expansion_add: usize,
    pub expansion_search: usize,
    pub snapshot_min_records: u64,
}

pub(super) fn unavailable(detail: impl std::fmt::Display) -> Error {
    Error::Unavailable {
        component: "vector index",
        detail: detail.to_string(),
    }
}

/// Searches run at once on one index. usearch keeps a search context per
/// thread, reserved ahead, and fails a search that finds none free; callers
/// take a permit from [`SpaceIndex::search_permits`] first.
pub(super) const SEARCH_SLOTS: usize = 8;
/// Contexts reserved: every search slot, plus the one writer.
const GRAPH_THREADS: usize = SEARCH_SLOTS + 1;

fn io_error(dir: &Path, error: impl std::fmt::Display) -> Error {
    unavailable(format!("{}: {error}", dir.display()))
}

/// An entry's key and access rules (its vector lives in the graph).
#[derive(Debug, Clone)]
struct Stored {
    key: EntryKey,
    access: EntryAccess,
}

struct State {
    graph: Index,
    /// Graph label → entry. Labels are never reused, so a stale label in the
    /// graph can never be mistaken for a newer entry.
    entries: HashMap<u64, Stored>,
    labels: HashMap<EntryKey, u64>,
    next_label: u64,
    generation: u64,
    log: File,
    log_len: u64,
    log_records: u64,
    rebuild_needed: bool,
    /// A failed append could not be rolled back: refuse writes until reopened.
    poisoned: bool,
}

/// An open index of one tenant and space.
pub(super) struct SpaceIndex {
    dir: PathBuf,
    space: VectorSpace,
    tuning: Tuning,
    state: RwLock<State>,
    search_permits: Arc<Semaphore>,
}

/// Reserves room for `capacity` vectors and the search contexts.
fn reserve(graph: &Index, capacity: usize) -> Result<()> {
    graph
        .reserve_capacity_and_threads(capacity.max(64), GRAPH_THREADS)
        .map_err(|e| unavailable(format!("cannot grow HNSW index: {e}")))
}

fn new_graph(dims: u32, tuning: &Tuning) -> Result<Index> {
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

impl State {
    fn empty(graph: Index, generation: u64, log: File) -> Self {
        Self {
            graph,
            entries: HashMap::new(),
            labels: HashMap::new(),
            next_label: 1,
            generation,
            log,
            log_len: 0,
            log_records: 0,
            rebuild_needed: false,
            poisoned: false,
        }
    }

    fn reserve_for(&self, more: usize) -> Result<()> {
        let needed = self.graph.size() + more;
        if needed > self.graph.capacity() {
            reserve(&self.graph, needed.max(self.graph.capacity() * 2))?;
        }
        Ok(())
    }

    fn apply_remove(&mut self, key: &EntryKey) -> Result<()> {
        if let Some(label) = self.labels.remove(key) {
            self.entries.remove(&label);
            self.graph
                .remove(label)
                .map_err(|e| unavailable(format!("cannot remove from HNSW index: {e}")))?;
        }
        Ok(())
    }

    fn apply(&mut self, record: LogRecord) -> Result<()> {
        match record {
            LogRecord::Upsert {
                label,
                key,
                access,
                vector,
            } => {
                self.apply_remove(&key)?;
                self.reserve_for(1)?;
                self.graph
                    .add(label, &vector)
                    .map_err(|e| unavailable(format!("cannot add to HNSW index: {e}")))?;
                self.entries.insert(label, Stored { key, access });
                self.labels.insert(key, label);
                self.next_label = self.next_label.max(label + 1);
            }
            LogRecord::Remove { key } => self.apply_remove(&key)?,
        }
        Ok(())
    }

    /// Appends encoded records and makes them durable; on failure the log is
    /// cut back to where it was, so that a half-written record never sits in
    /// front of later ones.
    fn append(&mut self, dir: &Path, bytes: &[u8], records: u64) -> Result<()> {
        if self.poisoned {
            return Err(unavailable(format!(
                "{}: index must be reopened after a failed write",
                dir.display()
            )));
        }
        let written = self
            .log
            .write_all(bytes)
            .and_then(|()| self.log.sync_data());
        if let Err(error) = written {
            if self.log.set_len(self.log_len).is_err() {
                self.poisoned = true;
            }
            return Err(io_error(dir, error));
        }
        self.log_len += bytes.len() as u64;
        self.log_records += records;
        Ok(())
    }

    fn snapshot_meta(&self, space: &VectorSpace, generation: u64) -> SnapshotMeta {
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
        SnapshotMeta {
            model: space.model.clone(),
            dims: space.dims,
            generation,
            next_label: self.next_label,
            entries,
        }
    }

    fn graph_bytes(&self) -> Result<Vec<u8>> {
        let mut bytes = vec![0u8; self.graph.serialized_length()];
        self.graph
            .save_to_buffer(&mut bytes)
            .map_err(|e| unavailable(format!("cannot serialise HNSW index: {e}")))?;
        Ok(bytes)
    }

    fn admits(&self, label: u64, filter: &SearchFilter) -> bool {
        self.entries
            .get(&label)
            .is_some_and(|s| filter.admits(s.key.kind, &s.access))
    }
}

impl SpaceIndex {
    /// Opens the index in `dir`, creating it if it does not exist. A damaged
    /// index is reset to empty and flagged for a rebuild.
    pub fn open(dir: PathBuf, space: VectorSpace, tuning: Tuning) -> Result<Self> {
        // A directory that exists but lacks files is damaged, not new.
        if !dir.exists() {
            create(&dir, &space, &tuning)?;
        }
        let state = match load(&dir, &space, &tuning) {
            Ok(state) => state,
            Err(Damage::Io(error)) => return Err(io_error(&dir, error)),
            Err(damage) => {
                tracing::warn!(
                    index = %dir.display(),
                    damage = %damage,
                    "vector index damaged or missing; reset to empty, rebuild needed"
                );
                reset(&dir, &space, &tuning)?
            }
        };
        Ok(Self {
            dir,
            space,
            tuning,
            state: RwLock::new(state),
            search_permits: Arc::new(Semaphore::new(SEARCH_SLOTS)),
        })
    }

    /// Permits to search: one must be held for the length of a search.
    pub fn search_permits(&self) -> Arc<Semaphore> {
        self.search_permits.clone()
    }

    /// A failed write left this index unusable until it is opened again.
    pub fn poisoned(&self) -> bool {
        self.state.read().poisoned
    }

    /// Adds entries (unit vectors), replacing those with the same key.
    pub fn upsert(&self, entries: Vec<(EntryKey, EntryAccess, Vec<f32>)>) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut state = self.state.write();
        let mut bytes = Vec::new();
        let mut records = Vec::with_capacity(entries.len());
        for (label, (key, access, vector)) in (state.next_label..).zip(entries) {
            let record = LogRecord::Upsert {
                label,
                key,
                access,
                vector,
            };
            storage::encode_record(&record, &mut bytes).map_err(|e| io_error(&self.dir, e))?;
            records.push(record);
        }
        state.append(&self.dir, &bytes, records.len() as u64)?;
        state.reserve_for(records.len())?;
        for record in records {
            state.apply(record)?;
        }
        self.snapshot_if_due(state);
        Ok(())
    }

    /// Removes entries; unknown keys are ignored.
    pub fn remove(&self, keys: &[EntryKey]) -> Result<()> {
        let mut state = self.state.write();
        let mut bytes = Vec::new();
        let mut count = 0;
        for key in keys.iter().filter(|k| state.labels.contains_key(k)) {
            storage::encode_record(&LogRecord::Remove { key: *key }, &mut bytes)
                .map_err(|e| io_error(&self.dir, e))?;
            count += 1;
        }
        if count == 0 {
            return Ok(());
        }
        state.append(&self.dir, &bytes, count)?;
        for key in keys {
            state.apply_remove(key)?;
        }
        self.snapshot_if_due(state);
        Ok(())
    }

    /// The admitted entries nearest to `query` (a unit vector), best first.
    pub fn search(&self, query: &[f32], limit: usize, filter: &SearchFilter) -> Result<Vec<Hit>> {
        let state = self.state.read();
        let count = limit.min(state.entries.len());
        if count == 0 {
            return Ok(Vec::new());
        }
        let found = state
            .graph
            .filtered_search(query, count, |label| state.admits(label, filter))
            .map_err(|e| unavailable(format!("HNSW search failed: {e}")))?;
        let mut hits: Vec<(u64, f32)> = found
            .keys
            .iter()
            .zip(&found.distances)
            // Checked again: what the graph returns is never trusted to be admitted.
            .filter(|(label, _)| state.admits(**label, filter))
            .map(|(label, distance)| (*label, 1.0 - distance))
            .collect();
        if hits.len() < count {
            // A selective filter can starve the graph walk. When admitted entries
            // exist beyond those found, score them all exactly: the searcher gets
            // up to `limit` hits whenever that many are visible to them.
            let admitted: Vec<u64> = state
                .entries
                .keys()
                .copied()
                .filter(|label| state.admits(*label, filter))
                .collect();
            if admitted.len() > hits.len() {
                hits = exact_scores(&state.graph, self.space.dims as usize, query, &admitted)?;
            }
        }
        hits.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap_or(Ordering::Equal));
        hits.truncate(count);
        Ok(hits
            .into_iter()
            .filter_map(|(label, score)| {
                state.entries.get(&label).map(|s| Hit { key: s.key, score })
            })
            .collect())
    }

    /// Every key held.
    pub fn keys(&self) -> Vec<EntryKey> {
        let mut keys: Vec<EntryKey> = self.state.read().labels.keys().copied().collect();
        keys.sort_unstable();
        keys
    }

    pub fn status(&self) -> IndexStatus {
        let state = self.state.read();
        IndexStatus {
            entries: state.entries.len() as u64,
            rebuild_needed: state.rebuild_needed,
        }
    }

    /// Folds the log into a new snapshot once replaying it would cost more
    /// than writing one. Searches go on meanwhile (only writers wait). A
    /// failure leaves the log in charge, which is still complete.
    fn snapshot_if_due(&self, state: RwLockWriteGuard<'_, State>) {
        let due = (state.entries.len() as u64 / 4).max(self.tuning.snapshot_min_records);
        if state.log_records < due || state.poisoned {
            return;
        }
        if let Err(error) = self.snapshot(state) {
            tracing::warn!(index = %self.dir.display(), %error, "vector index snapshot failed; the write-ahead log keeps every change");
        }
    }

    /// Folds the log into a new snapshot now, so that nothing removed stays
    /// in a log record on disk (after an erasure).
    pub fn compact(&self) -> Result<()> {
        let state = self.state.write();
        if state.log_records == 0 || state.poisoned {
            return Ok(());
        }
        self.snapshot(state)
    }

    /// Writes a snapshot of the next generation and its empty log, then
    /// switches to them and removes the old log.
    fn snapshot(&self, state: RwLockWriteGuard<'_, State>) -> Result<()> {
        let state = RwLockWriteGuard::downgrade_to_upgradable(state);
        let generation = state.generation + 1;
        let written = (|| -> Result<File> {
            let graph = state.graph_bytes()?;
            let meta = state.snapshot_meta(&self.space, generation);
            let log =
                storage::create_log(&self.dir, generation).map_err(|e| io_error(&self.dir, e))?;
            storage::write_snapshot(&self.dir, &meta, &graph)
                .map_err(|e| io_error(&self.dir, e))?;
            Ok(log)
        })();
        match written {
            Ok(log) => {
                let mut state = RwLockUpgradableReadGuard::upgrade(state);
                let old = state.generation;
                state.log = log;
                state.generation = generation;
                state.log_len = 0;
                state.log_records = 0;
                storage::remove_if_exists(&self.dir.join(storage::log_name(old)))
                    .map_err(|e| io_error(&self.dir, e))
            }
            Err(error) => {
                let _ = storage::remove_if_exists(&self.dir.join(storage::log_name(generation)));
                Err(error)
            }
        }
    }
}

fn exact_scores(
    graph: &Index,
    dims: usize,
    query: &[f32],
    labels: &[u64],
) -> Result<Vec<(u64, f32)>> {
    let mut vector = vec![0f32; dims];
    let mut scored = Vec::with_capacity(labels.len());
    for label in labels {
        let found = graph
            .get(*label, &mut vector)
            .map_err(|e| unavailable(format!("cannot read a vector back: {e}")))?;
        if found > 0 {
            scored.push((*label, dot(query, &vector)));
        }
    }
    Ok(scored)
}

/// Creates an empty index directory atomically: built under a temporary name,
/// then renamed into place, so a crash never leaves a half-made one.
fn create(dir: &Path, space: &VectorSpace, tuning: &Tuning) -> Result<()> {
    let parent = dir
        .parent()
        .ok_or_else(|| unavailable(format!("{}: no parent directory", dir.display())))?;
    std::fs::create_dir_all(parent).map_err(|e| io_error(parent, e))?;
    let tmp = parent.join(format!(".new-{}", uuid::Uuid::new_v4()));
    let made = (|| -> io::Result<()> {
        std::fs::create_dir(&tmp)?;
        write_space_file(&tmp, space)?;
        let graph = new_graph(space.dims, tuning).map_err(io::Error::other)?;
        let state_bytes = {
            let mut bytes = vec![0u8; graph.serialized_length()];
            graph.save_to_buffer(&mut bytes).map_err(io::Error::other)?;
            bytes
        };
        let meta = SnapshotMeta {
            model: space.model.clone(),
            dims: space.dims,
            generation: 0,
            next_label: 1,
            entries: Vec::new(),
        };
        storage::create_log(&tmp, 0)?;
        storage::write_snapshot(&tmp, &meta, &state_bytes)?;
        std::fs::rename(&tmp, dir)?;
        storage::sync_dir(parent)
    })();
    if let Err(error) = made {
        let _ = std::fs::remove_dir_all(&tmp);
        // Another opener won the race: its directory is as good as ours.
        if !dir.exists() {
            return Err(io_error(dir, error));
        }
    }
    Ok(())
}

fn write_space_file(dir: &Path, space: &VectorSpace) -> io::Result<()> {
    let bytes = serde_json::to_vec(space).map_err(io::Error::other)?;
    storage::write_atomically(dir, SPACE_FILE, &bytes)
}

/// Loads snapshot and log; anything that does not check out is damage.
fn load(dir: &Path, space: &VectorSpace, tuning: &Tuning) -> std::result::Result<State, Damage> {
    let (meta, graph_bytes) = storage::read_snapshot(dir)?;
    if meta.model != space.model || meta.dims != space.dims {
        return Err(Damage::Corrupt(format!(
            "snapshot holds space {}/{}, not {}/{}",
            meta.model, meta.dims, space.model, space.dims
        )));
    }
    let graph = new_graph(space.dims, tuning).map_err(|e| Damage::Corrupt(e.to_string()))?;
    // The checksum matched, so these are the bytes usearch wrote; its own
    // header is still checked before it is trusted with them.
    let header = Index::metadata_from_buffer(&graph_bytes)
        .map_err(|e| Damage::Corrupt(format!("graph header: {e}")))?;
    if header.dimensions != u64::from(space.dims) || header.multi {
        return Err(Damage::Corrupt(
            "graph header does not match the space".into(),
        ));
    }
    graph
        .load_from_buffer(&graph_bytes)
        .map_err(|e| Damage::Corrupt(format!("graph: {e}")))?;
    drop(graph_bytes);
    reserve(&graph, graph.size()).map_err(|e| Damage::Io(io::Error::other(e.to_string())))?;
    graph.change_expansion_search(tuning.expansion_search);
    graph.change_expansion_add(tuning.expansion_add);
    if graph.size() != meta.entries.len() {
        return Err(Damage::Corrupt(format!(
            "graph holds {} vectors, metadata {}",
            graph.size(),
            meta.entries.len()
        )));
    }
    let log_path = dir.join(storage::log_name(meta.generation));
    let log = storage::read_log(&log_path)?;
    if log.valid_len < log.file_len {
        tracing::warn!(index = %dir.display(), "dropping a torn write at the end of the write-ahead log");
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&log_path)
            .map_err(Damage::Io)?;
        file.set_len(log.valid_len).map_err(Damage::Io)?;
        file.sync_all().map_err(Damage::Io)?;
    }
    storage::remove_stale_files(dir, meta.generation).map_err(Damage::Io)?;
    let file = storage::open_log_for_append(&log_path).map_err(Damage::Io)?;
    let mut state = State::empty(graph, meta.generation, file);
    state.next_label = meta.next_label;
    for entry in meta.entries {
        if !state.graph.contains(entry.label) || entry.label >= meta.next_label {
            return Err(Damage::Corrupt(format!(
                "entry {} has no vector in the graph",
                entry.key
            )));
        }
        state.labels.insert(entry.key, entry.label);
        state.entries.insert(
            entry.label,
            Stored {
                key: entry.key,
                access: entry.access,
            },
        );
    }
    state.log_records = log.records.len() as u64;
    state.log_len = log.valid_len;
    for record in log.records {
        if let LogRecord::Upsert { vector, .. } = &record
            && vector.len() != space.dims as usize
        {
            return Err(Damage::Corrupt("log record of the wrong length".into()));
        }
        state
            .apply(record)
            .map_err(|e| Damage::Corrupt(format!("replaying the log: {e}")))?;
    }
    state.rebuild_needed = dir.join(REBUILD_MARKER).exists();
    if !dir.join(SPACE_FILE).exists() {
        write_space_file(dir, space).map_err(Damage::Io)?;
    }
    Ok(state)
}

/// Replaces a damaged index with an empty one flagged for a rebuild. The flag
/// is written first, so that a crash halfway through still leaves it set.
fn reset(dir: &Path, space: &VectorSpace, tuning: &Tuning) -> Result<State> {
    let fail = |e: io::Error| io_error(dir, e);
    storage::write_atomically(dir, REBUILD_MARKER, b"").map_err(fail)?;
    write_space_file(dir, space).map_err(fail)?;
    let generation = storage::log_generations(dir)
        .map_err(fail)?
        .last()
        .map_or(1, |g| g + 1);
    let graph = new_graph(space.dims, tuning)?;
    let mut state_bytes = vec![0u8; graph.serialized_length()];
    graph
        .save_to_buffer(&mut state_bytes)
        .map_err(|e| unavailable(format!("cannot serialise HNSW index: {e}")))?;
    let meta = SnapshotMeta {
        model: space.model.clone(),
        dims: space.dims,
        generation,
        next_label: 1,
        entries: Vec::new(),
    };
    let log = storage::create_log(dir, generation).map_err(fail)?;
    storage::write_snapshot(dir, &meta, &state_bytes).map_err(fail)?;
    storage::remove_stale_files(dir, generation).map_err(fail)?;
    let mut state = State::empty(graph, generation, log);
    state.rebuild_needed = true;
    Ok(state)
}
