//! The on-disk format of one (tenant, space) index directory.
//!
//! - `space.json`: the space (model, dims), so that `spaces()` can list it.
//! - `snapshot`: `MAGIC | meta length (u64 LE) | graphs length (u64 LE) |
//!   CRC-32 of meta and graphs (u32 LE) | meta (JSON) | graphs (usearch)`. It is
//!   only ever replaced whole: written to `snapshot.tmp`, fsynced, renamed over
//!   the old one, directory fsynced. A file whose lengths or checksum do not
//!   match is damaged, never half-loaded. Format 2 (`KRNVEC02`) holds one HNSW
//!   graph per entry kind, one after the other, their kinds and lengths listed
//!   in the meta's `graphs`; format 1 (`KRNVEC01`, before graphs were split by
//!   kind) holds one graph of every kind and is still read, then migrated (see
//!   `graphs::Graphs::migrate`).
//! - `wal-<generation>.log`: the upserts and removals made since the snapshot of
//!   the same generation, each record `length (u32 LE) | CRC-32 (u32 LE) |
//!   JSON`, fsynced before a write is acknowledged. The log of the snapshot's
//!   generation always exists (it is created before the snapshot that names it),
//!   so a missing log means a damaged index, not an empty one.
//! - `rebuild-needed`: present while the index, once found damaged and reset,
//!   awaits a rebuild from the SQL store.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use karen_domain::ports::{EntryAccess, EntryKey, EntryKind};
use serde::{Deserialize, Serialize};

pub(super) const SPACE_FILE: &str = "space.json";
pub(super) const SNAPSHOT_FILE: &str = "snapshot";
const SNAPSHOT_TMP_FILE: &str = "snapshot.tmp";
pub(super) const REBUILD_MARKER: &str = "rebuild-needed";
/// The format written.
const MAGIC: &[u8; 8] = b"KRNVEC02";
/// The format of releases that kept one graph for every kind: read, never written.
const MAGIC_V1: &[u8; 8] = b"KRNVEC01";
const SNAPSHOT_HEADER_LEN: usize = 8 + 8 + 8 + 4;
const RECORD_HEADER_LEN: usize = 4 + 4;
/// No single record is larger (a 32768-dim vector in JSON is well below this):
/// a larger length field is damage, not a record to allocate for.
const MAX_RECORD_LEN: usize = 64 << 20;

/// An entry as the snapshot stores it (its vector lives in the graph).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct StoredEntry {
    pub label: u64,
    pub key: EntryKey,
    pub access: EntryAccess,
}

/// One graph of a format-2 snapshot: the kind of its entries and its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct GraphPart {
    pub kind: EntryKind,
    pub bytes: u64,
}

/// The snapshot's metadata: everything but the graphs.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct SnapshotMeta {
    pub model: String,
    pub dims: u32,
    pub generation: u64,
    pub next_label: u64,
    pub entries: Vec<StoredEntry>,
    /// The graphs, in the order their bytes follow the meta (format 2; empty
    /// in format 1, whose one graph holds every kind).
    #[serde(default)]
    pub graphs: Vec<GraphPart>,
}

/// A snapshot as read: its metadata and the bytes of its graphs.
pub(super) struct Snapshot {
    pub meta: SnapshotMeta,
    /// The bytes after the meta: the graphs of `meta.graphs` one after the
    /// other (format 2), or the single graph of every kind (format 1).
    pub graphs: Vec<u8>,
    /// Written before graphs were split by kind (`KRNVEC01`).
    pub single_graph: bool,
}

/// One change, as the write-ahead log stores it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub(super) enum LogRecord {
    /// `vector` is already of unit length; `label` is the graph key it gets.
    Upsert {
        label: u64,
        key: EntryKey,
        access: EntryAccess,
        vector: Vec<f32>,
    },
    Remove {
        key: EntryKey,
    },
}

/// Why an index directory cannot be loaded as it is.
#[derive(Debug)]
pub(super) enum Damage {
    /// A file that must exist does not.
    Missing(&'static str),
    /// A file exists but fails its checks.
    Corrupt(String),
    /// The disk itself failed: not damage, the caller must not reset anything.
    Io(io::Error),
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Damage::Missing(what) => write!(f, "{what} is missing"),
            Damage::Corrupt(why) => write!(f, "{why}"),
            Damage::Io(error) => write!(f, "{error}"),
        }
    }
}

