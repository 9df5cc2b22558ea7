//! Hybrid recall: the same query against the vector index (meaning) and the
//! full-text index (words), fused by reciprocal rank, filtered by who may see
//! what, and resolved against the SQL store (an index entry whose row is gone
//! or no longer visible is dropped, never shown).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use karen_domain::library::{Document, StoredChunk};
use karen_domain::memory::Memory;
use karen_domain::ports::{EntryKey, EntryKind, Hit, SearchFilter};
use karen_domain::words::{content_terms, mentions_any};
use karen_domain::{ChunkId, DocumentId, MemoryId, Permission, Result, TenantContext};

use super::indexer::Indexer;
use tracing::Instrument as _;

use crate::audit::Record;
use crate::{Deps, telemetry};

/// The rank constant of reciprocal rank fusion (the usual 60): a result's
/// fused score is the sum over lists of 1 / (k + rank).
const RRF_K: f64 = 60.0;

/// Each index is asked for this many times the results wanted, so that
/// fusion has candidates found by only one of them.
const OVERFETCH: usize = 3;

/// One fused result: its key, its fused score, and its cosine similarity
/// when the vector index found it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Candidate {
    key: EntryKey,
    score: f64,
    similarity: Option<f32>,
}

/// A passage of a document that matched.
#[derive(Debug, Clone, PartialEq)]
pub struct Passage {
    pub document_id: DocumentId,
    pub document_title: String,
    pub chunk_id: ChunkId,
    /// Position of the passage in the document, from 0.
    pub ordinal: u32,
    pub heading: Option<String>,
    pub text: String,
    /// Fused score, 0 to 1 (1: first in both lists).
    pub score: f64,
}

/// A memory that matched, with its rank (relevance × importance × decay).
#[derive(Debug, Clone, PartialEq)]
pub struct RecalledMemory {
    pub memory: Memory,
    pub score: f64,
}

/// What a search found, best first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recall {
    pub memories: Vec<RecalledMemory>,
    pub passages: Vec<Passage>,
}

/// Runs hybrid searches for a principal.
#[derive(Clone)]
pub struct Retriever {
    deps: Arc<Deps>,
    indexer: Indexer,
}

/// Fuses ranked lists by reciprocal rank; scores are normalised so that
/// first place in every list is 1.
pub fn fuse(lists: &[Vec<Hit>]) -> Vec<(EntryKey, f64)> {
    let mut fused: HashMap<EntryKey, f64> = HashMap::new();
    for list in lists {
        for (rank, hit) in list.iter().enumerate() {
            *fused.entry(hit.key).or_default() += 1.0 / (RRF_K + rank as f64 + 1.0);
        }
    }
    let best = lists.len() as f64 / (RRF_K + 1.0);
    let mut ranked: Vec<(EntryKey, f64)> = fused
        .into_iter()
        .map(|(key, score)| (key, if best > 0.0 { score / best } else { 0.0 }))
        .collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked
}

impl Retriever {
    pub(crate) fn new(deps: Arc<Deps>, indexer: Indexer) -> Self {
        Self { deps, indexer }
    }

