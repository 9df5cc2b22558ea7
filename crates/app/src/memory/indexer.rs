//! Writing to the search indexes: embeddings through the per-tenant cache
//! (by model and content hash), then the vector and the text index.

use std::sync::Arc;

use karen_domain::ports::{
    EntryAccess, EntryKey, LlmError, TenantTx, TextEntry, VectorEntry, VectorSpace,
};
use karen_domain::{Error, Result, TenantId};

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

/// Embeds and indexes memories and passages.
#[derive(Clone)]
pub struct Indexer {
    deps: Arc<Deps>,
}

fn embedding_error(error: LlmError) -> Error {
    match error {
        LlmError::Refused(reason) => Error::invalid(None, reason),
        other => Error::Upstream(format!("the embedding provider failed: {other}")),
    }
}

/// Texts per embedding call.
const EMBED_BATCH: usize = 64;

impl Indexer {
    pub(crate) fn new(deps: Arc<Deps>) -> Self {
        Self { deps }
    }

    fn model(&self) -> &str {
        &self.deps.search.embedders.default_model().model
    }

    /// Embeds texts nobody cached, in batches.
    async fn embed_uncached(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let mut vectors = Vec::with_capacity(texts.len());
        for batch in texts.chunks(EMBED_BATCH) {
            let answer = self
                .deps
                .search
                .embedders
                .default_model()
                .provider
                .embed(self.model(), batch)
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

    /// The vectors of `items`, from the cache where it has them; new ones
    /// are cached in `tx` (written with the caller's transaction).
    pub(crate) async fn embed_items(
        &self,
        tx: &mut dyn TenantTx,
        items: &[IndexItem],
    ) -> Result<Vec<Vec<f32>>> {
        let mut vectors: Vec<Option<Vec<f32>>> = Vec::with_capacity(items.len());
        for item in items {
            let cached = tx
                .embeddings()
                .embedding(self.model(), &item.content_hash)
                .await?;
            telemetry::cache_lookup("embeddings", cached.is_some());
            vectors.push(cached);
        }
        let missing: Vec<usize> = (0..items.len()).filter(|i| vectors[*i].is_none()).collect();
        if !missing.is_empty() {
            let texts: Vec<String> = missing.iter().map(|i| items[*i].text.clone()).collect();
            let fresh = self.embed_uncached(&texts).await?;
            let now = self.deps.clock.now();
            for (i, vector) in missing.into_iter().zip(fresh) {
                tx.embeddings()
                    .put_embedding(self.model(), &items[i].content_hash, &vector, now)
                    .await?;
                vectors[i] = Some(vector);
            }
        }
        Ok(vectors.into_iter().flatten().collect())
    }

    /// The vector of a query (not cached: queries rarely repeat exactly).
    pub(crate) async fn embed_query(&self, query: &str) -> Result<(VectorSpace, Vec<f32>)> {
        let vector = self
            .embed_uncached(&[query.to_owned()])
            .await?
            .pop()
            .ok_or_else(|| Error::Upstream("the embedding provider returned nothing".into()))?;
        Ok((self.space(&vector), vector))
    }

    fn space(&self, vector: &[f32]) -> VectorSpace {
        VectorSpace {
            model: self.model().to_owned(),
            dims: u32::try_from(vector.len()).unwrap_or(u32::MAX),
        }
    }

    /// Embeds (through the cache in `tx`) and writes `items` to both indexes.
    /// Call before committing `tx`, so a failure leaves nothing stored.
    pub async fn index(
        &self,
        tx: &mut dyn TenantTx,
        tenant: TenantId,
        items: Vec<IndexItem>,
    ) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let vectors = self.embed_items(tx, &items).await?;
        let mut by_space: Vec<(VectorSpace, Vec<VectorEntry>)> = Vec::new();
        for (item, vector) in items.iter().zip(vectors) {
            // A text without a single word embeds to zero: nothing to compare.
            if vector.iter().all(|x| *x == 0.0) {
                continue;
            }
            let space = self.space(&vector);
            let entry = VectorEntry {
                key: item.key,
                access: item.access.clone(),
                vector,
            };
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
    pub async fn remove(&self, tenant: TenantId, keys: &[EntryKey]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        self.deps.search.vector.remove(tenant, keys).await?;
        self.deps.search.text.remove(tenant, keys).await
    }
}
