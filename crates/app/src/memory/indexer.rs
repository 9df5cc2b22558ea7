//! Writing to the search indexes: embeddings through the per-tenant cache
//! (by model and content hash), then the vector and the text index.

use std::sync::Arc;
use std::time::Duration;

use karen_domain::ports::{
    EntryAccess, EntryKey, LlmError, TenantTx, TextEntry, VectorEntry, VectorSpace,
};
use karen_domain::{Error, Result, TenantId, TenantScope};

use super::EmbeddingModel;
use super::models::{TenantModels, tenant_models};
use crate::cache::{EpochCache, Topic};
use crate::{Deps, telemetry};

/// One thing to index.
#[derive(Debug, Clone)]
pub struct IndexItem {
    pub key: EntryKey,
    pub access: EntryAccess,
    pub text: String,
    /// Hex SHA-256 of `text`: the embedding cache key.
    pub content_hash: String,
}

/// Embeds and indexes memories and passages, each tenant with its own model.
#[derive(Clone)]
pub struct Indexer {
    deps: Arc<Deps>,
    /// The tenants' models, read on every search.
    models: Arc<EpochCache<TenantId, TenantModels>>,
}

fn embedding_error(error: LlmError) -> Error {
    match error {
        LlmError::Refused(reason) => Error::invalid(None, reason),
        other => Error::Upstream(format!("the embedding provider failed: {other}")),
    }
}

/// Texts per embedding call.
pub(crate) const EMBED_BATCH: usize = 64;

/// The space of a vector made by `model`.
pub(crate) fn space_of(model: &str, vector: &[f32]) -> VectorSpace {
    VectorSpace {
        model: model.to_owned(),
        dims: u32::try_from(vector.len()).unwrap_or(u32::MAX),
    }
}

impl Indexer {
    pub(crate) fn new(deps: Arc<Deps>) -> Self {
        let caching = deps.caching;
        Self {
            deps,
            models: Arc::new(
                EpochCache::new(
                    "embedding_models",
                    Topic::Embedding,
                    10_000,
                    Duration::from_secs(60),
                )
                .switched(caching),
            ),
        }
    }

    /// A model of the catalog.
    pub(crate) fn embedder(&self, model: &str) -> Result<&EmbeddingModel> {
        self.deps
            .search
            .embedders
            .get(model)
            .ok_or_else(|| Error::internal(format!("embedding model '{model}' is not offered")))
    }

    /// Embeds texts with `model`, in batches.
    pub(crate) async fn embed_texts(
        &self,
        model: &EmbeddingModel,
        texts: &[String],
    ) -> Result<Vec<Vec<f32>>> {
        let mut vectors = Vec::with_capacity(texts.len());
        for batch in texts.chunks(EMBED_BATCH) {
            let answer = model
                .provider
                .embed(&model.model, batch)
                .await
                .map_err(embedding_error)?;
            if answer.vectors.len() != batch.len() {
                return Err(Error::Upstream(format!(
                    "the embedding provider returned {} vectors for {} inputs",
                    answer.vectors.len(),
                    batch.len()
                )));
            }
            vectors.extend(answer.vectors);
        }
        Ok(vectors)
    }

    /// The cached vectors of `items` for `model` (`None` where not cached).
    pub(crate) async fn cached(
        &self,
        tx: &mut dyn TenantTx,
        model: &str,
        items: &[IndexItem],
    ) -> Result<Vec<Option<Vec<f32>>>> {
        let mut vectors = Vec::with_capacity(items.len());
        for item in items {
            let cached = tx.embeddings().embedding(model, &item.content_hash).await?;
            telemetry::cache_lookup("embeddings", cached.is_some());
            vectors.push(cached);
        }
        Ok(vectors)
    }

    /// The vectors of `items` made by `model`, from the cache where it has
    /// them; new ones are cached in `tx` (written with the caller's transaction).
    pub(crate) async fn embed_items(
        &self,
        tx: &mut dyn TenantTx,
        model: &EmbeddingModel,
        items: &[IndexItem],
    ) -> Result<Vec<Vec<f32>>> {
        let mut vectors = if self.deps.caching.enabled {
            self.cached(tx, &model.model, items).await?
        } else {
            vec![None; items.len()]
        };
        let missing: Vec<usize> = (0..items.len()).filter(|i| vectors[*i].is_none()).collect();
        if !missing.is_empty() {
            let texts: Vec<String> = missing.iter().map(|i| items[*i].text.clone()).collect();
            let fresh = self.embed_texts(model, &texts).await?;
            let now = self.deps.clock.now();
            for (i, vector) in missing.into_iter().zip(fresh) {
                tx.embeddings()
                    .put_embedding(&model.model, &items[i].content_hash, &vector, now)
                    .await?;
                vectors[i] = Some(vector);
            }
        }
        Ok(vectors.into_iter().flatten().collect())
    }

