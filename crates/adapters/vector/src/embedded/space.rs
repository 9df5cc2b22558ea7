//! One open (tenant, space) index: its graphs and entries (see `graphs`), kept
//! in step with its directory (see `storage`), and the migration of indexes
//! saved before graphs were split by kind.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use karen_domain::ports::{EntryAccess, EntryKey, Hit, IndexStatus, SearchFilter, VectorSpace};
use karen_domain::{Error, Result};
use parking_lot::{RwLock, RwLockUpgradableReadGuard, RwLockWriteGuard};
use tokio::sync::Semaphore;

use super::graphs::{Graphs, SEARCH_SLOTS};
use super::storage::{self, Damage, LogRecord, REBUILD_MARKER, SPACE_FILE, SnapshotMeta};

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

fn io_error(dir: &Path, error: impl std::fmt::Display) -> Error {
    unavailable(format!("{}: {error}", dir.display()))
}

struct State {
    graphs: Graphs,
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

impl State {
    fn new(graphs: Graphs, generation: u64, log: File) -> Self {
        Self {
            graphs,
            generation,
            log,
            log_len: 0,
            log_records: 0,
            rebuild_needed: false,
            poisoned: false,
        }
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
}

/// Writes the snapshot of `graphs` as generation `generation`.
fn write_snapshot(
    dir: &Path,
    space: &VectorSpace,
    graphs: &Graphs,
    generation: u64,
) -> io::Result<()> {
    let meta = SnapshotMeta {
        model: space.model.clone(),
        dims: space.dims,
        generation,
        next_label: graphs.next_label,
        entries: graphs.stored_entries(),
        graphs: graphs.parts(),
    };
    storage::write_snapshot(dir, &meta, |i| {
        graphs.graph_bytes(i).map_err(io::Error::other)
    })
}

impl SpaceIndex {
    /// Opens the index in `dir`, creating it if it does not exist. A damaged
    /// index is reset to empty and flagged for a rebuild.
    pub fn open(dir: PathBuf, space: VectorSpace, tuning: Tuning) -> Result<Self> {
        // A directory that exists but lacks files is damaged, not new.
        if !dir.exists() {
            create(&dir, &space, &tuning)?;
        }
        let (state, migrated) = match load(&dir, &space, &tuning) {
            Ok(loaded) => loaded,
            Err(Damage::Io(error)) => return Err(io_error(&dir, error)),
            Err(damage) => {
                tracing::warn!(
                    index = %dir.display(),
                    damage = %damage,
                    "vector index damaged or missing; reset to empty, rebuild needed"
                );
                (reset(&dir, &space, &tuning)?, false)
            }
        };
        let index = Self {
            dir,
            space,
            tuning,
            state: RwLock::new(state),
            search_permits: Arc::new(Semaphore::new(SEARCH_SLOTS)),
        };
        if migrated {
            // Saved in the current format at once, so that the split by kind
            // is paid once. Until that succeeds the old snapshot and its log
            // stay in charge (and are migrated again at the next open).
            match index.snapshot(index.state.write()) {
                Ok(()) => {
                    tracing::info!(index = %index.dir.display(), "vector index migrated to one graph per entry kind")
                }
                Err(error) => {
                    tracing::warn!(index = %index.dir.display(), %error, "saving a migrated vector index failed; it is migrated again at the next open")
                }
            }
        }
        Ok(index)
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
        for (label, (key, access, vector)) in (state.graphs.next_label..).zip(entries) {
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
        state.graphs.reserve_for(&records)?;
        for record in records {
            state.graphs.apply(record)?;
        }
        self.snapshot_if_due(state);
        Ok(())
    }

    /// Removes entries; unknown keys are ignored.
    pub fn remove(&self, keys: &[EntryKey]) -> Result<()> {
        let mut state = self.state.write();
        let mut bytes = Vec::new();
        let mut count = 0;
        for key in keys.iter().filter(|k| state.graphs.contains(k)) {
            storage::encode_record(&LogRecord::Remove { key: *key }, &mut bytes)
                .map_err(|e| io_error(&self.dir, e))?;
            count += 1;
        }
        if count == 0 {
            return Ok(());
        }
        state.append(&self.dir, &bytes, count)?;
        for key in keys {
            state.graphs.remove(key)?;
        }
        self.snapshot_if_due(state);
        Ok(())
    }

    /// The admitted entries nearest to `query` (a unit vector), best first.
    pub fn search(&self, query: &[f32], limit: usize, filter: &SearchFilter) -> Result<Vec<Hit>> {
        self.state.read().graphs.search(query, limit, filter)
    }

    /// Every key held.
    pub fn keys(&self) -> Vec<EntryKey> {
        self.state.read().graphs.keys()
    }

    pub fn status(&self) -> IndexStatus {
        let state = self.state.read();
        IndexStatus {
            entries: state.graphs.len() as u64,
            rebuild_needed: state.rebuild_needed,
        }
    }

    /// Folds the log into a new snapshot once replaying it would cost more
    /// than writing one. Searches go on meanwhile (only writers wait). A
    /// failure leaves the log in charge, which is still complete.
    fn snapshot_if_due(&self, state: RwLockWriteGuard<'_, State>) {
        let due = (state.graphs.len() as u64 / 4).max(self.tuning.snapshot_min_records);
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
            let log =
                storage::create_log(&self.dir, generation).map_err(|e| io_error(&self.dir, e))?;
            write_snapshot(&self.dir, &self.space, &state.graphs, generation)
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
        let graphs = Graphs::empty(space.dims, tuning).map_err(io::Error::other)?;
        storage::create_log(&tmp, 0)?;
        write_snapshot(&tmp, space, &graphs, 0)?;
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

/// Loads snapshot and log; anything that does not check out is damage. Also
/// says whether the snapshot was of the format with one graph for every kind
/// (migrated in memory, to be saved in the current format).
fn load(
    dir: &Path,
    space: &VectorSpace,
    tuning: &Tuning,
) -> std::result::Result<(State, bool), Damage> {
    let snapshot = storage::read_snapshot(dir)?;
    let meta = snapshot.meta;
    if meta.model != space.model || meta.dims != space.dims {
        return Err(Damage::Corrupt(format!(
            "snapshot holds space {}/{}, not {}/{}",
            meta.model, meta.dims, space.model, space.dims
        )));
    }
    if let Some(entry) = meta.entries.iter().find(|e| e.label >= meta.next_label) {
        return Err(Damage::Corrupt(format!(
            "entry {} has a label beyond the next one",
            entry.key
        )));
    }
    let mut graphs = if snapshot.single_graph {
        let started = Instant::now();
        let graphs = Graphs::migrate(space.dims, tuning, &snapshot.graphs, meta.entries)?;
        tracing::info!(
            index = %dir.display(),
            entries = graphs.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "vector index of one graph for every kind split into one graph per kind"
        );
        graphs
    } else {
        Graphs::load(
            space.dims,
            tuning,
            &meta.graphs,
            &snapshot.graphs,
            meta.entries,
        )?
    };
    drop(snapshot.graphs);
    graphs.next_label = meta.next_label;
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
    let mut state = State::new(graphs, meta.generation, file);
    state.log_records = log.records.len() as u64;
    state.log_len = log.valid_len;
    for record in log.records {
        if let LogRecord::Upsert { vector, .. } = &record
            && vector.len() != space.dims as usize
        {
            return Err(Damage::Corrupt("log record of the wrong length".into()));
        }
        state
            .graphs
            .apply(record)
            .map_err(|e| Damage::Corrupt(format!("replaying the log: {e}")))?;
    }
    state.rebuild_needed = dir.join(REBUILD_MARKER).exists();
    if !dir.join(SPACE_FILE).exists() {
        write_space_file(dir, space).map_err(Damage::Io)?;
    }
    Ok((state, snapshot.single_graph))
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
    let graphs = Graphs::empty(space.dims, tuning)?;
    let log = storage::create_log(dir, generation).map_err(fail)?;
    write_snapshot(dir, space, &graphs, generation).map_err(fail)?;
    storage::remove_stale_files(dir, generation).map_err(fail)?;
    let mut state = State::new(graphs, generation, log);
    state.rebuild_needed = true;
    Ok(state)
}

#[cfg(test)]
mod tests {
    use karen_domain::UserId;
    use karen_domain::ports::{EntryKind, SearchFilter};
    use uuid::Uuid;

    use super::super::graphs::new_graph;
    use super::super::graphs::tests::tuning;
    use super::super::storage::StoredEntry;
    use super::*;

    const DIMS: u32 = 4;

    fn space() -> VectorSpace {
        VectorSpace {
            model: "m".into(),
            dims: DIMS,
        }
    }

    fn unit(i: usize) -> Vec<f32> {
        let mut v = vec![0.1f32; DIMS as usize];
        v[i % DIMS as usize] = 1.0;
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / norm).collect()
    }

    fn only(kind: EntryKind) -> SearchFilter {
        SearchFilter {
            kinds: vec![kind],
            user: UserId::generate(),
            roles: vec![],
        }
    }

    /// Writes an index directory as releases with one graph for every kind
    /// did: `kinds[i]` is the kind of the entry labelled `i + 1`, and the log
    /// of generation 5 holds one more upsert.
    fn old_format_index(dir: &Path, kinds: &[EntryKind]) -> (Vec<EntryKey>, EntryKey) {
        std::fs::create_dir_all(dir).unwrap();
        write_space_file(dir, &space()).unwrap();
        let graph = new_graph(DIMS, &tuning()).unwrap();
        let mut entries = Vec::new();
        for (i, kind) in kinds.iter().enumerate() {
            let label = i as u64 + 1;
            graph.add(label, &unit(i)).unwrap();
            entries.push(StoredEntry {
                label,
                key: EntryKey::new(*kind, Uuid::new_v4()),
                access: EntryAccess::default(),
            });
        }
        let mut bytes = vec![0u8; graph.serialized_length()];
        graph.save_to_buffer(&mut bytes).unwrap();
        let keys = entries.iter().map(|e| e.key).collect();
        let next_label = kinds.len() as u64 + 1;
        let meta = SnapshotMeta {
            model: "m".into(),
            dims: DIMS,
            generation: 5,
            next_label,
            entries,
            graphs: vec![],
        };
        storage::write_snapshot_v1(dir, &meta, &bytes).unwrap();
        let logged = EntryKey::new(EntryKind::Chunk, Uuid::new_v4());
        let mut log = Vec::new();
        storage::encode_record(
            &LogRecord::Upsert {
                label: next_label,
                key: logged,
                access: EntryAccess::default(),
                vector: unit(1),
            },
            &mut log,
        )
        .unwrap();
        std::fs::write(dir.join(storage::log_name(5)), log).unwrap();
        (keys, logged)
    }

    fn check_migrated(dir: &Path, kinds: &[EntryKind]) {
        let (mut keys, logged) = old_format_index(dir, kinds);
        keys.push(logged);
        keys.sort_unstable();
        for _ in 0..2 {
            // Once migrated, then opened again from the new format.
            let index = SpaceIndex::open(dir.to_path_buf(), space(), tuning()).unwrap();
            assert_eq!(
                index.status(),
                IndexStatus {
                    entries: keys.len() as u64,
                    rebuild_needed: false
                }
            );
            assert_eq!(index.keys(), keys);
            for kind in [EntryKind::Memory, EntryKind::Chunk] {
                let wanted: Vec<EntryKey> =
                    keys.iter().filter(|k| k.kind == kind).copied().collect();
                let mut found: Vec<EntryKey> = index
                    .search(&unit(1), 100, &only(kind))
                    .unwrap()
                    .iter()
                    .map(|h| h.key)
                    .collect();
                found.sort_unstable();
                assert_eq!(found, wanted, "{kind:?}");
            }
            let bytes = std::fs::read(dir.join(storage::SNAPSHOT_FILE)).unwrap();
            assert_eq!(&bytes[..8], b"KRNVEC02");
            assert!(!dir.join(storage::log_name(5)).exists());
            assert!(dir.join(storage::log_name(6)).exists());
        }
    }

    #[test]
    fn an_index_of_one_graph_for_every_kind_is_migrated_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let kinds: Vec<EntryKind> = (0..40)
            .map(|i| {
                if i % 3 == 0 {
                    EntryKind::Chunk
                } else {
                    EntryKind::Memory
                }
            })
            .collect();
        check_migrated(&dir.path().join("space"), &kinds);
    }

    #[test]
    fn an_old_index_of_one_kind_keeps_its_graph() {
        let dir = tempfile::tempdir().unwrap();
        check_migrated(&dir.path().join("memories"), &[EntryKind::Memory; 25]);
        check_migrated(&dir.path().join("chunks"), &[EntryKind::Chunk; 25]);
        check_migrated(&dir.path().join("empty"), &[]);
    }

    #[test]
    fn a_crash_before_the_migrated_snapshot_is_renamed_leaves_the_old_index() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path().join("space");
        let (mut keys, logged) = old_format_index(&dir, &[EntryKind::Memory, EntryKind::Chunk]);
        keys.push(logged);
        keys.sort_unstable();
        // What a crash in the middle of saving the migration leaves: the next
        // generation's log and part of the temporary snapshot.
        std::fs::write(dir.join(storage::log_name(6)), b"").unwrap();
        std::fs::write(dir.join("snapshot.tmp"), b"KRNVEC02 half").unwrap();
        let index = SpaceIndex::open(dir.clone(), space(), tuning()).unwrap();
        assert_eq!(index.keys(), keys);
        assert!(!index.status().rebuild_needed);
        assert!(!dir.join("snapshot.tmp").exists());
    }
}