/// The name of the log of one generation.
pub(super) fn log_name(generation: u64) -> String {
    format!("wal-{generation:020}.log")
}

fn parse_log_name(name: &str) -> Option<u64> {
    name.strip_prefix("wal-")?
        .strip_suffix(".log")?
        .parse()
        .ok()
}

/// The generations of every log file in `dir`.
pub(super) fn log_generations(dir: &Path) -> io::Result<Vec<u64>> {
    let mut generations = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(generation) = entry.file_name().to_str().and_then(parse_log_name) {
            generations.push(generation);
        }
    }
    generations.sort_unstable();
    Ok(generations)
}

/// Removes log files of other generations and an unfinished snapshot: left
/// over by a crash in the middle of a snapshot, and subsumed by what is kept.
pub(super) fn remove_stale_files(dir: &Path, keep_generation: u64) -> io::Result<()> {
    for generation in log_generations(dir)? {
        if generation != keep_generation {
            remove_if_exists(&dir.join(log_name(generation)))?;
        }
    }
    remove_if_exists(&dir.join(SNAPSHOT_TMP_FILE))
}

pub(super) fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Makes a rename or a new file in `dir` durable.
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `bytes` to `dir/name` so that a crash leaves either the old file or
/// the new one, never a mix.
pub(super) fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

/// Creates an empty log for `generation` and makes it durable.
pub(super) fn create_log(dir: &Path, generation: u64) -> io::Result<File> {
    let path = dir.join(log_name(generation));
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)?;
    file.sync_all()?;
    sync_dir(dir)?;
    open_log_for_append(&path)
}

pub(super) fn open_log_for_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().append(true).open(path)
}

/// Replaces the snapshot. `graph(i)` serialises the `i`-th graph of
/// `meta.graphs`, one at a time, so that no more than one graph's bytes are in
/// memory at once besides the index itself.
pub(super) fn write_snapshot(
    dir: &Path,
    meta: &SnapshotMeta,
    mut graph: impl FnMut(usize) -> io::Result<Vec<u8>>,
) -> io::Result<()> {
    let meta_bytes = serde_json::to_vec(meta).map_err(io::Error::other)?;
    let graphs_len: u64 = meta.graphs.iter().map(|g| g.bytes).sum();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&meta_bytes);
    let tmp = dir.join(SNAPSHOT_TMP_FILE);
    {
        let mut file = File::create(&tmp)?;
        // The checksum is not known before the graphs are written: a zero
        // checksum, overwritten before the file is synced and renamed.
        file.write_all(&header(MAGIC, meta_bytes.len() as u64, graphs_len, 0))?;
        file.write_all(&meta_bytes)?;
        for (i, part) in meta.graphs.iter().enumerate() {
            let bytes = graph(i)?;
            if bytes.len() as u64 != part.bytes {
                return Err(io::Error::other(format!(
                    "graph of {} entries changed length while being saved",
                    part.kind.as_str()
                )));
            }
            crc.update(&bytes);
            file.write_all(&bytes)?;
        }
        file.seek(SeekFrom::Start(24))?;
        file.write_all(&crc.finalize().to_le_bytes())?;
        file.sync_all()?;
    }
    fs::rename(&tmp, dir.join(SNAPSHOT_FILE))?;
    sync_dir(dir)
}

fn header(magic: &[u8; 8], meta_len: u64, graphs_len: u64, crc: u32) -> Vec<u8> {
    let mut header = Vec::with_capacity(SNAPSHOT_HEADER_LEN);
    header.extend_from_slice(magic);
    header.extend_from_slice(&meta_len.to_le_bytes());
    header.extend_from_slice(&graphs_len.to_le_bytes());
    header.extend_from_slice(&crc.to_le_bytes());
    header
}