    /// The tenant's models, cached per replica until a job changes them.
    pub(crate) async fn tenant_models(&self, scope: TenantScope) -> Result<TenantModels> {
        let tenant = scope.tenant_id();
        self.models
            .get_or_load(self.deps.counters.as_ref(), tenant, tenant, || async {
                let mut tx = self.deps.store.tenant_read(scope).await?;
                let models = tenant_models(tx.as_mut(), &self.deps.search.embedders).await?;
                tx.commit().await?;
                Ok::<_, Error>(models)
            })
            .await
    }

    /// The vector of a query, made by the model of the tenant's searches
    /// (not cached: queries rarely repeat exactly).
    pub(crate) async fn embed_query(
        &self,
        scope: TenantScope,
        query: &str,
    ) -> Result<(VectorSpace, Vec<f32>)> {
        let models = self.tenant_models(scope).await?;
        let model = self.deps.search.embedders.for_setting(Some(&models.active));
        let vector = self
            .embed_texts(model, &[query.to_owned()])
            .await?
            .pop()
            .ok_or_else(|| Error::Upstream("the embedding provider returned nothing".into()))?;
        Ok((space_of(&model.model, &vector), vector))
    }

    /// Writes the vectors `model` made of `items` to the vector index (texts
    /// without a word embed to zero and are left out); returns how many.
    pub(crate) async fn upsert_vectors(
        &self,
        tenant: TenantId,
        model: &str,
        items: &[IndexItem],
        vectors: Vec<Vec<f32>>,
    ) -> Result<u64> {
        let mut by_space: Vec<(VectorSpace, Vec<VectorEntry>)> = Vec::new();
        let mut written = 0;
        for (item, vector) in items.iter().zip(vectors) {
            // A text without a single word embeds to zero: nothing to compare.
            if vector.iter().all(|x| *x == 0.0) {
                continue;
            }
            let space = space_of(model, &vector);
            let entry = VectorEntry {
                key: item.key,
                access: item.access.clone(),
                vector,
            };
            written += 1;
            match by_space.iter_mut().find(|(s, _)| *s == space) {
                Some((_, entries)) => entries.push(entry),
                None => by_space.push((space, vec![entry])),
            }
        }
        for (space, entries) in by_space {
            self.deps
                .search
                .vector
                .upsert(tenant, &space, entries)
                .await?;
        }
        Ok(written)
    }

    /// Embeds (through the cache in `tx`) and writes `items` to both indexes:
    /// the vectors of the tenant's model, and of the model a re-embedding job
    /// is moving it to. Call before committing `tx`, so a failure leaves
    /// nothing stored.
    pub async fn index(
        &self,
        tx: &mut dyn TenantTx,
        tenant: TenantId,
        items: Vec<IndexItem>,
    ) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let models = tenant_models(tx, &self.deps.search.embedders).await?;
        for model in models.written() {
            let model = self.embedder(model)?;
            let vectors = self.embed_items(tx, model, &items).await?;
            self.upsert_vectors(tenant, &model.model, &items, vectors)
                .await?;
        }
        let texts = items
            .into_iter()
            .map(|item| TextEntry {
                key: item.key,
                access: item.access,
                text: item.text,
            })
            .collect();
        self.deps.search.text.upsert(tenant, texts).await
    }

    /// Removes entries from both indexes (every vector space).
    /// Rewrites the tenant's index files so removed entries leave no trace.
    pub async fn compact(&self, tenant: TenantId) -> Result<()> {
        self.deps.search.vector.compact(tenant).await?;
        self.deps.search.text.compact(tenant).await
    }

    pub async fn remove(&self, tenant: TenantId, keys: &[EntryKey]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        self.deps.search.vector.remove(tenant, keys).await?;
        self.deps.search.text.remove(tenant, keys).await
    }
}
