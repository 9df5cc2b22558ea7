//! The embedded full-text index: one tantivy index per tenant in the tenant's
//! directory (`<data dir>/tenants/<tenant>/text/`), BM25 ranking.
//!
//! Many tenants share one process, so open indexes are kept in a small LRU
//! cache, and writers (each with an indexing thread, a merge thread and a
//! memory budget) in a smaller one; an index nobody uses is closed, and
//! reopened from disk on its next use. All tantivy work runs on tokio's
//! blocking pool.

mod schema;
mod tenant;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use karen_domain::ports::{EntryKey, Hit, IndexStatus, SearchFilter, TextEntry, TextIndex};
use karen_domain::{Error, Result, TenantId};
use karen_files::TenantDirectories;
use tantivy::collector::TopDocs;
use tantivy::{TantivyDocument, TantivyError};

use self::tenant::{CountedWriter, OpenIndex, TenantSlot, WriterConfig, is_damage, lock};
use crate::unavailable;

/// Limits of the embedded index.
#[derive(Debug, Clone)]
pub struct EmbeddedTextOptions {
    /// Tenant indexes kept open (readers and memory maps); the least recently
    /// used beyond this are closed.
    pub open_indexes: usize,
    /// Tenant index writers kept open; each holds two threads and up to
    /// `writer_memory_bytes` while indexing. The least recently written
    /// beyond this are closed (and reopened on the tenant's next write).
    pub open_writers: usize,
    /// Memory a writer fills before flushing a segment (tantivy's minimum,
    /// 15 MB, is plenty for batches of memories and chunks).
    pub writer_memory_bytes: usize,
}

impl Default for EmbeddedTextOptions {
    fn default() -> Self {
        Self {
            open_indexes: 256,
            open_writers: 4,
            writer_memory_bytes: 15_000_000,
        }
    }
}

/// Full-text search over per-tenant tantivy indexes on local disk.
pub struct EmbeddedTextIndex {
    shared: Arc<Shared>,
}

struct Shared {
    directories: TenantDirectories,
    options: EmbeddedTextOptions,
    writer: WriterConfig,
    slots: Mutex<HashMap<TenantId, Arc<TenantSlot>>>,
    tick: AtomicU64,
}

impl EmbeddedTextIndex {
    /// An index keeping each tenant's files under `directories.path(tenant)/text`.
    pub fn new(directories: TenantDirectories, options: EmbeddedTextOptions) -> Self {
        let writer = WriterConfig {
            // tantivy refuses a budget below 15 MB per indexing thread.
            memory_bytes: options.writer_memory_bytes.max(15_000_000),
            open_writers: Arc::new(AtomicUsize::new(0)),
        };
        Self {
            shared: Arc::new(Shared {
                directories,
                options,
                writer,
                slots: Mutex::new(HashMap::new()),
                tick: AtomicU64::new(1),
            }),
        }
    }

    /// Tenant indexes currently open (for tests and metrics).
    pub fn open_indexes(&self) -> usize {
        lock(&self.shared.slots).len()
    }

    /// Writers currently open (for tests and metrics).
    pub fn open_writers(&self) -> usize {
        self.shared.writer.open_writers.load(Ordering::Acquire)
    }
}

impl Shared {
    fn next_tick(&self) -> u64 {
        self.tick.fetch_add(1, Ordering::AcqRel)
    }

    /// The tenant's slot, marked as just used. Opening a new one may close the
    /// least recently used indexes that nobody is using at the moment.
    fn slot(&self, tenant: TenantId) -> Arc<TenantSlot> {
        let tick = self.next_tick();
        let mut evicted = Vec::new();
        let slot = {
            let mut slots = lock(&self.slots);
            if let Some(slot) = slots.get(&tenant) {
                slot.last_used.store(tick, Ordering::Release);
                return slot.clone();
            }
            let dir = self.directories.path(tenant).join("text");
            let slot = Arc::new(TenantSlot::new(tenant, dir, tick));
            slots.insert(tenant, slot.clone());
            if slots.len() > self.options.open_indexes.max(1) {
                // Only the map holds an idle slot: one held elsewhere is in use
                // and stays, so a tenant never has two slots (two writers).
                let mut idle: Vec<(u64, TenantId)> = slots
                    .iter()
                    .filter(|(_, s)| Arc::strong_count(s) == 1)
                    .map(|(t, s)| (s.last_used.load(Ordering::Acquire), *t))
                    .collect();
                idle.sort_unstable();
                let excess = slots.len() - self.options.open_indexes.max(1);
                for (_, victim) in idle.into_iter().take(excess) {
                    evicted.extend(slots.remove(&victim));
                }
            }
            slot
        };
        // Closing an index joins its writer's threads: not under the map's lock.
        drop(evicted);
        slot
    }

    /// Before `for_slot` opens a writer: closes the least recently written
    /// idle writers of other tenants while too many are open.
    fn make_room_for_writer(&self, for_slot: &Arc<TenantSlot>) {
        let limit = self.options.open_writers.max(1);
        let mut skipped: Vec<Arc<TenantSlot>> = vec![for_slot.clone()];
        while self.writer.open_writers.load(Ordering::Acquire) >= limit {
            let victim = {
                let slots = lock(&self.slots);
                slots
                    .values()
                    .filter(|s| s.has_writer() && !skipped.iter().any(|k| Arc::ptr_eq(k, s)))
                    .min_by_key(|s| s.last_write.load(Ordering::Acquire))
                    .cloned()
            };
            let Some(victim) = victim else { break };
            let closed: Option<CountedWriter> = victim.try_take_writer();
            drop(closed);
            skipped.push(victim);
        }
    }