/// Writes a snapshot in format 1 (one graph of every kind), as releases
/// before the split by kind did: for the tests of the migration.
#[cfg(test)]
pub(super) fn write_snapshot_v1(dir: &Path, meta: &SnapshotMeta, graph: &[u8]) -> io::Result<()> {
    let meta = serde_json::to_vec(meta).map_err(io::Error::other)?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&meta);
    crc.update(graph);
    let mut bytes = header(
        MAGIC_V1,
        meta.len() as u64,
        graph.len() as u64,
        crc.finalize(),
    );
    bytes.extend_from_slice(&meta);
    bytes.extend_from_slice(graph);
    fs::write(dir.join(SNAPSHOT_FILE), bytes)
}

fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    bytes
        .get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    bytes
        .get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
}

/// Reads and verifies the snapshot: its metadata and the graphs' bytes.
pub(super) fn read_snapshot(dir: &Path) -> Result<Snapshot, Damage> {
    let mut bytes = Vec::new();
    match File::open(dir.join(SNAPSHOT_FILE)) {
        Ok(mut file) => file.read_to_end(&mut bytes).map_err(Damage::Io)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Damage::Missing("snapshot")),
        Err(e) => return Err(Damage::Io(e)),
    };
    let corrupt = |why: &str| Damage::Corrupt(format!("snapshot: {why}"));
    let single_graph = match bytes.get(..8) {
        Some(magic) if magic == MAGIC.as_slice() => false,
        Some(magic) if magic == MAGIC_V1.as_slice() => true,
        _ => return Err(corrupt("bad magic")),
    };
    let (Some(meta_len), Some(graphs_len), Some(crc)) = (
        read_u64(&bytes, 8),
        read_u64(&bytes, 16),
        read_u32(&bytes, 24),
    ) else {
        return Err(corrupt("truncated header"));
    };
    let body = &bytes[SNAPSHOT_HEADER_LEN..];
    let expected = meta_len.checked_add(graphs_len);
    if expected != Some(body.len() as u64) {
        return Err(corrupt("length does not match the header"));
    }
    if crc32fast::hash(body) != crc {
        return Err(corrupt("checksum mismatch"));
    }
    let meta: SnapshotMeta = serde_json::from_slice(&body[..meta_len as usize])
        .map_err(|e| corrupt(&format!("metadata: {e}")))?;
    let parts: Option<u64> = meta
        .graphs
        .iter()
        .try_fold(0u64, |sum, part| sum.checked_add(part.bytes));
    if single_graph != meta.graphs.is_empty() || (!single_graph && parts != Some(graphs_len)) {
        return Err(corrupt("graph lengths do not match the header"));
    }
    // The graphs are the file's tail: cut the front off rather than copy them.
    bytes.drain(..SNAPSHOT_HEADER_LEN + meta_len as usize);
    Ok(Snapshot {
        meta,
        graphs: bytes,
        single_graph,
    })
}

/// Appends the encoding of `record` to `out`.
pub(super) fn encode_record(record: &LogRecord, out: &mut Vec<u8>) -> io::Result<()> {
    let payload = serde_json::to_vec(record).map_err(io::Error::other)?;
    let len = u32::try_from(payload.len()).map_err(io::Error::other)?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(())
}

/// The readable part of a log.
pub(super) struct LogContents {
    pub records: Vec<LogRecord>,
    /// The length of the intact prefix; anything after it is a torn tail.
    pub valid_len: u64,
    pub file_len: u64,
}