    /// The fused hits of `query` among `kinds` that the principal may see.
    async fn hits(
        &self,
        ctx: &TenantContext,
        query: &str,
        kinds: Vec<EntryKind>,
        limit: usize,
    ) -> Result<Vec<Candidate>> {
        let principal = ctx.principal();
        let filter = SearchFilter {
            kinds,
            user: principal.user_id,
            roles: principal.roles.clone(),
        };
        let tenant = ctx.tenant_id();
        let wanted = limit.saturating_mul(OVERFETCH).max(limit);
        let search = &self.deps.search;
        // The two searches are independent: run them at once.
        let text = async {
            let started = Instant::now();
            let hits = search.text.search(tenant, query, wanted, &filter).await;
            telemetry::search_finished("text", search.text.name(), started.elapsed());
            hits
        }
        .instrument(tracing::info_span!(
            "search.text",
            search.backend = search.text.name(),
            search.limit = wanted
        ));
        let vector = async {
            let (space, vector) = self.indexer.embed_query(ctx.scope(), query).await?;
            if vector.iter().all(|x| *x == 0.0) {
                return Ok(Vec::new());
            }
            let started = Instant::now();
            let hits = search
                .vector
                .search(tenant, &space, &vector, wanted, &filter)
                .instrument(tracing::info_span!(
                    "search.vector",
                    search.backend = search.vector.name(),
                    search.limit = wanted
                ))
                .await;
            telemetry::search_finished("vector", search.vector.name(), started.elapsed());
            hits
        };
        let (text_hits, vector_hits) = futures::future::try_join(text, vector).await?;
        let similarities: HashMap<EntryKey, f32> =
            vector_hits.iter().map(|hit| (hit.key, hit.score)).collect();
        Ok(fuse(&[vector_hits, text_hits])
            .into_iter()
            .map(|(key, score)| Candidate {
                key,
                score,
                similarity: similarities.get(&key).copied(),
            })
            .collect())
    }

    /// The hybrid search a caller runs (`POST /v1/search`): passages of the
    /// documents they may read (needs `documents:read`), and their own and
    /// shared memories too when they hold `memory:read`. The read is audited
    /// (counts only: the query is content).
    pub async fn search_visible(
        &self,
        ctx: &TenantContext,
        query: &str,
        limit: usize,
    ) -> Result<Recall> {
        ctx.require(Permission::DocumentsRead)?;
        let mut kinds = vec![EntryKind::Chunk];
        let memory_limit = if ctx.require(Permission::MemoryRead).is_ok() {
            kinds.push(EntryKind::Memory);
            limit
        } else {
            0
        };
        let recall = self
            .search(ctx, query, kinds, memory_limit, limit, None)
            .await?;
        let found = serde_json::json!({
            "memories": recall.memories.len(),
            "passages": recall.passages.len(),
        });
        self.deps
            .audit_read(ctx.scope(), Record::new("search.query").after(&found))
            .await?;
        Ok(recall)
    }

