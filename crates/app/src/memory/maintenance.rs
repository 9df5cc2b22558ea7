//! Keeping the search indexes in step with the SQL store, their source of
//! truth: rebuilding a tenant's indexes from it, and checking them for drift
//! (entries the store has and an index lacks, entries an index holds that the
//! store no longer has) and repairing it. Embeddings come from the cache
//! (`embeddings`), so only texts it lacks are embedded again.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use karen_domain::library::Document;
use karen_domain::ports::{EntryKey, MemoryScope, TextEntry, VectorSpace};
use karen_domain::{DocumentId, Result, SystemReason, TenantId, TenantScope};

use super::EmbeddingModel;
use super::documents::chunk_item;
use super::indexer::{EMBED_BATCH, IndexItem, Indexer};
use super::memories::index_item;
use super::models::{TenantModels, tenant_models};
use crate::Deps;

/// Progress of a long operation (the CLI draws a bar).
pub trait Progress: Send + Sync {
    /// Work on `what` starts, with `total` entries to handle.
    fn begin(&self, what: &str, total: u64);
    /// `by` more entries were handled.
    fn advance(&self, by: u64);
    /// The work on `what` ended.
    fn end(&self);
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {
    fn begin(&self, _what: &str, _total: u64) {}
    fn advance(&self, _by: u64) {}
    fn end(&self) {}
}

/// What a rebuild did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RebuildReport {
    /// The model whose vectors were written.
    pub model: String,
    pub memories: u64,
    pub chunks: u64,
    /// Entries written to the vector index (texts without a word have no vector).
    pub vectors: u64,
    /// Texts the embedding cache did not hold, embedded again.
    pub embedded: u64,
}

/// The drift of one index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Drift {
    /// `text` or `vector`.
    pub index: &'static str,
    /// The backend (`embedded`, `milvus`, `postgres`).
    pub backend: String,
    /// The vector space checked (vector index only).
    pub space: Option<VectorSpace>,
    /// In the store, not in the index.
    pub missing: Vec<EntryKey>,
    /// In the index, not in the store.
    pub orphaned: Vec<EntryKey>,
    /// The index reports that it was created or reset without a rebuild
    /// since (then its entries are `missing`, unless the store has none or
    /// they were written since).
    pub rebuild_needed: bool,
}

impl Drift {
    /// Whether the index holds exactly what the store has.
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty() && self.orphaned.is_empty()
    }
}

/// What a check found (and, with repair, fixed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Memories and chunks in the store.
    pub entries: u64,
    pub text: Drift,
    pub vector: Drift,
    /// Vector spaces of models the tenant no longer uses.
    pub stale_spaces: Vec<VectorSpace>,
    /// Whether the drift was repaired.
    pub repaired: bool,
}

impl CheckReport {
    /// Whether both indexes match the store.
    pub fn is_clean(&self) -> bool {
        self.text.is_clean() && self.vector.is_clean() && self.stale_spaces.is_empty()
    }
}

/// Rebuilds, checks and repairs a tenant's search indexes.
#[derive(Clone)]
pub struct IndexMaintenance {
    pub(crate) deps: Arc<Deps>,
    pub(crate) indexer: Indexer,
}

/// Entries read from the store per transaction.
const READ_BATCH: i64 = 500;

fn system(tenant: TenantId) -> TenantScope {
    TenantScope::system(tenant, SystemReason::Indexing)
}

impl IndexMaintenance {
    pub(crate) fn new(deps: Arc<Deps>, indexer: Indexer) -> Self {
        Self { deps, indexer }
    }

    /// The tenant's models, read from the store (not the cache).
    pub(crate) async fn models(&self, tenant: TenantId) -> Result<TenantModels> {
        let mut tx = self.deps.store.tenant_read(system(tenant)).await?;
        let models = tenant_models(tx.as_mut(), &self.deps.search.embedders).await?;
        tx.commit().await?;
        Ok(models)
    }

