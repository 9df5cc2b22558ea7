//! The contract against the embedded index, and what only it has: files in the
//! tenant's directory, persistence, crash recovery and a bounded set of open
//! indexes.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use karen_domain::TenantId;
use karen_domain::ports::{VectorIndex, VectorSpace};
use karen_files::TenantDirectories;
use karen_vector::{EmbeddedVectorConfig, EmbeddedVectorIndex};

use crate::contract::{Fixture, vector_index_contract};
use crate::support::*;

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let index = EmbeddedVectorIndex::new(
        TenantDirectories::new(dir.path()),
        EmbeddedVectorConfig::default(),
    );
    Fixture {
        index: Arc::new(index),
        _keep: Some(dir),
    }
}

vector_index_contract!(fixture);

fn open(root: &Path, config: EmbeddedVectorConfig) -> EmbeddedVectorIndex {
    EmbeddedVectorIndex::new(TenantDirectories::new(root), config)
}

/// The one space directory of a tenant.
fn space_dir(root: &Path, tenant: TenantId) -> PathBuf {
    let vectors = TenantDirectories::new(root).path(tenant).join("vectors");
    let mut dirs: Vec<_> = fs::read_dir(&vectors)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs.pop().unwrap()
}

fn log_file(dir: &Path) -> PathBuf {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("wal-"))
        .unwrap()
}