    /// Hybrid search over what the principal may see: their own and shared
    /// memories, passages of documents their roles may read. With
    /// `min_similarity`, only results about the query are kept: a vector
    /// similarity of at least `min_similarity`, or a content word of the
    /// query in their text (fusion ranks by position alone, so the best of
    /// unrelated results still ranks high).
    pub async fn search(
        &self,
        ctx: &TenantContext,
        query: &str,
        kinds: Vec<EntryKind>,
        memory_limit: usize,
        passage_limit: usize,
        min_similarity: Option<f32>,
    ) -> Result<Recall> {
        let query = query.trim();
        if query.is_empty() || (memory_limit == 0 && passage_limit == 0) {
            return Ok(Recall::default());
        }
        let limit = memory_limit.max(passage_limit);
        let hits = self.hits(ctx, query, kinds, limit).await?;
        let query_terms = content_terms(query);
        let relevant = |candidate: &Candidate, text: &str| match min_similarity {
            None => true,
            Some(floor) => {
                candidate.similarity.is_some_and(|s| s >= floor) || mentions_any(&query_terms, text)
            }
        };
        let principal = ctx.principal();
        let now = self.deps.clock.now();
        // The candidates' rows, in one statement per kind (and one for their
        // documents) rather than one per candidate.
        let ids_of = |kind: EntryKind| -> Vec<uuid::Uuid> {
            hits.iter()
                .filter(|candidate| candidate.key.kind == kind)
                .map(|candidate| candidate.key.id)
                .collect()
        };
        let memory_ids: Vec<MemoryId> = ids_of(EntryKind::Memory)
            .into_iter()
            .map(MemoryId::from_uuid)
            .collect();
        let chunk_ids: Vec<ChunkId> = ids_of(EntryKind::Chunk)
            .into_iter()
            .map(ChunkId::from_uuid)
            .collect();
        let mut tx = self.deps.store.tenant_read(ctx.scope()).await?;
        let mut memories: HashMap<MemoryId, Memory> = tx
            .memories()
            .memories_by_ids(&memory_ids)
            .await?
            .into_iter()
            .map(|memory| (memory.id, memory))
            .collect();
        let mut chunks: HashMap<ChunkId, StoredChunk> = tx
            .documents()
            .chunks_by_ids(&chunk_ids)
            .await?
            .into_iter()
            .map(|chunk| (chunk.id, chunk))
            .collect();
        let mut document_ids: Vec<DocumentId> =
            chunks.values().map(|chunk| chunk.document_id).collect();
        document_ids.sort_unstable();
        document_ids.dedup();
        let documents: HashMap<DocumentId, Document> = tx
            .documents()
            .documents_by_ids(&document_ids)
            .await?
            .into_iter()
            .map(|document| (document.id, document))
            .collect();
        let mut recall = Recall::default();
        for candidate in hits {
            let (key, relevance) = (candidate.key, candidate.score);
            match key.kind {
                EntryKind::Memory if recall.memories.len() < memory_limit.saturating_mul(2) => {
                    let Some(memory) = memories.remove(&MemoryId::from_uuid(key.id)) else {
                        continue;
                    };
                    if memory.owner.is_some_and(|owner| owner != principal.user_id)
                        || !relevant(&candidate, memory.content.as_str())
                    {
                        continue;
                    }
                    let score = memory.rank(relevance, now);
                    recall.memories.push(RecalledMemory { memory, score });
                }
                EntryKind::Chunk if recall.passages.len() < passage_limit => {
                    let Some(chunk) = chunks.remove(&ChunkId::from_uuid(key.id)) else {
                        continue;
                    };
                    if !relevant(&candidate, &chunk.text) {
                        continue;
                    }
                    let Some(document) = documents
                        .get(&chunk.document_id)
                        .filter(|d| d.readable_with(&principal.roles))
                    else {
                        continue;
                    };
                    recall.passages.push(Passage {
                        document_id: document.id,
                        document_title: document.title.as_str().to_owned(),
                        chunk_id: chunk.id,
                        ordinal: chunk.ordinal,
                        heading: chunk.heading,
                        text: chunk.text,
                        score: relevance,
                    });
                }
                _ => {}
            }
        }
        tx.commit().await?;
        // Memories are re-ranked by importance and decay, then cut.
        recall.memories.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then(a.memory.id.cmp(&b.memory.id))
        });
        recall.memories.truncate(memory_limit);
        Ok(recall)
    }

    /// Records that memories were recalled (their decay restarts).
    pub async fn touch(&self, ctx: &TenantContext, memories: &[MemoryId]) -> Result<()> {
        if memories.is_empty() {
            return Ok(());
        }
        let mut tx = self.deps.store.tenant(ctx.scope()).await?;
        tx.memories()
            .touch_memories(memories, self.deps.clock.now())
            .await?;
        tx.commit().await
    }
}

#[cfg(test)]
mod tests {
    use karen_domain::ports::{EntryKey, EntryKind, Hit};
    use uuid::Uuid;

    use super::fuse;

    fn hit(key: EntryKey) -> Hit {
        Hit { key, score: 0.0 }
    }

    #[test]
    fn fusion_rewards_agreement_and_keeps_single_list_results() {
        let keys: Vec<EntryKey> = (0..4)
            .map(|_| EntryKey::new(EntryKind::Chunk, Uuid::now_v7()))
            .collect();
        let vector = vec![hit(keys[0]), hit(keys[1]), hit(keys[2])];
        let text = vec![hit(keys[1]), hit(keys[3])];
        let fused = fuse(&[vector, text]);
        assert_eq!(fused[0].0, keys[1], "in both lists: first");
        assert_eq!(fused.len(), 4);
        assert!(fused.iter().all(|(_, s)| *s > 0.0 && *s <= 1.0));
        let only = fuse(&[vec![hit(keys[0])], vec![hit(keys[0])]]);
        assert!((only[0].1 - 1.0).abs() < 1e-12);
        assert!(fuse(&[Vec::new(), Vec::new()]).is_empty());
    }
}
