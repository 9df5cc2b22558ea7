//! The embedded vector index: one index per tenant and vector space, on disk
//! in the tenant's directory, for a single Karen process. An index holds one
//! HNSW graph (usearch) per entry kind (memories, document passages), so that
//! a search walks only the graphs of the kinds it wants (see `graphs`).
//!
//! usearch rather than hnsw_rs: it removes entries (hnsw_rs only adds, so every
//! removal would mean a rebuild), searches with a predicate pushed into the
//! graph walk (the access filter is applied while searching, not after), and
//! serialises to a buffer that this module checksums itself. Measured numbers
//! are in `bench/results/vector.md`.
//!
//! Open indexes are kept in a bounded LRU: a process serving many tenants does
//! not hold every tenant's graph in memory; an index evicted while idle is
//! loaded again from its snapshot and log on next use.

mod graphs;
mod space;
mod storage;

use std::collections::HashMap;
use std::io::ErrorKind;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use karen_domain::ports::{
    EntryKey, Hit, IndexStatus, SearchFilter, VectorEntry, VectorIndex, VectorSpace,
};
use karen_domain::{Error, Result, TenantId};
use karen_files::TenantDirectories;
use parking_lot::Mutex;
use tokio::sync::{OnceCell, OwnedRwLockReadGuard, RwLock};

use self::space::{SpaceIndex, Tuning, unavailable};
use crate::common::{check_space, space_digest, unit_vector};

/// The directory under a tenant's directory that holds its vector indexes.
const VECTORS_DIR: &str = "vectors";

/// Settings of the embedded index. The defaults reach recall@10 ≥ 0.95 at
/// 100k × 384 dims (see `bench/results/vector.md`).
#[derive(Debug, Clone, Copy)]
pub struct EmbeddedVectorConfig {
    /// How many (tenant, space) indexes stay open at once; the least recently
    /// used idle one is closed beyond that.
    pub max_open_indexes: usize,
    /// HNSW edges per node (M).
    pub connectivity: usize,
    /// HNSW candidate list while inserting (efConstruction).
    pub expansion_add: usize,
    /// HNSW candidate list while searching (ef); raised to `limit` when smaller.
    pub expansion_search: usize,
    /// Log records after which a snapshot is written (at least; more for large
    /// indexes, a quarter of their entries), bounding replay time on open.
    pub snapshot_min_records: u64,
}

impl Default for EmbeddedVectorConfig {
    fn default() -> Self {
        Self {
            max_open_indexes: 64,
            connectivity: 16,
            expansion_add: 128,
            expansion_search: 128,
            snapshot_min_records: 1024,
        }
    }
}

type SpaceKey = (TenantId, String);
type SpaceCell = OnceCell<Arc<SpaceIndex>>;

struct Slot {
    cell: Arc<SpaceCell>,
    last_used: u64,
}

#[derive(Default)]
struct Registry {
    open: HashMap<SpaceKey, Slot>,
    clock: u64,
}

impl Registry {
    /// The cell of `key`, marked as just used; closes idle indexes over `max`.
    fn checkout(&mut self, key: &SpaceKey, max: usize) -> Arc<SpaceCell> {
        self.clock += 1;
        let clock = self.clock;
        let cell = {
            let slot = self.open.entry(key.clone()).or_insert_with(|| Slot {
                cell: Arc::new(OnceCell::new()),
                last_used: clock,
            });
            slot.last_used = clock;
            slot.cell.clone()
        };
        while self.open.len() > max {
            // Only a slot no operation holds (the registry's is the only
            // reference) may close: closing one in use would let a second
            // instance open the same files.
            let victim = self
                .open
                .iter()
                .filter(|(_, slot)| Arc::strong_count(&slot.cell) == 1)
                .min_by_key(|(_, slot)| slot.last_used)
                .map(|(k, _)| k.clone());
            match victim {
                Some(victim) => {
                    self.open.remove(&victim);
                }
                None => break,
            }
        }
        cell
    }
}

/// An open index, held for the length of one operation (which keeps it
/// from being closed meanwhile) together with the layout read lock.
struct Handle {
    _cell: Arc<SpaceCell>,
    _layout: OwnedRwLockReadGuard<()>,
    index: Arc<SpaceIndex>,
}