    /// Everything the store says the indexes should hold, in key order, and
    /// how many of them are memories.
    pub(crate) async fn source_items(&self, tenant: TenantId) -> Result<(Vec<IndexItem>, u64)> {
        let mut tx = self.deps.store.tenant_read(system(tenant)).await?;
        let mut items = Vec::new();
        let mut after = None;
        loop {
            let batch = tx
                .memories()
                .list_memories(MemoryScope::All, after, READ_BATCH)
                .await?;
            after = batch.last().map(|m| m.id);
            items.extend(batch.iter().map(index_item));
            if after.is_none() || (batch.len() as i64) < READ_BATCH {
                break;
            }
        }
        let memories = items.len() as u64;
        let mut documents: HashMap<DocumentId, Option<Document>> = HashMap::new();
        let mut after = None;
        loop {
            let batch = tx.documents().list_chunks(after, READ_BATCH).await?;
            after = batch.last().map(|c| c.id);
            for chunk in &batch {
                let document = match documents.get(&chunk.document_id) {
                    Some(known) => known.clone(),
                    None => {
                        let found = tx.documents().document(chunk.document_id).await?;
                        documents.insert(chunk.document_id, found.clone());
                        found
                    }
                };
                if let Some(document) = document {
                    items.push(chunk_item(&document, chunk));
                }
            }
            if after.is_none() || (batch.len() as i64) < READ_BATCH {
                break;
            }
        }
        tx.commit().await?;
        items.sort_by_key(|item| item.key);
        Ok((items, memories))
    }

    /// The vectors `model` makes of `items`: cached ones read in a short
    /// transaction, the others embedded outside any transaction (a slow
    /// provider must not hold the store) and cached in another. Returns them
    /// with the number embedded afresh.
    pub(crate) async fn vectors(
        &self,
        tenant: TenantId,
        model: &EmbeddingModel,
        items: &[IndexItem],
    ) -> Result<(Vec<Vec<f32>>, u64)> {
        let mut tx = self.deps.store.tenant_read(system(tenant)).await?;
        let mut vectors = self
            .indexer
            .cached(tx.as_mut(), &model.model, items)
            .await?;
        tx.commit().await?;
        let missing: Vec<usize> = (0..items.len()).filter(|i| vectors[*i].is_none()).collect();
        if !missing.is_empty() {
            let texts: Vec<String> = missing.iter().map(|i| items[*i].text.clone()).collect();
            let fresh = self.indexer.embed_texts(model, &texts).await?;
            let now = self.deps.clock.now();
            let mut tx = self.deps.store.tenant(system(tenant)).await?;
            for (i, vector) in missing.iter().zip(fresh) {
                tx.embeddings()
                    .put_embedding(&model.model, &items[*i].content_hash, &vector, now)
                    .await?;
                vectors[*i] = Some(vector);
            }
            tx.commit().await?;
        }
        Ok((
            vectors.into_iter().flatten().collect(),
            missing.len() as u64,
        ))
    }

    /// Embeds `items` with `model` and writes them to its vector space, in
    /// batches; returns (vectors written, texts embedded afresh).
    pub(crate) async fn write_vectors(
        &self,
        tenant: TenantId,
        model: &EmbeddingModel,
        items: &[IndexItem],
        progress: &dyn Progress,
    ) -> Result<(u64, u64)> {
        let (mut written, mut embedded) = (0, 0);
        for batch in items.chunks(EMBED_BATCH) {
            let (vectors, fresh) = self.vectors(tenant, model, batch).await?;
            written += self
                .indexer
                .upsert_vectors(tenant, &model.model, batch, vectors)
                .await?;
            embedded += fresh;
            progress.advance(batch.len() as u64);
        }
        Ok((written, embedded))
    }

    async fn write_texts(&self, tenant: TenantId, items: &[IndexItem]) -> Result<()> {
        for batch in items.chunks(EMBED_BATCH * 4) {
            let entries = batch
                .iter()
                .map(|item| TextEntry {
                    key: item.key,
                    access: item.access.clone(),
                    text: item.text.clone(),
                })
                .collect();
            self.deps.search.text.upsert(tenant, entries).await?;
        }
        Ok(())
    }

    /// Rebuilds the tenant's vector and text indexes from the store: both are
    /// emptied (but the space a re-embedding job is filling), then every
    /// memory and chunk is written again with the tenant's model.
    pub async fn rebuild(
        &self,
        tenant: TenantId,
        progress: &dyn Progress,
    ) -> Result<RebuildReport> {
        let models = self.models(tenant).await?;
        let model = self.indexer.embedder(&models.active)?.clone();
        let (items, memories) = self.source_items(tenant).await?;
        progress.begin(&tenant.to_string(), items.len() as u64);
        let search = &self.deps.search;
        for space in search.vector.spaces(tenant).await? {
            if models.target.as_deref() != Some(space.model.as_str()) {
                search.vector.drop_space(tenant, &space).await?;
            }
        }
        search.text.purge_tenant(tenant).await?;
        self.write_texts(tenant, &items).await?;
        let (vectors, embedded) = self.write_vectors(tenant, &model, &items, progress).await?;
        search.text.mark_rebuilt(tenant).await?;
        progress.end();
        tracing::info!(tenant_id = %tenant, entries = items.len(), vectors, embedded, "search indexes rebuilt");
        Ok(RebuildReport {
            model: model.model,
            memories,
            chunks: items.len() as u64 - memories,
            vectors,
            embedded,
        })
    }