    fn write(
        &self,
        tenant: TenantId,
        write: impl FnOnce(&mut tantivy::IndexWriter, &OpenIndex) -> tantivy::Result<()>,
    ) -> Result<()> {
        let slot = self.slot(tenant);
        slot.last_write.store(self.next_tick(), Ordering::Release);
        slot.write(&self.writer, || self.make_room_for_writer(&slot), write)
    }

    /// Maps a failed read of `open`; a damaged index is reset on the way.
    fn read_failed(&self, slot: &TenantSlot, open: &Arc<OpenIndex>, error: &TantivyError) -> Error {
        if is_damage(error) {
            if let Err(reset) = slot.reset_damaged(open, &format!("damaged: {error}")) {
                return reset;
            }
            return unavailable(format!(
                "the index was damaged and has been reset; rebuild it ({error})"
            ));
        }
        unavailable(error)
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::internal(format!("text index task failed: {e}")))?
}

#[async_trait]
impl TextIndex for EmbeddedTextIndex {
    fn name(&self) -> &str {
        "embedded"
    }

    async fn mark_rebuilt(&self, tenant: TenantId) -> Result<()> {
        let shared = self.shared.clone();
        blocking(move || shared.slot(tenant).mark_rebuilt()).await
    }

    async fn upsert(&self, tenant: TenantId, entries: Vec<TextEntry>) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let shared = self.shared.clone();
        blocking(move || {
            shared.write(tenant, |writer, open| {
                // Delete then add, in order: a later entry with the same key wins.
                for entry in &entries {
                    writer.delete_term(open.fields.key_term(&entry.key));
                    writer.add_document(open.fields.document(entry))?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn remove(&self, tenant: TenantId, keys: &[EntryKey]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let keys = keys.to_vec();
        let shared = self.shared.clone();
        blocking(move || {
            // Nothing on disk: nothing to remove, and no index to create.
            if shared.slot(tenant).current(false)?.is_none() {
                return Ok(());
            }
            shared.write(tenant, |writer, open| {
                for key in &keys {
                    writer.delete_term(open.fields.key_term(key));
                }
                Ok(())
            })
        })
        .await
    }

    async fn compact(&self, tenant: TenantId) -> Result<()> {
        let shared = self.shared.clone();
        blocking(move || {
            if shared.slot(tenant).current(false)?.is_none() {
                return Ok(());
            }
            // Merging rewrites the segments without their deleted documents;
            // collecting then removes the old segment files.
            shared.write(tenant, |writer, open| {
                let segments = open.index.searchable_segment_ids()?;
                if !segments.is_empty() {
                    writer.merge(&segments).wait()?;
                }
                Ok(())
            })?;
            shared.write(tenant, |writer, _| {
                writer.garbage_collect_files().wait().map(drop)
            })
        })
        .await
    }

    async fn search(
        &self,
        tenant: TenantId,
        query: &str,
        limit: usize,
        filter: &SearchFilter,
    ) -> Result<Vec<Hit>> {
        if limit == 0 || query.trim().is_empty() {
            return Ok(Vec::new());
        }
        let query = query.to_owned();
        let filter = filter.clone();
        let shared = self.shared.clone();
        blocking(move || {
            let slot = shared.slot(tenant);
            let Some(open) = slot.current(false)? else {
                return Ok(Vec::new());
            };
            let terms = open.fields.query_terms(&open.index, &query)?;
            if terms.is_empty() {
                return Ok(Vec::new());
            }
            let searcher = open.reader.searcher();
            let held = usize::try_from(searcher.num_docs()).unwrap_or(usize::MAX);
            if held == 0 {
                return Ok(Vec::new());
            }
            let search_query = open.fields.search_query(terms, &filter);
            let collector = TopDocs::with_limit(limit.min(held)).order_by_score();
            let found = searcher
                .search(search_query.as_ref(), &collector)
                .map_err(|e| shared.read_failed(&slot, &open, &e))?;
            found
                .into_iter()
                .map(|(score, address)| {
                    let doc: TantivyDocument = searcher
                        .doc(address)
                        .map_err(|e| shared.read_failed(&slot, &open, &e))?;
                    Ok(Hit {
                        key: open.fields.read_key(&doc)?,
                        score,
                    })
                })
                .collect()
        })
        .await
    }

    async fn keys(&self, tenant: TenantId) -> Result<Vec<EntryKey>> {
        let shared = self.shared.clone();
        blocking(move || {
            let slot = shared.slot(tenant);
            let Some(open) = slot.current(false)? else {
                return Ok(Vec::new());
            };
            let searcher = open.reader.searcher();
            let mut keys = Vec::new();
            for segment in searcher.segment_readers() {
                let store = segment
                    .get_store_reader(1)
                    .map_err(|e| shared.read_failed(&slot, &open, &TantivyError::from(e)))?;
                for doc_id in segment.doc_ids_alive() {
                    let doc: TantivyDocument = store
                        .get(doc_id)
                        .map_err(|e| shared.read_failed(&slot, &open, &e))?;
                    keys.push(open.fields.read_key(&doc)?);
                }
            }
            keys.sort_unstable();
            Ok(keys)
        })
        .await
    }

    async fn status(&self, tenant: TenantId) -> Result<IndexStatus> {
        let shared = self.shared.clone();
        blocking(move || {
            let Some(open) = shared.slot(tenant).current(false)? else {
                // Missing: nothing held, and the caller should rebuild it.
                return Ok(IndexStatus {
                    entries: 0,
                    rebuild_needed: true,
                });
            };
            Ok(IndexStatus {
                entries: open.reader.searcher().num_docs(),
                rebuild_needed: open.rebuild_needed(),
            })
        })
        .await
    }

    async fn purge_tenant(&self, tenant: TenantId) -> Result<()> {
        let shared = self.shared.clone();
        blocking(move || shared.slot(tenant).purge()).await
    }
}