/// The embedded [`VectorIndex`]: per tenant and space, on disk under
/// `<tenant directory>/vectors/`.
pub struct EmbeddedVectorIndex {
    directories: TenantDirectories,
    config: EmbeddedVectorConfig,
    registry: Arc<Mutex<Registry>>,
    /// Read by every operation, written by those that delete directories
    /// (`drop_space`, `purge_tenant`), so that no index is open on files being
    /// deleted.
    layout: Arc<RwLock<()>>,
}

impl EmbeddedVectorIndex {
    /// An index keeping its files in the tenants' directories.
    pub fn new(directories: TenantDirectories, config: EmbeddedVectorConfig) -> Self {
        Self {
            directories,
            config,
            registry: Arc::default(),
            layout: Arc::default(),
        }
    }

    fn tuning(&self) -> Tuning {
        Tuning {
            connectivity: self.config.connectivity.max(2),
            expansion_add: self.config.expansion_add.max(1),
            expansion_search: self.config.expansion_search.max(1),
            snapshot_min_records: self.config.snapshot_min_records.max(1),
        }
    }

    /// The directory of all of a tenant's vector indexes (tenancy rule 1: from
    /// `TenantDirectories::path` alone).
    fn vectors_dir(&self, tenant: TenantId) -> PathBuf {
        self.directories.path(tenant).join(VECTORS_DIR)
    }

    /// The directory name of a space: readable model prefix, dims, and a
    /// digest of both, so no two spaces share a directory and no model id can
    /// escape it.
    fn space_dir_name(space: &VectorSpace) -> String {
        let readable: String = space
            .model
            .chars()
            .take(32)
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        format!("{readable}-{}-{}", space.dims, space_digest(space))
    }

    /// Opens (creating when `create`) the index of a space; `None` if it does
    /// not exist and `create` is false.
    async fn handle(
        &self,
        tenant: TenantId,
        space: &VectorSpace,
        create: bool,
    ) -> Result<Option<Handle>> {
        let layout = self.layout.clone().read_owned().await;
        let name = Self::space_dir_name(space);
        let dir = self.vectors_dir(tenant).join(&name);
        if !create && !tokio::fs::try_exists(&dir).await.unwrap_or(false) {
            return Ok(None);
        }
        let key = (tenant, name);
        for _ in 0..2 {
            let cell = self
                .registry
                .lock()
                .checkout(&key, self.config.max_open_indexes.max(1));
            let (dir, space, tuning) = (dir.clone(), space.clone(), self.tuning());
            let index = cell
                .get_or_try_init(|| async move {
                    blocking(move || SpaceIndex::open(dir, space, tuning).map(Arc::new)).await
                })
                .await?
                .clone();
            if index.poisoned() {
                // Forget it so that the next checkout opens it afresh from disk.
                let mut registry = self.registry.lock();
                if registry
                    .open
                    .get(&key)
                    .is_some_and(|s| Arc::ptr_eq(&s.cell, &cell))
                {
                    registry.open.remove(&key);
                }
                continue;
            }
            return Ok(Some(Handle {
                _cell: cell,
                _layout: layout,
                index,
            }));
        }
        Err(unavailable(
            "vector index cannot be reopened after a failed write",
        ))
    }

    /// The spaces with an index directory (`None` when the tenant has none).
    fn list_spaces(vectors: &std::path::Path) -> Result<Vec<VectorSpace>> {
        let entries = match std::fs::read_dir(vectors) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(unavailable(format!("{}: {e}", vectors.display()))),
        };
        let mut spaces = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| unavailable(format!("{}: {e}", vectors.display())))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let file = entry.path().join(storage::SPACE_FILE);
            let space = std::fs::read(&file)
                .ok()
                .and_then(|bytes| serde_json::from_slice::<VectorSpace>(&bytes).ok());
            match space {
                // A space file that does not name its own directory is not trusted.
                Some(space) if Self::space_dir_name(&space) == name => spaces.push(space),
                _ => {
                    tracing::warn!(dir = %entry.path().display(), "skipping a vector index directory without a valid space file")
                }
            }
        }
        spaces.sort();
        Ok(spaces)
    }
}