/// Writes `count` public entries with vectors seeded from 0.
async fn fill(
    index: &dyn VectorIndex,
    tenant: TenantId,
    space: &VectorSpace,
    count: u64,
) -> Vec<karen_domain::ports::EntryKey> {
    let entries: Vec<_> = (0..count)
        .map(|i| public(memory_key(), vector(i, space.dims)))
        .collect();
    let keys = entries.iter().map(|e| e.key).collect();
    index.upsert(tenant, space, entries).await.unwrap();
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_live_in_the_tenants_directory_and_purge_removes_them() {
    let root = tempfile::tempdir().unwrap();
    let index = open(root.path(), EmbeddedVectorConfig::default());
    let (tenant, other) = (TenantId::generate(), TenantId::generate());
    fill(&index, tenant, &space_a(), 3).await;
    fill(&index, other, &space_a(), 3).await;
    let dir = space_dir(root.path(), tenant);
    assert!(dir.starts_with(TenantDirectories::new(root.path()).path(tenant)));
    assert!(dir.join("snapshot").exists() && dir.join("space.json").exists());
    index.purge_tenant(tenant).await.unwrap();
    assert!(
        !TenantDirectories::new(root.path())
            .path(tenant)
            .join("vectors")
            .exists()
    );
    assert!(space_dir(root.path(), other).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_survive_a_restart_with_and_without_snapshots() {
    let root = tempfile::tempdir().unwrap();
    // A low threshold: some changes end up in snapshots, the last ones only in the log.
    let config = EmbeddedVectorConfig {
        snapshot_min_records: 10,
        ..EmbeddedVectorConfig::default()
    };
    let tenant = TenantId::generate();
    let space = space_a();
    let (keys, removed) = {
        let index = open(root.path(), config);
        let mut keys = Vec::new();
        for _ in 0..7 {
            keys.extend(fill(&index, tenant, &space, 4).await);
        }
        let removed = keys.remove(3);
        index.remove(tenant, &[removed]).await.unwrap();
        (keys, removed)
    };
    let index = open(root.path(), config);
    let status = index.status(tenant, &space).await.unwrap();
    assert_eq!((status.entries, status.rebuild_needed), (27, false));
    assert_eq!(
        sorted(index.keys(tenant, &space).await.unwrap()),
        sorted(keys.clone())
    );
    assert!(!index.keys(tenant, &space).await.unwrap().contains(&removed));
    let hits = index
        .search(tenant, &space, &vector(0, DIMS), 1, &anyone())
        .await
        .unwrap();
    assert!((hits[0].score - 1.0).abs() < 1e-3);
    assert_eq!(index.spaces(tenant).await.unwrap(), vec![space]);
}

async fn damaged_then_rebuilt(damage: impl FnOnce(&Path)) {
    let root = tempfile::tempdir().unwrap();
    let tenant = TenantId::generate();
    let space = space_a();
    {
        let index = open(root.path(), EmbeddedVectorConfig::default());
        fill(&index, tenant, &space, 20).await;
    }
    damage(&space_dir(root.path(), tenant));
    let index = open(root.path(), EmbeddedVectorConfig::default());
    let status = index.status(tenant, &space).await.unwrap();
    assert_eq!((status.entries, status.rebuild_needed), (0, true));
    assert!(
        index
            .search(tenant, &space, &vector(0, DIMS), 10, &anyone())
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(index.spaces(tenant).await.unwrap(), vec![space.clone()]);
    // Writable at once; the flag survives a restart until the rebuild starts.
    fill(&index, tenant, &space, 2).await;
    drop(index);
    let index = open(root.path(), EmbeddedVectorConfig::default());
    let status = index.status(tenant, &space).await.unwrap();
    assert_eq!((status.entries, status.rebuild_needed), (2, true));
    // A rebuild starts by dropping the space, which clears the flag.
    index.drop_space(tenant, &space).await.unwrap();
    fill(&index, tenant, &space, 20).await;
    let status = index.status(tenant, &space).await.unwrap();
    assert_eq!((status.entries, status.rebuild_needed), (20, false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_snapshot_resets_the_index_and_asks_for_a_rebuild() {
    damaged_then_rebuilt(|dir| fs::remove_file(dir.join("snapshot")).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_snapshot_resets_the_index_and_asks_for_a_rebuild() {
    damaged_then_rebuilt(|dir| {
        let path = dir.join("snapshot");
        let mut bytes = fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x5a;
        fs::write(&path, bytes).unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_snapshot_resets_the_index_and_asks_for_a_rebuild() {
    damaged_then_rebuilt(|dir| {
        let path = dir.join("snapshot");
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() / 3]).unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_log_resets_the_index_and_asks_for_a_rebuild() {
    damaged_then_rebuilt(|dir| fs::remove_file(log_file(dir)).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_log_record_resets_the_index_and_asks_for_a_rebuild() {
    let root = tempfile::tempdir().unwrap();
    let tenant = TenantId::generate();
    let space = space_a();
    {
        let index = open(root.path(), EmbeddedVectorConfig::default());
        for _ in 0..3 {
            fill(&index, tenant, &space, 2).await;
        }
    }
    let log = log_file(&space_dir(root.path(), tenant));
    let mut bytes = fs::read(&log).unwrap();
    bytes[20] ^= 0x01; // inside the first record, with more records after it
    fs::write(&log, bytes).unwrap();
    let index = open(root.path(), EmbeddedVectorConfig::default());
    let status = index.status(tenant, &space).await.unwrap();
    assert_eq!((status.entries, status.rebuild_needed), (0, true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_last_write_is_dropped_without_a_rebuild() {
    let root = tempfile::tempdir().unwrap();
    let tenant = TenantId::generate();
    let space = space_a();
    {
        let index = open(root.path(), EmbeddedVectorConfig::default());
        fill(&index, tenant, &space, 3).await;
        fill(&index, tenant, &space, 1).await;
    }
    // A crash in the middle of the last append: its tail never reached the disk.
    let log = log_file(&space_dir(root.path(), tenant));
    let bytes = fs::read(&log).unwrap();
    fs::write(&log, &bytes[..bytes.len() - 10]).unwrap();
    let index = open(root.path(), EmbeddedVectorConfig::default());
    let status = index.status(tenant, &space).await.unwrap();
    assert_eq!((status.entries, status.rebuild_needed), (3, false));
    // And writing goes on cleanly after the cut.
    fill(&index, tenant, &space, 2).await;
    drop(index);
    let index = open(root.path(), EmbeddedVectorConfig::default());
    assert_eq!(index.status(tenant, &space).await.unwrap().entries, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_indexes_reopen_with_their_entries() {
    let root = tempfile::tempdir().unwrap();
    let config = EmbeddedVectorConfig {
        max_open_indexes: 2,
        ..EmbeddedVectorConfig::default()
    };
    let index = open(root.path(), config);
    let tenants: Vec<_> = (0..6).map(|_| TenantId::generate()).collect();
    let mut keys = Vec::new();
    for tenant in &tenants {
        keys.push(fill(&index, *tenant, &space_a(), 5).await);
    }
    for (tenant, keys) in tenants.iter().zip(&keys) {
        assert_eq!(
            sorted(index.keys(*tenant, &space_a()).await.unwrap()),
            sorted(keys.clone())
        );
        let hits = index
            .search(*tenant, &space_a(), &vector(0, DIMS), 10, &anyone())
            .await
            .unwrap();
        assert_eq!(hits.len(), 5);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leftovers_of_an_interrupted_snapshot_are_ignored() {
    let root = tempfile::tempdir().unwrap();
    let tenant = TenantId::generate();
    let space = space_a();
    {
        let index = open(root.path(), EmbeddedVectorConfig::default());
        fill(&index, tenant, &space, 4).await;
    }
    let dir = space_dir(root.path(), tenant);
    // A crash after writing the next generation's empty log and part of the
    // temporary snapshot, before the rename.
    fs::write(dir.join("snapshot.tmp"), b"half a snapshot").unwrap();
    fs::write(dir.join("wal-99999999999999999999.log"), b"").unwrap();
    let index = open(root.path(), EmbeddedVectorConfig::default());
    let status = index.status(tenant, &space).await.unwrap();
    assert_eq!((status.entries, status.rebuild_needed), (4, false));
    assert!(!dir.join("snapshot.tmp").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_kinds_survive_a_restart_in_their_own_graphs() {
    use karen_domain::ports::{EntryKind, SearchFilter};

    let root = tempfile::tempdir().unwrap();
    // Some changes in snapshots, the last ones only in the log.
    let config = EmbeddedVectorConfig {
        snapshot_min_records: 16,
        ..EmbeddedVectorConfig::default()
    };
    let tenant = TenantId::generate();
    let space = space_a();
    let (memories, chunks) = {
        let index = open(root.path(), config);
        let (mut memories, mut chunks) = (Vec::new(), Vec::new());
        for round in 0..5u64 {
            let batch: Vec<_> = (0..10u64)
                .map(|i| {
                    let seed = round * 10 + i;
                    let key = if i % 2 == 0 {
                        memory_key()
                    } else {
                        chunk_key()
                    };
                    public(key, vector(seed, DIMS))
                })
                .collect();
            for entry in &batch {
                match entry.key.kind {
                    EntryKind::Memory => memories.push(entry.key),
                    EntryKind::Chunk => chunks.push(entry.key),
                }
            }
            index.upsert(tenant, &space, batch).await.unwrap();
        }
        let gone = chunks.remove(0);
        index.remove(tenant, &[gone]).await.unwrap();
        (memories, chunks)
    };
    let index = open(root.path(), config);
    let status = index.status(tenant, &space).await.unwrap();
    assert_eq!((status.entries, status.rebuild_needed), (49, false));
    for (kind, expected) in [(EntryKind::Memory, &memories), (EntryKind::Chunk, &chunks)] {
        let filter = SearchFilter {
            kinds: vec![kind],
            ..anyone()
        };
        let hits = index
            .search(tenant, &space, &vector(3, DIMS), 100, &filter)
            .await
            .unwrap();
        assert_eq!(
            sorted(hits.iter().map(|h| h.key).collect()),
            sorted(expected.clone()),
            "{kind:?}"
        );
    }
    let snapshot = fs::read(space_dir(root.path(), tenant).join("snapshot")).unwrap();
    assert_eq!(&snapshot[..8], b"KRNVEC02");
}