    /// Compares the tenant's indexes with the store; with `repair`, writes
    /// what is missing, removes what is orphaned and drops the vector spaces
    /// of models the tenant no longer uses.
    pub async fn check(
        &self,
        tenant: TenantId,
        repair: bool,
        progress: &dyn Progress,
    ) -> Result<CheckReport> {
        let search = &self.deps.search;
        let models = self.models(tenant).await?;
        let model = self.indexer.embedder(&models.active)?.clone();
        let (items, _) = self.source_items(tenant).await?;
        let expected: BTreeSet<EntryKey> = items.iter().map(|i| i.key).collect();

        let text_keys: BTreeSet<EntryKey> = search.text.keys(tenant).await?.into_iter().collect();
        let text = Drift {
            index: "text",
            backend: search.text.name().to_owned(),
            space: None,
            missing: expected.difference(&text_keys).copied().collect(),
            orphaned: text_keys.difference(&expected).copied().collect(),
            rebuild_needed: search.text.status(tenant).await?.rebuild_needed,
        };

        let spaces = search.vector.spaces(tenant).await?;
        let space = spaces.iter().find(|s| s.model == model.model).cloned();
        let stale_spaces: Vec<VectorSpace> = spaces
            .iter()
            .filter(|s| s.model != model.model && models.target.as_deref() != Some(&s.model))
            .cloned()
            .collect();
        let (vector_keys, rebuild_needed) = match &space {
            Some(space) => (
                search
                    .vector
                    .keys(tenant, space)
                    .await?
                    .into_iter()
                    .collect(),
                search.vector.status(tenant, space).await?.rebuild_needed,
            ),
            None => (BTreeSet::new(), false),
        };
        // Texts without a word have no vector: only those with a non-zero
        // cached vector (or none cached yet) are missing.
        let candidates: Vec<IndexItem> = items
            .iter()
            .filter(|item| !vector_keys.contains(&item.key))
            .cloned()
            .collect();
        let mut tx = self.deps.store.tenant_read(system(tenant)).await?;
        let cached = self
            .indexer
            .cached(tx.as_mut(), &model.model, &candidates)
            .await?;
        tx.commit().await?;
        let missing_items: Vec<IndexItem> = candidates
            .into_iter()
            .zip(cached)
            .filter(|(_, vector)| vector.as_ref().is_none_or(|v| v.iter().any(|x| *x != 0.0)))
            .map(|(item, _)| item)
            .collect();
        let vector = Drift {
            index: "vector",
            backend: search.vector.name().to_owned(),
            space: space.clone(),
            missing: missing_items.iter().map(|i| i.key).collect(),
            orphaned: vector_keys.difference(&expected).copied().collect(),
            rebuild_needed,
        };
        let mut report = CheckReport {
            entries: items.len() as u64,
            text,
            vector,
            stale_spaces,
            repaired: false,
        };
        if !repair {
            return Ok(report);
        }
        if report.is_clean() {
            // Matching the store is what a rebuild would achieve.
            if report.text.rebuild_needed {
                search.text.mark_rebuilt(tenant).await?;
            }
            return Ok(report);
        }
        progress.begin(
            &tenant.to_string(),
            (report.text.missing.len() + missing_items.len()) as u64,
        );
        let text_missing: Vec<IndexItem> = items
            .iter()
            .filter(|i| report.text.missing.contains(&i.key))
            .cloned()
            .collect();
        self.write_texts(tenant, &text_missing).await?;
        progress.advance(text_missing.len() as u64);
        search.text.remove(tenant, &report.text.orphaned).await?;
        search.text.mark_rebuilt(tenant).await?;
        self.write_vectors(tenant, &model, &missing_items, progress)
            .await?;
        // Not in the store: orphaned in every space.
        search
            .vector
            .remove(tenant, &report.vector.orphaned)
            .await?;
        for stale in &report.stale_spaces {
            search.vector.drop_space(tenant, stale).await?;
        }
        progress.end();
        tracing::info!(tenant_id = %tenant, text_missing = report.text.missing.len(), text_orphaned = report.text.orphaned.len(),
            vector_missing = report.vector.missing.len(), vector_orphaned = report.vector.orphaned.len(),
            stale_spaces = report.stale_spaces.len(), "search index drift repaired");
        report.repaired = true;
        Ok(report)
    }
}