/// Runs blocking or CPU-heavy work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::internal(format!("vector index task failed: {e}")))?
}

async fn remove_dir(path: PathBuf) -> Result<()> {
    match tokio::fs::remove_dir_all(&path).await {
        Err(e) if e.kind() != ErrorKind::NotFound => {
            Err(unavailable(format!("{}: {e}", path.display())))
        }
        _ => Ok(()),
    }
}

#[async_trait]
impl VectorIndex for EmbeddedVectorIndex {
    fn name(&self) -> &str {
        "embedded"
    }

    async fn upsert(
        &self,
        tenant: TenantId,
        space: &VectorSpace,
        entries: Vec<VectorEntry>,
    ) -> Result<()> {
        check_space(space)?;
        if entries.is_empty() {
            return Ok(());
        }
        let owned_space = space.clone();
        let prepared = blocking(move || {
            entries
                .into_iter()
                .map(|e| Ok((e.key, e.access, unit_vector(&owned_space, &e.vector)?)))
                .collect::<Result<Vec<_>>>()
        })
        .await?;
        let Some(handle) = self.handle(tenant, space, true).await? else {
            return Err(unavailable("vector index could not be created"));
        };
        blocking(move || handle.index.upsert(prepared)).await
    }

    async fn remove(&self, tenant: TenantId, keys: &[EntryKey]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        for space in self.spaces(tenant).await? {
            if let Some(handle) = self.handle(tenant, &space, false).await? {
                let keys = keys.to_vec();
                blocking(move || handle.index.remove(&keys)).await?;
            }
        }
        Ok(())
    }

    async fn compact(&self, tenant: TenantId) -> Result<()> {
        for space in self.spaces(tenant).await? {
            if let Some(handle) = self.handle(tenant, &space, false).await? {
                blocking(move || handle.index.compact()).await?;
            }
        }
        Ok(())
    }

    async fn search(
        &self,
        tenant: TenantId,
        space: &VectorSpace,
        query: &[f32],
        limit: usize,
        filter: &SearchFilter,
    ) -> Result<Vec<Hit>> {
        check_space(space)?;
        let query = unit_vector(space, query)?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let Some(handle) = self.handle(tenant, space, false).await? else {
            return Ok(Vec::new());
        };
        let permit = handle
            .index
            .search_permits()
            .acquire_owned()
            .await
            .map_err(|e| Error::internal(format!("vector search permits closed: {e}")))?;
        let filter = filter.clone();
        blocking(move || {
            let _permit = permit;
            handle.index.search(&query, limit, &filter)
        })
        .await
    }

    async fn keys(&self, tenant: TenantId, space: &VectorSpace) -> Result<Vec<EntryKey>> {
        check_space(space)?;
        match self.handle(tenant, space, false).await? {
            Some(handle) => blocking(move || Ok(handle.index.keys())).await,
            None => Ok(Vec::new()),
        }
    }

    async fn spaces(&self, tenant: TenantId) -> Result<Vec<VectorSpace>> {
        let vectors = self.vectors_dir(tenant);
        blocking(move || Self::list_spaces(&vectors)).await
    }

    async fn status(&self, tenant: TenantId, space: &VectorSpace) -> Result<IndexStatus> {
        check_space(space)?;
        match self.handle(tenant, space, false).await? {
            Some(handle) => blocking(move || Ok(handle.index.status())).await,
            None => Ok(IndexStatus::default()),
        }
    }

    /// Deletes the space's directory, and with it any rebuild flag: dropping
    /// the space is how a rebuild from the SQL store starts.
    async fn drop_space(&self, tenant: TenantId, space: &VectorSpace) -> Result<()> {
        check_space(space)?;
        let _layout = self.layout.write().await;
        let name = Self::space_dir_name(space);
        self.registry.lock().open.remove(&(tenant, name.clone()));
        remove_dir(self.vectors_dir(tenant).join(name)).await
    }

    async fn purge_tenant(&self, tenant: TenantId) -> Result<()> {
        let _layout = self.layout.write().await;
        self.registry.lock().open.retain(|(t, _), _| *t != tenant);
        remove_dir(self.vectors_dir(tenant)).await
    }
}