/// Reads a log. An incomplete last record (a crash during an append that was
/// therefore never acknowledged) ends the log; a bad record followed by more
/// data is damage.
pub(super) fn read_log(path: &PathBuf) -> Result<LogContents, Damage> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut file) => file.read_to_end(&mut bytes).map_err(Damage::Io)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Damage::Missing("write-ahead log"));
        }
        Err(e) => return Err(Damage::Io(e)),
    };
    let mut records = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        let (Some(len), Some(crc)) = (read_u32(&bytes, at), read_u32(&bytes, at + 4)) else {
            break; // torn header
        };
        let len = len as usize;
        let start = at + RECORD_HEADER_LEN;
        let end = start.saturating_add(len);
        if len > MAX_RECORD_LEN {
            return Err(Damage::Corrupt(format!(
                "write-ahead log: impossible record length at byte {at}"
            )));
        }
        let Some(payload) = bytes.get(start..end) else {
            break; // torn payload
        };
        let intact = crc32fast::hash(payload) == crc;
        let record = intact
            .then(|| serde_json::from_slice::<LogRecord>(payload).ok())
            .flatten();
        match record {
            Some(record) => records.push(record),
            // The last record, written but not fully on disk: torn as well.
            None if end == bytes.len() => break,
            None => {
                return Err(Damage::Corrupt(format!(
                    "write-ahead log: bad record at byte {at}"
                )));
            }
        }
        at = end;
    }
    Ok(LogContents {
        records,
        valid_len: at as u64,
        file_len: bytes.len() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use karen_domain::ports::EntryKind;
    use uuid::Uuid;

    fn temp_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("karen-vector-storage-{}", Uuid::new_v4()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn upsert(label: u64) -> LogRecord {
        LogRecord::Upsert {
            label,
            key: EntryKey::new(EntryKind::Memory, Uuid::new_v4()),
            access: EntryAccess::default(),
            vector: vec![0.6, 0.8],
        }
    }

    #[test]
    fn torn_tail_is_dropped_and_middle_damage_is_reported() {
        let dir = temp_dir();
        let path = dir.join(log_name(0));
        let mut bytes = Vec::new();
        encode_record(&upsert(1), &mut bytes).unwrap();
        encode_record(&upsert(2), &mut bytes).unwrap();
        let whole = bytes.len();
        fs::write(&path, &bytes[..whole - 3]).unwrap();
        let log = read_log(&path).unwrap();
        assert_eq!(log.records.len(), 1);
        assert!(log.valid_len < log.file_len);

        let mut damaged = bytes.clone();
        damaged[RECORD_HEADER_LEN + 2] ^= 0xff;
        fs::write(&path, &damaged).unwrap();
        assert!(matches!(read_log(&path), Err(Damage::Corrupt(_))));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn snapshot_round_trips_and_detects_flipped_bits() {
        let dir = temp_dir();
        let meta = SnapshotMeta {
            model: "m".into(),
            dims: 2,
            generation: 3,
            next_label: 9,
            entries: vec![],
            graphs: vec![
                GraphPart {
                    kind: EntryKind::Memory,
                    bytes: 5,
                },
                GraphPart {
                    kind: EntryKind::Chunk,
                    bytes: 6,
                },
            ],
        };
        let parts: [&[u8]; 2] = [b"graph", b" bytes"];
        write_snapshot(&dir, &meta, |i| Ok(parts[i].to_vec())).unwrap();
        let read = read_snapshot(&dir).unwrap();
        assert_eq!((read.meta.generation, read.meta.next_label), (3, 9));
        assert_eq!(read.meta.graphs, meta.graphs);
        assert!(!read.single_graph);
        assert_eq!(read.graphs, b"graph bytes");
        let path = dir.join(SNAPSHOT_FILE);
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(read_snapshot(&dir), Err(Damage::Corrupt(_))));
        fs::remove_file(&path).unwrap();
        assert!(matches!(read_snapshot(&dir), Err(Damage::Missing(_))));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_graph_that_changes_length_while_saved_fails_the_snapshot() {
        let dir = temp_dir();
        let meta = SnapshotMeta {
            model: "m".into(),
            dims: 2,
            generation: 1,
            next_label: 1,
            entries: vec![],
            graphs: vec![GraphPart {
                kind: EntryKind::Memory,
                bytes: 4,
            }],
        };
        assert!(write_snapshot(&dir, &meta, |_| Ok(b"longer".to_vec())).is_err());
        assert!(matches!(read_snapshot(&dir), Err(Damage::Missing(_))));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn format_1_snapshots_are_read_as_one_graph() {
        let dir = temp_dir();
        let meta = SnapshotMeta {
            model: "m".into(),
            dims: 2,
            generation: 4,
            next_label: 2,
            entries: vec![],
            graphs: vec![],
        };
        write_snapshot_v1(&dir, &meta, b"old graph").unwrap();
        let read = read_snapshot(&dir).unwrap();
        assert!(read.single_graph);
        assert_eq!(read.meta.generation, 4);
        assert_eq!(read.graphs, b"old graph");
        fs::remove_dir_all(dir).unwrap();
    }
}
